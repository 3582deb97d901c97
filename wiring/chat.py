"""Chat control wired into the daemon: the bot, what it reads, and the control path it uses.

Figures come from the CLI's read model (`storage.reports`, read-only, in a worker thread so the
loop never waits on SQLite) plus the executor's live state and today's PnL; control commands run
the sidecar's control path (`Sidecar.run_control`), the same handlers and audit entries as
`python -m orchestrator halt|resume|cancel-all`, with the chat as the actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Protocol

from config import Settings
from errors import ReportError
from observability.chat_config import ChatConfig
from observability.metrics import Metrics
from observability.notify import Notifier
from observability.sidecar import Sidecar
from storage import Repositories
from storage.accounts import AccountStatus, halted_text
from storage.activity import Activity, DayFills, FillNotice
from storage.market_names import MarketName
from storage.reports import DbSummary, PositionReport
from wiring.stage import Service

CENT = Decimal("0.01")
MAX_LINES = 30
RunControl = Callable[..., Awaitable[Mapping[str, Any]]]


class LiveState(Protocol):
    """The executor as the bot reads it (state, reason, today's marked PnL)."""

    @property
    def state_reason(self) -> str: ...

    @property
    def state(self) -> Any: ...

    @property
    def positions(self) -> Any: ...


def money(d: Decimal) -> str:
    """pUSD to the cent, for a chat message (the database keeps the exact figure)."""
    return str(d.quantize(CENT, rounding=ROUND_HALF_EVEN))


def short(token_id: str) -> str:
    """A token id as a chat line shows it: its last 8 digits."""
    return token_id if len(token_id) <= 10 else "…" + token_id[-8:]


Names = Mapping[str, MarketName]


def token_text(token_id: str, names: Names | None = None) -> str:
    """A token as a chat line names it: `question — outcome` when known, else its id's tail."""
    name = names.get(token_id) if names is not None else None
    return name.label(60) if name is not None else short(token_id)


@dataclass(frozen=True)
class Live:
    state: str
    reason: str
    today: Decimal | None


class DaemonDesk:
    """The `Desk` of the running daemon (see the module docstring): of `daemon_id`'s rows, the
    scope the CLI reads by default (its orders, strategies, fills and trading state, the
    unattributed holdings, and the shared accounts it trades on, summed over every daemon)."""

    def __init__(
        self,
        *,
        db_path: Path,
        database_url: str | None = None,
        daily_loss_limit: Decimal,
        mode: str,
        executor: Callable[[], LiveState | None],
        run_control: RunControl | None,
        daemon_id: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._daemon_id = daemon_id  # whose rows it reads (None: every daemon's)
        self._db_path = db_path
        self._database_url = database_url
        self._limit = daily_loss_limit
        self._mode = mode
        self._executor = executor
        self._run_control = run_control
        self._now = now
        self._mark: int | None = None

    def _live(self) -> Live | None:
        ex = self._executor()
        if ex is None:
            return None
        return Live(str(ex.state.value), ex.state_reason, ex.positions.daily_pnl())

    async def report(self, name: str) -> str:
        live = self._live()  # on the loop: the executor is not thread-safe
        today = self._now().astimezone(UTC).date()
        try:
            return await asyncio.to_thread(self._report, name, live, today)
        except ReportError as e:  # its message names the database and the problem, no secret
            return f"Cannot answer /{name}: {e}"

    def _report(self, name: str, live: Live | None, today: Any) -> str:
        with Activity.open(self._db_path, self._database_url, daemon_id=self._daemon_id) as db:
            if name == "status":
                return self.status(db.summary(), live, db.shared_accounts())
            if name == "positions":
                rows = db.positions()
                return positions_text(rows, db.names(p.token_id for p in rows))
            if name == "pnl":
                return self.pnl(db.summary(), db.positions(), live, db.shared_accounts())
            if name == "daily":
                return daily_text(db.fill_days(today))
            if name == "digest":
                day = db.fill_days(today, days=1)
                return f"polyd daily digest {today.isoformat()}\n" + "\n".join(
                    [self.status(db.summary(), live, db.shared_accounts()), *map(day_line, day)]
                )
        raise ValueError(f"no such report: {name}")

    def _today(self, live: Live | None, accounts: Sequence[AccountStatus] = ()) -> str:
        """Today's PnL; on a shared venue account the account's, summed over its daemons (the
        figure the daily loss limit reads), with each daemon's part and this daemon's book."""
        if live is None or live.today is None:
            own = "(not known yet)"
        else:
            own = money(live.today)
            if not accounts:
                return f"today's PnL: {own} (halts at -{money(self._limit)})"
        if not accounts:
            return f"today's PnL: {own}"
        lines = []
        for a in accounts:
            parts = ", ".join(f"{d} {money(v)}" for d, v in a.pnl_by_daemon.items())
            lines.append(
                f"today's PnL of account {short(a.account)}, every daemon: {money(a.daily_pnl)}"
                f" (halts at -{money(self._limit)}); {parts or 'no daemon wrote one yet'}"
            )
        return "\n".join([*lines, f"this daemon's book today: {own}"])

    def status(
        self, s: DbSummary, live: Live | None, accounts: Sequence[AccountStatus] = ()
    ) -> str:
        state = live.state if live is not None else (s.trading_state or "ACTIVE")
        reason = live.reason if live is not None else (s.state_reason or "")
        halted = next((a for a in accounts if a.halted_by is not None), None)
        if halted is not None:  # the account's halt stops this daemon too, synced or not
            state = "HALTED"
            reason = halted_text(str(halted.halted_by), halted.halt_reason, halted.halted_at or "?")
        head = f"polyd ({self._mode}): {state}" + (f" ({reason})" if reason else "")
        return "\n".join(
            [
                head,
                self._today(live, accounts),
                f"realized PnL: {money(Decimal(s.realized_pnl))}, fees paid: "
                f"{money(Decimal(s.fees_paid))}",
                f"open orders: {s.open_orders}, positions: {s.positions}, fills: {s.fills}",
                f"last order: {s.last_order_at or 'none'}",
            ]
        )

    def pnl(
        self,
        s: DbSummary,
        rows: list[PositionReport],
        live: Live | None,
        accounts: Sequence[AccountStatus] = (),
    ) -> str:
        by: dict[str, Decimal] = {}
        for p in rows:
            name = str(getattr(p, "strategy", "") or "all")
            by[name] = by.get(name, Decimal(0)) + p.realized_pnl
        lines = [
            f"realized PnL: {money(Decimal(s.realized_pnl))}",
            f"fees paid: {money(Decimal(s.fees_paid))}",
            f"redeemable (resolved markets): {money(Decimal(s.redeemable))}",
            self._today(live, accounts),
        ]
        if len(by) > 1:
            lines += [f"  {name}: {money(v)}" for name, v in sorted(by.items())]
        return "\n".join(lines)

    async def new_fills(self) -> list[str]:
        notices, names = await asyncio.to_thread(self._new_fills)
        return [fill_line(n, names) for n in notices]

    def _new_fills(self) -> tuple[list[FillNotice], Names]:
        with Activity.open(self._db_path, self._database_url, daemon_id=self._daemon_id) as db:
            if self._mark is None:
                self._mark = db.last_mark()
                return [], {}
            got = db.fills_after(self._mark)
            if got:
                self._mark = got[-1].mark
            return got, db.names(n.token_id for n in got)

    async def control(self, action: str, body: Mapping[str, Any], *, actor: str) -> str:
        if self._run_control is None:
            return "Control is not available in this daemon."
        result = await self._run_control(action, body, actor=actor)
        if result.get("refused"):
            return f"{action} refused: {result['refused']}"
        if "canceled" in result:
            return f"Canceled {result['canceled']} resting orders."
        return f"Trading is {result.get('trading_state')}."


def positions_text(rows: list[PositionReport], names: Names | None = None) -> str:
    held = [p for p in rows if p.size != 0]
    if not held:
        return "No open positions."
    lines = []
    for p in held[:MAX_LINES]:
        strategy = getattr(p, "strategy", "")
        who = f"{strategy} " if strategy else ""
        token = token_text(p.token_id, names)
        line = f"{who}{token}: {p.size.normalize():f} @ {p.avg_cost.normalize():f}"
        line += f", realized {money(p.realized_pnl)}"
        if p.payout is not None:
            line += f", resolved: pays {p.payout.normalize():f}"
        lines.append(line)
    if len(held) > MAX_LINES:
        lines.append(f"… and {len(held) - MAX_LINES} more")
    return "\n".join(lines)


def day_line(d: DayFills) -> str:
    return (
        f"{d.day}: {d.fills} fills, bought {money(d.bought)}, sold {money(d.sold)}, "
        f"fees {money(d.fees)}"
    )


def daily_text(days: list[DayFills]) -> str:
    return "Fills per UTC day (pUSD):\n" + "\n".join(day_line(d) for d in days)


def fill_line(n: FillNotice, names: Names | None = None) -> str:
    who = f"{n.strategy} " if n.strategy else ""
    failed = " (FAILED on chain)" if n.status == "FAILED" else ""
    return (
        f"fill: {who}{n.side} {n.size.normalize():f} of {token_text(n.token_id, names)} @ "
        f"{n.price.normalize():f}, fee {n.fee.normalize():f} ({n.role.lower()}){failed}"
    )


class _Daemon(Protocol):
    settings: Settings
    metrics: Metrics
    repos: Repositories
    notifier: Notifier
    sidecar: Sidecar | None

    @property
    def executor(self) -> Any: ...


def build_chat(ctx: _Daemon) -> list[Service]:
    """The daemon's chat bot, handed the notifier's messages and reloads; return its services
    (they idle without a bot token, so a reload can set one)."""
    from observability.chat import ChatBot  # python-telegram-bot loads with the daemon only

    s = ctx.settings
    desk = DaemonDesk(
        db_path=s.db_path,
        database_url=s.database_url,
        daily_loss_limit=s.risk_daily_loss_limit,
        mode=s.mode,
        executor=lambda: ctx.executor,
        run_control=ctx.sidecar.run_control if ctx.sidecar is not None else None,
        daemon_id=s.daemon_id,
    )
    bot = ChatBot(
        config=ChatConfig.from_settings(s),
        desk=desk,
        audit=ctx.repos.audit,
        metrics=ctx.metrics,
        mode=s.mode,
    )
    ctx.notifier.add_sink(bot.push, active=lambda: bot.config.enabled, reconfigure=bot.reconfigure)
    return bot.services()
