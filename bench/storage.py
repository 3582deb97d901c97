"""Storage benchmark: group-commit journal writes vs. one connection and commit per write.

Both sides insert order-journal rows into the same schema with `synchronous=FULL` (WAL), in the
same run. The naive side opens a new connection, writes and commits for every row, as the first
prototype did.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from models import OrderRequest, OrderType, Side
from storage import Database, Repositories

TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"


def _request(i: int) -> OrderRequest:
    return OrderRequest(
        strategy="bench",
        token_id=TOKEN,
        side=Side.BUY,
        price=Decimal("0.5"),
        size=Decimal("10"),
        order_type=OrderType.GTC,
        client_order_id=f"bench-{i:012d}",
    )


async def _group_commit(path: Path, seconds: float, writers: int) -> tuple[int, float]:
    async with Database(path) as db:
        journal = Repositories.over(db).orders
        # Requests are validated before the clock starts: this measures storage, not pydantic.
        pool = [_request(i) for i in range(int(seconds * 60_000))]
        counter = 0
        stop = time.perf_counter() + seconds

        async def writer(w: int) -> int:
            nonlocal counter
            done = 0
            while time.perf_counter() < stop and counter < len(pool):
                req = pool[counter]
                counter += 1
                await journal.record(req)
                done += 1
            return done

        started = time.perf_counter()
        total = sum(await asyncio.gather(*(writer(w) for w in range(writers))))
        elapsed = time.perf_counter() - started
        row = await db.fetchone("SELECT COUNT(*) FROM orders")
        assert row is not None and row[0] == total
    return total, elapsed


def _naive(path: Path, seconds: float) -> tuple[int, float]:
    asyncio.run(_migrate_only(path))
    insert = (
        "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size, order_type,"
        " status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
    )
    done = 0
    started = time.perf_counter()
    stop = started + seconds
    while time.perf_counter() < stop:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            insert,
            (f"naive-{done}", "bench", TOKEN, "BUY", "0.5", "10", "GTC", "PENDING", "t", "t"),
        )
        conn.commit()
        conn.close()
        done += 1
    return done, time.perf_counter() - started


async def _migrate_only(path: Path) -> None:
    async with Database(path):
        pass


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench storage")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each side")
    p.add_argument("--writers", type=int, default=256, help="concurrent group-commit writers")
    p.add_argument("--dir", default=None, help="folder for the databases (default: a temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        group_n, group_s = asyncio.run(
            _group_commit(Path(d) / "group.db", args.seconds, args.writers)
        )
        naive_n, naive_s = _naive(Path(d) / "naive.db", args.seconds)
    group_rate = group_n / group_s
    naive_rate = naive_n / naive_s
    return {
        "group_commit_writes_per_s": round(group_rate),
        "naive_writes_per_s": round(naive_rate),
        "ratio": round(group_rate / naive_rate, 1),
        "writers": args.writers,
        "synchronous": "FULL",
        "journal_mode": "WAL",
        "row": "order journal insert (+ trigger-written order event)",
    }
