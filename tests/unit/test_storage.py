"""Storage: migrations, journal transitions, append-only audit, group commit, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from errors import IllegalTransition, StorageError
from models import ALLOWED_TRANSITIONS, Fill, OrderStatus, TradeStatus
from storage import Database, OrderNotFound, Repositories, load_migrations
from tests.helpers import ROOT, TOKEN, make_order

req = make_order


async def test_open_applies_migrations_once_with_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    for _ in range(2):
        async with Database(path) as db:
            assert await db.schema_version() == len(load_migrations())
            mode = await db.fetchone("PRAGMA journal_mode")
            sync = await db.fetchone("PRAGMA synchronous")
            assert mode is not None and mode[0] == "wal"
            assert sync is not None and sync[0] == 2  # FULL
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_migrations").fetchall()
    assert rows == [(m.version,) for m in load_migrations()]


async def test_sql_transition_table_matches_the_model(repos: Repositories) -> None:
    rows = await repos.db.fetchall("SELECT from_status, to_status FROM order_transitions")
    in_sql = {(r[0], r[1]) for r in rows}
    in_model = {(a.value, b.value) for a, bs in ALLOWED_TRANSITIONS.items() for b in bs}
    assert in_sql == in_model


async def test_journal_records_every_transition_with_a_timestamp(repos: Repositories) -> None:
    r = req()
    await repos.orders.record(r, venue_order_id="0x" + "1" * 64, payload_hash="h")
    await repos.orders.transition(r.client_order_id, OrderStatus.LIVE)
    await repos.orders.transition(
        r.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=Decimal("4")
    )
    await repos.orders.transition(
        r.client_order_id, OrderStatus.FILLED, size_matched=Decimal("10"), detail="done"
    )
    events = await repos.orders.events(r.client_order_id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, OrderStatus.PENDING),
        (OrderStatus.PENDING, OrderStatus.LIVE),
        (OrderStatus.LIVE, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED),
    ]
    assert all(e.at for e in events)
    row = await repos.orders.get(r.client_order_id)
    assert row is not None
    assert row.status is OrderStatus.FILLED
    assert row.size_matched == Decimal("10")
    assert row.price == Decimal("0.5")


async def test_illegal_transition_is_refused_and_row_unchanged(repos: Repositories) -> None:
    r = req()
    await repos.orders.record(r)
    await repos.orders.transition(r.client_order_id, OrderStatus.FILLED)
    with pytest.raises(IllegalTransition):
        await repos.orders.transition(r.client_order_id, OrderStatus.LIVE)
    row = await repos.orders.get(r.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    # Settling a terminal row again to the same status is an idempotent no-op.
    assert await repos.orders.transition(r.client_order_id, OrderStatus.FILLED) == "FILLED"


async def test_sql_trigger_refuses_illegal_transition_even_from_raw_sql(
    repos: Repositories,
) -> None:
    r = req()
    await repos.orders.record(r)
    with pytest.raises(IllegalTransition):
        await repos.db.execute(
            "UPDATE orders SET status = 'PENDING' WHERE client_order_id = ?",
            (r.client_order_id,),
        )
    await repos.db.execute(
        "UPDATE orders SET status = 'REJECTED' WHERE client_order_id = ?", (r.client_order_id,)
    )
    with pytest.raises(IllegalTransition):
        await repos.db.execute(
            "UPDATE orders SET status = 'LIVE' WHERE client_order_id = ?", (r.client_order_id,)
        )


async def test_transition_of_unknown_order_raises(repos: Repositories) -> None:
    with pytest.raises(OrderNotFound):
        await repos.orders.transition("nope-nope", OrderStatus.LIVE)


async def test_one_failing_job_does_not_undo_the_others_in_its_batch(
    repos: Repositories,
) -> None:
    a, b = req(), req()
    await repos.orders.record(a)
    results = await asyncio.gather(
        repos.orders.record(b),
        repos.orders.record(a),  # duplicate primary key: fails alone
        repos.audit.append("probe", n=1),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2] is None
    assert await repos.orders.get(b.client_order_id) is not None
    assert (await repos.audit.tail(limit=1))[0].event == "probe"


async def test_audit_log_refuses_update_and_delete(repos: Repositories) -> None:
    await repos.audit.append("halt", reason="test")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await repos.db.execute("UPDATE audit_log SET event = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await repos.db.execute("DELETE FROM audit_log")
    entries = await repos.audit.tail()
    assert [(e.event, e.detail) for e in entries] == [("halt", {"reason": "test"})]


async def test_fill_moves_position_once_however_often_reported(repos: Repositories) -> None:
    buy = Fill(
        trade_id="t1", venue_order_id="0xa", token_id=TOKEN, side="BUY", price="0.4", size="10"
    )
    assert await repos.fills.record(buy) is not None
    assert (
        await repos.fills.record(buy.model_copy(update={"status": TradeStatus.CONFIRMED})) is None
    )
    sell = Fill(
        trade_id="t2", venue_order_id="0xb", token_id=TOKEN, side="SELL", price="0.6", size="4"
    )
    pos = await repos.fills.record(sell)
    assert pos is not None
    assert pos.size == Decimal("6")
    assert pos.avg_cost == Decimal("0.4")
    assert pos.realized_pnl == Decimal("0.8")
    stored = await repos.fills.all()
    assert len(stored) == 2
    assert stored[0].status == "CONFIRMED"
    assert (await repos.fills.position(TOKEN, strategy="unattributed")).size == Decimal("6")


async def test_cursor_advance_marks_seen_ids_atomically(repos: Repositories) -> None:
    assert await repos.cursors.get("wallet:0xabc") is None
    assert await repos.cursors.advance("wallet:0xabc", value="100", seen=["a", "b"]) == 2
    assert await repos.cursors.advance("wallet:0xabc", value="101", seen=["b", "c"]) == 1
    assert await repos.cursors.get("wallet:0xabc") == "101"
    assert await repos.cursors.seen_among("wallet:0xabc", ["a", "c", "z"]) == {"a", "c"}


async def test_a_cursor_is_rewound_never_forward_and_set_if_missing(repos: Repositories) -> None:
    """The fills checkpoint a takeover moves back (`CursorRepository.rewind`): to an earlier
    time only, compared as numbers (not as text: "99" is earlier than "100"); one that does not
    exist yet is set. Each call says what it was."""
    cursors = repos.cursors
    assert await cursors.rewind("venue:fills", 500) is None
    assert await cursors.get("venue:fills") == "500"
    assert await cursors.rewind("venue:fills", 600) == 500  # later: not moved
    assert await cursors.get("venue:fills") == "500"
    assert await cursors.rewind("venue:fills", 500) == 500
    assert await cursors.get("venue:fills") == "500"
    await cursors.advance("venue:fills", value="1000")
    assert await cursors.rewind("venue:fills", 999) == 1000
    assert await cursors.get("venue:fills") == "999"
    assert await cursors.rewind("venue:fills", 1000) == 999
    assert await cursors.get("venue:fills") == "999"
    assert await cursors.get("venue:fills@other") is None  # one source only


async def test_state_survives_reopen(tmp_path: Path) -> None:
    async with Database(tmp_path / "s.db") as db:
        await Repositories.over(db).state.set("trading_state", "HALTED", audit=("halt", {}))
    async with Database(tmp_path / "s.db") as db:
        assert await Repositories.over(db).state.get("trading_state") == "HALTED"


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    batches: list[int] = []
    async with Database(tmp_path / "g.db", observe_batch=lambda n, _s: batches.append(n)) as db:
        await asyncio.gather(
            *(
                db.execute(
                    "INSERT INTO cursors (source, value, updated_at) VALUES (?, ?, 'x')",
                    (f"s{i}", str(i)),
                )
                for i in range(500)
            )
        )
        rows = await db.fetchone("SELECT COUNT(*) FROM cursors")
    assert rows is not None and rows[0] == 500
    assert sum(batches) == 500
    assert len(batches) < 50  # hundreds of writers, a handful of commits


async def test_disk_full_fails_every_write_in_the_batch_and_is_counted(
    tmp_path: Path,
) -> None:
    errors: list[int] = []
    async with Database(tmp_path / "e.db", observe_error=lambda: errors.append(1)) as db:
        # Cap the file at its current size: the next batch cannot grow it (a stand-in for a
        # full disk), so its commit fails and none of its writes may be acknowledged.
        pages = await db.fetchone("PRAGMA page_count")
        assert pages is not None
        await db.fetchall(f"PRAGMA max_page_count = {int(pages[0])}")
        results = await asyncio.gather(
            *(
                db.execute(
                    "INSERT INTO audit_log (at, event, detail) VALUES ('t', 'x', ?)", ("y" * 4000,)
                )
                for _ in range(20)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, StorageError) for r in results), results
        assert errors
        assert db.last_write_error is not None
        rows = await db.fetchone("SELECT COUNT(*) FROM audit_log")
        assert rows is not None and rows[0] == 0
        # Space again: writes succeed and the error clears.
        await db.fetchall("PRAGMA max_page_count = 1000000")
        await db.execute("INSERT INTO audit_log (at, event, detail) VALUES ('t', 'ok', '{}')")
        assert db.last_write_error is None


async def test_write_after_close_is_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.db")
    await db.open()
    await db.close()
    with pytest.raises(StorageError):
        await db.execute("SELECT 1")


LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    c = sqlite3.connect(sys.argv[1], isolation_level=None)
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO cursors (source, value, updated_at) VALUES ('holder', '1', 'x')")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    c.execute("COMMIT")
    print("released", flush=True)
    """
)


