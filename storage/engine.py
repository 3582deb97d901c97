"""Which engine a daemon's database runs on, decided in one place.

`DATABASE_URL=postgresql://…` selects PostgreSQL (`storage.pg`); otherwise `DB_PATH` is the
SQLite file. Everything above `storage/` asks this module for its database and its writer lock
and never names an engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import cast

import psycopg

from errors import DatabaseMissing, ReportError
from storage.db import Database
from storage.keys import DEFAULT_DAEMON_ID
from storage.lock import WriterLock, writer_lock
from storage.pg import PgDatabase, connect_read_only, display_url, is_postgres_url
from storage.pg_lock import PgWriterLock


def make_database(
    *,
    db_path: Path,
    database_url: str | None = None,
    busy_timeout_ms: int = 5000,
    observe_batch: Callable[[int, float], None] | None = None,
    observe_error: Callable[[], None] | None = None,
    observe_checkpoint: Callable[[float, bool], None] | None = None,
) -> Database:
    """The daemon's database, not yet opened: PostgreSQL if `database_url` names one."""
    if database_url and is_postgres_url(database_url):
        return PgDatabase(database_url, observe_batch=observe_batch, observe_error=observe_error)
    return Database(
        db_path,
        busy_timeout_ms=busy_timeout_ms,
        observe_batch=observe_batch,
        observe_error=observe_error,
        observe_checkpoint=observe_checkpoint,
    )


def make_writer_lock(
    *, db_path: Path, database_url: str | None = None, daemon_id: str = DEFAULT_DAEMON_ID
) -> WriterLock:
    """The lock a daemon takes before it touches its database: on SQLite one writer per file;
    on PostgreSQL one process per `daemon_id`, several daemons sharing the database under
    strategy leases (`storage.leases`)."""
    if database_url and is_postgres_url(database_url):
        return PgWriterLock(database_url, daemon_id=daemon_id)
    return writer_lock(db_path)


def describe(*, db_path: Path, database_url: str | None = None) -> str:
    """The database in words for logs and status: its URL without password, or its path."""
    if database_url and is_postgres_url(database_url):
        return display_url(database_url)
    return str(db_path)


def open_read_only(*, db_path: Path, database_url: str | None = None) -> sqlite3.Connection:
    """The reports' connection (`storage.reports`): never creates, migrates or writes. SQLite:
    the file opened `mode=ro` with `query_only` (WAL lets it read while the daemon writes);
    PostgreSQL: a session whose transactions are read-only, speaking the same `sqlite3` subset
    as the daemon's jobs see (`storage.pg.PgConnection`). Rows read by index and by name.
    Raises `DatabaseMissing` (no SQLite file) or `ReportError`, naming the database."""
    if database_url and is_postgres_url(database_url):
        try:
            return cast(sqlite3.Connection, connect_read_only(database_url))
        except psycopg.Error as e:
            where = display_url(database_url)
            raise ReportError(f"cannot read the database {where}: {e}") from None
    path = db_path.expanduser().resolve()
    if not path.is_file():
        raise DatabaseMissing(f"no database at {path} (has the daemon run with this DB_PATH?)")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        raise ReportError(f"cannot read the database {path}: {e}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error as e:
        conn.close()
        raise ReportError(f"cannot read the database {path}: {e}") from None
    return conn
