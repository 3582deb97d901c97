"""What the process has once: metrics, storage, the redactor, the clock, the venue budget and the
HTTP session. Every stage is built from one `Shared`.

The venue budget is the only place Polymarket's documented limits become buckets: one
`RateLimiter` for every CLOB and Gamma call the process makes (whichever adapter makes it), and one
`DataApiBudget` (sliding windows) for every Data API call. Two limiters over the same limits
would each believe they own the whole budget.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from config import Settings
from observability.logging import Redactor
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience.clock import Clock, SystemClock
from resilience.rate_limit import RateLimiter, WaitHook, polymarket_limits
from storage import Database, Repositories
from storage.engine import describe, make_database, make_writer_lock
from storage.lock import WriterLock
from storage.market_names import MarketNames
from venue.data_api import DataApiBudget
from venue.parse import MalformedLog
from wiring.stage import Step

# The one session replaces three (market data and Gamma tag listings with aiohttp's default pool
# of 100 connections each, the Data API with 32), so its pool keeps their sum.
HTTP_CONNECTIONS = 232
HTTP_HEADERS = {"Accept": "application/json", "User-Agent": "polyd/0.1"}


def http_session() -> aiohttp.ClientSession:
    """The process's one HTTP session for the JSON APIs (every call sets its own timeout)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS, ttl_dns_cache=300),
        headers=HTTP_HEADERS,
    )


class CostlierCalls(RateLimiter):
    """A view of another limiter's buckets (the same objects, so the same budget) in which every
    call costs `weight` tokens: its caller alone gets at most `1 / weight` of that budget's rate
    and burst, and whatever it takes, the other callers no longer have."""

    def __init__(self, base: RateLimiter, weight: float, *, on_wait: WaitHook | None) -> None:
        super().__init__(
            {
                f"{endpoint}:{i}": bucket
                for endpoint in sorted(base.endpoints)
                for i, bucket in enumerate(base.buckets(endpoint))
            },
            on_wait=on_wait,
        )
        self.weight = weight

    def try_acquire(self, endpoint: str, n: float = 1) -> bool:
        return super().try_acquire(endpoint, n * self.weight)

    async def acquire(self, endpoint: str, n: float = 1) -> float:
        return await super().acquire(endpoint, n * self.weight)


def _wait_hook(metrics: Metrics | None) -> WaitHook | None:
    if metrics is None:
        return None

    def on_wait(endpoint: str, waited: float) -> None:
        metrics.rate_limit_waits_total.labels(endpoint).inc()
        metrics.rate_limit_wait_seconds_total.labels(endpoint).inc(waited)

    return on_wait


@dataclass(frozen=True)
class VenueBudget:
    """The process's share of Polymarket's rate limits (`fraction` = `RATE_LIMIT_FRACTION`).

    `limiter` admits CLOB and Gamma calls by endpoint (token buckets, burst and sustained);
    `data_api` admits Data API calls (sliding windows, as Cloudflare counts them).
    """

    fraction: float
    limiter: RateLimiter
    data_api: DataApiBudget
    metrics: Metrics | None = None

    def capped(self, share: float) -> RateLimiter:
        """The one limiter, for a caller that must never take more than `share` of the venue's
        limits on its own: each of its calls costs `fraction / share` tokens. Its calls still
        come out of the process's budget, so with every other caller the process stays within
        `fraction`."""
        if share >= self.fraction:
            return self.limiter
        return CostlierCalls(self.limiter, self.fraction / share, on_wait=_wait_hook(self.metrics))


def venue_limiter(
    settings: Settings, *, clock: Clock, metrics: Metrics | None = None
) -> RateLimiter:
    """The process's one `RateLimiter` over Polymarket's documented limits; waits are counted in
    `metrics` (per endpoint) when given."""
    return RateLimiter.from_limits(
        polymarket_limits(settings.rate_limit_fraction), clock=clock, on_wait=_wait_hook(metrics)
    )


def venue_budget(
    settings: Settings, *, clock: Clock, metrics: Metrics | None = None
) -> VenueBudget:
    """Build the process's venue budget from `RATE_LIMIT_FRACTION`."""
    return VenueBudget(
        fraction=settings.rate_limit_fraction,
        limiter=venue_limiter(settings, clock=clock, metrics=metrics),
        data_api=DataApiBudget(settings.rate_limit_fraction, clock=clock),
        metrics=metrics,
    )


