"""The database: one aiosqlite connection, WAL, `synchronous=FULL`, and a group-commit writer.
WAL checkpoints run on a thread of their own, off the commit path (`storage.wal`).

Writers hand the database a *job* — a plain function over the `sqlite3.Connection` — and await it.
A single writer task collects every job queued while the previous batch was committing, runs them
in one transaction (each inside its own SAVEPOINT, so one failing job does not undo the others),
and commits once: one fsync for the whole batch. A caller's await returns only after the COMMIT
that made its write durable has returned.

Reads see every write queued before them (read-your-writes): `fetchall` first waits until the
writes queued before it are committed (or have failed). A caller that hands a write over without
waiting for it (the executor's outcome row, once the strategy has its answer) can rely on any
later read, from any task, seeing it.

A database locked by another process delays the batch (busy_timeout, then retries until the
database is closed); it never drops a job. A failed COMMIT (disk full, I/O error) fails every job
in the batch with `StorageError` — nothing is acknowledged that is not on disk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from errors import FatalError, IllegalTransition, StorageError
from storage.wal import SAFETY_AUTOCHECKPOINT_PAGES, WalCheckpointer

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

log = structlog.get_logger("storage")

_LOCKED_MARKERS = ("database is locked", "database table is locked", "busy")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(engine: str = "sqlite") -> list[Migration]:
    """Return the numbered migrations shipped in `storage/migrations/`, in order.

    One numbered list for both engines: `NNNN_name.sql` is SQLite's, `NNNN_name.pg.sql` the same
    step for PostgreSQL (`engine="postgres"`). Every SQLite migration must have its PostgreSQL
    twin, so the two engines never drift apart in what they have applied.
    """
    if engine not in ("sqlite", "postgres"):
        raise StorageError(f"unknown database engine {engine!r} (sqlite or postgres)")
    out: list[Migration] = []
    pg: dict[str, str] = {}
    for entry in resources.files("storage.migrations").iterdir():
        name = entry.name
        if name.endswith(".pg.sql"):
            pg[name.removesuffix(".pg.sql")] = entry.read_text("utf-8")
            continue
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        out.append(Migration(version, name.removesuffix(".sql"), entry.read_text("utf-8")))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise StorageError(f"migrations must be numbered 1..n without gaps, found {versions}")
    if engine == "postgres":
        missing = [m.name for m in out if m.name not in pg]
        if missing or len(pg) != len(out):
            extra = sorted(set(pg) - {m.name for m in out})
            raise StorageError(
                f"PostgreSQL migrations out of step: missing {missing}, without SQLite twin {extra}"
            )
        out = [Migration(m.version, m.name, pg[m.name]) for m in out]
    return out


def _apply_migration(conn: sqlite3.Connection, m: Migration) -> None:
    """Apply one migration in one transaction: its SQL, its data step if it has one (see
    `storage.migrations.steps`), and its row in `schema_migrations`. Runs on the connection's
    thread."""
    from storage.migrations.steps import STEPS  # the steps use the repositories' helpers

    # executescript commits any open transaction first; the transaction opened here stays open
    # (no COMMIT in the script) for the data step.
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + m.sql)
        if (step := STEPS.get(m.name)) is not None:
            step(conn)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (m.version, m.name),
        )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _is_locked(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return any(m in text for m in _LOCKED_MARKERS)


def _translate(e: Exception) -> Exception:
    """Map sqlite errors raised by a job to the daemon's exception tree."""
    if isinstance(e, sqlite3.IntegrityError) and "illegal order status transition" in str(e):
        return IllegalTransition(str(e))
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.IntegrityError):
        return StorageError(f"database write failed: {e}")
    return e


