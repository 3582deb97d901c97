"""The writer lock while the daemon runs: on PostgreSQL, watched, retaken, or the daemon stops.

A PostgreSQL writer lock (`storage.pg_lock.PgWriterLock`) lives with its connection, so the
server drops it with that connection (a restart, a failover, `pg_terminate_backend`, a network
fault, an idle timeout), and a second process with the same `DAEMON_ID` could then start and
trade as this daemon. `WriterLockWatch` checks the lock's connection every `interval_s` (a
trivial query, `CHECK_TIMEOUT_S` to answer) and, when it is gone, at once takes the lock again
on a new connection:

* taken again: `writer_lock_retaken` (a warning), and trading goes on;
* held by another process: trading halts at once (`TradingGuard.hold`, so no new order is
  sent), `writer_lock_taken` is logged and notified, and the daemon stops with exit 3 (the
  code of a daemon refused at start for the same reason); its in-flight orders drain first,
  and `CANCEL_ON_SHUTDOWN` is not applied: the resting orders are the other process's now
  (it runs under the same `DAEMON_ID` and reconciles them as its own), and a cancel could
  take orders it has just placed;
* the server does not answer: trading halts with `LOST` as its reason, and the watch retries
  every `interval_s`; once the lock is taken again, trading resumes by itself only if that
  halt is still the one in force (an operator's halt, or a storage error's, made meanwhile
  stays until an operator resumes).

`/health` has a `writer_lock` check (failing while the lock is lost) and `polyd_writer_lock_held`
/ `polyd_writer_lock_losses_total` say the same to Prometheus. A SQLite file lock cannot be lost
while its process lives, so on SQLite nothing is watched and the gauge stays 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from errors import AlreadyRunning, FatalError
from observability.health import CheckResult
from observability.metrics import Metrics
from storage.pg_lock import CHECK_TIMEOUT_S

if TYPE_CHECKING:  # the execution stage is built lazily (`orchestrator._build_trading`)
    from execution.guard import TradingGuard

log = structlog.get_logger("storage")

CHECK_INTERVAL_S = 2.0
"""How often the lock's connection is checked, and a lost lock retried."""
LOG_EVERY_S = 60.0
"""While the lock stays lost, one `writer_lock_retake_failed` line this often (not each try)."""


@runtime_checkable
class WatchedLock(Protocol):
    """A writer lock that can be checked and taken again (`storage.pg_lock.PgWriterLock`)."""

    daemon_id: str

    async def check(self, timeout_s: float = CHECK_TIMEOUT_S) -> bool: ...

    async def retake(self) -> None: ...


