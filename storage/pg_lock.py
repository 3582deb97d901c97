"""Session advisory locks on PostgreSQL: a lock held on its own connection for its holder's life.

`SessionLock` is the shape (take it on a new connection, keep that connection open, unlock and
close it to give the lock up); `PgWriterLock` is the daemon's writer lock (one process per
`DAEMON_ID`), `storage.schema_lock.SchemaLock` the demo's lock on its schema.
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
        """Give the lock up: unlocked on the server before the connection closes, so a process
        that asks for it next (a restart straight after a stop) gets it."""
        if self._conn is not None:
            await asyncio.to_thread(_unlock_and_close, self._conn)
            self._conn = None


def _unlock_and_close(conn: psycopg.Connection[Any]) -> None:
    """Closing the connection alone leaves the lock to the server process's exit, which comes
    after `close()` returns: a new session asking at once was refused by the old one's lock."""
    try:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock_all()")
    except psycopg.Error:
        pass  # the session is gone or going: the server drops its locks with it
    finally:
        conn.close()


CHECK_TIMEOUT_S = 5.0
"""How long the writer lock's check waits for its connection to answer before calling it lost."""
# The lock's connection notices a vanished server in bounded time (TCP keep-alives, and a send
# the server has not acknowledged within 10 s fails) instead of the OS's two hours.
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
_KEY = "hashtext('polyd:daemon:' || current_schema() || ':' || %s)"
# The session holding the lock: a bigint advisory key is (classid, objid) = (high, low) 32 bits.
_HOLDER = (
    "SELECT l.pid, a.application_name, a.client_addr::text FROM pg_locks l"
    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND ((l.classid::bigint << 32) | l.objid::bigint) = {_KEY}::bigint"
)


class PgWriterLock(SessionLock):
    """One process per daemon id on a PostgreSQL database (and schema): a session advisory lock
    keyed on `DAEMON_ID`, held on its own connection for the daemon's life. The server drops it
    when the connection ends, however the daemon ends (`kill -9` included).

    Several daemons with different ids share the database; what keeps them apart is the strategy
    leases (`storage.leases`), so this lock only refuses a second process under the same id (it
    would reconcile, and might cancel, the first one's orders).

    The server also drops it when it drops the connection (a restart, `pg_terminate_backend`,
    a network fault), so the running daemon watches it (`wiring.writer_lock`): `check` asks the
    connection for a trivial answer, `retake` takes the lock again on a new connection. A retake
    refused because the server still keeps this daemon's own previous session (the connection
    broke on the client's side only) ends that session and takes the lock once it is gone;
    refused by any other session, it raises `AlreadyRunning` naming the holder."""

    watched = True

    def __init__(self, url: str, *, daemon_id: str = DEFAULT_DAEMON_ID) -> None:
        super().__init__(url)
        self.daemon_id = daemon_id
        self._pid: int | None = None  # the server process of the session holding it
        self._connect_timeout_s = 10
        self._released = False
        self._busy: asyncio.Future[None] | None = None  # a check cancelled while it ran
        self._pings: set[asyncio.Future[None]] = set()  # checks past their timeout, and closes

    @property
    def held(self) -> bool:
        return self._conn is not None

    def _take(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=self._connect_timeout_s, **_KEEPALIVE
        )
        try:
            if not _one(conn, f"SELECT pg_try_advisory_lock({_KEY})", self.daemon_id):
                self._take_from_own_session(conn)
        except BaseException:
            conn.close()
            raise
        self._pid = conn.info.backend_pid
        return conn

    def _take_from_own_session(self, conn: psycopg.Connection[Any]) -> None:
        holder = conn.execute(_HOLDER, (self.daemon_id,)).fetchone()
        for _ in range(3):
            if holder is not None:
                break
            # The holding session ended between the refusal and the look-up (a retake while
            # the abandoned connection closes, a restart while the old process exits): the lock
            # is free now, unless another session took it meanwhile.
            if _one(conn, f"SELECT pg_try_advisory_lock({_KEY})", self.daemon_id):
                return
            holder = conn.execute(_HOLDER, (self.daemon_id,)).fetchone()
        if holder is not None and self._pid is not None and int(holder[0]) == self._pid:
            # This daemon's previous session, alive on the server though its connection broke
            # here: end it, and wait (5 s at most) for the server to drop its lock.
            conn.execute("SELECT pg_terminate_backend(%s)", (self._pid,))
            conn.execute("SET lock_timeout = '5s'")
            conn.execute(f"SELECT pg_advisory_lock({_KEY})", (self.daemon_id,))
            conn.execute("RESET lock_timeout")
            return
        who = "" if holder is None else f" (server process {holder[0]}"
        if holder is not None:
            who += f", application {holder[1]!r}" if holder[1] else ""
            who += f", client {holder[2]}" if holder[2] else ""
            who += ")"
        raise AlreadyRunning(
            f"another daemon with DAEMON_ID={self.daemon_id}{who} holds the writer lock of"
            f" {display_url(self.url)}; stop it, or give this one another DAEMON_ID"
        )

    async def check(self, timeout_s: float = CHECK_TIMEOUT_S) -> bool:
        """True if the lock's connection answers a trivial query within `timeout_s`: its
        session, and so the lock, is alive. False if it failed or did not answer in time."""
        conn = self._conn
        if conn is None:
            return False
        ping = asyncio.ensure_future(asyncio.to_thread(_ping, conn))
        ping.add_done_callback(_retrieved)  # its failure is the check's answer, not an error
        try:
            await asyncio.wait_for(asyncio.shield(ping), timeout_s)
        except psycopg.Error:
            return False
        except TimeoutError:
            self._abandon(conn, ping)
            return False
        except asyncio.CancelledError:  # the daemon stopping: `release` waits for the call
            self._busy = ping
            raise
        return True

    def _abandon(self, conn: psycopg.Connection[Any], ping: asyncio.Future[None]) -> None:
        # The thread still waits on the connection (until the keep-alives give up at the
        # latest): the connection is closed once that call returns, never from under it.
        self._conn = None
        self._pings.add(ping)
        ping.add_done_callback(lambda _: self._close_later(conn, ping))

    def _close_later(self, conn: psycopg.Connection[Any], ping: asyncio.Future[None]) -> None:
        self._pings.discard(ping)
        closing = asyncio.get_running_loop().run_in_executor(None, conn.close)
        self._pings.add(closing)
        closing.add_done_callback(self._pings.discard)

    async def retake(self) -> None:
        """Take the lock again on a new connection, the old one closed. Raises
        `AlreadyRunning` if another session holds it, `FatalError` if the server does not
        answer (or this daemon's previous session would not end)."""
        old, self._conn = self._conn, None
        if old is not None:
            await asyncio.to_thread(old.close)
        self._connect_timeout_s = int(CHECK_TIMEOUT_S)  # the watch retries soon anyway
        await self.acquire()
        if self._released:  # released (the daemon stopping) while it was being taken
            await self.release()

    async def release(self) -> None:
        self._released = True
        busy, self._busy = self._busy, None
        if busy is not None and not busy.done():  # a check cancelled mid-call: let it end
            await asyncio.wait({busy}, timeout=CHECK_TIMEOUT_S)
            if not busy.done() and self._conn is not None:
                self._abandon(self._conn, busy)
        await super().release()


def _one(conn: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


def _ping(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        conn.close()
        raise
