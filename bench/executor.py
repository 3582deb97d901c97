"""Executor benchmark: OrderRequest -> venue ack through the live CLOB broker, signing included.

By default the simulator runs as a subprocess (`python -m simulator`), so the venue's signature
recovery and matching do not share this process's GIL, as a real venue would not; `--in-process`
runs it in this event loop instead (the figures are then much worse, and say so).

What is measured, one order at a time through the whole `Executor.submit` pipeline (rules, risk,
signing on the loop, durable PENDING row, rate limiter, breaker, POST /order):

* `submit_p50_ms` / `submit_p99_ms`: OrderRequest handed to `submit()` -> the POST answer is back
  in the event loop (the venue ack). The PENDING row is durable before the send (invariant 1).
* `submit_return_p50_ms` / `submit_return_p99_ms`: until `submit()` returns: at the ack, with the
  outcome row queued (the executor answers an acknowledged order before that second commit).
* `submit_durable_p50_ms` / `submit_durable_p99_ms`: until the outcome row is durable (the
  executor idle again). Latency orders go `--gap-ms` apart (5 by default: an opportunity at a
  time; back to back, each PENDING commit would queue behind the previous outcome commit).
* `orders_per_s`: `--throughput-orders` submissions, `--concurrency` in flight, sustained. Every
  order rests (GTC below the book), so the risk checks run against a growing set of open orders
  (`resting_orders_at_end`); their cost must not grow with it.
* `loop_lag_while_signing_p99_ms`: how late a 1 ms timer on the event loop fires while
  `--signing-orders` orders are signed at once (signing runs on the loop, two signatures per
  loop iteration at most, `venue.clob.pacing`: the loop serves its timers between turns; a
  burst signed in one go would show here as its whole duration).

`--engine postgres` journals to a throwaway PostgreSQL database created on the server named by
`--url` (default `$POLYD_BENCH_PG_URL` or the local server) and dropped after; the output says
which engine ran (`engine`).

`--tracing` runs the same with OpenTelemetry tracing on: every order is a trace of ~10 spans,
batched by the SDK's `BatchSpanProcessor` and handed to an exporter that counts and drops them
(the export itself runs on the SDK's thread; a collector's network time is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from eth_account import Account
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench._venue import add_market, fund, simulator
from bench.storage import add_engine_arguments, throwaway_pg_database
from config import load_settings
from execution.ports import Ack, Prepared
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience import RateLimiter, SystemClock
from resilience.rate_limit import polymarket_limits
from storage import Repositories
from storage.engine import make_database
from wiring.execution import assemble


@asynccontextmanager
async def _venue(in_process: bool, address: str) -> AsyncIterator[tuple[str, str, str]]:
    """Yield (clob_url, user_ws_url, token_id) of a simulator with one market, `address` funded."""
    if in_process:
        from simulator import Simulator

        async with Simulator(seed=11, settle_delay_s=0.05) as sim:
            m = sim.add_market("Bench?", "bench")
            sim.fund(address, collateral=Decimal("100000000"))
            yield sim.clob_url, sim.user_ws_url, m.token_ids[0]
        return
    # Start-up and shutdown block this loop: set-up before timing, nothing else runs yet.
    with simulator(seed=11) as urls:
        host = urls["clob_url"]
        token = add_market(host, "Bench?", "bench")[0]
        fund(host, address, "100000000")
        yield host, urls["user_ws_url"], token


class _CountingExporter(SpanExporter):
    """Counts the spans the batch processor hands over, then drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, int(len(xs) * q) - 1))], 3)