async def test_database_locked_by_another_process_delays_but_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    async with Database(path, busy_timeout_ms=200) as db:
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path), "2.5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            await asyncio.gather(
                *(
                    db.execute(
                        "INSERT INTO cursors (source, value, updated_at) VALUES (?, '1', 'x')",
                        (f"w{i}",),
                    )
                    for i in range(50)
                )
            )
            waited = time.monotonic() - started
        finally:
            holder.wait(timeout=30)
        rows = await db.fetchone("SELECT COUNT(*) FROM cursors")
    assert waited > 1.0  # the writes really were held up by the lock...
    assert rows is not None and rows[0] == 51  # ...and none was lost


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from storage import Database

    async def main():
        db = Database(sys.argv[1])
        await db.open()
        i = 0
        while True:
            batch = [
                db.execute(
                    "INSERT INTO cursors (source, value, updated_at) VALUES (?, '1', 'x')",
                    (f"k{i + j}",),
                )
                for j in range(20)
            ]
            await asyncio.gather(*batch)
            i += 20
            print(f"acked {i}", flush=True)

    asyncio.run(main())
    """
)


def test_write_acked_by_group_commit_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    acked = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while acked < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("acked "):
                acked = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert acked >= 400
    conn = sqlite3.connect(path)
    keys = {r[0] for r in conn.execute("SELECT source FROM cursors")}
    missing = [f"k{i}" for i in range(acked) if f"k{i}" not in keys]
    assert missing == []


async def test_health_probe_reports_the_last_ping_without_waiting_on_writes(
    tmp_path: Path,
) -> None:
    from wiring.database import DatabaseProbe

    async with Database(tmp_path / "p.db") as db:
        probe = DatabaseProbe(db, interval_s=0.01, stale_after_s=0.2)
        assert probe.check().ok is False  # never pinged yet
        await probe.ping()
        assert probe.check().ok is True
        await asyncio.sleep(0.3)
        stale = probe.check()
        assert stale.ok is False
        assert "no answer" in str(stale.detail)
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.05)
        assert probe.check().ok is True
        db.last_write_error = "disk full"
        assert probe.check().detail == "last write batch failed"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_read_sees_every_write_queued_before_it(repos: Repositories, engine: str) -> None:
    """Read-your-writes: with two batches on the database (the first held on the database
    thread), a third write waits in the queue; a read made after it was queued returns only
    once it is committed, and sees it. On PostgreSQL, whose reads have their own connections,
    `ping` (does the database answer?) waits for no write."""
    db = repos.db
    release = threading.Event()

    def held(_: object) -> None:
        release.wait(10)  # on the database thread: the first batch is slow to commit

    first = asyncio.ensure_future(db.write(held))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(repos.audit.append("rw_second"))
    await asyncio.sleep(0)
    third = asyncio.ensure_future(repos.audit.append("rw_third"))
    await asyncio.sleep(0)
    reading = asyncio.ensure_future(repos.audit.tail(event="rw_third"))
    await asyncio.sleep(0.1)
    assert not reading.done()  # waiting for the three writes queued before it
    if engine == "postgres":
        assert await asyncio.wait_for(db.ping(), 5)
    release.set()
    entries = await asyncio.wait_for(reading, 10)
    assert [e.event for e in entries] == ["rw_third"]
    assert third.done() and second.done() and first.done()
