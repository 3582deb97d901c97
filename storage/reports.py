"""Read-only reports over the daemon's database: what operators (the CLI) and the demo summary see.

This is the one read model outside the daemon: it opens the database read-only
(`storage.engine.open_read_only`: the SQLite file `mode=ro` and `query_only`, WAL letting it read
while the daemon writes; or a read-only PostgreSQL session), never creates, migrates or writes
it, and hands back plain records with `Decimal` money. Every reading the CLI or the demo prints
comes from here, so no SQL lives outside `storage/`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Self

from errors import ReportError
from models import TERMINAL_STATUSES, UNATTRIBUTED, Side
from storage.keys import DEFAULT_DAEMON_ID, RESOLUTIONS_KEY, TRADING_STATE_KEY, daemon_key

# Terminal statuses, in a fixed order, as SQL parameters.
_ZERO: Final = Decimal(0)
_TERMINAL: Final[tuple[str, ...]] = tuple(sorted(s.value for s in TERMINAL_STATUSES))


@dataclass(frozen=True)
class PositionReport:
    """One strategy's position in one token with a size or realized PnL, as the journaled
    fills of its orders moved it (`strategy` is `unattributed` for holdings no order of ours
    explains)."""

    strategy: str
    token_id: str
    size: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal
    updated_at: str
    payout: Decimal | None = None
    """Set when the token's market resolved: what a share redeems for (1, 0, 0.5)."""
    fees_paid: Decimal = Decimal(0)
    """Taker fees the position's journaled fills paid (in the cost basis and PnL already)."""

    @property
    def cost_basis(self) -> Decimal:
        return self.size * self.avg_cost

    @property
    def redeemable(self) -> Decimal:
        """Shares x payout of a resolved position (value, not cash, until redeemed on chain)."""
        return self.size * self.payout if self.payout is not None and self.size > 0 else _ZERO


@dataclass(frozen=True)
class OrderReport:
    """One journaled order, its fields as stored (money as the text the journal wrote)."""

    client_order_id: str
    strategy: str
    token_id: str
    side: str
    price: str
    size: str
    size_matched: str
    order_type: str
    status: str
    venue_order_id: str | None
    reason: str
    detail: str
    created_at: str
    updated_at: str
    daemon_id: str = DEFAULT_DAEMON_ID
    """The daemon that journaled it."""


@dataclass(frozen=True)
class StrategySummary:
    """One strategy's positions from the database: open positions, cost basis, realized PnL,
    taker fees paid and redeemable value (pUSD, as exact decimal text)."""

    positions: int
    cost_basis: str
    realized_pnl: str
    fees_paid: str
    redeemable: str


@dataclass(frozen=True)
class DbSummary:
    """The database part of `status`: trading state, order and fill counts, positions, PnL."""

    trading_state: str | None
    state_reason: str | None
    orders_by_status: dict[str, int]
    open_orders: int
    fills: int
    positions: int
    realized_pnl: str
    last_order_at: str | None
    redeemable: str = "0"
    """Shares x payout of positions in resolved markets, in pUSD; not cash."""
    fees_paid: str = "0"
    by_strategy: dict[str, StrategySummary] = field(default_factory=dict)
    """Positions per strategy, `unattributed` included when it holds or held anything."""
    daemon_id: str | None = None
    """The daemon these figures are of (`DAEMON_ID`), or None for every daemon's."""
    daemons: list[str] = field(default_factory=list)
    """Every daemon that has journaled an order in this database."""


@dataclass(frozen=True)
class OrderOutcomes:
    """How the journaled orders ended, as a trader reads it, and how many each strategy sent.

    A FAK that traded part of its size and had the rest killed ends CANCELED at the venue; it is
    counted as `PARTIALLY_FILLED_REST_CANCELED`.
    """

    by_outcome: dict[str, int]
    by_strategy: dict[str, int]


@dataclass(frozen=True)
class FillTotals:
    """Every journaled fill: how many, and the shares bought and sold."""

    count: int
    bought: Decimal
    sold: Decimal
    fees: Decimal = Decimal(0)


@dataclass(frozen=True)
class FillReport:
    """One journaled fill: our part of one venue trade, for one of our venue orders."""

    trade_id: str
    venue_order_id: str
    token_id: str
    side: str
    price: Decimal
    size: Decimal
    fee: Decimal
    role: str
    status: str
    strategy: str = UNATTRIBUTED
    """The strategy of our order the fill belongs to (`unattributed` if none)."""


def _dec(text: str | None) -> Decimal:
    try:
        return Decimal(text) if text is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


