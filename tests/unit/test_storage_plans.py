"""Queries that run while the daemon trades read indexes, not the whole history."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from models import TERMINAL_STATUSES
from storage import Database, Repositories
from storage.journal import NON_TERMINAL_SQL
from tests.helpers import make_order


async def test_open_orders_are_read_through_the_partial_index(tmp_path: Path) -> None:
    async with Database(tmp_path / "plan.db") as db:
        repos = Repositories.over(db)
        placed = [make_order() for _ in range(30)]
        for req in placed:
            await repos.orders.record(req)
        plan = " ".join(
            str(r[3])
            for r in await db.fetchall("EXPLAIN QUERY PLAN " + NON_TERMINAL_SQL, ("default",))
        )
        assert "USING INDEX orders_open" in plan, plan
        rows = await repos.orders.non_terminal()
        assert [r.client_order_id for r in rows] == [r.client_order_id for r in placed]


def test_without_the_hint_sqlite_would_scan_the_table(tmp_path: Path) -> None:
    # Why the hint is there: with no statistics the planner picks a rowid-order table scan.
    path = tmp_path / "plan.db"

    async def migrate() -> None:
        async with Database(path):
            pass

    asyncio.run(migrate())
    with sqlite3.connect(path) as conn:
        unhinted = NON_TERMINAL_SQL.replace(" INDEXED BY orders_open", "")
        plan = " ".join(
            str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + unhinted, ("default",))
        )
    assert plan == "SCAN orders", plan


def test_every_sql_spelling_of_an_open_order_names_the_models_terminal_statuses() -> None:
    # SQL cannot import `models.TERMINAL_STATUSES`, so "still open" is spelled out where it is
    # queried (the journal, the account check) and in the partial indexes the queries must
    # match word for word to use them. A status added to the model and missed in one of them
    # would leave finished orders counted as open there (or open ones as finished).
    root = Path(__file__).resolve().parents[2] / "storage"
    terminal = {s.value for s in TERMINAL_STATUSES}
    seen: list[str] = []
    for path in sorted([*root.glob("*.py"), *(root / "migrations").glob("*.sql")]):
        text = path.read_text()
        for literal in re.findall(r"status NOT IN \(([^)?{]*)\)", text) + re.findall(
            r"_TERMINAL_SQL = \"([^\"]*)\"", text
        ):
            names = {n.strip().strip("'") for n in literal.split(",")}
            assert names == terminal, (path.name, literal)
            seen.append(path.name)
    # The journal's three queries, the account check, and the two partial indexes per engine.
    assert {"journal.py", "accounts.py", "0001_initial.sql", "0001_initial.pg.sql"} <= set(seen)
    assert {"0009_accounts.sql", "0009_accounts.pg.sql"} <= set(seen)
    assert seen.count("journal.py") >= 3, seen  # more in a mutation run's copy of the module
