"""The PostgreSQL twins of the fault matrix's SQLite-file faults (`test_fault_matrix.py`).

A SQLite file can be locked by another process or fill its disk; a PostgreSQL server instead
drops the daemon's connections (a restart, a failover, an admin's `pg_terminate_backend`) or
refuses writes (a read-only standby, `default_transaction_read_only`). Each test runs the fault
rig (`tests.faults.conftest`) with the daemon journalling to its own schema of the session's
throwaway database, and checks the matrix's invariants: no order sent without its PENDING row,
nothing sent twice or lost, every body the venue received one the journal signed.

The faults are scoped to the daemon under test: its connections carry their own
`application_name` (in its `DATABASE_URL`), and only those are terminated; the read-only
setting is the session database's own (each test session has one, see `tests.pg`), reset
before the test ends.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.faults.conftest import Rig, RigFactory
from tests.harness import wait_until
from tests.pg import PgServer

pytestmark = pytest.mark.parametrize("engine", ["postgres"])


def _rig(make_rig: RigFactory, pg: PgServer, **env: str) -> tuple[Rig, str]:
    """A fault rig whose daemon names its connections, so the test can drop only those."""
    app = f"polyd-fault-{uuid.uuid4().hex[:10]}"
    rig = make_rig(DATABASE_URL=f"{pg.fresh_url()}&application_name={app}", **env)
    return rig, app


def _drop_connections(pg: PgServer, app: str) -> int:
    """Terminate every server session of the daemon's (`app`); returns how many there were."""
    with psycopg.connect(pg.url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s"
            " AND pid <> pg_backend_pid()",
            (app,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def _writes_refused(pg: PgServer, app: str) -> Iterator[None]:
    """The server refuses the daemon's writes: new sessions of the session database start
    read-only, and the daemon's sessions are dropped so that its reconnections are such
    sessions. On exit writes are allowed again, and the read-only sessions dropped."""
    # from the server's admin database: a session of the session database is read-only too
    with psycopg.connect(pg.admin_url, autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{pg.dbname}" SET default_transaction_read_only = on')
    try:
        _drop_connections(pg, app)
        yield
    finally:
        with psycopg.connect(pg.admin_url, autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{pg.dbname}" RESET default_transaction_read_only')
        _drop_connections(pg, app)


def test_server_drops_the_daemons_connections_it_reconnects_and_trades_exactly_once(
    make_rig: RigFactory, pg_server: PgServer
) -> None:
    rig, app = _rig(make_rig, pg_server)
    rig.trade_once()
    # the writer, the writer lock's connection and the read pool's
    assert _drop_connections(pg_server, app) >= 3
    rig.trade_once()  # the PENDING write reconnects the writer, then the order is sent
    assert _drop_connections(pg_server, app) >= 2
    rig.trade_once()
    rig.wait_health(200)
    assert rig.d.alive()
    assert "database_writer_reconnected" in rig.d.event_names()
    assert "storage_failed_halting" not in rig.d.event_names()  # no write was lost to a drop
    c = rig.assert_consistent()
    assert c.venue_orders == 3 and c.journal_signed == 3
    assert list(rig.exactly_once().sends.values()) == [1, 1, 1]


def test_server_refuses_writes_nothing_unjournaled_is_sent_halted_until_resumed(
    make_rig: RigFactory, pg_server: PgServer
) -> None:
    rig, app = _rig(make_rig, pg_server)
    rig.trade_once()
    time.sleep(0.5)  # let the feed show the taken ask, so the sniper does not fire again
    with _writes_refused(pg_server, app):
        rig.trigger()
        wait_until(lambda: "storage_failed_halting" in rig.d.event_names(), 10, what="halt")
        body = rig.wait_health(503, timeout=10)
        assert body["checks"]["database"]["ok"] is False, body
        assert body["checks"]["executor"]["detail"]["trading_state"] == "HALTED", body
        # journal before send: the PENDING row could not be written, so nothing left
        assert len(rig.our_orders()) == 1
        assert rig.d.alive()
    # Writes are back: the database check recovers with the next write batch, but trading
    # stays halted (a write failed) until an operator resumes.
    wait_until(lambda: rig.d.health()[1]["checks"]["database"]["ok"], 20, what="database check ok")
    assert _executor_state(rig) == "HALTED"
    status, body = rig.d.control("resume", reason="test: writes are back")
    assert status == 200, body
    rig.wait_health(200)
    # No restart: the sniper, restarted by the supervisor after the failed PENDING write crashed
    # it, read its slot back from the database (armed: the refused order was never counted)
    # and fires on the next trigger, even if its restart came after the trigger's sweep.
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders >= 2 and c.venue_orders == c.journal_signed


def _writer_lock_session(pg: PgServer, url: str) -> int:
    """The server process of the session holding the daemon's writer lock (DAEMON_ID default)."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND ((classid::bigint << 32) | objid::bigint)"
            " = hashtext('polyd:daemon:' || current_schema() || ':default')::bigint"
        ).fetchone()
    assert row is not None, "nobody holds the daemon's writer lock"
    return int(row[0])


def _drop_session(pg: PgServer, pid: int) -> None:
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_server_drops_the_writer_locks_connection_it_is_retaken_and_trading_goes_on(
    make_rig: RigFactory, pg_server: PgServer
) -> None:
    rig, _ = _rig(make_rig, pg_server)
    url = str(rig.d.database_url)
    rig.trade_once()
    old = _writer_lock_session(pg_server, url)
    _drop_session(pg_server, old)
    wait_until(lambda: "writer_lock_retaken" in rig.d.event_names(), 10, what="lock retaken")
    assert _writer_lock_session(pg_server, url) != old
    body = rig.wait_health(200)
    assert body["checks"]["writer_lock"] == {"ok": True, "detail": {"held": True, "retaken": 1}}
    assert rig.d.metric("polyd_writer_lock_losses_total") == 1
    assert rig.d.metric("polyd_writer_lock_held") == 1
    rig.trade_once()  # trading goes on
    assert rig.d.alive() and _executor_state(rig) == "ACTIVE"
    c = rig.assert_consistent()
    assert c.venue_orders == 2 and c.journal_signed == 2


def test_writer_lock_taken_by_another_process_the_daemon_halts_and_exits_3(
    make_rig: RigFactory, pg_server: PgServer
) -> None:
    rig, _ = _rig(make_rig, pg_server, CANCEL_ON_SHUTDOWN="true")
    url = str(rig.d.database_url)
    rig.trade_once()
    _drop_session(pg_server, _writer_lock_session(pg_server, url))
    # a second process with the same DAEMON_ID takes the lock in the gap
    with psycopg.connect(url, autocommit=True) as twin:
        row = twin.execute(
            "SELECT pg_try_advisory_lock(hashtext('polyd:daemon:' || current_schema()"
            " || ':default'))"
        ).fetchone()
        assert row is not None and row[0] is True
        wait_until(lambda: "writer_lock_taken" in rig.d.event_names(), 10, what="lock taken")
        sent = len(rig.our_orders())
        rig.trigger()  # an opportunity after the daemon noticed: it must not trade it
        assert rig.d.proc is not None
        code = rig.d.proc.wait(timeout=30)
    assert code == 3
    events = rig.d.log_events()
    names = [str(e.get("event")) for e in events]
    taken = events[names.index("writer_lock_taken")]
    assert "another daemon with DAEMON_ID=default" in str(taken["error"])
    assert "holds the writer lock" in str(taken["error"])
    halt = names.index("trading_state_changed", names.index("writer_lock_connection_lost"))
    assert "writer lock taken" in str(events[halt]["reason"])
    assert halt < names.index("writer_lock_taken") < names.index("daemon_stopping")
    assert events[names.index("daemon_stopped")]["exit_code"] == 3
    # CANCEL_ON_SHUTDOWN is set, but the orders are the other process's to manage now
    assert "canceled_on_shutdown" not in names
    assert len(rig.our_orders()) == sent == 1
    c = rig.assert_consistent()
    assert c.venue_orders == c.journal_signed == 1


def _executor_state(rig: Rig) -> str:
    _, body = rig.d.health()
    return str(body["checks"]["executor"]["detail"]["trading_state"])
