"""The exchange heartbeat loop and what the daemon does when heartbeats lapse.

The venue cancels every resting order of an API key that misses its heartbeat deadline (10 s,
per Polymarket/ts-sdk `packages/client/src/actions/order-heartbeats.ts`; the switch arms on the
first heartbeat). So once heartbeats fail the daemon cannot know which of its resting orders are
still there:

* After `max_failures` consecutive failures, or `lapse_after_s` (default 8 s, inside the venue's
  10 s) since the last success, the heartbeat is **lapsed**: every resting order is treated as
  canceled-unknown (kept in the journal with its reservation, as the venue may still hold it, and
  confirmed by the next reconcile, never assumed alive); new resting orders (GTC/GTD) are held
  by the trading guard while cancels, reads and marketable orders go on; an alert is raised (an
  `error` log line, `polyd_heartbeat_ok` 0 and `polyd_heartbeat_lapses_total`; the operator
  notifier's `TradingWatch` turns the gauge's fall and rise into messages).
* On the first heartbeat that succeeds again, the executor reconciles open orders and fills at
  once; the hold is lifted only after that reconcile finished. A reconcile that fails keeps the
  hold, and the next successful heartbeat tries again.

This follows poly-maker's `_heartbeat_loop` (halt after consecutive failures, re-read open orders
from the venue on recovery) and NautilusTrader discussion #5021 (no new submissions while the
heartbeat is unhealthy); see docs/venue-mechanics.md §3.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from errors import PolydError
from observability.metrics import Metrics
from resilience import Clock

if TYPE_CHECKING:
    from executor import Executor

log = structlog.get_logger("executor")

LAPSE_REASON = "exchange heartbeat lapsed: resting orders may have been canceled by the venue"


class Heartbeats(Protocol):
    """What the monitor needs from the venue: one heartbeat (the live broker)."""

    async def heartbeat(self) -> str:
        """Send one heartbeat (chaining the id); raise a `PolydError` on failure."""
        ...


class Trading(Protocol):
    """What the monitor needs from the executor (`ExecutorTrading` adapts one)."""

    def resting_count(self) -> int:
        """How many of our orders rest (or may rest) at the venue."""
        ...

    def hold_resting(self, reason: str) -> None:
        """Refuse new resting orders with `reason` until `release_resting`."""
        ...

    def release_resting(self) -> None:
        """Allow new resting orders again."""
        ...

    async def reconcile(self) -> Any:
        """Settle every open journal row against the venue and fetch fills."""
        ...

    async def audit(self, event: str, **detail: Any) -> None:
        """Append an audit entry."""
        ...


class ExecutorTrading:
    """`Trading` over the executor: its open orders, its guard, its reconcile, its audit log."""

    def __init__(self, executor: Executor) -> None:
        self._ex = executor

    def resting_count(self) -> int:
        return self._ex.positions.open_count

    def hold_resting(self, reason: str) -> None:
        self._ex.guard.hold_resting(reason)

    def release_resting(self) -> None:
        self._ex.guard.release_resting()

    async def reconcile(self) -> Any:
        return await self._ex.reconcile()

    async def audit(self, event: str, **detail: Any) -> None:
        await self._ex.repos.audit.append(event, **detail)


class HeartbeatMonitor:
    """Send heartbeats every `interval_s` once orders rest; detect a lapse and recover from it."""

    def __init__(
        self,
        *,
        venue: Heartbeats,
        trading: Trading,
        metrics: Metrics,
        clock: Clock,
        interval_s: float = 5.0,
        max_failures: int = 2,
        lapse_after_s: float = 8.0,
        retry_s: float | None = None,
    ) -> None:
        if max_failures < 1 or lapse_after_s <= 0 or interval_s <= 0:
            raise ValueError("heartbeat: max_failures >= 1, lapse_after_s > 0, interval_s > 0")
        self.venue = venue
        self.trading = trading
        self.metrics = metrics
        self.clock = clock
        self.interval_s = interval_s
        self.max_failures = max_failures
        self.lapse_after_s = lapse_after_s
        # After a failure the next try comes sooner, so a lapse is seen well inside the venue's
        # deadline rather than one full interval later.
        self.retry_s = retry_s if retry_s is not None else min(interval_s, 1.0)
        self.armed = False  # a heartbeat succeeded once: the venue's switch is armed
        self.lapsed = False
        self.failures = 0  # consecutive
        self.last_ok: float | None = None
        self.unconfirmed = 0  # resting orders at the lapse, confirmed by the recovery reconcile
        metrics.heartbeat_ok.set(1)

    async def run(self) -> None:
        """Beat until cancelled (a TaskGroup service)."""
        while True:
            await self.clock.sleep(self.retry_s if self.failures else self.interval_s)
            try:
                await self.beat()
            except Exception:  # the task boundary: log, count, keep beating
                self.metrics.heartbeat_failures_total.inc()
                log.exception("heartbeat_loop_failed")

    async def beat(self) -> None:
        """One heartbeat (skipped until something rests), then the lapse and recovery rules."""
        if not self.armed and self.trading.resting_count() == 0:
            return  # nothing rests: the venue is not asked to watch us yet
        timeout = None
        if self.last_ok is not None:
            timeout = max(0.05, self.lapse_after_s - (self.clock.monotonic() - self.last_ok))
        try:
            async with asyncio.timeout(timeout):
                await self.venue.heartbeat()
        except (PolydError, TimeoutError) as e:
            await self._failed(e)
            return
        self.armed = True
        self.failures = 0
        self.last_ok = self.clock.monotonic()
        if self.lapsed:
            await self._recover()

    async def _failed(self, e: BaseException) -> None:
        self.failures += 1
        self.metrics.heartbeat_failures_total.inc()
        log.warning("heartbeat_failed", error=type(e).__name__, consecutive=self.failures)
        if not self.armed or self.lapsed:
            return  # never armed: the venue cancels nothing of ours
        assert self.last_ok is not None
        since = self.clock.monotonic() - self.last_ok
        if self.failures >= self.max_failures or since >= self.lapse_after_s:
            await self._lapse(since)

    async def _lapse(self, since_ok_s: float) -> None:
        self.lapsed = True
        self.unconfirmed = self.trading.resting_count()
        self.trading.hold_resting(LAPSE_REASON)
        self.metrics.heartbeat_ok.set(0)
        self.metrics.heartbeat_lapses_total.inc()
        log.error(
            "heartbeat_lapsed",
            consecutive_failures=self.failures,
            since_last_ok_s=round(since_ok_s, 3),
            resting_unconfirmed=self.unconfirmed,
        )
        await self.trading.audit(
            "heartbeat_lapsed",
            consecutive_failures=self.failures,
            since_last_ok_s=round(since_ok_s, 3),
            resting_unconfirmed=self.unconfirmed,
        )

    async def _recover(self) -> None:
        log.warning("heartbeat_recovered_reconciling", resting_unconfirmed=self.unconfirmed)
        try:
            counts = await self.trading.reconcile()
        except PolydError as e:
            log.warning("heartbeat_recovery_reconcile_failed", error=type(e).__name__)
            return  # still lapsed: the next successful heartbeat tries again
        # audited before the hold lifts, so whoever sees trading resume also finds the entry
        await self.trading.audit("heartbeat_recovered")
        self.lapsed = False
        self.unconfirmed = 0
        self.trading.release_resting()
        self.metrics.heartbeat_ok.set(1)
        log.warning("heartbeat_recovered", reconciled=counts)

    def health(self) -> dict[str, Any]:
        """The heartbeat's part of the executor's health detail."""
        return {
            "heartbeat": "lapsed" if self.lapsed else ("ok" if self.armed else "idle"),
            "heartbeat_failures": self.failures,
            "resting_unconfirmed": self.unconfirmed,
        }
