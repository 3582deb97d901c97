"""The PostgreSQL store: the same `Database` contract over psycopg 3 (`DATABASE_URL=postgresql://…`).

The repositories hand the database *jobs*: plain functions over a connection, run inside the
group-commit transaction on the database thread (`storage.db`). Here that thread owns one psycopg
connection (autocommit, explicit BEGIN/COMMIT), so the group-commit writer, its savepoint
fallback, and the journal-before-send guarantee (a write is acknowledged only after the COMMIT
that made it durable returned) are the SQLite writer's own code. Reads go through a pool of
asynchronous psycopg connections and never wait for the writer.

`PgConnection` is the part of `sqlite3.Connection` the jobs use (`execute`, `executemany`,
cursors with `rowcount`, `lastrowid`, `fetchone`, `fetchall`, rows readable by index and by
name), translating the few SQLite spellings the repositories use (`?` parameters,
`INSERT OR IGNORE`, `INSERT OR REPLACE`, `rowid`, `LIMIT -1`) and raising the `sqlite3`
exception classes the repositories already catch. Values cross the seam as SQLite hands them
out: money columns are `NUMERIC` in PostgreSQL and read back as the exact decimal text that was
written; `TIMESTAMPTZ` columns read back as ISO-8601 UTC text with microseconds (what
`storage.audit.now_iso` writes); `JSONB` reads back as JSON text. Parameters are sent untyped,
as SQLite takes them, so the server types each one from its column.

Why psycopg 3 rather than asyncpg: see docs/storage-postgres.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import structlog
from psycopg.adapt import Dumper, Loader
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import AsyncConnectionPool

from errors import FatalError, StorageError
from storage.db import Database, Migration, load_migrations

T = TypeVar("T")

log = structlog.get_logger("storage")

URL_PREFIXES = ("postgresql://", "postgres://")

# Two daemons starting at once: the first takes this lock and migrates, the second waits for it
# and finds nothing left to apply. A session lock, released explicitly (and by disconnection).
MIGRATION_LOCK_KEY = zlib.crc32(b"polyd:migrations")

# Tables whose `INTEGER PRIMARY KEY` is an identity column `id`: an INSERT into them returns the
# new id, which `cursor.lastrowid` gives back as sqlite3 does.
_ID_TABLES = frozenset({"audit_log", "order_events", "redemptions"})
# The conflict target of `INSERT OR REPLACE INTO <table>` (the table's primary key).
_REPLACE_KEYS = {"copy_intents": ("client_order_id",)}
PING_TIMEOUT_S = 2.0
"""How long the health ping waits for a pooled connection."""


def is_postgres_url(value: str | None) -> bool:
    """True if `value` names a PostgreSQL database (`postgresql://…` or `postgres://…`)."""
    return bool(value) and str(value).startswith(URL_PREFIXES)


# -- SQL ------------------------------------------------------------------------------------

_INSERT_OR = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)", re.IGNORECASE)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_COLUMNS = re.compile(r"INTO\s+\w+\s*\(([^)]*)\)", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """Return the PostgreSQL spelling of one statement the repositories write for SQLite."""
    out: list[str] = []
    quoted = False
    for ch in sql:  # `?` outside string literals is a parameter; `%` must be doubled
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    text = "".join(out)
    text = re.sub(r"\browid\b", "seq", text)
    text = re.sub(r"\s+INDEXED\s+BY\s+\w+", "", text, flags=re.IGNORECASE)  # planner's hint
    text = re.sub(r"\bLIMIT\s+-1\b", "LIMIT ALL", text, flags=re.IGNORECASE)
    text = re.sub(r"^\s*BEGIN\s+IMMEDIATE\b", "BEGIN", text, flags=re.IGNORECASE)
    m = _INSERT_OR.match(text)
    if m is not None:
        kind, table = m.group(1).upper(), m.group(2)
        text = "INSERT INTO " + table + text[m.end() :]
        if kind == "IGNORE":
            text += " ON CONFLICT DO NOTHING"
        else:
            keys = _REPLACE_KEYS.get(table)
            cols = _COLUMNS.search(text)
            if keys is None or cols is None:
                raise StorageError(f"INSERT OR REPLACE INTO {table} has no PostgreSQL spelling")
            names = [c.strip() for c in cols.group(1).split(",")]
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in keys)
            text += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    return text


def _returns_id(sql: str) -> bool:
    m = _INSERT_INTO.match(sql)
    return (
        m is not None
        and m.group(1) in _ID_TABLES
        and "RETURNING" not in sql.upper()
        and "VALUES" in sql.upper()
    )


# -- values ---------------------------------------------------------------------------------


class _Untyped(Dumper):
    """Send a Python value as untyped text, so the server types it from its column (as
    SQLite's columns take any value)."""

    def dump(self, obj: Any) -> bytes:
        if isinstance(obj, bool):
            return b"1" if obj else b"0"
        return str(obj).encode()


class _Text(Loader):
    """Read a column as the text PostgreSQL prints (NUMERIC keeps its exact digits)."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


class _IsoTimestamp(TimestamptzLoader):
    """Read TIMESTAMPTZ as ISO-8601 UTC text with microseconds, as the daemon writes it."""

    def load(self, data: Any) -> str:  # type: ignore[override]
        value: datetime = super().load(data)
        return value.astimezone(UTC).isoformat(timespec="microseconds")


def _configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    adapters = conn.adapters
    for kind in (int, float, bool):
        adapters.register_dumper(kind, _Untyped)
    adapters.register_dumper("decimal.Decimal", _Untyped)
    for name in ("numeric", "jsonb", "json"):
        adapters.register_loader(name, _Text)
    adapters.register_loader("timestamptz", _IsoTimestamp)
    conn.row_factory = _row_factory


class Row(tuple[Any, ...]):
    """A result row readable by index and by column name, like `sqlite3.Row`."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    desc = cursor.description or []
    index = {d.name: i for i, d in enumerate(desc)}
    return lambda values: Row(values, index)


# -- errors ---------------------------------------------------------------------------------


def _as_sqlite_error(e: psycopg.Error) -> sqlite3.Error:
    """The sqlite3 exception a repository job already handles for this psycopg error."""
    text = (e.diag.message_primary or str(e)) if hasattr(e, "diag") else str(e)
    if isinstance(e, psycopg.errors.IntegrityError):
        return sqlite3.IntegrityError(text)
    if isinstance(e, psycopg.errors.OperationalError | psycopg.errors.InternalError):
        return sqlite3.OperationalError(text)
    return sqlite3.DatabaseError(text)


# -- the connection jobs see ----------------------------------------------------------------


class PgCursor:
    """The result of one statement: `rowcount`, `lastrowid`, rows."""

    def __init__(self, cur: psycopg.Cursor[Any], lastrowid: int | None) -> None:
        self._cur = cur
        self.lastrowid = lastrowid
        self.rowcount = cur.rowcount

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """The `sqlite3.Connection` subset repository jobs use, over one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        text = translate(sql)
        want_id = _returns_id(text)
        if want_id:
            text += " RETURNING id"
        try:
            cur = self.raw.execute(text, tuple(params) if params else None)
        except psycopg.Error as e:
            raise _as_sqlite_error(e) from e
        lastrowid = None
        if want_id:
            row = cur.fetchone()
            lastrowid = int(row[0]) if row else None
        return PgCursor(cur, lastrowid)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        cur = self.raw.cursor()
        total = 0
        try:
            for params in rows:
                cur.execute(translate(sql), tuple(params))
                total += max(cur.rowcount, 0)
        except psycopg.Error as e:
            raise _as_sqlite_error(e) from e
        out = PgCursor(cur, None)
        out.rowcount = total
        return out

    def close(self) -> None:
        self.raw.close()

    def executescript(self, sql: str) -> None:
        try:
            self.raw.execute(sql.encode())  # no parameters: several statements in one query
        except psycopg.Error as e:
            raise _as_sqlite_error(e) from e


# -- the database ---------------------------------------------------------------------------


def _apply_migration(pc: PgConnection, m: Migration) -> None:
    from storage.migrations.steps import STEPS

    pc.execute("BEGIN")
    try:
        pc.executescript(m.sql)
        if (step := STEPS.get(m.name)) is not None:
            step(cast(sqlite3.Connection, pc))
        pc.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())",
            (m.version, m.name),
        )
        pc.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            pc.execute("ROLLBACK")
        raise


def migrate(pc: PgConnection) -> list[Migration]:
    """Apply the pending PostgreSQL migrations under the migration lock; return those applied."""
    done: list[Migration] = []
    pc.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK_KEY,))
    try:
        pc.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        applied = {int(r[0]) for r in pc.execute("SELECT version FROM schema_migrations")}
        for m in load_migrations("postgres"):
            if m.version not in applied:
                _apply_migration(pc, m)
                done.append(m)
    finally:
        pc.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK_KEY,))
    return done


class PgDatabase(Database):
    """The daemon's PostgreSQL database: `Database`'s contract and group-commit writer."""

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 4,
        max_batch: int = 2000,
        pipeline_depth: int = 2,
        observe_batch: Callable[[int, float], None] | None = None,
        observe_error: Callable[[], None] | None = None,
    ) -> None:
        if not is_postgres_url(url):
            raise StorageError(f"not a PostgreSQL URL: {url!r}")
        super().__init__(
            ":memory:",
            max_batch=max_batch,
            pipeline_depth=pipeline_depth,
            observe_batch=observe_batch,
            observe_error=observe_error,
        )
        self.url = url
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pg: PgConnection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pool: AsyncConnectionPool[Any] | None = None

    async def open(self) -> None:
        """Connect the writer, migrate under the migration lock, open the read pool."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-pg")
        try:
            raw = await self._run_in_db_thread(self._connect)
            self._pg = PgConnection(raw)
            for m in await self._run_in_db_thread(migrate, self._pg):
                log.info("migration_applied", version=m.version, name=m.name, engine="postgres")

            async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
                _configure(conn)
                await conn.execute("SET TIME ZONE 'UTC'")

            self._pool = AsyncConnectionPool(
                self.url,
                min_size=self.pool_min,
                max_size=self.pool_max,
                kwargs={"autocommit": True},
                configure=configure,
                # a connection the server dropped is replaced before a read gets it
                check=AsyncConnectionPool.check_connection,
                open=False,
            )
            await self._pool.open(wait=True, timeout=10)
        except BaseException as e:
            await self._shutdown()
            if isinstance(e, psycopg.Error | sqlite3.Error):
                raise FatalError(f"cannot open the database {display_url(self.url)}: {e}") from None
            raise
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="storage:writer")

    def _connect(self) -> psycopg.Connection[Any]:
        raw = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        _configure(raw)
        # Text timestamps without an offset (a few cut-offs) mean UTC, as they do in SQLite.
        raw.execute("SET TIME ZONE 'UTC'")
        return raw

    async def close(self) -> None:
        if self._pg is None:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._pg is not None and self._thread is not None:
            await self._run_in_db_thread(self._pg.raw.close)
        self._pg = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    @property
    def is_open(self) -> bool:
        return self._pg is not None

    async def _migrate(self) -> None:  # migrations run in `open`, under the lock
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        await self.writes_settled()  # read-your-writes, as on SQLite (`Database.fetchall`)
        return await self._read(sql, params, wait_s=None)

    async def _read(
        self, sql: str, params: Sequence[Any], *, wait_s: float | None
    ) -> list[sqlite3.Row]:
        """One read on a pooled connection (waiting at most `wait_s` for one, else the
        pool's 30 s), timed into `observe_query`.

        A cancellation of the caller always propagates: if a cancellation requested while the
        pool or psycopg held control were ever absorbed there (its wait and return paths catch
        `BaseException` to give the connection back), the read re-raises it here rather than
        return rows to a task that was told to stop, so a shutdown never waits on a read."""
        if self._pool is None:
            raise StorageError("database is not open")
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        started = time.perf_counter()
        try:
            async with self._pool.connection(timeout=wait_s) as conn:
                cur = await conn.execute(translate(sql), tuple(params) if params else None)
                rows = await cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            raise StorageError(f"database read failed: {e}") from e
        finally:
            if self.observe_query is not None:
                self.observe_query(time.perf_counter() - started)
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError
        return cast(list[sqlite3.Row], rows)

    async def ping(self) -> bool:
        """True if a pooled connection answers `SELECT 1` (waiting at most `PING_TIMEOUT_S` for
        a connection: a server that is down fails the check instead of holding it)."""
        try:
            await self._read("SELECT 1", (), wait_s=PING_TIMEOUT_S)
        except StorageError:
            return False
        return True

    def pool_stats(self) -> dict[str, int] | None:
        """The read pool's connections: `size` (open), `available` (idle), `waiting` (reads
        queued for one)."""
        if self._pool is None:
            return None
        stats = self._pool.get_stats()
        return {
            "size": int(stats.get("pool_size", 0)),
            "available": int(stats.get("pool_available", 0)),
            "waiting": int(stats.get("requests_waiting", 0)),
        }

    async def _run_in_db_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise StorageError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    def _run_batch(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        if self._pg is None:
            raise StorageError("database is not open")
        return self._run_jobs(cast(sqlite3.Connection, self._pg), batch)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN on the writer's connection; one the server dropped (restarted, or an admin's
        `pg_terminate_backend`) is replaced once here. Nothing of the batch has run yet, so
        running it on the new connection is safe; a drop later in the batch (or at COMMIT)
        fails the batch as any write error does, and the next batch reconnects."""
        try:
            conn.execute("BEGIN")
            return
        except sqlite3.Error as e:
            pc = cast(PgConnection, conn)
            if not (pc.raw.broken or pc.raw.closed):
                raise StorageError(f"could not start a write transaction: {e}") from e
            log.warning("database_writer_reconnecting", error=str(e)[:200])
        try:
            with contextlib.suppress(psycopg.Error):
                pc.raw.close()
            pc.raw = self._connect()
            conn.execute("BEGIN")
        except (psycopg.Error, sqlite3.Error) as e:
            raise StorageError(f"could not start a write transaction: {e}") from e
        log.info("database_writer_reconnected")

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(f"commit failed: {e}") from e


def connect_read_only(url: str, *, timeout_s: int = 5) -> PgConnection:
    """A session for the read-only reports (CLI, console, chat, demo summary): autocommit, every
    transaction read-only (`default_transaction_read_only`), values read as the daemon's
    connection reads them. Raises `psycopg.Error` if the server does not answer."""
    raw = psycopg.connect(url, autocommit=True, connect_timeout=timeout_s)
    try:
        _configure(raw)
        raw.execute("SET TIME ZONE 'UTC'")
        raw.execute("SET default_transaction_read_only = on")
    except BaseException:
        raw.close()
        raise
    return PgConnection(raw)


def recreate_schema(url: str, schema: str) -> str:
    """Drop and create `schema` in `url`'s database; return `url` with it as the search path
    (`options=-csearch_path=…`), so everything the daemon makes lands in it. For throwaway
    runs (the demo): whatever the schema held is gone."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise StorageError(f"not a plain schema name: {schema!r}")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
            conn.execute(f"CREATE SCHEMA {schema}".encode())
    except psycopg.Error as e:
        raise FatalError(f"cannot prepare the schema {schema} in {display_url(url)}: {e}") from None
    parts = urlsplit(url)
    query = [kv for kv in parts.query.split("&") if kv and not kv.startswith("options=")]
    query.append("options=" + quote(f"-csearch_path={schema}"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(query), parts.fragment))


def display_url(url: str) -> str:
    """`url` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
