"""Storage benchmark: group-commit journal writes vs. one transaction per write, same run.

`--engine sqlite` (the default): both sides insert order-journal rows into the same schema with
`synchronous=FULL` (WAL). The naive side opens a new connection, writes and commits for every
row, as the first prototype did.

`--engine postgres`: the daemon's `PgDatabase` (the same group-commit writer over one psycopg
connection, the server's default `synchronous_commit=on`, so each COMMIT waits for its WAL flush)
against two naive writers on the same server in the same run: one transaction per write on an
open connection (`one_tx_per_write`), and a new connection per write (`naive`, as on SQLite).
The database is a throwaway one created on the server named by `--url` (default
`POLYD_BENCH_PG_URL`, else `postgresql://postgres@127.0.0.1:5432/postgres`) and dropped after.

`--engine postgres --account-shared` adds, in the same run, the cost of `ACCOUNT_SHARED=true`
(storage/accounts.py): each order's PENDING row written under the account's advisory lock with
the account's commitments read and checked, then settled CANCELED, with 50 orders resting on the
account; against the same workload without the check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from models import OrderRequest, OrderStatus, OrderType, Side
from storage import Database, Repositories

TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"


def journal_request(i: int, strategy: str = "bench") -> OrderRequest:
    """A GTC BUY of 10 @ 0.5 with client order id bench-<i>, as the storage benches journal it."""
    return OrderRequest(
        strategy=strategy,
        token_id=TOKEN,
        side=Side.BUY,
        price=Decimal("0.5"),
        size=Decimal("10"),
        order_type=OrderType.GTC,
        client_order_id=f"bench-{i:012d}",
    )


async def _group_commit(db: Database, seconds: float, writers: int) -> tuple[int, float]:
    async with db:
        journal = Repositories.over(db).orders
        # Requests are validated before the clock starts: this measures storage, not pydantic.
        pool = [journal_request(i) for i in range(int(seconds * 60_000))]
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


async def _account_orders(url: str, seconds: float, writers: int, *, shared: bool) -> float:
    """Orders per second, each journaled PENDING then CANCELED (two writes), 50 resting."""
    from execution.risk import RiskEngine, RiskLimits
    from storage.pg import PgDatabase

    big = Decimal("1e12")
    risk = RiskEngine(limits=RiskLimits(big, big, big, 1_000_000))
    async with PgDatabase(url) as db:
        journal = Repositories.over(db, daemon_id="shared" if shared else "alone").orders
        journal.for_account(("0x" + "ab" * 20) if shared else ("0x" + "cd" * 20))
        if shared:
            journal.share_account(risk.account_refusal)
        tag = "s" if shared else "a"
        for i in range(50):
            await journal.record(
                journal_request(i).model_copy(update={"client_order_id": f"r{tag}{i}"})
            )
        count = 0
        stop = time.perf_counter() + seconds

        async def writer(w: int) -> None:
            nonlocal count
            while time.perf_counter() < stop:
                coid = f"{tag}-{w}-{count}"
                count += 1
                await journal.record(
                    journal_request(0).model_copy(update={"client_order_id": coid})
                )
                await journal.transition(coid, OrderStatus.CANCELED)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return count / (time.perf_counter() - started)


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


INSERT_PG = (
    "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size, order_type,"
    " status, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,now(),now())"
)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """`--engine sqlite|postgres` and `--url`, the server a PostgreSQL run's throwaway database
    is created on (`POLYD_BENCH_PG_URL`, else the local server): every bench that has both."""
    p.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--url",
        default=os.environ.get(
            "POLYD_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="--engine postgres: a server URL on which a throwaway database is created",
    )


@contextlib.contextmanager
def throwaway_pg_database(admin_url: str, *, bench: str = "storage") -> Iterator[str]:
    """A throwaway database on the server at `admin_url`; yields its URL, drops it after."""
    import psycopg

    name = f"polyd_bench_{bench}_{os.getpid()}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        raise SystemExit(
            f"bench {bench} --engine postgres: {admin_url} does not answer ({e})"
        ) from None
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_naive(url: str, seconds: float, *, reconnect: bool) -> tuple[int, float]:
    """One transaction per write (autocommit INSERT), on one connection or a new one each."""
    import psycopg

    done = 0
    conn: Any = None if reconnect else psycopg.connect(url, autocommit=True)
    prefix = "naive" if reconnect else "onetx"
    started = time.perf_counter()
    stop = started + seconds
    try:
        while time.perf_counter() < stop:
            c = psycopg.connect(url, autocommit=True) if reconnect else conn
            c.execute(
                INSERT_PG,
                (f"{prefix}-{done}", "bench", TOKEN, "BUY", "0.5", "10", "GTC", "PENDING"),
            )
            if reconnect:
                c.close()
            done += 1
    finally:
        if conn is not None:
            conn.close()
    return done, time.perf_counter() - started


def _postgres(args: argparse.Namespace) -> dict[str, object]:
    from storage.pg import PgDatabase

    with throwaway_pg_database(args.url) as url:
        group_n, group_s = asyncio.run(_group_commit(PgDatabase(url), args.seconds, args.writers))
        onetx_n, onetx_s = _pg_naive(url, args.seconds, reconnect=False)
        naive_n, naive_s = _pg_naive(url, args.seconds, reconnect=True)
        shared: dict[str, object] = {}
        if args.account_shared:
            w = min(args.writers, 64)
            alone = asyncio.run(_account_orders(url, args.seconds, w, shared=False))
            locked = asyncio.run(_account_orders(url, args.seconds, w, shared=True))
            shared = {
                "account_shared": {
                    "orders_per_s_without": round(alone),
                    "orders_per_s_with_account_lock": round(locked),
                    "ratio": round(locked / alone, 2),
                    "writers": w,
                    "resting_orders": 50,
                    "order": "PENDING row, then CANCELED (two writes)",
                }
            }
    group_rate = group_n / group_s
    onetx_rate = onetx_n / onetx_s
    naive_rate = naive_n / naive_s
    return {
        **shared,
        "engine": "postgres",
        "group_commit_writes_per_s": round(group_rate),
        "one_tx_per_write_writes_per_s": round(onetx_rate),
        "naive_writes_per_s": round(naive_rate),
        "ratio_vs_one_tx": round(group_rate / onetx_rate, 1),
        "ratio": round(group_rate / naive_rate, 1),
        "writers": args.writers,
        "synchronous_commit": "on",
        "row": "order journal insert (+ trigger-written order event)",
    }


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench storage")
    add_engine_arguments(p)
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each side")
    p.add_argument("--writers", type=int, default=256, help="concurrent group-commit writers")
    p.add_argument("--dir", default=None, help="folder for the databases (default: a temp dir)")
    p.add_argument(
        "--account-shared",
        action="store_true",
        help="--engine postgres: also measure ACCOUNT_SHARED's per-account lock and check",
    )
    args = p.parse_args(argv)
    if args.engine == "postgres":
        return _postgres(args)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        group_n, group_s = asyncio.run(
            _group_commit(Database(Path(d) / "group.db"), args.seconds, args.writers)
        )
        naive_n, naive_s = _naive(Path(d) / "naive.db", args.seconds)
    group_rate = group_n / group_s
    naive_rate = naive_n / naive_s
    return {
        "engine": "sqlite",
        "group_commit_writes_per_s": round(group_rate),
        "naive_writes_per_s": round(naive_rate),
        "ratio": round(group_rate / naive_rate, 1),
        "writers": args.writers,
        "synchronous": "FULL",
        "journal_mode": "WAL",
        "row": "order journal insert (+ trigger-written order event)",
    }
