"""Queries that run while the daemon trades read indexes, not the whole history."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

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