def process_metrics(settings: Settings, *, version: str) -> Metrics:
    """The process's one metrics registry, with the facts known from settings already set."""
    metrics = Metrics()
    metrics.build_info.labels(version, settings.mode).set(1)
    metrics.start_time_seconds.set(time.time())
    metrics.daily_loss_limit_usd.set(float(settings.risk_daily_loss_limit))
    return metrics


@dataclass
class Shared:
    """What every stage is built from. `closers` close the session and then storage (last)."""

    settings: Settings
    redactor: Redactor
    metrics: Metrics
    clock: Clock
    db: Database
    repos: Repositories
    budget: VenueBudget
    http: aiohttp.ClientSession
    closers: list[Step] = field(default_factory=list)
    tracing: Tracing = field(default_factory=Tracing)  # off unless settings turn it on
    # What takes rotated API credentials on a settings reload (the live broker, the user feed).
    credential_sinks: list[Any] = field(default_factory=list)
    malformed: dict[str, MalformedLog] = field(default_factory=dict)
    writer_lock: WriterLock | None = None
    """The lock taken before the database was opened (`storage.engine.make_writer_lock`);
    watched while the daemon runs when it can be lost (`wiring.writer_lock`)."""
    names: MarketNames = field(default_factory=MarketNames)
    """Market names by token id (question, outcome, slug): what logs, notifications and chat
    show beside a token id. Loaded from the database, fed by discovery and `wiring.names`."""
    """One malformed-input log per source (`venue.parse.MALFORMED_SOURCES`), built on demand."""

    def malformed_log(self, source: str) -> MalformedLog:
        """The process's one `MalformedLog` for `source` (its log rate limit is per source)."""
        log_ = self.malformed.get(source)
        if log_ is None:
            log_ = self.malformed[source] = MalformedLog(
                source, metrics=self.metrics, monotonic=self.clock.monotonic
            )
        return log_


async def open_storage(settings: Settings, metrics: Metrics) -> Database:
    """Open (and migrate) the daemon's database, its write batches observed in `metrics`."""
    db = make_database(
        db_path=settings.db_path,
        database_url=settings.database_url,
        busy_timeout_ms=settings.db_busy_timeout_ms,
        observe_batch=metrics.observe_db_batch,
        observe_error=metrics.db_write_errors_total.inc,
        observe_checkpoint=metrics.observe_db_checkpoint,
    )
    db.observe_query = metrics.db_query_seconds.observe
    await db.open()
    return db


def describe_db(settings: Settings) -> str:
    """The daemon's database in words for logs: the URL without its password, or the path."""
    return describe(db_path=settings.db_path, database_url=settings.database_url)


async def build_shared(
    settings: Settings, *, redactor: Redactor, metrics: Metrics, clock: Clock | None = None
) -> Shared:
    """Open storage and build the venue budget and the HTTP session (call inside the loop).

    Storage's closers come first in `closers`, so, closed in reverse, the database closes last
    but for its writer lock, which is released after it.
    """
    clock = clock or SystemClock()
    # One writer per database: the lock comes before the database is opened or migrated, so a
    # second daemon on the same file stops here (AlreadyRunning, exit 3) having touched nothing.
    lock = make_writer_lock(
        db_path=settings.db_path, database_url=settings.database_url, daemon_id=settings.daemon_id
    )
    await lock.acquire()
    try:
        db = await open_storage(settings, metrics)
    except BaseException:
        await lock.release()
        raise
    shared = Shared(
        settings=settings,
        redactor=redactor,
        metrics=metrics,
        clock=clock,
        db=db,
        repos=Repositories.over(db, daemon_id=settings.daemon_id),
        budget=venue_budget(settings, clock=clock, metrics=metrics),
        http=http_session(),
        tracing=Tracing.from_settings(settings),
        writer_lock=lock,
    )
    metrics.writer_lock_held.set(1)
    shared.closers.append(("storage:lock", lock.release))
    shared.names.learn(await shared.repos.names.load(), changed=False)
    shared.closers.append(("storage", db.close))
    if shared.tracing.enabled:
        tracing = shared.tracing

        async def close_tracing() -> None:
            await asyncio.to_thread(tracing.shutdown)  # flushes buffered spans (blocking)

        shared.closers.append(("tracing", close_tracing))
    shared.closers.append(("http", shared.http.close))
    return shared
