"""The trader's views — status, positions, orders, trades, pnl — over the daemon's database.

This module owns the operator read model: the CLI, chat control and a web console read these
views and nothing else. It builds on `storage.reports` (the read-only connection: SQLite
`mode=ro`, `query_only`) and adds market names (`market_names`), each daemon's last account
snapshot (marks, today's PnL, exposure, balance, feed health: `daemon_state`
`account_snapshot@<DAEMON_ID>`, the default daemon's under the bare name, written by
`wiring.summary`), the shared accounts' halt and summed PnL (`storage.accounts`) and per-trade
PnL.

Per-trade PnL replays each token's fills that did not fail, in the order they were recorded, by
the rules the positions table was built with (`models.Position.apply`; a SELL no order of ours
explains that sells more than the unattributed holding takes the rest from the strategies, as
`storage.fills` does): a BUY's PnL is 0 (its fee is in the cost basis); a SELL's is proceeds
minus the average cost of the shares sold minus its fee. Days are UTC days of the venue's match
time. Money is `Decimal`; `jsonable` turns a view into JSON with Decimals as strings.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from errors import ReportError
from models import UNATTRIBUTED, Position, Side, TradeStatus
from storage.accounts import AccountStatus, read_account_status
from storage.fills import spill
from storage.keys import ACCOUNT_SNAPSHOT_KEY, DEFAULT_DAEMON_ID
from storage.market_names import MarketName, read_names
from storage.reports import Reports

ZERO: Final = Decimal(0)
MAX_TRADES: Final = 10_000
"""The most trades one `trades` call returns (newest first)."""


def _dec(text: Any) -> Decimal:
    try:
        return Decimal(str(text)) if text is not None else ZERO
    except InvalidOperation:
        return ZERO


def _opt_dec(text: Any) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def utc_day(ts: str) -> str:
    """The UTC day (YYYY-MM-DD) of an ISO-8601 timestamp ('' if unreadable)."""
    try:
        at = datetime.fromisoformat(ts)
    except ValueError:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).date().isoformat()


def jsonable(value: Any) -> Any:
    """A view as JSON-ready data: dataclasses as dicts (their field names are the stable keys),
    Decimals as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Named:
    """A token id with what it is called (empty when the daemon has not learned it yet)."""

    token_id: str
    market: str = ""
    outcome: str = ""
    slug: str = ""


def _named(token_id: str, names: dict[str, MarketName]) -> Named:
    n = names.get(token_id)
    if n is None:
        return Named(token_id)
    return Named(token_id, n.question, n.outcome, n.slug)


@dataclass(frozen=True)
class AccountSnapshot:
    """What only the running daemon knows, as it last wrote it (`wiring.summary`)."""

    at: str
    state: str
    reason: str
    pnl_today: Decimal | None
    daily_loss_limit: Decimal | None
    realized: Decimal
    unrealized: Decimal
    exposure: Decimal
    balance: Decimal | None
    open_orders: int
    marks: dict[str, Decimal]
    feeds: dict[str, bool]
    strategies: dict[str, dict[str, Decimal]]
    """Per strategy: `realized`, `unrealized`, `exposure`."""
    daemon: str | None = None
    """The daemon that wrote it; None in a row written before snapshots were per daemon (the
    last daemon to write one, whichever it was)."""

    @classmethod
    def from_json(cls, raw: str) -> AccountSnapshot:
        d = json.loads(raw)
        return cls(
            at=str(d.get("at", "")),
            state=str(d.get("state", "")),
            reason=str(d.get("reason", "")),
            pnl_today=_opt_dec(d.get("pnl_today")),
            daily_loss_limit=_opt_dec(d.get("daily_loss_limit")),
            realized=_dec(d.get("realized")),
            unrealized=_dec(d.get("unrealized")),
            exposure=_dec(d.get("exposure")),
            balance=_opt_dec(d.get("balance")),
            open_orders=int(d.get("open_orders", 0)),
            marks={str(k): _dec(v) for k, v in (d.get("marks") or {}).items()},
            feeds={str(k): bool(v) for k, v in (d.get("feeds") or {}).items()},
            strategies={
                str(k): {str(f): _dec(x) for f, x in v.items()}
                for k, v in (d.get("strategies") or {}).items()
            },
            daemon=str(d["daemon"]) if d.get("daemon") else None,
        )

    def age_s(self, now: datetime) -> float | None:
        try:
            return (now - datetime.fromisoformat(self.at)).total_seconds()
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class StrategyStatus:
    """One strategy in `status`: open positions, cost basis, realized and (from the daemon's
    snapshot) unrealized PnL and exposure."""

    name: str
    positions: int
    cost_basis: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    unrealized_pnl: Decimal | None
    exposure: Decimal | None