class Reports:
    """A read-only connection to the database file and the reports read through it.

    Use as a context manager: `with Reports.open(path) as reports: reports.positions()`.
    Every failure to read raises `ReportError`.
    """

    def __init__(self, conn: sqlite3.Connection, daemon_id: str | None = None) -> None:
        self._conn = conn
        self.daemon_id = daemon_id  # None: every daemon's rows
        self._owners: dict[str, str] | None = None

    @classmethod
    def open(
        cls, db_path: Path, database_url: str | None = None, *, daemon_id: str | None = None
    ) -> Self:
        """Open the daemon's database read-only (`database_url`'s PostgreSQL database when
        given, else the SQLite file `db_path`); never create, migrate or write it. With
        `daemon_id`, the reports are that daemon's (see `in_scope`); without, every daemon's."""
        from storage.engine import describe, open_read_only

        where = describe(db_path=db_path.expanduser().resolve(), database_url=database_url)
        conn = open_read_only(db_path=db_path, database_url=database_url)
        try:
            conn.execute("SELECT 1 FROM orders LIMIT 1")
        except sqlite3.Error as e:
            conn.close()
            raise ReportError(f"cannot read the database {where}: {e}") from None
        try:
            conn.execute("SELECT strategy FROM positions LIMIT 1")
        except sqlite3.Error:
            conn.close()
            raise ReportError(
                f"the database {where} predates per-strategy positions: start the daemon of this"
                " version once to migrate it"
            ) from None
        return cls(conn, daemon_id)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._conn.execute(sql, params))
        except sqlite3.Error as e:
            raise ReportError(f"cannot read the database: {e}") from None

    # -- which daemon ------------------------------------------------------------------------

    def strategy_daemons(self) -> dict[str, str]:
        """Each strategy's daemon: the one that journaled its latest order (a strategy taken
        over by another daemon is the new holder's)."""
        if self._owners is None:
            rows = self._rows(
                "SELECT strategy, daemon_id FROM orders"
                " WHERE rowid IN (SELECT MAX(rowid) FROM orders GROUP BY strategy)"
            )
            self._owners = {str(r[0]): str(r[1]) for r in rows}
        return self._owners

    def daemons(self) -> list[str]:
        """Every daemon that has journaled an order, by name."""
        return [str(r[0]) for r in self._rows("SELECT DISTINCT daemon_id FROM orders ORDER BY 1")]

    def in_scope(self, strategy: str) -> bool:
        """True if `strategy`'s rows belong in these reports: every strategy without a daemon
        filter; with one, that daemon's strategies and the `unattributed` holdings (the
        account's, no daemon's: shown to every daemon)."""
        if self.daemon_id is None or strategy == UNATTRIBUTED:
            return True
        return self.strategy_daemons().get(strategy) == self.daemon_id

    def _daemon_sql(self, where: list[str], params: list[Any]) -> None:
        if self.daemon_id is not None:
            where.append("daemon_id = ?")
            params.append(self.daemon_id)

    # -- reports ------------------------------------------------------------------------------

    def positions(self) -> list[PositionReport]:
        """Positions with a size or realized PnL, by strategy then token id (with the payout if
        resolved); `unattributed` holdings last."""
        payouts = self.payouts()
        out = []
        for r in self._rows(
            "SELECT strategy, token_id, size, avg_cost, realized_pnl, updated_at FROM positions"
            " ORDER BY strategy = ?, strategy, token_id",
            (UNATTRIBUTED,),
        ):
            size, avg, pnl = _dec(r["size"]), _dec(r["avg_cost"]), _dec(r["realized_pnl"])
            if size == 0 and pnl == 0:
                continue
            strategy, token = str(r["strategy"]), str(r["token_id"])
            if not self.in_scope(strategy):
                continue
            out.append(
                PositionReport(
                    strategy,
                    token,
                    size,
                    avg,
                    pnl,
                    r["updated_at"],
                    payouts.get(token),
                    self._fees(token, strategy=strategy),
                )
            )
        return out

    def payouts(self) -> dict[str, Decimal]:
        """Payout per token of the resolved markets the daemon knows of."""
        rows = self._rows("SELECT value FROM daemon_state WHERE key = ?", (RESOLUTIONS_KEY,))
        try:
            stored = json.loads(rows[0][0]) if rows else {}
            return {str(t): Decimal(str(d["payout"])) for t, d in stored.items()}
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
            raise ReportError(f"cannot read the database: resolutions: {e}") from None

    def orders(
        self, *, open_only: bool = False, limit: int = 20, strategy: str | None = None
    ) -> list[OrderReport]:
        """The newest `limit` orders from the journal, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if open_only:
            where.append(f"status NOT IN ({','.join('?' * len(_TERMINAL))})")
            params.extend(_TERMINAL)
        if strategy:
            where.append("strategy = ?")
            params.append(strategy)
        self._daemon_sql(where, params)
        sql = (
            "SELECT client_order_id, strategy, token_id, side, price, size, size_matched,"
            " order_type, status, venue_order_id, reason, detail, created_at, updated_at,"
            " daemon_id FROM orders"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY rowid DESC LIMIT ?"
        )
        return [OrderReport(**dict(r)) for r in self._rows(sql, [*params, limit])]

    def summary(self) -> DbSummary:
        """Trading state, orders by status, open orders, fills, open positions, realized PnL."""
        where: list[str] = []
        params: list[Any] = []
        self._daemon_sql(where, params)
        scope = " WHERE " + " AND ".join(where) if where else ""
        counts = {
            str(r[0]): int(r[1])
            for r in self._rows(
                f"SELECT status, COUNT(*) FROM orders{scope} GROUP BY status", params
            )
        }
        key = daemon_key(TRADING_STATE_KEY, self.daemon_id or DEFAULT_DAEMON_ID)
        state_rows = self._rows("SELECT value FROM daemon_state WHERE key = ?", (key,))
        try:
            state: dict[str, Any] = json.loads(state_rows[0][0]) if state_rows else {}
        except ValueError as e:
            raise ReportError(f"cannot read the database: {e}") from None
        fills = sum(1 for r in self._rows("SELECT strategy FROM fills") if self.in_scope(r[0]))
        fees = self._fees()
        pos = [
            r
            for r in self._rows("SELECT size, realized_pnl, strategy FROM positions")
            if self.in_scope(str(r[2]))
        ]
        last = self._rows(f"SELECT MAX(created_at) FROM orders{scope}", params)[0][0]
        reports = self.positions()
        by_strategy: dict[str, StrategySummary] = {}
        for name in dict.fromkeys(p.strategy for p in reports):
            mine = [p for p in reports if p.strategy == name]
            by_strategy[name] = StrategySummary(
                positions=sum(1 for p in mine if p.size != 0),
                cost_basis=str(sum((p.cost_basis for p in mine), _ZERO)),
                realized_pnl=str(sum((p.realized_pnl for p in mine), _ZERO)),
                fees_paid=str(sum((p.fees_paid for p in mine), _ZERO)),
                redeemable=str(sum((p.redeemable for p in mine), _ZERO)),
            )
        return DbSummary(
            trading_state=state.get("state") if state_rows else None,
            state_reason=state.get("reason") if state_rows else None,
            orders_by_status=dict(sorted(counts.items())),
            open_orders=sum(n for s, n in counts.items() if s not in _TERMINAL),
            fills=fills,
            positions=sum(1 for p in pos if _dec(p[0]) != 0),
            realized_pnl=str(sum((_dec(p[1]) for p in pos), Decimal(0))),
            last_order_at=last,
            redeemable=str(sum((p.redeemable for p in reports), _ZERO)),
            fees_paid=str(fees),
            by_strategy=by_strategy,
            daemon_id=self.daemon_id,
            daemons=self.daemons(),
        )

    def order_outcomes(self) -> OrderOutcomes:
        """Every journaled order by outcome and by strategy, each sorted by name."""
        outcomes: dict[str, int] = {}
        by_strategy: dict[str, int] = {}
        where: list[str] = []
        params: list[Any] = []
        self._daemon_sql(where, params)
        mine = " WHERE " + " AND ".join(where) if where else ""
        for r in self._rows(f"SELECT strategy, status, size_matched FROM orders{mine}", params):
            status, matched = str(r["status"]), _dec(r["size_matched"])
            if status == "CANCELED" and matched > 0:
                status = "PARTIALLY_FILLED_REST_CANCELED"
            outcomes[status] = outcomes.get(status, 0) + 1
            by_strategy[str(r["strategy"])] = by_strategy.get(str(r["strategy"]), 0) + 1
        return OrderOutcomes(dict(sorted(outcomes.items())), dict(sorted(by_strategy.items())))

    def fill_totals(self) -> FillTotals:
        """How many fills are journaled and the shares they bought and sold."""
        rows = [
            r
            for r in self._rows("SELECT side, size, fee, strategy FROM fills")
            if self.in_scope(r[3])
        ]
        bought = sum((_dec(r[1]) for r in rows if r[0] == Side.BUY.value), Decimal(0))
        sold = sum((_dec(r[1]) for r in rows if r[0] == Side.SELL.value), Decimal(0))
        fees = sum((_dec(r[2]) for r in rows), Decimal(0))
        return FillTotals(count=len(rows), bought=bought, sold=sold, fees=fees)

    def fills(self) -> list[FillReport]:
        """Every journaled fill, in the order it was recorded (failed ones too: see `status`)."""
        return [
            FillReport(
                trade_id=str(r["trade_id"]),
                venue_order_id=str(r["venue_order_id"]),
                token_id=str(r["token_id"]),
                side=str(r["side"]),
                price=_dec(r["price"]),
                size=_dec(r["size"]),
                fee=_dec(r["fee"]),
                role=str(r["role"]),
                status=str(r["status"]),
                strategy=str(r["strategy"]),
            )
            for r in self._rows(
                "SELECT trade_id, venue_order_id, token_id, side, price, size, fee, role, status,"
                " strategy FROM fills ORDER BY rowid"
            )
            if self.in_scope(str(r["strategy"]))
        ]

    def _fees(self, token_id: str | None = None, *, strategy: str | None = None) -> Decimal:
        """Fees paid by the fills that did not fail (of one strategy's position in one token,
        or all), summed as Decimal (SQL's SUM would go through floating point)."""
        if token_id is None:
            rows = self._rows("SELECT fee, strategy FROM fills WHERE status != 'FAILED'")
        else:
            rows = self._rows(
                "SELECT fee, strategy FROM fills WHERE status != 'FAILED' AND token_id = ?"
                " AND strategy = COALESCE(?, strategy)",
                (token_id, strategy),
            )
        return sum((_dec(r[0]) for r in rows if self.in_scope(str(r[1]))), Decimal(0))
