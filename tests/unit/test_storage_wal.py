"""WAL checkpoints on their own thread (storage.wal): commits never checkpoint, the log stays
bounded, a failing checkpoint is reported and recovers, and close leaves no log behind.

SQLite's behaviour relied on: https://sqlite.org/wal.html ("Automatic Checkpoint",
"Application-Initiated Checkpoints") and https://sqlite.org/c3ref/wal_autocheckpoint.html (the
automatic checkpoint runs in the COMMIT that takes the log past N frames; PASSIVE checkpoints do
not block writers; the next writer restarts the log after a complete checkpoint).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from observability.metrics import Metrics
from storage import Database
from storage.wal import SAFETY_AUTOCHECKPOINT_PAGES
from tests.helpers import ROOT

ROW = "INSERT INTO audit_log (at, event, detail) VALUES ('t', 'x', ?)"


def wal_frames(db: Path, page_size: int) -> int:
    """Frames the log file holds (it only grows: a restarted log is overwritten in place)."""
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    return max(0, (size - 32) // (page_size + 24))


async def page_size(db: Database) -> int:
    row = await db.fetchone("PRAGMA page_size")
    assert row is not None
    return int(row[0])


async def test_commits_do_not_checkpoint_the_checkpointer_does(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    # The thread never wakes on its own here: checkpoints happen only when the test asks.
    async with Database(path, checkpoint_interval_s=3600) as db:
        auto = await db.fetchone("PRAGMA wal_autocheckpoint")
        assert auto is not None and auto[0] == SAFETY_AUTOCHECKPOINT_PAGES
        ps = await page_size(db)
        for _ in range(1500):  # one commit each, a page of text each: past SQLite's 1,000
            await db.execute(ROW, ("y" * 3000,))
        # With SQLite's automatic checkpoint the COMMIT past 1,000 frames would have copied the
        # log back and the next one restarted it: the file would hold about 1,000 frames.
        grown = wal_frames(path, ps)
        assert grown > 1500, grown
        checkpointer = db.checkpointer
        assert checkpointer is not None
        assert checkpointer.checkpoint()
        assert checkpointer.last is not None
        busy, frames, copied = checkpointer.last
        assert busy == 0 and frames == copied >= 1500
        # The next commit restarts the log from its start: the file does not grow, and the log
        # now holds only that commit's frames.
        await db.execute("INSERT INTO audit_log (at, event, detail) VALUES ('t', 'z', '')")
        assert checkpointer.checkpoint()
        assert checkpointer.last is not None and checkpointer.last[1] < 10
        assert wal_frames(path, ps) == grown
        rows = await db.fetchone("SELECT COUNT(*) FROM audit_log WHERE event = 'x'")
        assert rows is not None and rows[0] == 1500


async def test_the_thread_checkpoints_every_interval_and_is_observed(tmp_path: Path) -> None:
    metrics = Metrics()
    async with Database(
        tmp_path / "t.db",
        checkpoint_interval_s=0.02,
        observe_checkpoint=metrics.observe_db_checkpoint,
    ) as db:
        checkpointer = db.checkpointer
        assert checkpointer is not None
        for _ in range(50):
            await db.execute(ROW, ("y" * 3000,))
        deadline = time.monotonic() + 10
        while not (checkpointer.last and checkpointer.last[1] == checkpointer.last[2] > 0):
            assert time.monotonic() < deadline, checkpointer.last
            await asyncio.sleep(0.02)
    count = metrics.registry.get_sample_value("polyd_db_checkpoint_seconds_count")
    failures = metrics.registry.get_sample_value("polyd_db_checkpoint_failures_total")
    assert count is not None and count >= checkpointer.checkpoints >= 1
    assert failures == 0


async def test_close_stops_the_thread_and_sqlite_removes_the_log(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with Database(path, checkpoint_interval_s=0.01) as db:
        for _ in range(20):
            await db.execute(ROW, ("y",))
        names = {t.name for t in threading.enumerate()}
        assert "wal-checkpoint:c.db" in names
    # No connection is left open: SQLite's last close checkpointed and deleted the log.
    assert not path.with_name("c.db-wal").exists()
    assert "wal-checkpoint:c.db" not in {t.name for t in threading.enumerate()}
    assert db.checkpointer is None


async def test_without_an_interval_sqlite_checkpoints_as_by_default(tmp_path: Path) -> None:
    async with Database(tmp_path / "d.db", checkpoint_interval_s=None) as db:
        auto = await db.fetchone("PRAGMA wal_autocheckpoint")
        assert auto is not None and auto[0] == 1000
        assert db.checkpointer is None
    async with Database(":memory:") as mem:
        assert mem.checkpointer is None


# A disk that will not let the database file grow, in a subprocess of its own: RLIMIT_FSIZE at
# the file's current size (Python ignores SIGXFSZ, so the write fails with EFBIG, as it would
# with ENOSPC). The log already holds the frames, so the commits were durable; only the copy
# back into the database file fails.
FULL_DISK = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    sys.path.insert(0, sys.argv[2])
    import structlog
    from structlog.testing import capture_logs
    from storage import Database

    async def main():
        seen = []
        db = Database(sys.argv[1], checkpoint_interval_s=3600,
                      observe_checkpoint=lambda s, ok: seen.append(ok))
        await db.open()
        for _ in range(300):
            await db.execute("INSERT INTO audit_log (at, event, detail) VALUES ('t', 'x', ?)",
                             ("y" * 3000,))
        size = __import__("os").path.getsize(sys.argv[1])
        ck = db.checkpointer
        with capture_logs() as logs:
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
            first, second = ck.checkpoint(), ck.checkpoint()
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            third = ck.checkpoint()
        await db.close()
        print(json.dumps({
            "results": [first, second, third], "failures": ck.failures, "seen": seen,
            "last": ck.last, "events": [e["event"] for e in logs],
            "errors": [e.get("error") for e in logs],
        }))

    asyncio.run(main())
    """
)


def test_a_failing_checkpoint_is_logged_once_counted_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["results"] == [False, False, True]
    assert r["failures"] == 2 and r["seen"] == [False, False, True]
    # one warning for the two identical failures, one note when it works again
    assert r["events"] == ["wal_checkpoint_failed", "wal_checkpoint_recovered"], r
    assert r["errors"][0]
    busy, frames, copied = r["last"]
    assert busy == 0 and frames == copied >= 300
    # nothing was lost: every row is in the database
    import sqlite3

    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM audit_log WHERE event = 'x'")
    assert rows.fetchone()[0] == 300
