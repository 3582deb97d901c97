"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, Repositories
from storage.pg import PgDatabase
from tests.pg import PgServer

# The storage tests run on both engines; the other tests that use repositories run on SQLite.
BOTH_ENGINES = {
    "test_storage",
    "test_storage_contract",
    "test_positions",
    "test_positions_bound",
    "test_sniper_state",
    "test_market_names",
    "test_copy_storage",
    "test_copy_dedupe",
    "test_executor_lifecycle",
    "test_risk",
    "test_leases",
    "test_item_leases",
    "test_strategy_instances",
    "test_daemon_books",
    "test_journal_ownership",
    "test_fills_replay_edges",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        both = module in BOTH_ENGINES or "pg_server" in metafunc.fixturenames
        metafunc.parametrize("engine", ["sqlite", "postgres"] if both else ["sqlite"])


@pytest.fixture
async def repos(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Repositories]:
    """The repositories over a fresh, migrated database: SQLite in the test's own folder, or a
    new schema of the session's PostgreSQL database."""
    if engine == "postgres":
        server: PgServer = request.getfixturevalue("pg_server")
        db: Database = PgDatabase(server.fresh_url())
    else:
        db = Database(tmp_path / "polyd.db")
    await db.open()
    try:
        yield Repositories.over(db)
    finally:
        await db.close()