@dataclass(frozen=True)
class StatusView:
    """`status`: the trading state and why, the strategies, today's PnL against the daily loss
    limit, realized and marked PnL, exposure, balance, open orders, feed health. Figures only
    the daemon knows (today's PnL, marks, exposure, balance, feeds) are None without a
    snapshot, and `snapshot_at`/`snapshot_age_s` say how old they are."""

    trading_state: str
    state_reason: str
    pnl_today: Decimal | None
    daily_loss_limit: Decimal | None
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None
    fees_paid: Decimal
    redeemable: Decimal
    exposure: Decimal | None
    balance: Decimal | None
    open_orders: int
    positions: int
    fills: int
    feeds: dict[str, bool]
    strategies: list[StrategyStatus]
    snapshot_at: str | None
    snapshot_age_s: float | None
    snapshot_daemon: str | None = None
    """Whose snapshot the figures above are (None: one written before snapshots were per
    daemon, or none)."""
    daemon_snapshots: dict[str, AccountSnapshot] = dataclasses.field(default_factory=dict)
    """Every daemon's last snapshot, by daemon, when the view is of every daemon."""
    shared_accounts: list[AccountStatus] = dataclasses.field(default_factory=list)
    """The shared venue accounts (`ACCOUNT_SHARED=true`, PostgreSQL) of the daemon in scope
    (every one's without a scope): the account's halt and today's PnL summed over its daemons."""


@dataclass(frozen=True)
class PositionView:
    """One strategy's position in one market outcome: size, average cost, mark, PnL."""

    strategy: str
    token_id: str
    market: str
    outcome: str
    slug: str
    size: Decimal
    avg_cost: Decimal
    cost_basis: Decimal
    mark: Decimal | None
    """The payout of a resolved market, else the daemon's last mark (mid), else None."""
    value: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal
    pnl: Decimal
    """Realized plus unrealized (realized alone without a mark)."""
    fees_paid: Decimal
    payout: Decimal | None
    updated_at: str


@dataclass(frozen=True)
class OrderView:
    """One journaled order with what it filled at: average fill price and fees paid."""

    created_at: str
    client_order_id: str
    strategy: str
    token_id: str
    market: str
    outcome: str
    side: str
    order_type: str
    status: str
    price: Decimal
    """The limit price."""
    size: Decimal
    size_matched: Decimal
    avg_fill_price: Decimal | None
    fees: Decimal
    venue_order_id: str | None
    reason: str
    detail: str
    updated_at: str
    daemon: str = ""
    """The daemon that journaled it (`DAEMON_ID`)."""


@dataclass(frozen=True)
class TradeView:
    """One fill of ours with the PnL it realized (0 for a BUY; None for a FAILED trade)."""

    at: str
    day: str
    strategy: str
    token_id: str
    market: str
    outcome: str
    side: str
    price: Decimal
    size: Decimal
    notional: Decimal
    fee: Decimal
    role: str
    status: str
    pnl: Decimal | None
    position_after: Decimal
    trade_id: str
    client_order_id: str | None


@dataclass
class PnlDay:
    """One strategy's trading on one UTC day: trades, pUSD bought and sold, fees, realized PnL."""

    day: str
    strategy: str
    trades: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO


def _pick(
    snaps: dict[str, AccountSnapshot], daemon_id: str | None
) -> tuple[str, AccountSnapshot] | None:
    """(whose, snapshot): `daemon_id`'s, else one written before snapshots were per daemon
    (whose ""); without a daemon, the latest any daemon wrote."""
    if daemon_id is None:
        return max(snaps.items(), key=lambda kv: kv[1].at, default=None)
    for whose in (daemon_id, ""):
        if whose in snaps:
            return whose, snaps[whose]
    return None


