"""The daemon's account at a glance: a snapshot for the read model and a periodic log line.

Every `SNAPSHOT_INTERVAL_S` the summary service writes what only the running daemon knows —
marks of the held tokens, today's PnL, unrealized PnL, exposure, the last pUSD balance read,
feed health — to `daemon_state` (`account_snapshot`, under `storage.keys.daemon_key`: each
daemon its own row on a shared database), where `storage.views` (the CLI, chat, a
web console) reads it. Every `LOG_SUMMARY_INTERVAL_S` (0: never) it logs one `summary` line:
trading state, PnL today, realized and unrealized PnL, exposure, open orders, fills since the
last line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Protocol

import structlog

from config import Settings
from execution.positions import PositionBook
from observability.sidecar import Health
from storage import Database, Repositories
from storage.keys import ACCOUNT_SNAPSHOT_KEY, DEFAULT_DAEMON_ID, daemon_key
from strategies.base import Strategy
from wiring.stage import Service

log = structlog.get_logger("summary")

SNAPSHOT_INTERVAL_S: Final = 5.0
"""How often the account snapshot is written (one small row)."""


class LiveExecutor(Protocol):
    """The executor as the summary reads it."""

    @property
    def state(self) -> Any: ...

    @property
    def state_reason(self) -> str: ...

    @property
    def positions(self) -> PositionBook: ...

    @property
    def risk(self) -> Any: ...


def snapshot(
    ex: LiveExecutor,
    *,
    feeds: dict[str, bool],
    strategies: list[str],
    daily_loss_limit: Decimal,
    now: datetime,
    daemon_id: str = DEFAULT_DAEMON_ID,
) -> dict[str, Any]:
    """The account snapshot as JSON-ready data (Decimals as strings)."""
    book = ex.positions
    held = sorted({p.token_id for p in book.positions() if p.size > 0})
    marks = {t: str(m) for t in held if (m := book.mark(t)) is not None}
    funds = getattr(ex.risk, "funds", None)
    balance = getattr(funds, "balance", None)
    names = sorted(set(strategies) | set(book.strategies()))
    return {
        "at": now.isoformat(timespec="seconds"),
        "daemon": daemon_id,
        "state": str(ex.state.value),
        "reason": ex.state_reason,
        "pnl_today": str(book.daily_pnl(now)),
        "daily_loss_limit": str(daily_loss_limit),
        "realized": str(book.realized()),
        "unrealized": str(book.unrealized()),
        "exposure": str(book.exposure()),
        "balance": None if balance is None else str(balance),
        "open_orders": book.open_count,
        "marks": marks,
        "feeds": feeds,
        "strategies": {
            n: {
                "realized": str(book.realized(strategy=n)),
                "unrealized": str(book.unrealized(strategy=n)),
                "exposure": str(book.exposure(strategy=n)),
            }
            for n in names
        },
    }


def summary_fields(snap: dict[str, Any], fills: int) -> dict[str, Any]:
    """The fields of one `summary` log line."""
    return {
        "state": snap["state"],
        "pnl_today": snap["pnl_today"],
        "daily_loss_limit": snap["daily_loss_limit"],
        "realized": snap["realized"],
        "unrealized": snap["unrealized"],
        "exposure": snap["exposure"],
        "balance": snap["balance"],
        "open_orders": snap["open_orders"],
        "fills": fills,
    }


class Summary:
    """Write the account snapshot every `snapshot_s`; log a `summary` line every `log_s`."""

    def __init__(
        self,
        *,
        executor: Callable[[], LiveExecutor | None],
        health: Health,
        db: Database,
        repos: Repositories,
        settings: Callable[[], Settings],
        strategies: Callable[[], list[str]],
        snapshot_s: float = SNAPSHOT_INTERVAL_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._executor = executor
        self._health = health
        self._db = db
        self._repos = repos
        self._settings = settings
        self._strategies = strategies
        self._snapshot_s = snapshot_s
        self._now = now
        self._fill_mark: int | None = None
        self._last_line: float | None = None

    async def _feeds(self) -> dict[str, bool]:
        _, body = await self._health.evaluate()
        checks: dict[str, Any] = body.get("checks", {})
        return {k: bool(v.get("ok")) for k, v in checks.items() if k.startswith("feed:")}

    async def _fills_since(self) -> int:
        row = await self._db.fetchone("SELECT COALESCE(MAX(rowid), 0) FROM fills")
        top = int(row[0]) if row is not None else 0
        if self._fill_mark is None:
            self._fill_mark = top
            return 0
        r = await self._db.fetchone(
            "SELECT COUNT(*) FROM fills WHERE rowid > ?", (self._fill_mark,)
        )
        self._fill_mark = top
        return int(r[0]) if r is not None else 0

    async def tick(self, *, line: bool) -> dict[str, Any] | None:
        """Write one snapshot (and log a line when `line`); None before the executor exists."""
        ex = self._executor()
        if ex is None:
            return None
        s = self._settings()
        snap = snapshot(
            ex,
            feeds=await self._feeds(),
            strategies=self._strategies(),
            daily_loss_limit=s.risk_daily_loss_limit,
            now=self._now(),
            daemon_id=s.daemon_id,
        )
        key = daemon_key(ACCOUNT_SNAPSHOT_KEY, s.daemon_id)
        await self._repos.state.set(key, json.dumps(snap))
        if line:
            log.info("summary", **summary_fields(snap, await self._fills_since()))
        return snap

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._fills_since()  # fills before the first line are not "since the last"
        self._last_line = loop.time()
        while True:
            every = self._settings().log_summary_interval_s
            due = every > 0 and loop.time() - self._last_line >= every
            try:
                await self.tick(line=due)
            except Exception:  # the task's loop boundary: log and go on
                log.exception("summary_failed")
            if due:
                self._last_line = loop.time()
            wait = self._snapshot_s
            if every > 0:
                wait = min(wait, max(self._last_line + every - loop.time(), 0.0))
            await asyncio.sleep(wait)


class _Daemon(Protocol):
    settings: Settings
    health: Health
    db: Database
    repos: Repositories
    strategies: list[Strategy]

    @property
    def executor(self) -> Any: ...


def build_summary(ctx: _Daemon, *, settings: Callable[[], Settings] | None = None) -> list[Service]:
    """The summary service (see the module docstring)."""
    summary = Summary(
        executor=lambda: ctx.executor,
        health=ctx.health,
        db=ctx.db,
        repos=ctx.repos,
        settings=settings or (lambda: ctx.settings),
        strategies=lambda: [s.name for s in ctx.strategies],
    )
    return [("summary", summary.run)]