async def _run(a: argparse.Namespace, db_dir: Path, database_url: str | None) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    acct = Account.create()
    async with _venue(a.in_process, acct.address) as (clob_url, user_ws_url, token):
        s = load_settings(
            env_file=None,
            mode="live",
            private_key=acct.key.hex(),
            clob_host=clob_url,
            user_ws_url=user_ws_url,
            db_path=str(db_dir / "bench.db"),
            database_url=database_url,
            risk_max_open_orders=100_000,
            risk_max_total_exposure="100000000",
            risk_max_position_notional="100000000",
            rate_limit_fraction=1.0,
        )
        db = make_database(db_path=s.db_path, database_url=s.database_url)
        await db.open()
        # The limiter stays in the path, but with POST /order lifted above the venue's budget:
        # this measures the executor, not the budget (documented sustained POST /order is
        # 120,000 per 10 min = 200/s; see `venue_budget` in the output).
        limits = polymarket_limits(1.0)
        limits["post_order"] = limits["post_order:sustained"] = (1e6, 1e6)
        limiter = RateLimiter.from_limits(limits, clock=SystemClock())
        exporter = _CountingExporter()
        tracing = Tracing.with_exporter(exporter, batch=True) if a.tracing else Tracing()
        built = await assemble(
            s,
            repos=Repositories.over(db),
            metrics=Metrics(),
            redactor=Redactor(),
            limiter=limiter,
            tracing=tracing,
        )
        ex = built.executor
        broker = built.broker
        acked: dict[str, float] = {}
        send = broker.send

        async def timed_send(p: Prepared) -> Ack:
            ack = await send(p)
            acked[p.request.client_order_id] = time.perf_counter()  # the answer is back
            return ack

        broker.send = timed_send  # type: ignore[method-assign,assignment]  # bench instrumentation

        def req(i: int) -> OrderRequest:
            return OrderRequest(
                strategy="bench",
                token_id=token,
                side=Side.BUY,
                price=Decimal("0.10") + Decimal(i % 30) / 100,
                size=Decimal("5"),
                order_type=OrderType.GTC,
            )

        for i in range(50):  # warm-up: metadata, connections, caches, thread pools
            await ex.submit(req(i))
        await ex.wait_idle(5)
        to_ack: list[float] = []
        to_return: list[float] = []
        to_durable: list[float] = []
        for i in range(a.latency_orders):
            r0 = req(i)
            t = time.perf_counter()
            r = await ex.submit(r0)
            done = time.perf_counter()
            assert await ex.wait_idle(5)
            durable = time.perf_counter()
            assert r.status is OrderStatus.LIVE, r.reason
            to_ack.append((acked[r0.client_order_id] - t) * 1000)
            to_return.append((done - t) * 1000)
            to_durable.append((durable - t) * 1000)
            await asyncio.sleep(a.gap_ms / 1000)
        await ex.wait_idle(5)
        broker_lat: list[float] = []
        meta = await ex.rules.ensure(token)
        assert meta is not None
        for i in range(min(a.latency_orders, 300)):
            t = time.perf_counter()
            await send(await broker.prepare(req(i), meta))
            broker_lat.append((time.perf_counter() - t) * 1000)
        lags: list[float] = []
        signed = asyncio.Event()

        async def probe() -> None:
            while not signed.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - t - 0.001) * 1000)

        prober = asyncio.create_task(probe())
        await asyncio.gather(*(broker.prepare(req(i), meta) for i in range(a.signing_orders)))
        signed.set()
        await prober
        sem = asyncio.Semaphore(a.concurrency)

        async def one(i: int) -> None:
            async with sem:
                r = await ex.submit(req(i))
                assert r.status is OrderStatus.LIVE, r.reason

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(a.throughput_orders)))
        await ex.wait_idle(10)  # every outcome row durable before the clock stops
        wall = time.perf_counter() - t0
        rows = await db.fetchone("SELECT COUNT(*) FROM orders WHERE status = 'LIVE'")
        expected = 50 + a.latency_orders + a.throughput_orders
        assert rows is not None and rows[0] == expected, (rows and rows[0], expected)
        for _, close in reversed(built.closers):
            await close()
        await db.close()
        tracing.shutdown()
    return {
        "submit_p50_ms": round(statistics.median(to_ack), 3),
        "submit_p99_ms": _pct(to_ack, 0.99),
        "orders_per_s": round(a.throughput_orders / wall, 1),
        "submit_return_p50_ms": round(statistics.median(to_return), 3),
        "submit_return_p99_ms": _pct(to_return, 0.99),
        "submit_durable_p50_ms": round(statistics.median(to_durable), 3),
        "submit_durable_p99_ms": _pct(to_durable, 0.99),
        "gap_ms": a.gap_ms,
        "broker_only_p50_ms": round(statistics.median(broker_lat), 3),
        "loop_lag_while_signing_p99_ms": _pct(lags, 0.99),
        "signing_orders": a.signing_orders,
        "latency_orders": a.latency_orders,
        "throughput_orders": a.throughput_orders,
        "concurrency": a.concurrency,
        "resting_orders_at_end": expected,
        "simulator": "same process, same event loop" if a.in_process else "subprocess",
        "tracing": "on (batched, exported spans dropped)" if a.tracing else "off",
        "spans_exported": exporter.spans,
        "venue_budget": "POST /order 500/s per 10 s, 200/s per 10 min (docs 2026-06)",
        "ack": "POST /order answer back in the event loop; PENDING row durable before the send",
    }


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench executor")
    p.add_argument("--latency-orders", type=int, default=500)
    p.add_argument("--gap-ms", type=float, default=5.0, help="pause after each latency order")
    p.add_argument("--throughput-orders", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--signing-orders", type=int, default=500)
    p.add_argument("--in-process", action="store_true", help="simulator in this event loop")
    p.add_argument("--tracing", action="store_true", help="OpenTelemetry tracing on")
    add_engine_arguments(p)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        if a.engine == "sqlite":
            return {"engine": "sqlite", **asyncio.run(_run(a, Path(d), None))}
        with throwaway_pg_database(a.url, bench="executor") as url:
            return {"engine": "postgres", **asyncio.run(_run(a, Path(d), url))}
