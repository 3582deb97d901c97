"""One user of a PostgreSQL schema that is reset on start (the demo's `polyd_demo`).

`--demo` drops and re-creates its schema before the daemon takes its writer lock, so the
writer lock cannot keep a second demo (another checkout, the same database) from emptying a
running one's tables. `SchemaLock` is taken first: a session advisory lock keyed on the database
and the schema, held on its own connection for the demo's life and dropped by the server when
that connection ends, however the process ends. The holder's connection carries an
`application_name` naming its host and pid, which a refused process reads back to say who runs.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg

from errors import AlreadyRunning
from storage.pg import display_url
from storage.pg_lock import SessionLock

APP_PREFIX = "polyd-schema-lock:"


class SchemaLock(SessionLock):
    """`WriterLock` (storage.lock) for one schema of the database at `url`."""

    def __init__(self, url: str, schema: str, *, what: str = "the schema") -> None:
        super().__init__(url)
        self.schema = schema
        self.what = what

    @property
    def application_name(self) -> str:
        """What the holder's connection says of it (PostgreSQL keeps 63 bytes)."""
        return f"{APP_PREFIX}{self.schema} pid {os.getpid()} on {socket.gethostname()}"[:63]

    def _take(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=10,
            application_name=self.application_name,
        )
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('polyd:schema:' || %s))", (self.schema,)
            ).fetchone()
            if row and row[0]:
                return conn  # kept open: the lock lives with the connection
            holders = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE %s AND pid <> pg_backend_pid()",
                (f"{APP_PREFIX}{self.schema} %",),
            ).fetchall()
        except BaseException:
            conn.close()
            raise
        conn.close()
        mine = f"{APP_PREFIX}{self.schema} "
        who = ", ".join(str(h[0]).removeprefix(mine) for h in holders) or "another process"
        raise AlreadyRunning(
            f"{self.what} (schema {self.schema} of {display_url(self.url)}) is in use by {who};"
            " stop it first, or use another database"
        )