class Views(Reports):
    """`Reports` plus the trader's views (see the module docstring)."""

    def names(self, token_ids: Iterable[str] | None = None) -> dict[str, MarketName]:
        try:
            return read_names(self._conn, token_ids)
        except Exception as e:  # sqlite3.Error: the message names the problem
            raise ReportError(f"cannot read the database: market names: {e}") from None

    def snapshots(self) -> dict[str, AccountSnapshot]:
        """Each daemon's last account snapshot, by daemon (`account_snapshot@<id>`, the default
        daemon's under the bare name). A bare row written before snapshots were per daemon
        names no daemon: the default daemon's on a database no named daemon has written to (one
        daemon: SQLite), else under "" (whichever daemon wrote last)."""
        rows = self._rows(
            "SELECT key, value FROM daemon_state WHERE key = ? OR key LIKE ?",
            (ACCOUNT_SNAPSHOT_KEY, f"{ACCOUNT_SNAPSHOT_KEY}@%"),
        )
        out: dict[str, AccountSnapshot] = {}
        named = any(d != DEFAULT_DAEMON_ID for d in self.daemons()) if rows else False
        for key, value in rows:
            base, _, daemon = str(key).partition("@")
            if base != ACCOUNT_SNAPSHOT_KEY:
                continue  # LIKE's `_` matched another key
            try:
                snap = AccountSnapshot.from_json(value)
            except (ValueError, TypeError, AttributeError) as e:
                raise ReportError(f"cannot read the database: account snapshot: {e}") from None
            if not daemon:
                daemon = DEFAULT_DAEMON_ID if snap.daemon is not None or not named else ""
            out[daemon] = snap
        return dict(sorted(out.items()))

    def snapshot(self) -> AccountSnapshot | None:
        """The snapshot of the daemon in scope, falling back to a row written before snapshots
        were per daemon (`daemon` None: the last daemon's to write one); without a scope, the
        latest any daemon wrote."""
        picked = _pick(self.snapshots(), self.daemon_id)
        return picked[1] if picked is not None else None

    def shared_accounts(self) -> list[AccountStatus]:
        """The shared accounts of the daemon in scope (see `storage.accounts`)."""
        try:
            return read_account_status(self._conn, self.daemon_id)
        except sqlite3.Error as e:  # PostgreSQL's errors come through as these too
            if "no such table" in str(e) or "does not exist" in str(e):
                return []  # a database from before 0010: no daemon shares an account in it
            raise ReportError(f"cannot read the database: shared accounts: {e}") from None

    # -- status -------------------------------------------------------------------------------

    def status_view(
        self, *, daily_loss_limit: Decimal | None = None, now: datetime | None = None
    ) -> StatusView:
        s = self.summary()
        snaps = self.snapshots()
        picked = _pick(snaps, self.daemon_id)
        snap = picked[1] if picked is not None else None
        now = now or datetime.now(UTC)
        names = dict.fromkeys(s.by_strategy)
        if snap is not None:
            names.update(dict.fromkeys(snap.strategies))
        strategies = []
        for name in names:
            db = s.by_strategy.get(name)
            live = snap.strategies.get(name) if snap is not None else None
            strategies.append(
                StrategyStatus(
                    name=name,
                    positions=db.positions if db is not None else 0,
                    cost_basis=_dec(db.cost_basis) if db is not None else ZERO,
                    realized_pnl=_dec(db.realized_pnl) if db is not None else ZERO,
                    fees_paid=_dec(db.fees_paid) if db is not None else ZERO,
                    unrealized_pnl=live.get("unrealized") if live is not None else None,
                    exposure=live.get("exposure") if live is not None else None,
                )
            )
        limit = daily_loss_limit
        if snap is not None and snap.daily_loss_limit is not None:
            limit = snap.daily_loss_limit
        return StatusView(
            trading_state=s.trading_state or "ACTIVE",
            state_reason=s.state_reason or "",
            pnl_today=snap.pnl_today if snap is not None else None,
            daily_loss_limit=limit,
            realized_pnl=_dec(s.realized_pnl),
            unrealized_pnl=snap.unrealized if snap is not None else None,
            fees_paid=_dec(s.fees_paid),
            redeemable=_dec(s.redeemable),
            exposure=snap.exposure if snap is not None else None,
            balance=snap.balance if snap is not None else None,
            open_orders=s.open_orders,
            positions=s.positions,
            fills=s.fills,
            feeds=snap.feeds if snap is not None else {},
            strategies=strategies,
            snapshot_at=snap.at if snap is not None else None,
            snapshot_age_s=snap.age_s(now) if snap is not None else None,
            snapshot_daemon=picked[0] or None if picked is not None else None,
            daemon_snapshots=snaps if self.daemon_id is None else {},
            shared_accounts=self.shared_accounts(),
        )

    # -- positions ----------------------------------------------------------------------------

    def positions_view(self, *, strategy: str | None = None) -> list[PositionView]:
        """Positions with a size or realized PnL, by strategy then market, `unattributed`
        last; marked at the payout of a resolved market, else at the daemon's last mark."""
        reports = [p for p in self.positions() if strategy is None or p.strategy == strategy]
        names = self.names(p.token_id for p in reports)
        snap = self.snapshot()
        marks = snap.marks if snap is not None else {}
        out = []
        for p in reports:
            n = _named(p.token_id, names)
            mark = p.payout if p.payout is not None else marks.get(p.token_id)
            if p.size == 0:
                mark = None
            value = p.size * mark if mark is not None else None
            unrealized = (mark - p.avg_cost) * p.size if mark is not None else None
            out.append(
                PositionView(
                    strategy=p.strategy,
                    token_id=p.token_id,
                    market=n.market,
                    outcome=n.outcome,
                    slug=n.slug,
                    size=p.size,
                    avg_cost=p.avg_cost,
                    cost_basis=p.cost_basis,
                    mark=mark,
                    value=value,
                    unrealized_pnl=unrealized,
                    realized_pnl=p.realized_pnl,
                    pnl=p.realized_pnl + (unrealized or ZERO),
                    fees_paid=p.fees_paid,
                    payout=p.payout,
                    updated_at=p.updated_at,
                )
            )
        return out

    # -- orders -------------------------------------------------------------------------------

    def orders_view(
        self, *, open_only: bool = False, limit: int = 20, strategy: str | None = None
    ) -> list[OrderView]:
        """The newest `limit` orders, each with its average fill price and fees (from its
        fills that did not fail)."""
        rows = self.orders(open_only=open_only, limit=limit, strategy=strategy)
        names = self.names(r.token_id for r in rows)
        by_cid: dict[str, list[tuple[Decimal, Decimal, Decimal]]] = {}
        by_vid: dict[str, list[tuple[Decimal, Decimal, Decimal]]] = {}
        cids = [r.client_order_id for r in rows]
        vids = [r.venue_order_id for r in rows if r.venue_order_id]
        for i in range(0, max(len(cids), 1), 400):
            chunk_c, chunk_v = cids[i : i + 400], vids[i : i + 400]
            if not chunk_c and not chunk_v:
                break
            for f in self._rows(
                "SELECT client_order_id, venue_order_id, price, size, fee FROM fills"
                f" WHERE status != ? AND (client_order_id IN ({','.join('?' * len(chunk_c))})"
                f" OR venue_order_id IN ({','.join('?' * len(chunk_v))}))",
                [TradeStatus.FAILED.value, *chunk_c, *chunk_v],
            ):
                leg = (_dec(f["price"]), _dec(f["size"]), _dec(f["fee"]))
                if f["client_order_id"]:
                    by_cid.setdefault(str(f["client_order_id"]), []).append(leg)
                else:
                    by_vid.setdefault(str(f["venue_order_id"]), []).append(leg)
        out = []
        for r in rows:
            legs = by_cid.get(r.client_order_id, []) + (
                by_vid.get(r.venue_order_id, []) if r.venue_order_id else []
            )
            shares = sum((s for _, s, _ in legs), ZERO)
            avg = sum((p * s for p, s, _ in legs), ZERO) / shares if shares else None
            n = _named(r.token_id, names)
            out.append(
                OrderView(
                    created_at=r.created_at,
                    client_order_id=r.client_order_id,
                    strategy=r.strategy,
                    token_id=r.token_id,
                    market=n.market,
                    outcome=n.outcome,
                    side=r.side,
                    order_type=r.order_type,
                    status=r.status,
                    price=_dec(r.price),
                    size=_dec(r.size),
                    size_matched=_dec(r.size_matched),
                    avg_fill_price=avg,
                    fees=sum((fee for _, _, fee in legs), ZERO),
                    venue_order_id=r.venue_order_id,
                    reason=r.reason,
                    detail=r.detail,
                    updated_at=r.updated_at,
                    daemon=r.daemon_id,
                )
            )
        return out

    # -- trades and pnl -----------------------------------------------------------------------

    def _all_trades(self) -> list[TradeView]:
        """Every journaled fill with its PnL, in recorded order."""
        rows = self._rows(
            "SELECT trade_id, client_order_id, strategy, token_id, side, price, size, fee, role,"
            " status, ts FROM fills ORDER BY rowid"
        )
        names = self.names({str(r["token_id"]) for r in rows})
        books: dict[str, dict[str, Position]] = {}
        out = []
        for r in rows:
            token, strategy = str(r["token_id"]), str(r["strategy"])
            side, price, size, fee = (
                Side(r["side"]),
                _dec(r["price"]),
                _dec(r["size"]),
                _dec(r["fee"]),
            )
            book = books.setdefault(token, {})
            before = book.get(strategy) or Position(token_id=token, strategy=strategy)
            failed = r["status"] == TradeStatus.FAILED.value
            pnl: Decimal | None = None
            after = before
            if not failed:
                after = book[strategy] = before.apply(side, price, size, fee)
                pnl = after.realized_pnl - before.realized_pnl
                if strategy == UNATTRIBUTED and side is Side.SELL and size > before.size:
                    for p, _ in spill(book.values(), size - before.size, price):
                        book[p.strategy] = p
            n = _named(token, names)
            ts = str(r["ts"])
            out.append(
                TradeView(
                    at=ts,
                    day=utc_day(ts),
                    strategy=strategy,
                    token_id=token,
                    market=n.market,
                    outcome=n.outcome,
                    side=side.value,
                    price=price,
                    size=size,
                    notional=price * size,
                    fee=fee,
                    role=str(r["role"]),
                    status=str(r["status"]),
                    pnl=pnl,
                    position_after=after.size,
                    trade_id=str(r["trade_id"]),
                    client_order_id=r["client_order_id"],
                )
            )
        return out

    def trades(
        self, *, strategy: str | None = None, day: date | None = None, limit: int = 50
    ) -> list[TradeView]:
        """The newest `limit` trades (of one strategy, on one UTC day), newest first."""
        want = day.isoformat() if day is not None else None
        picked = [
            t
            for t in self._all_trades()
            if (strategy is None or t.strategy == strategy)
            and (want is None or t.day == want)
            and self.in_scope(t.strategy)
        ]
        return list(reversed(picked))[: max(1, min(limit, MAX_TRADES))]

    def pnl_days(self, *, strategy: str | None = None, days: int | None = None) -> list[PnlDay]:
        """Realized PnL, fees, trades and pUSD bought and sold per UTC day and strategy,
        newest day first (the last `days` days that had trades, or all)."""
        by: dict[tuple[str, str], PnlDay] = {}
        for t in self._all_trades():
            if t.pnl is None or (strategy is not None and t.strategy != strategy):
                continue
            if not self.in_scope(t.strategy):
                continue
            d = by.setdefault((t.day, t.strategy), PnlDay(t.day, t.strategy))
            d.trades += 1
            if t.side == Side.BUY.value:
                d.bought += t.notional
            else:
                d.sold += t.notional
            d.fees += t.fee
            d.realized_pnl += t.pnl
        ordered = sorted(by.values(), key=lambda d: (d.day, d.strategy == UNATTRIBUTED, d.strategy))
        ordered.sort(key=lambda d: d.day, reverse=True)  # stable: strategy order kept per day
        if days is not None:
            keep = sorted({d.day for d in ordered}, reverse=True)[:days]
            ordered = [d for d in ordered if d.day in keep]
        return ordered