class WriterLockWatch:
    """Check the writer lock while the daemon runs; retake it, halt, or stop the daemon."""

    def __init__(
        self,
        lock: WatchedLock,
        *,
        guard: TradingGuard,
        metrics: Metrics,
        stop: Callable[[str], None],
        notify: Callable[..., object] | None = None,
        interval_s: float = CHECK_INTERVAL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.lock = lock
        self.guard = guard
        self.metrics = metrics
        self._stop = stop
        self._notify = notify
        self.interval_s = interval_s
        self._sleep = sleep
        self.reason = f"writer lock lost (DAEMON_ID={lock.daemon_id}): the database does not answer"
        self.held = True
        self.lost_at: float | None = None  # monotonic time the loss was noticed
        self.why = ""  # why it is lost, while it is
        self.taken_by = ""  # the refusal, once another process holds it
        self.retaken = 0
        self._logged_at = float("-inf")
        metrics.writer_lock_held.set(1)

    async def run(self) -> None:
        """`watch_once` every `interval_s` until cancelled, or until the lock is taken by
        another process (the daemon is then stopping)."""
        while not self.taken_by:
            await self._sleep(self.interval_s)
            await self.watch_once()

    async def watch_once(self) -> None:
        """Check the lock (while held) and retake it if it is lost."""
        if self.taken_by:
            return
        if self.held:
            if await self.lock.check():
                return
            self.held = False
            self.lost_at = time.monotonic()
            self.metrics.writer_lock_held.set(0)
            self.metrics.writer_lock_losses_total.inc()
            log.warning("writer_lock_connection_lost", daemon_id=self.lock.daemon_id)
        try:
            await self.lock.retake()
        except AlreadyRunning as e:
            self._taken(str(e))
        except (FatalError, OSError) as e:
            self._unreachable(str(e))
        else:
            self._retaken()

    def _retaken(self) -> None:
        lost_s = time.monotonic() - (self.lost_at or time.monotonic())
        self.held, self.why, self.lost_at = True, "", None
        self.retaken += 1
        self.metrics.writer_lock_held.set(1)
        resumed = self.guard.unhold(self.reason)
        log.warning(
            "writer_lock_retaken",
            daemon_id=self.lock.daemon_id,
            lost_s=round(lost_s, 3),
            trading_resumed=resumed,
        )

    def _unreachable(self, error: str) -> None:
        first = not self.why
        self.why = error
        self.guard.hold(self.reason)
        now = time.monotonic()
        if first or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "writer_lock_retake_failed",
                daemon_id=self.lock.daemon_id,
                error=error[:300],
                detail=f"trading halted; retrying every {self.interval_s:g}s",
            )
        if first and self._notify is not None:
            self._notify(
                "writer_lock_lost",
                "writer_lock_lost",
                f"writer lock of DAEMON_ID={self.lock.daemon_id} lost and the database does not"
                f" answer: trading halted, retrying every {self.interval_s:g}s",
            )

    def _taken(self, refusal: str) -> None:
        self.taken_by = self.why = refusal
        self.guard.hold(f"writer lock taken by another process (DAEMON_ID={self.lock.daemon_id})")
        # the resting orders are the other process's to manage now: no CANCEL_ON_SHUTDOWN
        self.guard.keep_orders = f"writer lock taken by another process: {refusal}"
        log.error(
            "writer_lock_taken",
            error=refusal,
            detail="trading halted; the daemon stops (exit 3) and leaves its resting orders"
            " (no CANCEL_ON_SHUTDOWN): another process runs as it",
        )
        if self._notify is not None:
            self._notify(
                "writer_lock_taken",
                "writer_lock_taken",
                f"{refusal}. Trading halted and the daemon stops (exit 3).",
            )
        self._stop(refusal)

    def check(self) -> CheckResult:
        if self.taken_by:
            return CheckResult(False, f"writer lock taken by another process: {self.taken_by}")
        if not self.held:
            lost_s = time.monotonic() - (self.lost_at or time.monotonic())
            why = f": {self.why[:200]}" if self.why else ""
            return CheckResult(
                False,
                f"writer lock lost {lost_s:.0f}s ago, trading halted, retrying every"
                f" {self.interval_s:g}s{why}",
            )
        return CheckResult(True, {"held": True, "retaken": self.retaken})


class _Daemon(Protocol):
    metrics: Metrics
    notifier: Any
    services: list[Any]

    @property
    def health(self) -> Any: ...

    @property
    def shared(self) -> Any: ...

    @property
    def executor(self) -> Any: ...


def watch_writer_lock(ctx: _Daemon, *, stop: Callable[[str], None]) -> WriterLockWatch | None:
    """Watch the daemon's writer lock while it runs, if it is one that can be lost (PostgreSQL):
    a `writer-lock` service and a `writer_lock` health check. `stop(reason)` stops the daemon
    with exit 3 when another process took the lock."""
    lock = ctx.shared.writer_lock
    if not isinstance(lock, WatchedLock) or ctx.executor is None:
        return None
    watch = WriterLockWatch(
        lock,
        guard=ctx.executor.guard,
        metrics=ctx.metrics,
        stop=stop,
        notify=ctx.notifier.notify,
    )
    ctx.services.append(("writer-lock", watch.run))
    ctx.health.register("writer_lock", watch.check)
    return watch
