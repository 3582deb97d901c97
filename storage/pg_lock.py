"""Session advisory locks on PostgreSQL: a lock held on its own connection for its holder's life.

`SessionLock` is the shape (take it on a new connection, keep that connection open, close it to
give the lock up); `PgWriterLock` is the daemon's writer lock (one process per `DAEMON_ID`),
`storage.schema_lock.SchemaLock` the demo's lock on its schema.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from errors import AlreadyRunning, FatalError
from storage.keys import DEFAULT_DAEMON_ID
from storage.pg import display_url


class SessionLock:
    """A session advisory lock held on its own connection for the holder's life; the server
    drops it when the connection ends, however the process ends (`kill -9` included).
    Subclasses say how to take it (`_take`: the open connection holding it, or a raise)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def _take(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    async def acquire(self) -> None:
        try:
            self._conn = await asyncio.to_thread(self._take)
        except psycopg.Error as e:
            raise FatalError(f"cannot reach the database {display_url(self.url)}: {e}") from None

    async def release(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None


class PgWriterLock(SessionLock):
    """One process per daemon id on a PostgreSQL database (and schema): a session advisory lock
    keyed on `DAEMON_ID`, held on its own connection for the daemon's life. The server drops it
    when the connection ends, however the daemon ends (`kill -9` included).

    Several daemons with different ids share the database; what keeps them apart is the strategy
    leases (`storage.leases`), so this lock only refuses a second process under the same id (it
    would reconcile, and might cancel, the first one's orders)."""

    def __init__(self, url: str, *, daemon_id: str = DEFAULT_DAEMON_ID) -> None:
        super().__init__(url)
        self.daemon_id = daemon_id

    def _take(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext('polyd:daemon:' || current_schema()"
            " || ':' || %s))",
            (self.daemon_id,),
        ).fetchone()
        if not (row and row[0]):
            conn.close()
            raise AlreadyRunning(
                f"another daemon with DAEMON_ID={self.daemon_id} holds the writer lock of"
                f" {display_url(self.url)}; stop it, or give this one another DAEMON_ID"
            )
        return conn