class Database:
    """The daemon's SQLite database. Open it, `write()` jobs through it, `fetchall()` from it."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = 5000,
        max_batch: int = 2000,
        pipeline_depth: int = 2,
        observe_batch: Callable[[int, float], None] | None = None,
        observe_error: Callable[[], None] | None = None,
        checkpoint_interval_s: float | None = 0.5,
        observe_checkpoint: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        # WAL checkpoints on their own thread every `checkpoint_interval_s` (storage.wal); None:
        # SQLite's automatic checkpoint inside the COMMIT that crosses 1,000 pages.
        self.checkpoint_interval_s = checkpoint_interval_s
        self._observe_checkpoint = observe_checkpoint
        self.checkpointer: WalCheckpointer | None = None
        self.max_batch = max_batch
        self.pipeline_depth = pipeline_depth
        self._observe_batch = observe_batch
        self._observe_error = observe_error
        self._conn: aiosqlite.Connection | None = None
        self._queue: list[tuple[Job, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()  # a batch finished, or close() began: the writer looks
        self._inflight: set[asyncio.Future[None]] = set()  # batches handed to the database
        self._dispatch_due = False  # a `_dispatch` is scheduled for the end of this loop turn
        # Read-your-writes: writes queued and writes settled (committed or failed) so far, and
        # the reads waiting for a count to be settled, in the order they came (`fetchall`).
        self._queued_writes = 0
        self._settled_writes = 0
        self._readers: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.last_write_error: str | None = None
        self.observe_query: Callable[[float], None] | None = None
        """Called with the seconds each read took (`fetchall`), when set."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, set the pragmas, apply pending migrations and start the writer."""
        if self.path != Path(":memory:"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = await (await conn.execute("PRAGMA journal_mode = WAL")).fetchone()
            if self.path != Path(":memory:") and (mode is None or str(mode[0]).lower() != "wal"):
                raise StorageError(f"could not enable WAL on {self.path}")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            conn.row_factory = sqlite3.Row
            await self._migrate()
            if self.path != Path(":memory:") and self.checkpoint_interval_s is not None:
                await conn.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_AUTOCHECKPOINT_PAGES}")
                checkpointer = WalCheckpointer(
                    self.path,
                    interval_s=self.checkpoint_interval_s,
                    observe=self._observe_checkpoint,
                )
                await asyncio.to_thread(checkpointer.start)
                self.checkpointer = checkpointer
        except BaseException as e:
            # The connection's thread would keep the process alive after the error.
            self._conn = None
            await self._stop_checkpointer()
            await conn.close()
            if isinstance(e, sqlite3.DatabaseError):  # e.g. "file is not a database"
                raise FatalError(f"cannot open the database {self.path}: {e}") from None
            raise
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="storage:writer")

    async def close(self) -> None:
        """Flush queued writes, stop the writer and close the connection."""
        if self._conn is None:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._stop_checkpointer()
        await self._conn.close()
        self._conn = None

    async def _stop_checkpointer(self) -> None:
        checkpointer, self.checkpointer = self.checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    # -- migrations --------------------------------------------------------------------------

    async def _migrate(self) -> None:
        conn = self._require()
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
        applied = {int(r[0]) for r in rows}
        for m in load_migrations():
            if m.version in applied:
                continue
            try:
                await self._run_in_db_thread(_apply_migration, conn._conn, m)
            except sqlite3.Error as e:
                raise StorageError(f"migration {m.name} failed: {e}") from e
            log.info("migration_applied", version=m.version, name=m.name)

    async def schema_version(self) -> int:
        rows = await self.fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    # -- reads -------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query once every write queued before it is settled. Reads are served
        between write batches, never inside one."""
        await self.writes_settled()
        return await self._fetchall_now(sql, params)

    async def writes_settled(self) -> None:
        """Return once every write queued before this call is committed or has failed.

        Immediate when nothing is pending. Waiting does not cancel or reorder anything; a
        cancelled waiter just stops waiting."""
        target = self._queued_writes
        if self._settled_writes >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readers.append((target, fut))
        await fut

    def _settled(self, n: int) -> None:
        """`n` more writes are settled (batches settle in the order they were queued)."""
        self._settled_writes += n
        readers = self._readers
        while readers and readers[0][0] <= self._settled_writes:
            _, fut = readers.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _fetchall_now(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        started = time.perf_counter()
        try:
            rows = await self._require().execute_fetchall(sql, params)
        finally:
            if self.observe_query is not None:
                self.observe_query(time.perf_counter() - started)
        return cast(list[sqlite3.Row], list(rows))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    def pool_stats(self) -> dict[str, int] | None:
        """The read connections' pool (`size`, `available`, `waiting`); None: SQLite has none."""
        return None

    async def ping(self) -> bool:
        """Return True if the database answers a trivial query (not waiting for queued writes:
        this asks whether the database answers, not whether the writer is idle)."""
        try:
            await self._fetchall_now("SELECT 1", ())
        except (sqlite3.Error, ValueError, StorageError):
            return False
        return True

    # -- writes ------------------------------------------------------------------------------

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Queue `job` for the next group commit and return its result once it is durable.

        A job runs on the database thread inside the batch transaction; it must not touch the
        event loop, and must have no effect outside the connection: if another job in its batch
        fails, the batch is rolled back and re-run with each job in its own savepoint. If the
        caller is cancelled after queueing, the write still happens.
        """
        if not self.is_open or self._closing:
            raise StorageError("database is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((job, fut))
        self._queued_writes += 1
        if not self._dispatch_due:
            # Once per loop turn: the writes queued in this turn go as one batch.
            self._dispatch_due = True
            asyncio.get_running_loop().call_soon(self._dispatch)
        return await fut

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement through the group-commit writer; return the row count."""

        def job(c: sqlite3.Connection) -> int:
            return c.execute(sql, params).rowcount

        return await self.write(job)

    def _dispatch(self) -> None:
        """Hand queued jobs to the database thread as batches while the pipeline has room.

        Scheduled by `write()` for the end of the loop turn it was called in (every write of
        that turn goes in one batch), so a write on an idle database is handed over without
        first waking a writer task; and called when a batch finishes, so what queued meanwhile
        goes next. Two
        batches in flight (`pipeline_depth`): while the database thread commits batch k, the
        loop settles the callers of batch k-1 and gathers batch k+1. Batches run on the single
        database thread in submission order, so a write queued after another is committed
        after it.
        """
        self._dispatch_due = False
        while self._queue and len(self._inflight) < self.pipeline_depth:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            fut = asyncio.ensure_future(self._commit_batch(batch))
            self._inflight.add(fut)
            fut.add_done_callback(self._batch_done)

    def _batch_done(self, fut: asyncio.Future[None]) -> None:
        self._inflight.discard(fut)
        self._dispatch()
        self._wake.set()

    async def _write_loop(self) -> None:
        # Batches start from `write()` and `_batch_done`; this task only sees the queue flushed
        # and the last batch durable when `close()` asks.
        while True:
            self._dispatch()
            if self._closing and not self._queue and not self._inflight:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _commit_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        try:
            await self._commit_jobs(batch)
        finally:
            self._settled(len(batch))

    async def _commit_jobs(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        started = time.perf_counter()
        try:
            results = await self._run_in_db_thread(self._run_batch, batch)
        except Exception as e:  # the batch as a whole failed: nothing in it is durable
            self.last_write_error = str(e)
            log.error("db_batch_failed", jobs=len(batch), error=str(e))
            if self._observe_error is not None:
                self._observe_error()
            err = e if isinstance(e, StorageError) else StorageError(f"commit failed: {e}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        failed = [v for ok, v in results if not ok and isinstance(v, StorageError)]
        self.last_write_error = str(failed[-1]) if failed else None
        if failed and self._observe_error is not None:
            self._observe_error()  # e.g. disk full at the statement rather than at COMMIT
        if self._observe_batch is not None:
            self._observe_batch(len(batch), time.perf_counter() - started)
        for (_, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():  # the caller was cancelled; its write happened anyway
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def _run_in_db_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # aiosqlite runs every call on the connection's own thread; `_execute` hands it a whole
        # function, so a batch costs one thread hop instead of one per statement. The version is
        # pinned in requirements.lock and the storage tests exercise this path.
        conn = self._require()
        return cast(T, await conn._execute(fn, *args))  # type: ignore[no-untyped-call]

    def _run_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        # the raw sqlite3 connection; we are on its thread
        return self._run_jobs(self._require()._conn, batch)

    def _run_jobs(
        self, conn: sqlite3.Connection, batch: list[tuple[Job, asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        """Run one batch in one transaction on `conn` (the database thread's connection)."""
        jobs = [job for job, _ in batch]
        self._begin(conn)
        try:
            # Fast path: no savepoints. Almost every batch succeeds whole.
            results: list[tuple[bool, Any]] = [(True, job(conn)) for job in jobs]
        except Exception:
            conn.execute("ROLLBACK")
            self._begin(conn)
            try:
                results = self._run_isolated(conn, jobs)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            self._commit(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _run_isolated(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]]:
        """Run each job in its own savepoint, so a failing job is undone alone."""
        results: list[tuple[bool, Any]] = []
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                value = job(conn)
            except Exception as e:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                results.append((False, _translate(e)))
            else:
                conn.execute("RELEASE job")
                results.append((True, value))
        return results

    def _begin(self, conn: sqlite3.Connection) -> None:
        waited = 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _is_locked(e) or (self._closing and waited > 30):
                    raise StorageError(f"could not start a write transaction: {e}") from e
                # busy_timeout already waited; keep the jobs and try again rather than lose them.
                time.sleep(0.05)
                waited += 0.05 + self.busy_timeout_ms / 1000

    def _commit(self, conn: sqlite3.Connection) -> None:
        while True:
            try:
                conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if not _is_locked(e):
                    raise StorageError(f"commit failed: {e}") from e
                time.sleep(0.05)

    def _require(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageError("database is not open")
        return self._conn


def executemany(conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """Run `sql` for each row inside a job; return the number of rows changed."""
    return conn.executemany(sql, rows).rowcount
