"""Executor benchmark: OrderRequest -> venue ack through the live CLOB broker, signing included.

The simulator runs in the same process and event loop (its HTTP server answers the SDK's
threads over loopback). Latency is measured one order at a time through the whole
`Executor.submit` pipeline (rules, risk, signing, durable PENDING row, rate limiter, breaker,
POST /order, outcome row); throughput with `--concurrency` submissions in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account

from config import load_settings
from execution.assembly import assemble
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from simulator import Simulator
from storage import Database, Repositories


async def _run(n_latency: int, n_throughput: int, concurrency: int, db_dir: Path) -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    async with Simulator(seed=11, settle_delay_s=0.05) as sim:
        m = sim.add_market("Bench?", "bench")
        acct = Account.create()
        sim.fund(acct.address, collateral=Decimal("100000000"))
        s = load_settings(
            env_file=None,
            mode="live",
            private_key=acct.key.hex(),
            clob_host=sim.clob_url,
            user_ws_url=sim.user_ws_url,
            db_path=str(db_dir / "bench.db"),
            risk_max_open_orders=100_000,
            risk_max_total_exposure="100000000",
            risk_max_position_notional="100000000",
            rate_limit_fraction=1.0,
        )
        db = Database(s.db_path)
        await db.open()
        built = await assemble(
            s, repos=Repositories.over(db), metrics=Metrics(), redactor=Redactor()
        )
        ex = built.executor

        def req(i: int) -> OrderRequest:
            return OrderRequest(
                strategy="bench",
                token_id=m.token_ids[0],
                side=Side.BUY,
                price=Decimal("0.10") + Decimal(i % 30) / 100,
                size=Decimal("5"),
                order_type=OrderType.GTC,
            )

        for i in range(20):  # warm-up: metadata, connections, caches
            await ex.submit(req(i))
        lat: list[float] = []
        for i in range(n_latency):
            t = time.perf_counter()
            r = await ex.submit(req(i))
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status is OrderStatus.LIVE, r.reason
        broker_lat: list[float] = []
        meta = await ex.rules.ensure(m.token_ids[0])
        assert meta is not None
        for i in range(min(n_latency, 300)):
            t = time.perf_counter()
            await built.broker.send(await built.broker.prepare(req(i), meta))
            broker_lat.append((time.perf_counter() - t) * 1000)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                r = await ex.submit(req(i))
                assert r.status is OrderStatus.LIVE, r.reason

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n_throughput)))
        wall = time.perf_counter() - t0
        for _, close in reversed(built.closers):
            await close()
        await db.close()
    lat.sort()
    return {
        "submit_p50_ms": round(statistics.median(lat), 3),
        "submit_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 3),
        "orders_per_s": round(n_throughput / wall, 1),
        "broker_only_p50_ms": round(statistics.median(broker_lat), 3),
        "latency_orders": n_latency,
        "throughput_orders": n_throughput,
        "concurrency": concurrency,
        "simulator": "same process, same event loop",
        "pipeline": "Executor.submit: rules, risk, sign, journal fsync x2, POST /order",
    }


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench executor")
    p.add_argument("--latency-orders", type=int, default=500)
    p.add_argument("--throughput-orders", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        return asyncio.run(_run(a.latency_orders, a.throughput_orders, a.concurrency, Path(d)))
