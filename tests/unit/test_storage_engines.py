"""Both engines end with equivalent schemas; two daemons starting at once migrate once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from errors import AlreadyRunning
from storage import Database, load_migrations
from storage.engine import describe, make_database, make_writer_lock
from storage.pg import PgDatabase, translate
from tests.pg import PgServer

# SQLite declared type -> the PostgreSQL types it may become (money NUMERIC, times TIMESTAMPTZ,
# the audit detail JSONB; integers widen to BIGINT where they are ids or unix times).
TYPE_MAP = {
    "TEXT": {"text", "numeric", "timestamp with time zone", "jsonb"},
    "INTEGER": {"integer", "bigint"},
    "REAL": {"double precision"},
}
# Columns PostgreSQL has and SQLite does not: the insertion order SQLite keeps as `rowid`.
PG_ONLY = {(t, "seq") for t in ("orders", "fills", "copy_intents", "sniper_take_profits")} | {
    ("market_names", "seq")
}
MONEY = {
    ("orders", "price"),
    ("orders", "size"),
    ("orders", "size_matched"),
    ("orders", "avg_price"),
    ("fills", "price"),
    ("fills", "size"),
    ("fills", "fee"),
    ("positions", "size"),
    ("positions", "avg_cost"),
    ("positions", "realized_pnl"),
    ("redemptions", "expected_payout"),
    ("redemptions", "balance_before"),
    ("redemptions", "payout"),
    ("account_daily_pnl", "pnl"),
    ("account_daily_pnl", "baseline"),
}


def _sqlite_schema(path: Path) -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
    c = sqlite3.connect(path)
    tables = [
        r[0]
        for r in c.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    cols = {
        (t, r[1]): str(r[2]).upper() for t in tables for r in c.execute(f"PRAGMA table_info({t})")
    }
    indexes = {
        (str(r[1]), str(r[0]))
        for r in c.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    c.close()
    return cols, indexes


def _pg_schema(url: str) -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
    with psycopg.connect(url) as c:
        cols = {
            (str(t), str(n)): str(ty)
            for t, n, ty in c.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema()"
            )
        }
        indexes = {
            (str(t), str(i))
            for t, i in c.execute(
                "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = current_schema()"
                " AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'"
            )
        }
    return cols, indexes


async def test_both_engines_end_with_equivalent_schemas(
    tmp_path: Path, pg_server: PgServer
) -> None:
    async with Database(tmp_path / "s.db") as db:
        assert await db.schema_version() == len(load_migrations())
    url = pg_server.fresh_url()
    async with PgDatabase(url) as pdb:
        assert await pdb.schema_version() == len(load_migrations("postgres"))
    s_cols, s_idx = _sqlite_schema(tmp_path / "s.db")
    p_cols, p_idx = _pg_schema(url)
    assert set(p_cols) - PG_ONLY == set(s_cols)
    for key, declared in s_cols.items():
        assert p_cols[key] in TYPE_MAP[declared], (key, declared, p_cols[key])
    for key in MONEY:
        assert p_cols[key] == "numeric", key
    assert p_cols[("audit_log", "detail")] == "jsonb"
    times = [k for k, t in s_cols.items() if k[1].endswith("_at") and t == "TEXT"]
    assert times and all(p_cols[k] == "timestamp with time zone" for k in times)
    assert p_idx == s_idx


async def test_two_daemons_starting_at_once_migrate_once(pg_server: PgServer) -> None:
    url = pg_server.fresh_url()
    a, b = PgDatabase(url), PgDatabase(url)
    await asyncio.gather(a.open(), b.open())
    try:
        rows = await a.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in load_migrations("postgres")]
        assert await b.schema_version() == len(load_migrations())
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_write_is_committed_when_its_await_returns(pg_server: PgServer) -> None:
    url = pg_server.fresh_url()
    async with PgDatabase(url) as db:
        await db.execute(
            "INSERT INTO daemon_state (key, value, updated_at) VALUES (?,?,?)",
            ("k", "v", "2026-01-01T00:00:00.000000+00:00"),
        )
        # Another connection, outside the daemon, sees it at once: the COMMIT has returned.
        with psycopg.connect(url) as other:
            row = other.execute("SELECT value FROM daemon_state WHERE key = 'k'").fetchone()
        assert row == ("v",)
        got = await db.fetchone("SELECT updated_at FROM daemon_state WHERE key = ?", ("k",))
        assert got is not None and got["updated_at"] == "2026-01-01T00:00:00.000000+00:00"


def test_sqlite_spellings_are_translated() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE 'x%?' ORDER BY rowid LIMIT -1") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%?' ORDER BY seq LIMIT ALL"
    )
    assert translate("INSERT OR IGNORE INTO seen_ids (source, id) VALUES (?,?)").endswith(
        "VALUES (%s,%s) ON CONFLICT DO NOTHING"
    )
    assert translate(
        "INSERT OR REPLACE INTO copy_intents (client_order_id, wallet) VALUES (?,?)"
    ).endswith("ON CONFLICT (client_order_id) DO UPDATE SET wallet = EXCLUDED.wallet")


async def test_the_setting_picks_the_engine_and_its_writer_lock(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    sqlite_db = make_database(db_path=tmp_path / "x.db", database_url=None)
    assert type(sqlite_db) is Database
    assert isinstance(make_database(db_path=tmp_path / "x.db", database_url=url), PgDatabase)
    first = make_writer_lock(db_path=tmp_path / "x.db", database_url=url, daemon_id="east")
    second = make_writer_lock(db_path=tmp_path / "x.db", database_url=url, daemon_id="east")
    # Another daemon id shares the database (strategy leases keep the two apart).
    other = make_writer_lock(db_path=tmp_path / "x.db", database_url=url, daemon_id="west")
    await first.acquire()
    try:
        # naming the holding session (its server process, application and client)
        with pytest.raises(
            AlreadyRunning, match=r"DAEMON_ID=east \(server process \d+.*\) holds the writer lock"
        ):
            await second.acquire()
        await other.acquire()
        await other.release()
    finally:
        await first.release()
    await second.acquire()  # the first daemon is gone: it gave its lock up as it stopped
    await second.release()
    assert describe(db_path=tmp_path / "x.db", database_url="postgresql://u:pw@h:5432/d") == (
        "postgresql://u:***@h:5432/d"
    )
