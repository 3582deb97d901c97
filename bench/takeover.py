"""The start-up cost of the takeover search (`OrderJournal.left_unsettled`) as history grows.

At every start, once its leases are held, a daemon asks the journal which orders of its
strategies daemons no longer running left unsettled (`wiring.leases.take_over_orders`). That is
one read over every order of those strategies journaled by another daemon, with each terminal
order's booked shares summed from `fills`: its cost grows with the history.

For each `--orders N` the bench builds a fresh database holding N settled orders of strategy
`copy` (FILLED, each with its fill booked) journaled by daemon `old`, plus `--unsettled` orders
`old` left FILLED with no fill booked and as many still LIVE. It then times the search as the
daemon `new` runs it when `old` is gone (the worst case: every one of old's orders is examined,
the terminal ones with their fills summed) and as `old` itself runs it on a restart (its own
orders are skipped: the usual case with one daemon per database). The figures are medians of
`--repeat` searches, with the orders the search found (which must be the planted ones).

    python -m bench takeover [--engine sqlite|postgres] [--orders 10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.storage import add_engine_arguments, journal_request, throwaway_pg_database
from storage import Database
from storage.journal import OrderJournal

ACCOUNT = "0x" + "ab" * 20


_COPY = (
    "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?)"
    " INSERT INTO orders (client_order_id, strategy, token_id, side, price, size, order_type,"
    " status, venue_order_id, size_matched, created_at, updated_at, daemon_id, account)"
    " SELECT ? || CAST(x AS TEXT), strategy, token_id, side, price, size, order_type, ?,"
    " ? || CAST(x AS TEXT), {matched}, created_at, updated_at, daemon_id, account"
    " FROM s, orders WHERE client_order_id = ?"
)
_FILLS = (
    "INSERT INTO fills (trade_id, venue_order_id, client_order_id, token_id, side, price, size,"
    " fee, role, status, ts, recorded_at, strategy)"
    " SELECT 't-' || client_order_id, venue_order_id, client_order_id, token_id, side, price,"
    " size, '0', 'TAKER', 'CONFIRMED', created_at, created_at, strategy"
    " FROM orders WHERE client_order_id LIKE 'c%'"
)


async def _build(db: Database, n: int, unsettled: int) -> None:
    old = OrderJournal(db=db, daemon_id="old")
    old.for_account(ACCOUNT)
    template = journal_request(0, strategy="copy")
    await old.record(template, venue_order_id="0xtemplate")
    tid = template.client_order_id

    def job(c: sqlite3.Connection) -> None:
        execute = c.execute
        execute(_COPY.format(matched="size"), (n, "c", "FILLED", "0xc", tid))
        execute(_COPY.format(matched="size"), (unsettled, "u", "FILLED", "0xu", tid))
        execute(_COPY.format(matched="'0'"), (unsettled, "l", "LIVE", "0xl", tid))
        execute("DELETE FROM order_events WHERE client_order_id = ?", (tid,))
        execute("DELETE FROM orders WHERE client_order_id = ?", (tid,))
        execute(_FILLS)

    await db.write(job)


async def _measure(db: Database, n: int, unsettled: int, repeat: int) -> dict[str, object]:
    async with db:
        started = time.perf_counter()
        await _build(db, n, unsettled)
        built_s = time.perf_counter() - started
        figures: dict[str, object] = {"orders": n, "build_s": round(built_s, 2)}
        for who, label in (("new", "gone_daemon"), ("old", "own_history")):
            journal = OrderJournal(db=db, daemon_id=who)
            journal.for_account(ACCOUNT)
            times: list[float] = []
            found = 0
            for _ in range(repeat):
                t = time.perf_counter()
                left = await journal.left_unsettled(["copy"], live=[])
                times.append(time.perf_counter() - t)
                found = len(left.ours) + len(left.elsewhere)
            want = 2 * unsettled if who == "new" else 0
            if found != want:
                raise SystemExit(f"bench takeover: {label} search found {found}, not {want}")
            ms = statistics.median(times) * 1000
            figures[label] = {
                "search_ms": round(ms, 2),
                "us_per_order": round(ms * 1000 / (n + 2 * unsettled), 3),
                "found": found,
            }
        return figures


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench takeover")
    add_engine_arguments(p)
    p.add_argument(
        "--orders", default="10000,100000", help="history sizes, comma-separated (settled orders)"
    )
    p.add_argument("--unsettled", type=int, default=5, help="orders left FILLED unbooked / LIVE")
    p.add_argument("--repeat", type=int, default=5, help="searches timed per size (median)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.orders.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        p.error("--orders: one or more positive history sizes")
    rounds: list[dict[str, object]] = []
    if args.engine == "postgres":
        from storage.pg import PgDatabase

        for n in sizes:
            with throwaway_pg_database(args.url, bench="takeover") as url:
                db: Database = PgDatabase(url)
                rounds.append(asyncio.run(_measure(db, n, args.unsettled, args.repeat)))
    else:
        with tempfile.TemporaryDirectory() as d:
            for n in sizes:
                path = Path(d) / f"takeover-{n}.db"
                rounds.append(asyncio.run(_measure(Database(path), n, args.unsettled, args.repeat)))
    return {"engine": args.engine, "unsettled": args.unsettled, "sizes": rounds}
