"""The PostgreSQL writer lock watched while the daemon runs (`wiring.writer_lock`), over the
machine's real server: the lock's connection is dropped by the server (`pg_terminate_backend`),
broken on the client's side only, or the server cannot be reached (a TCP proxy refusing), and
the watch retakes the lock, halts trading through the real `TradingGuard`, or stops the daemon.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from structlog.testing import capture_logs

from errors import AlreadyRunning
from execution.guard import TradingGuard
from execution.positions import PositionBook
from execution.risk import TradingState
from observability.metrics import Metrics
from resilience import CircuitBreaker
from resilience.clock import FakeClock
from storage import Database, Repositories
from storage.pg_lock import PgWriterLock
from tests.harness import TcpProxy
from tests.pg import PgServer
from wiring.writer_lock import WriterLockWatch

LOCK_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND ((classid::bigint << 32) | objid::bigint)"
    " = hashtext('polyd:daemon:' || current_schema() || ':' || %s)::bigint"
)


@dataclass
class Watched:
    lock: PgWriterLock
    watch: WriterLockWatch
    guard: TradingGuard
    metrics: Metrics
    stops: list[str]
    url: str


def holder(url: str, daemon_id: str) -> int | None:
    """The server process holding `daemon_id`'s writer lock in `url`'s schema, if any."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(LOCK_HOLDER, (daemon_id,)).fetchone()
    return int(row[0]) if row else None


def terminate_lock_session(url: str, daemon_id: str) -> int:
    """Drop the session holding the lock, as a server restart or an admin would; wait until the
    server has released the lock. Returns the dropped session's pid."""
    pid = holder(url, daemon_id)
    assert pid is not None
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    assert holder(url, daemon_id) is None
    return pid


@pytest.fixture
async def guard_repos(tmp_path: Path) -> AsyncIterator[Repositories]:
    db = Database(tmp_path / "guard.db")
    await db.open()
    try:
        yield Repositories.over(db)
    finally:
        await db.close()


def make_guard(repos: Repositories, metrics: Metrics) -> TradingGuard:
    clock = FakeClock(1000)
    breaker = CircuitBreaker("venue", failure_threshold=2, reset_timeout_s=30, clock=clock)
    return TradingGuard(
        repos=repos,
        positions=PositionBook(),
        metrics=metrics,
        breaker=breaker,
        clock=clock,
        daily_loss_limit=Decimal("100"),
    )


async def watched(url: str, repos: Repositories, daemon_id: str = "w1") -> Watched:
    lock = PgWriterLock(url, daemon_id=daemon_id)
    await lock.acquire()
    metrics = Metrics()
    guard = make_guard(repos, metrics)
    stops: list[str] = []
    watch = WriterLockWatch(lock, guard=guard, metrics=metrics, stop=stops.append, interval_s=0.1)
    return Watched(lock, watch, guard, metrics, stops, url)


def through(proxy: TcpProxy, url: str) -> str:
    """`url` reached through `proxy` (same user, database and options)."""
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else proxy.url
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def server(url: str) -> str:
    parts = urlsplit(url)
    return f"tcp://{parts.hostname}:{parts.port or 5432}"


def state(w: Watched) -> TradingState:
    return w.guard.state


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def assert_held_by_us(w: Watched) -> None:
    """Another process with the same DAEMON_ID is refused: the lock is this daemon's."""
    twin = PgWriterLock(w.url, daemon_id=w.lock.daemon_id)
    with pytest.raises(AlreadyRunning):
        await twin.acquire()


