"""What a daemon on PostgreSQL adds to the store: its shared parts open on the URL, reads that a
cancellation always stops, the health ping with a bounded wait, the pool's metrics, the
read-only reports over the same database, and the URL's password kept out of what is printed."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from config import Settings
from errors import DatabaseMissing, ReportError
from models import Fill, OrderStatus, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from storage import Database, Repositories
from storage.activity import Activity
from storage.pg import PgDatabase, recreate_schema
from storage.reports import Reports
from tests.helpers import make_order
from tests.pg import PgServer
from wiring.database import DatabaseProbe
from wiring.shared import build_shared


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_the_daemon_opens_its_shared_parts_on_postgres(
    tmp_path: Path, pg_server: PgServer
) -> None:
    settings = Settings(
        _env_file=None, db_path=tmp_path / "polyd.db", database_url=pg_server.fresh_url()
    )
    metrics = Metrics()
    shared = await build_shared(settings, redactor=Redactor([]), metrics=metrics)
    try:
        assert isinstance(shared.db, PgDatabase)
        await shared.repos.orders.record(make_order(token_id="42"))
        assert [r.token_id for r in await shared.repos.orders.non_terminal()] == ["42"]
        assert sample(metrics, "polyd_db_query_seconds_count") >= 1  # reads are timed
        probe = DatabaseProbe(shared.db, metrics=metrics)
        await probe.ping()
        assert probe.check().ok
        assert sample(metrics, "polyd_db_pool_size") >= 1
        assert sample(metrics, "polyd_db_pool_available") >= 1
        assert sample(metrics, "polyd_db_pool_waiting") == 0
    finally:
        for _, close in reversed(shared.closers):
            await close()
    assert not (tmp_path / "polyd.db").exists()  # nothing went to the SQLite file


async def test_sqlite_has_no_pool_and_its_gauges_read_zero(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.db_pool_size.set(3)
    async with Database(tmp_path / "p.db") as db:
        probe = DatabaseProbe(db, metrics=metrics)
        await probe.ping()
    assert probe.check().ok
    assert sample(metrics, "polyd_db_pool_size") == 0


async def test_a_cancelled_read_stops_whether_running_or_waiting_for_a_connection(
    pg_server: PgServer,
) -> None:
    """Cancellation reaches the caller both while the query runs (psycopg cancels it on the
    server) and while the read waits for a pooled connection (the pool's waiting client), so
    a shutdown that cancels readers never waits on them."""
    async with PgDatabase(pg_server.fresh_url(), pool_min=1, pool_max=1) as db:
        running = asyncio.create_task(db.fetchall("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(db.fetchall("SELECT 1"))  # the one connection is busy
        await asyncio.sleep(0.3)
        waiting.cancel()
        running.cancel()
        for task in (waiting, running):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert [tuple(r) for r in await db.fetchall("SELECT 2")] == [(2,)]  # the pool recovered


async def test_the_health_ping_fails_when_no_connection_comes(pg_server: PgServer) -> None:
    async with PgDatabase(pg_server.fresh_url(), pool_min=1, pool_max=1) as db:
        probe = DatabaseProbe(db, metrics=Metrics())
        await probe.ping()
        assert probe.check().ok
        hog = asyncio.create_task(db.fetchall("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.3)
        await probe.ping()  # waits PING_TIMEOUT_S for a connection, then gives up
        assert probe.check().detail == "database does not answer"
        hog.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hog


async def test_the_reports_read_postgres_read_only(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.fresh_url()
    order = make_order(token_id="77", price=Decimal("0.40"), size=Decimal("10"))
    async with PgDatabase(url) as db:
        repos = Repositories.over(db)
        await repos.orders.record(order)
        await repos.orders.transition(order.client_order_id, OrderStatus.LIVE, venue_order_id="v1")
        await repos.fills.record(
            Fill(
                trade_id="t1",
                venue_order_id="v1",
                client_order_id=order.client_order_id,
                token_id="77",
                side=Side.BUY,
                price=Decimal("0.40"),
                size=Decimal("10"),
                fee=Decimal("0.01"),
            )
        )
    missing_file = tmp_path / "never.db"  # the SQLite path is not read when the URL is given
    with Reports.open(missing_file, url) as reports:
        summary = reports.summary()
        assert summary.fills == 1 and summary.open_orders == 1
        assert [(p.token_id, p.size) for p in reports.positions()] == [("77", Decimal("10"))]
        with pytest.raises(sqlite3.Error, match="read-only"):
            reports._conn.execute("DELETE FROM orders")
    with Activity.open(missing_file, url) as activity:
        assert activity.last_mark() == 1
        [notice] = activity.fills_after(0)
        assert notice.size == Decimal("10")
        today = datetime.now(UTC).date()
        assert activity.fill_days(today, days=1)[0].bought == Decimal("4.00")
    with pytest.raises(DatabaseMissing):
        Reports.open(missing_file)


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = "postgresql://polyd:s3cret-pw@127.0.0.1:1/polyd"
    with pytest.raises(ReportError) as e:
        Reports.open(Path("unused.db"), url)
    assert "s3cret-pw" not in str(e.value)
    assert "postgresql://polyd:***@127.0.0.1:1/polyd" in str(e.value)
    settings = Settings(_env_file=None, database_url=url)
    assert "s3cret-pw" in settings.secret_values()  # so the log redactor removes it anywhere


def test_a_throwaway_schema_is_emptied_and_becomes_the_search_path(pg_server: PgServer) -> None:
    url = recreate_schema(pg_server.url, "polyd_demo_test")
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE leftover (x int)")
        assert c.execute("SELECT current_schema()").fetchone() == ("polyd_demo_test",)
    again = recreate_schema(pg_server.url, "polyd_demo_test")
    assert again == url
    with psycopg.connect(again) as c:
        assert c.execute("SELECT to_regclass('leftover')").fetchone() == (None,)


async def test_connections_the_server_dropped_are_replaced_and_no_write_or_read_fails(
    pg_server: PgServer,
) -> None:
    """A server restart (or an admin's `pg_terminate_backend`) drops the writer's and the read
    pool's connections: the next write reconnects at its BEGIN, the next read gets a checked
    connection, and nothing fails (a dropped writer used to fail every later write)."""
    app = "polyd-test-dropped"
    async with PgDatabase(f"{pg_server.fresh_url()}&application_name={app}") as db:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.execute("INSERT INTO t (x) VALUES (1)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t")] == [(1,)]
        with psycopg.connect(pg_server.url, autocommit=True) as c:
            row = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s",
                (app,),
            ).fetchone()
        assert row is not None and row[0] >= 2  # the writer and the pool's connection
        await db.execute("INSERT INTO t (x) VALUES (2)")
        assert db.last_write_error is None
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t ORDER BY x")] == [(1,), (2,)]
        assert await db.ping()
