"""WAL checkpoints off the commit path: one thread with its own connection to the database.

SQLite's default is an *automatic* checkpoint: the COMMIT that takes the write-ahead log past
1,000 pages copies the log back into the database file and syncs it before it returns. That
commit is whichever write comes next, in the daemon often an order's PENDING row, which must be
durable before the order leaves; on this project's machine the checkpointing commit took 2-5 ms
instead of 0.5 ms. SQLite's documentation (https://sqlite.org/wal.html, "Application-Initiated
Checkpoints"; https://sqlite.org/c3ref/wal_autocheckpoint.html) describes the alternative used
here: the writer's automatic checkpoint is raised out of the way, and a separate connection runs
PASSIVE checkpoints. A PASSIVE checkpoint never takes the write lock, so commits go on while it
copies pages; the writer restarts the log from its start at the first commit after a complete
checkpoint, so the log stays the size of what is written between checkpoints.

Durability is unchanged: the writer still commits with `synchronous=FULL` (the log is synced at
every COMMIT), and the checkpoint connection runs with `synchronous=FULL` too, so the database
file is synced before the log is reused.

The writer keeps a far higher automatic threshold (`SAFETY_AUTOCHECKPOINT_PAGES`) as a backstop:
if checkpoints here stop completing (a failing disk, a reader holding an old snapshot for
minutes), the log is still bounded, at the old price, and every failure is logged.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("storage")

SAFETY_AUTOCHECKPOINT_PAGES = 10_000
"""The writer's own automatic checkpoint (≈ 40 MB of log at 4 KiB pages): a backstop only."""


class WalCheckpointer:
    """PASSIVE checkpoints of `path` every `interval_s`, on a daemon thread of its own.

    `start()` opens its connection (the database must exist and be in WAL mode); `stop()` ends
    the thread and closes the connection. When the last connection to the database closes,
    SQLite checkpoints the log and deletes it, as before.
    `observe` (when set) is called on the checkpoint thread with each checkpoint's seconds and
    whether it succeeded.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval_s: float = 0.5,
        observe: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self._observe = observe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._last_error: str | None = None
        self.checkpoints = 0
        """Checkpoints run (each PASSIVE call that answered)."""
        self.failures = 0
        self.last: tuple[int, int, int] | None = None
        """The last answer: (busy, frames in the log, frames checkpointed)."""

    def start(self) -> None:
        """Open the checkpoint connection and start the thread."""
        if self._thread is not None:
            return
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            # The checkpoint syncs the log before copying and the database file after, so the
            # log is never reused before what it held is on disk.
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint:{self.path.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the thread (after a checkpoint in progress) and close the connection."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():  # a checkpoint stuck on the disk: leave the daemon thread be
            log.warning("wal_checkpoint_stop_timed_out", db=str(self.path), timeout_s=timeout_s)
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def checkpoint(self) -> bool:
        """Run one PASSIVE checkpoint now, on the caller's thread; return whether it worked.

        A no-op costing a lock and a read of the shared index when the log holds nothing new."""
        conn = self._conn
        if conn is None:
            return False
        started = time.perf_counter()
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            self.failures += 1
            self._report(False, started)
            if str(e) != self._last_error:  # once per distinct error, not every interval
                self._last_error = str(e)
                log.warning("wal_checkpoint_failed", db=str(self.path), error=str(e))
            return False
        self.checkpoints += 1
        self.last = (int(row[0]), int(row[1]), int(row[2])) if row is not None else None
        self._report(True, started)
        if self._last_error is not None:
            log.info("wal_checkpoint_recovered", db=str(self.path), error=self._last_error)
            self._last_error = None
        return True

    def _report(self, ok: bool, started: float) -> None:
        if self._observe is not None:
            self._observe(time.perf_counter() - started, ok)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.checkpoint()
