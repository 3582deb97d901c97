"""The daemon's view of its database's health: a background ping `/health` reads, and the read
pool's gauges (PostgreSQL) refreshed with each ping."""

from __future__ import annotations

import asyncio
import time

from observability.health import CheckResult
from observability.metrics import Metrics
from storage import Database


class DatabaseProbe:
    """Ping the database in the background; `/health` reads the last answer.

    A ping queues behind write batches on the database's one thread (SQLite), or waits for a
    pooled connection (PostgreSQL, at most `storage.pg.PING_TIMEOUT_S`), so a `/health` request
    that pinged itself would wait for a group commit and its fsync under load. The check reports
    the last ping (failing if it is older than `stale_after_s`) and the last write error. Each
    ping also sets the read pool's gauges in `metrics` (`polyd_db_pool_*`), when given.
    """

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float = 1.0,
        stale_after_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._stale_after_s = stale_after_s
        self._metrics = metrics
        self._ok = False
        self._at = float("-inf")

    async def ping(self) -> None:
        self._ok = await self._db.ping()
        self._at = time.monotonic()
        if self._metrics is not None:
            self._metrics.observe_db_pool(self._db.pool_stats())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.ping()

    def check(self) -> CheckResult:
        age = time.monotonic() - self._at
        if not self._ok:
            return CheckResult(False, "database does not answer")
        if age > self._stale_after_s:
            return CheckResult(False, f"no answer from the database for {age:.0f}s")
        if self._db.last_write_error:
            return CheckResult(False, "last write batch failed")
        return CheckResult(True, "ok")
