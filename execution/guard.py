"""The trading guard: whether new orders may go out, and why not.

It holds the trading state (ACTIVE, REDUCING, HALTED) and its reason, persisted so a halt
survives restarts until an operator resumes; the kill-switch file; the daily loss limit (halt at
the limit, one warning a day at a fraction of it) with today's PnL baseline persisted; the hold
on new resting orders while exchange heartbeats are lapsed (in memory: it ends when heartbeats
recover and a reconcile finished, never by hand); and the view of the venue circuit breaker that
`/health` and the metrics show. Cancels never ask it.

On a venue account shared with other daemons (`share_account`, `execution.shared_account`) a
halt is the account's: halting here halts the account, resuming here clears it, another
daemon's halt of the account reads as HALTED here, and the daily loss limit is read against the
account's PnL of the day.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import structlog

from errors import OrderRejected, RefusalSource, TransientError, VenueUnavailable
from execution.positions import PositionBook
from execution.risk import TradingState
from execution.shared_account import SharedAccount
from models import utc_day
from observability.metrics import BREAKER_STATE_VALUE, TRADING_STATE_VALUE, Metrics
from resilience import BreakerState, CircuitBreaker, Clock
from storage import TRADING_STATE_KEY, Repositories
from storage.keys import daemon_key

log = structlog.get_logger("executor")

STATE_KEY = TRADING_STATE_KEY
DAY_KEY = "daily_pnl_baseline"


class TradingGuard:
    """Trading state, kill switch, daily loss limit and the breaker's state as health reads it."""

    def __init__(
        self,
        *,
        repos: Repositories,
        positions: PositionBook,
        metrics: Metrics,
        breaker: CircuitBreaker,
        clock: Clock,
        kill_switch_path: Path | None = None,
        daily_loss_limit: Decimal = Decimal("100"),
        daily_loss_warn_fraction: float = 0.8,
    ) -> None:
        self._store = repos.state
        self._audit = repos.audit
        # Per daemon: one daemon's halt is not another's (several daemons on one database).
        self._state_key = daemon_key(STATE_KEY, repos.daemon_id)
        self._day_key = daemon_key(DAY_KEY, repos.daemon_id)
        self.positions = positions
        self.metrics = metrics
        self.breaker = breaker
        self.clock = clock
        self.kill_switch_path = kill_switch_path
        self.daily_loss_limit = daily_loss_limit
        self.daily_loss_warn_fraction = daily_loss_warn_fraction
        # This daemon's own state; `state` and `reason` also show the shared account's halt.
        self._state = TradingState.ACTIVE
        self._reason = ""
        self.account: SharedAccount | None = None
        self._halt_shared = False  # this daemon's halt is the shared account's (written there)
        self._warned_day: str | None = None
        self._persisted_day: str | None = None
        self._forced_open_s: float | None = None  # how long the last force_open lasts
        # Why new resting (GTC/GTD) orders are held, or None: see `execution.heartbeat`.
        self.resting_hold: str | None = None
        self._held: tuple[TradingState, str] | None = None  # the state before `hold`
        # Why the stop must leave resting orders alone (not even CANCEL_ON_SHUTDOWN), or None:
        # another process took the writer lock and runs as this daemon (`wiring.writer_lock`).
        self.keep_orders: str | None = None

    def share_account(self, account: SharedAccount) -> None:
        """Other daemons trade this venue account: halts and the daily loss are the account's."""
        self.account = account

    @property
    def state(self) -> TradingState:
        """The trading state: HALTED too while the shared account is halted."""
        if self.account is not None and self.account.halted_by is not None:
            return TradingState.HALTED
        return self._state

    @property
    def reason(self) -> str:
        halt = self.account.halt if self.account is not None else None
        if halt is not None and self._state is not TradingState.HALTED:
            return halt
        return self._reason

    async def load(self) -> None:
        """Restore the persisted trading state and, if it is from today, the PnL baseline."""
        raw = await self._store.get(self._state_key)
        if raw:
            saved = orjson.loads(raw)
            self._state = TradingState(saved.get("state", "ACTIVE"))
            self._reason = str(saved.get("reason", ""))
        if self.account is not None:
            await self.account.load()
            halted = self._state is TradingState.HALTED
            self._halt_shared = halted and self.account.halted_by is not None
        day_raw = await self._store.get(self._day_key)
        if day_raw:
            d = orjson.loads(day_raw)
            if d.get("day") == utc_day():
                self.positions.set_day_baseline(d["day"], Decimal(d["baseline"]))
                self._persisted_day = day_raw

    # trading state ------------------------------------------------------------------------
    async def set_state(self, state: TradingState, reason: str, *, actor: str = "") -> None:
        """Move to `state`, persisted and audited; `actor` (who asked: `http`,
        `telegram:<chat id>`; empty for the daemon itself) goes into the audit entry."""
        if state is TradingState.HALTED and self.account is not None:
            # First, and even if this daemon is halted already: the account may have been
            # resumed elsewhere since. No order of the account is journaled after it.
            await self.account.halt_account(reason)
        self._halt_shared = state is TradingState.HALTED and self.account is not None
        if state is self._state and reason == self._reason:
            return
        old = self._state
        body = orjson.dumps({"state": state.value, "reason": reason}).decode()
        move: dict[str, object] = {"from": old, "to": state, "reason": reason}
        if actor:
            move["actor"] = actor
        await self._store.set(self._state_key, body, audit=("trading_state", move))
        self._state, self._reason = state, reason
        self.metrics.trading_state.set(TRADING_STATE_VALUE[self.state.value])
        log.warning("trading_state_changed", old=old, new=state, reason=reason)

    async def resume(self, reason: str, *, actor: str = "") -> None:
        """Back to ACTIVE with a fresh breaker; refused while the kill-switch file exists."""
        if self.kill_switch_on():
            raise OrderRejected(
                "kill-switch file is present; remove it first", source=RefusalSource.HALTED
            )
        self.breaker.reset()
        if self.account is not None:
            await self.account.resume_account()
        await self.set_state(TradingState.ACTIVE, reason, actor=actor)

    def storage_failed(self) -> None:
        """A database write failed: halt in memory (the state row cannot be written either).
        It stays halted until an operator resumes, once writes succeed again."""
        self._state, self._reason = TradingState.HALTED, "storage error"
        self._halt_shared = False  # not written to the account: this daemon's alone
        self.metrics.trading_state.set(TRADING_STATE_VALUE["HALTED"])

    def hold(self, reason: str) -> None:
        """Halt in memory for `reason`, a fault the daemon watches and clears itself (its
        writer lock lost): not persisted, so a restart does not inherit it, and not written to
        a shared account. An existing halt is left as it is (its reason too)."""
        if self._state is TradingState.HALTED:
            return
        self._held = (self._state, self._reason)
        self._state, self._reason = TradingState.HALTED, reason
        self._halt_shared = False
        self.metrics.trading_state.set(TRADING_STATE_VALUE["HALTED"])
        log.warning("trading_state_changed", old=self._held[0], new=self._state, reason=reason)

    def unhold(self, reason: str) -> bool:
        """End a `hold(reason)` if it is still the halt in force (no operator halt, storage
        error or other cause replaced it): back to the state before it. True if it ended."""
        held, self._held = self._held, None
        if held is None or self._state is not TradingState.HALTED or self._reason != reason:
            return False
        self._state, self._reason = held
        self.metrics.trading_state.set(TRADING_STATE_VALUE[self.state.value])
        log.warning(
            "trading_state_changed", old=TradingState.HALTED, new=self._state, reason=reason
        )
        return True

    def kill_switch_on(self) -> bool:
        p = self.kill_switch_path
        return p is not None and p.exists()

    async def check(self) -> None:
        """Kill switch and daily loss limit; persist today's PnL baseline when it changes."""
        if self.kill_switch_on() and self._state is not TradingState.HALTED:
            await self.set_state(TradingState.HALTED, "kill-switch file present")
        pnl = self.positions.daily_pnl()
        day, baseline = self.positions.day
        limit = self.daily_loss_limit
        whose = ""
        if self.account is not None:  # the account's: this daemon's own and the others'
            pnl, whose = self.account.daily_pnl(), " of the account, every daemon counted,"
        if pnl <= -limit and self._state is not TradingState.HALTED:
            await self.set_state(
                TradingState.HALTED, f"daily loss limit{whose} reached ({pnl} <= -{limit})"
            )
        elif pnl <= -limit * Decimal(str(self.daily_loss_warn_fraction)) and (
            self._warned_day != day
        ):
            self._warned_day = day
            log.warning("daily_loss_warning", pnl=str(pnl), limit=str(limit))
            await self._audit.append("daily_loss_warning", pnl=str(pnl), limit=str(limit))
        want = orjson.dumps({"day": day, "baseline": str(baseline)}).decode()
        if day and want != self._persisted_day:
            await self._store.set(self._day_key, want)
            self._persisted_day = want

    async def sync_account(self) -> None:
        """Sync the shared account's halt and daily PnL. While the kill-switch file is present
        the account is kept halted (a resume elsewhere does not outlast it); when another daemon
        resumed the account, this daemon's own halt ends too if it was the account's (a breach
        still there halts again at the next check, as after any resume; a `storage error` halt,
        held in memory only, stays)."""
        account = self.account
        if account is None:
            return
        was = account.halted_by
        await account.sync()
        if self.kill_switch_on():
            if account.halted_by is None:
                await account.halt_account("kill-switch file present")
        elif was is not None and account.halted_by is None and self._halt_shared:
            await self.set_state(TradingState.ACTIVE, "account resumed by another daemon")
        self.metrics.trading_state.set(TRADING_STATE_VALUE[self.state.value])
        self.metrics.account_halted.set(int(account.halted_by is not None))
        self.metrics.account_daily_pnl_usd.set(float(account.daily_pnl()))

    async def run_account_sync(self, interval_s: float = 1.0) -> None:
        """`sync_account` every `interval_s`, until cancelled."""
        while True:
            try:
                await self.sync_account()
            except Exception:  # the task boundary: log, count, sync again
                self.metrics.venue_errors_total.labels("account_sync", "error").inc()
                log.exception("account_sync_failed")
            await self.clock.sleep(interval_s)

    # resting orders while heartbeats are lapsed -----------------------------------------------
    def hold_resting(self, reason: str) -> None:
        """Refuse new resting orders with `reason` (marketable orders and cancels still go)."""
        if self.resting_hold is None:
            log.warning("resting_orders_held", reason=reason)
        self.resting_hold = reason

    def release_resting(self) -> None:
        if self.resting_hold is not None:
            log.warning("resting_orders_allowed")
        self.resting_hold = None

    def refuses_resting(self, rests: bool) -> str | None:
        """The hold's reason if an order that `rests` must be refused now, else None."""
        return self.resting_hold if rests else None

    def refusal(self, *, rests: bool) -> str | None:
        """Why a new order must be refused now (halted, or a resting one held), else None."""
        if self.state is TradingState.HALTED:
            return f"trading is halted: {self.reason}"
        held = self.refuses_resting(rests)
        return f"new resting orders are held: {held}" if held is not None else None

    # venue breaker ------------------------------------------------------------------------
    def venue_failed(self, e: TransientError) -> None:
        """A send failed on a definite venue error: count it against the breaker, and hold new
        orders for the venue's Retry-After when it said how long it is unavailable."""
        self.breaker.record_failure()
        if isinstance(e, VenueUnavailable) and e.retry_after:
            self._forced_open_s = e.retry_after
            self.breaker.force_open("venue unavailable", for_s=e.retry_after)
        self.metrics.venue_errors_total.labels("post_order", type(e).__name__).inc()

    def breaker_state(self) -> BreakerState:
        """The breaker's state, with an OPEN breaker whose wait is over read as HALF_OPEN.

        `CircuitBreaker.state` stays OPEN until the next `allow()` (an order) moves it; asking
        `allow()` here would use up the probe slot the next order needs.
        """
        b = self.breaker
        if b.state is not BreakerState.OPEN or b.opened_at is None:
            return b.state
        # Opened on failures: `reset_timeout_s`; forced by `venue_failed`: Retry-After.
        open_for = b.reset_timeout_s if b.reason == "failures" else self._forced_open_s
        if open_for is not None and self.clock.monotonic() - b.opened_at >= open_for:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def on_breaker_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """Hook for `CircuitBreaker(on_state_change=...)`."""
        self.metrics.breaker_state.labels(name).set(BREAKER_STATE_VALUE[new.name])
        if new is BreakerState.OPEN:
            self.metrics.breaker_opened_total.labels(name).inc()
        log.warning("breaker_state_changed", breaker=name, old=old.value, new=new.value)
