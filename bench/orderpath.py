"""Order-path benchmark: polyd's `Executor.submit` against the official async SDK and a bare
`py_clob_client_v2` script, side by side on one simulator subprocess.

How each side is used: `bench/_orderpath_sides.py` (and docs/benchmarks.md). Every round runs
each side in turn, the order rotating from round to round (all six orders of the three sides in
turn), so drift of the machine and the simulator's growing book spread over all of them. Per
round and side:

* `ack_p50_ms` / `ack_p99_ms`: `--latency-orders` orders one at a time, `--gap-ms` apart (an
  opportunity at a time, as a sniper fires; every side gets the same gap), order handed over ->
  the `POST /order` answer back in the event loop.
* `return_p50_ms` / `return_p99_ms`: until the call returns (polyd: `submit()`, which answers at
  the ack with the outcome row queued; the SDKs return at the ack).
* `durable_p50_ms` / `durable_p99_ms`: polyd only, until that order's outcome row is durable
  (the executor idle again); the SDKs keep no record, so theirs is their return.
* `orders_per_s`: `--throughput-orders` orders, `--concurrency` in flight (polyd: until every
  outcome row is durable).
* `cpu_us_per_order`: this process's CPU time (all threads; the simulator is another process)
  over the throughput phase, per order.
* `sign_p50_us`: `--sign-orders` signatures alone, one at a time (polyd: `ClobBroker.prepare`;
  SDK: `create_limit_order`; bare: `ClobClient.create_order`).

Each figure printed is the median over rounds; `ratios` divides polyd's by each SDK's (below 1 is
polyd faster for latencies and CPU; above 1 is polyd faster for `orders_per_s`), and `targets`
checks the goals against the bare script and the official SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from bench._orderpath_sides import BareSide, PolydSide, SdkSide
from bench._venue import add_market, simulator


class _Side(Protocol):
    name: str

    async def open(self) -> None: ...
    async def order(self, i: int) -> tuple[float, float]: ...
    async def sign(self, i: int) -> None: ...
    async def settle(self) -> None: ...
    async def close(self) -> None: ...


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(len(xs) * q) - 1))]


async def _round(side: _Side, a: argparse.Namespace, base: int) -> dict[str, float]:
    acks: list[float] = []
    rets: list[float] = []
    durables: list[float] = []
    for i in range(a.latency_orders):
        ack, ret = await side.order(base + i)
        returned = time.perf_counter()
        await side.settle()  # polyd: the outcome row durable; the SDKs keep nothing
        acks.append(ack)
        rets.append(ret)
        durables.append(ret + time.perf_counter() - returned)
        await asyncio.sleep(a.gap_ms / 1e3)
    sem = asyncio.Semaphore(a.concurrency)

    async def one(i: int) -> None:
        async with sem:
            await side.order(i)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(base + i) for i in range(a.throughput_orders)))
    await side.settle()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    signs: list[float] = []
    for i in range(a.sign_orders):
        s0 = time.perf_counter()
        await side.sign(base + i)
        signs.append(time.perf_counter() - s0)
    return {
        "ack_p50_ms": statistics.median(acks) * 1e3,
        "ack_p99_ms": _pct(acks, 0.99) * 1e3,
        "return_p50_ms": statistics.median(rets) * 1e3,
        "return_p99_ms": _pct(rets, 0.99) * 1e3,
        "durable_p50_ms": statistics.median(durables) * 1e3,
        "durable_p99_ms": _pct(durables, 0.99) * 1e3,
        "orders_per_s": a.throughput_orders / wall,
        "cpu_us_per_order": cpu / a.throughput_orders * 1e6,
        "sign_p50_us": statistics.median(signs) * 1e6,
    }


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]}


def _ratios(p: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    return {k: round(p[k] / other[k], 3) for k in p if other[k]}


def _targets(r: dict[str, float]) -> dict[str, bool]:
    """The goals, against one SDK's figures (`r` = polyd / that SDK)."""
    return {
        "ack_p50_le_0.8": r["ack_p50_ms"] <= 0.8,
        "ack_p99_le_0.9": r["ack_p99_ms"] <= 0.9,
        # submit() return p50 against the SDK's ack p50 (its return is its ack).
        "return_p50_le_1.0_of_sdk_ack": r["return_p50_ms"] <= 1.0,
        "orders_per_s_ge_1.5": r["orders_per_s"] >= 1.5,
    }


async def _run(a: argparse.Namespace, urls: dict[str, str], token: str, db: Path) -> Any:
    sides: list[_Side] = [
        PolydSide(urls["clob_url"], urls["user_ws_url"], token, db),
        SdkSide(urls["clob_url"], token),
        BareSide(urls["clob_url"], token, a.concurrency),
    ]
    for s in sides:
        await s.open()
        for i in range(a.warmup):  # metadata caches, connections, thread pools
            await s.order(i)
        await s.settle()
    per: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
    orders = itertools.cycle(itertools.permutations(range(len(sides))))
    step = a.latency_orders + a.throughput_orders
    for r in range(a.rounds):
        for k in next(orders):
            per[sides[k].name].append(await _round(sides[k], a, a.warmup + r * step))
    for s in sides:
        await s.close()
    return per


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench orderpath")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--latency-orders", type=int, default=200)
    p.add_argument("--gap-ms", type=float, default=5.0, help="pause after each latency order")
    p.add_argument("--throughput-orders", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--sign-orders", type=int, default=200)
    p.add_argument("--warmup", type=int, default=30)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d, simulator(seed=11) as urls:
        token = add_market(urls["clob_url"], "Bench order path?", "bench-orderpath")[0]
        per = asyncio.run(_run(a, urls, token, Path(d)))
    figures = {name: _median(rounds) for name, rounds in per.items()}
    polyd = figures["polyd"]
    ratios = {f"polyd_vs_{n}": _ratios(polyd, figures[n]) for n in ("bare_v2", "sdk")}
    return {
        **figures,
        "ratios": ratios,
        "targets": {f"vs_{n}": _targets(ratios[f"polyd_vs_{n}"]) for n in ("bare_v2", "sdk")},
        "ack_p50_ms_by_round": {n: [round(r["ack_p50_ms"], 3) for r in v] for n, v in per.items()},
        "rounds": a.rounds,
        "latency_orders": a.latency_orders,
        "throughput_orders": a.throughput_orders,
        "concurrency": a.concurrency,
        "gap_ms": a.gap_ms,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "venue": "simulator subprocess, one market, every order rests",
    }
