"""PostgreSQL for the tests: one throwaway database per test session, one schema per test.

The server is the machine's (`.ci/run` starts it): `POLYD_TEST_PG_URL`, by default
`postgresql://postgres@127.0.0.1:5432/postgres` (trust auth). If it does not answer, the
PostgreSQL tests fail — they are never skipped.
"""

from __future__ import annotations

import itertools
import os
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

ADMIN_URL = os.environ.get("POLYD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, ""))


class PgServer:
    """A database created for this test session on the machine's server; `drop()` removes it."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.dbname = f"polyd_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as c:
                c.execute(f'CREATE DATABASE "{self.dbname}"')
        except psycopg.Error as e:
            raise RuntimeError(
                f"PostgreSQL is required for these tests and does not answer at {admin_url}"
                f" ({e}); start it (.ci/run does) or set POLYD_TEST_PG_URL"
            ) from e
        self.url = _with_db(admin_url, self.dbname)
        self._ids = itertools.count(1)

    def fresh_url(self) -> str:
        """The URL of a new, empty schema in the session database (its own search_path)."""
        schema = f"t{next(self._ids)}"
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