async def test_a_held_lock_passes_its_check_and_nothing_changes(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    w = await watched(pg_server.fresh_url(), guard_repos)
    try:
        await w.watch.watch_once()
        assert w.watch.held and state(w) is TradingState.ACTIVE
        assert w.watch.check().ok and w.stops == []
        assert sample(w.metrics, "polyd_writer_lock_held") == 1
        assert sample(w.metrics, "polyd_writer_lock_losses_total") == 0
    finally:
        await w.lock.release()


async def test_lock_session_dropped_by_the_server_nobody_waiting_is_retaken_trading_goes_on(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    w = await watched(pg_server.fresh_url(), guard_repos)
    try:
        dropped = terminate_lock_session(w.url, "w1")
        with capture_logs() as logs:
            await w.watch.watch_once()
        events = [e["event"] for e in logs]
        assert events == ["writer_lock_connection_lost", "writer_lock_retaken"], logs
        assert logs[1]["log_level"] == "warning" and logs[1]["trading_resumed"] is False
        assert w.watch.held and w.watch.retaken == 1
        assert holder(w.url, "w1") not in (None, dropped)
        await assert_held_by_us(w)
        assert state(w) is TradingState.ACTIVE and w.guard.refusal(rests=False) is None
        assert w.stops == []
        assert w.watch.check().ok and w.watch.check().detail == {"held": True, "retaken": 1}
        assert sample(w.metrics, "polyd_writer_lock_held") == 1
        assert sample(w.metrics, "polyd_writer_lock_losses_total") == 1
        await w.watch.watch_once()  # the new connection is the one checked now
        assert w.watch.retaken == 1
    finally:
        await w.lock.release()


async def test_lock_taken_by_another_process_in_the_gap_halts_trading_and_stops_the_daemon(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    w = await watched(pg_server.fresh_url(), guard_repos)
    twin = PgWriterLock(w.url, daemon_id="w1")
    try:
        terminate_lock_session(w.url, "w1")
        await twin.acquire()  # a second process with the same DAEMON_ID starts in the gap
        with capture_logs() as logs:
            await w.watch.watch_once()
        taken = [e for e in logs if e["event"] == "writer_lock_taken"]
        assert len(taken) == 1 and taken[0]["log_level"] == "error", logs
        assert "DAEMON_ID=w1" in taken[0]["error"] and "server process" in taken[0]["error"]
        # no new order from now on: the guard refuses it, with the reason named
        assert state(w) is TradingState.HALTED
        refusal = w.guard.refusal(rests=False)
        assert refusal is not None and "writer lock taken by another process" in refusal
        assert len(w.stops) == 1 and "holds the writer lock" in w.stops[0]
        # and the stop leaves the resting orders to that process (no CANCEL_ON_SHUTDOWN)
        keep = w.guard.keep_orders
        assert keep is not None and keep.startswith("writer lock taken by another process")
        check = w.watch.check()
        assert not check.ok and "taken by another process" in check.detail
        assert sample(w.metrics, "polyd_writer_lock_held") == 0
        await w.watch.run()  # returns at once: nothing more to watch, the daemon is stopping
        assert len(w.stops) == 1
    finally:
        await twin.release()
        await w.lock.release()


async def test_server_unreachable_halts_until_the_lock_is_retaken_then_resumes(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    url = pg_server.fresh_url()
    with TcpProxy(server(url)) as proxy:
        w = await watched(through(proxy, url), guard_repos)
        try:
            proxy.refuse()  # resets the lock's connection; new ones are refused
            with capture_logs() as logs:
                await w.watch.watch_once()
                await w.watch.watch_once()  # still unreachable: one log line, not one a try
            assert [e["event"] for e in logs if e["event"].startswith("writer_lock")] == [
                "writer_lock_connection_lost",
                "writer_lock_retake_failed",
            ], logs
            halted = [e for e in logs if e["event"] == "trading_state_changed"]
            assert len(halted) == 1 and halted[0]["new"] is TradingState.HALTED
            assert state(w) is TradingState.HALTED and w.stops == []
            refusal = w.guard.refusal(rests=False)
            assert refusal is not None and "writer lock lost (DAEMON_ID=w1)" in refusal
            check = w.watch.check()
            assert not check.ok and "writer lock lost" in check.detail, check
            assert sample(w.metrics, "polyd_writer_lock_held") == 0
            proxy.accept()
            with capture_logs() as logs:
                await w.watch.watch_once()
            assert next(e for e in logs if e["event"] == "writer_lock_retaken")["trading_resumed"]
            assert state(w) is TradingState.ACTIVE and w.guard.refusal(rests=False) is None
            assert w.watch.check().ok and w.stops == []
            await assert_held_by_us(w)
            assert sample(w.metrics, "polyd_writer_lock_losses_total") == 1
        finally:
            await w.lock.release()


async def test_an_operator_halt_made_while_the_lock_was_lost_is_not_cleared_by_its_retake(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    url = pg_server.fresh_url()
    with TcpProxy(server(url)) as proxy:
        w = await watched(through(proxy, url), guard_repos)
        try:
            proxy.refuse()
            await w.watch.watch_once()
            assert state(w) is TradingState.HALTED
            await w.guard.set_state(TradingState.HALTED, "operator: investigating", actor="http")
            proxy.accept()
            await w.watch.watch_once()
            assert w.watch.held
            assert state(w) is TradingState.HALTED
            assert w.guard.reason == "operator: investigating"
        finally:
            await w.lock.release()


async def test_a_connection_broken_on_our_side_only_ends_our_old_session_and_retakes(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    """A network fault the client notices first: the server still keeps the old session, and
    so the lock. That session is this daemon's own, not another process: it is ended and the
    lock taken again, rather than the daemon stopping as if a twin held it."""
    w = await watched(pg_server.fresh_url(), guard_repos)
    conn = w.lock._conn
    assert conn is not None
    fd = conn.fileno()
    socket_kept = os.dup(fd)  # the server's side of the session stays open through this
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)  # the client's reads now end at once, as on a reset connection
        old = holder(w.url, "w1")
        with capture_logs() as logs:
            await w.watch.watch_once()
        assert [e["event"] for e in logs] == [
            "writer_lock_connection_lost",
            "writer_lock_retaken",
        ], logs
        assert w.stops == [] and state(w) is TradingState.ACTIVE
        assert holder(w.url, "w1") not in (None, old)
        await assert_held_by_us(w)
    finally:
        os.close(null)
        os.close(socket_kept)
        await w.lock.release()


async def test_a_hold_ends_back_in_the_state_before_it_and_never_over_another_halt(
    guard_repos: Repositories,
) -> None:
    guard = make_guard(guard_repos, Metrics())
    await guard.set_state(TradingState.REDUCING, "operator: reduce only", actor="http")
    with capture_logs() as logs:
        guard.hold("writer lock lost")
        assert guard.state is TradingState.HALTED and guard.reason == "writer lock lost"
        assert guard.unhold("writer lock lost")
    # A hold is neither persisted nor audited: the log is its only record.
    reduce, halted = TradingState.REDUCING, TradingState.HALTED
    assert [(e["event"], e["old"], e["new"], e["reason"]) for e in logs] == [
        ("trading_state_changed", reduce, halted, "writer lock lost"),
        ("trading_state_changed", halted, reduce, "writer lock lost"),
    ]
    assert (guard.state, guard.reason) == (TradingState.REDUCING, "operator: reduce only")
    guard.hold("writer lock lost")
    guard.storage_failed()  # a write failed meanwhile: that halt waits for an operator
    assert not guard.unhold("writer lock lost")
    assert (guard.state, guard.reason) == (TradingState.HALTED, "storage error")
    guard.hold("writer lock lost")  # an existing halt keeps its reason
    assert guard.reason == "storage error" and not guard.unhold("writer lock lost")


async def test_a_check_without_an_answer_in_time_counts_as_lost_and_the_lock_is_retaken(
    pg_server: PgServer, guard_repos: Repositories
) -> None:
    """The call still running on the old connection is left to end in its thread; the
    connection is closed after it, and the retake does not mistake its session for a twin."""
    w = await watched(pg_server.fresh_url(), guard_repos)
    try:
        old = holder(w.url, "w1")
        assert await w.lock.check(timeout_s=0) is False
        assert not w.lock.held
        await w.lock.retake()
        assert w.lock.held and holder(w.url, "w1") not in (None, old)
        await assert_held_by_us(w)
        for _ in range(100):  # the abandoned call ends, then its connection is closed
            if not w.lock._pings:
                break
            await asyncio.sleep(0.05)
        assert not w.lock._pings
        with psycopg.connect(w.url, autocommit=True) as c:
            for _ in range(100):  # the server ends the closed session's process
                row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (old,))
                if row.fetchone() == (0,):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the abandoned session {old} was never closed")
    finally:
        await w.lock.release()


def test_a_holder_gone_between_the_refusal_and_its_look_up_leaves_the_lock_to_take(
    pg_server: PgServer,
) -> None:
    """The lock was refused, and by the time the holding session is looked up to be named it
    has ended (an abandoned connection closing during a retake, an old process exiting during a
    restart): the lock is free, so it is taken, not refused naming no one."""
    url = pg_server.fresh_url()
    lock = PgWriterLock(url, daemon_id="w9")
    with psycopg.connect(url, autocommit=True) as conn:
        lock._take_from_own_session(conn)  # the state just after a refusal whose holder left
        assert holder(url, "w9") == conn.info.backend_pid
