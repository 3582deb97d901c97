"""Backtest benchmark: replay speed against real time, and peak memory, for a 50-market recording.

The recording is synthesised with the real recorder's writer (`recording.writer`), in the
venue's wire formats: every market's Gamma row, a `book` snapshot per token at start and every
`--snapshot-s`, `price_change` frames (one level each) at `--rate` per market per second, a
`last_trade_price` now and then, a `PONG` every 10 s, and, now and then, an ask that dips into the
sniper's band for the replay to trade. It is then replayed through `backtest.replay` (the live
feed parsing, books, sniper and executor, with the matching model), as `backtest` runs it.

Figures: `speedup` = recorded span / replay wall time (target >= 100), `records_per_s`,
`orders`/`fills` (the replay traded), `peak_rss_mb` (the process's peak resident set, synthesis
included) and, in a second run under tracemalloc, `peak_heap_mb` (Python allocations during the
replay alone).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from backtest.replay import run_backtest
from recording import format as fmt
from recording.writer import RecordWriter
from strategies.sniper.rules import parse_rules

T0 = 1_798_761_600 * 1_000_000_000  # 2027-01-01T00:00Z: a fixed start, so runs compare
NS = 1_000_000_000
RULES = {
    "rules": [
        {
            "name": "bench-near-close",
            "outcome": "Yes",
            "min_price": "0.90",
            "max_price": "0.95",
            "min_size": "5",
            "max_notional": "20",
            "max_entries": 3,
            "cooldown_s": 30,
            "select": {"ends_within_minutes": 120, "tags": ["crypto"]},
        }
    ]
}


def _iso(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns // NS))


def _levels(levels: dict[str, int]) -> list[dict[str, str]]:
    return [{"price": p, "size": str(s)} for p, s in sorted(levels.items())]


def synthesise(out: Path, *, markets: int, seconds: int, rate: float, snapshot_s: int) -> int:
    """Write the benchmark recording into `out`; return the number of records."""
    rng = random.Random(42)
    clock = [T0]
    w = RecordWriter(
        out, source={"selection": "bench"}, queue_max=10_000_000, wall_ns=lambda: clock[0]
    )
    w.start()
    books: list[tuple[str, str, dict[str, int], dict[str, int]]] = []
    n = 0
    for i in range(markets):
        cid = f"0x{i + 1:064x}"
        yes, no = str(10**20 + 2 * i), str(10**20 + 2 * i + 1)
        row = {
            "id": str(900_000 + i),
            "conditionId": cid,
            "slug": f"bench-market-{i}",
            "question": f"Bench market {i}?",
            "clobTokenIds": orjson.dumps([yes, no]).decode(),
            "outcomes": '["Yes", "No"]',
            "orderPriceMinTickSize": 0.01,
            "orderMinSize": 5,
            "endDate": _iso(T0 + (seconds + 1800) * NS),
            "active": True,
            "closed": False,
            "acceptingOrders": True,
            "enableOrderBook": True,
            "negRisk": False,
            "feesEnabled": True,
            "feeSchedule": {"rate": 0.072, "exponent": 1, "takerOnly": True},
            "tags": [{"slug": "crypto"}],
        }
        w.put(fmt.MARKET, {"gamma": row}, t=T0)
        n += 1
        bids = {"0.91": 200, "0.92": 150, "0.93": 120}
        asks = {"0.97": 150, "0.98": 200, "0.99": 160}
        books.append((cid, yes, bids, asks))
    w.put(fmt.WATCH, {"tokens": [b[1] for b in books]}, t=T0)
    n += 1

    def snapshot(t: int) -> None:
        nonlocal n
        frame = [
            {
                "event_type": "book",
                "market": cid,
                "asset_id": tok,
                "bids": _levels(bids),
                "asks": _levels(asks),
                "timestamp": str(t // 1_000_000),
                "hash": f"{t:x}",
                "tick_size": "0.01",
            }
            for cid, tok, bids, asks in books
        ]
        w.put(fmt.WS, {"shard": 0, "d": orjson.dumps(frame).decode()}, t=t)
        n += 1

    snapshot(T0 + 1_000_000)
    events = int(seconds * rate * markets)
    step = seconds * NS // max(events, 1)
    next_snap, next_pong = T0 + snapshot_s * NS, T0 + 10 * NS
    for k in range(events):
        t = T0 + 2_000_000 + k * step
        if t >= next_snap:
            snapshot(t)
            next_snap += snapshot_s * NS
        if t >= next_pong:
            w.put(fmt.WS, {"shard": 0, "d": "PONG"}, t=t)
            n += 1
            next_pong += 10 * NS
        cid, tok, bids, asks = books[rng.randrange(markets)]
        roll = rng.random()
        if roll < 0.01:  # a dip into the sniper's band, gone a little later
            side, price, size = "SELL", "0.94", rng.randint(5, 40)
            asks[price] = size
        elif roll < 0.06 and "0.94" in asks:
            side, price, size = "SELL", "0.94", 0
            del asks[price]
        elif roll < 0.1:
            trade = {
                "event_type": "last_trade_price",
                "market": cid,
                "asset_id": tok,
                "price": "0.97",
                "side": "BUY",
                "size": str(rng.randint(1, 50)),
                "timestamp": str(t // 1_000_000),
            }
            w.put(fmt.WS, {"shard": 0, "d": orjson.dumps(trade).decode()}, t=t)
            n += 1
            continue
        else:
            buy = roll < 0.55
            side = "BUY" if buy else "SELL"
            price = rng.choice(("0.91", "0.92", "0.93") if buy else ("0.97", "0.98", "0.99"))
            size = rng.randint(50, 300)
            (bids if buy else asks)[price] = size
        best_bid, best_ask = max(bids), min(asks)
        ev: dict[str, Any] = {
            "event_type": "price_change",
            "market": cid,
            "timestamp": str(t // 1_000_000),
            "price_changes": [
                {
                    "asset_id": tok,
                    "price": price,
                    "size": str(size),
                    "side": side,
                    "hash": f"{t:x}",
                    "best_bid": best_bid,
                    "best_ask": best_ask,
                }
            ],
        }
        w.put(fmt.WS, {"shard": 0, "d": orjson.dumps(ev).decode()}, t=t)
        n += 1
    w.close()
    return n


def _replay(data: Path) -> tuple[float, Any]:
    rules = parse_rules(RULES)
    started = time.perf_counter()
    # Caps far above what the run buys: the replay trades every opportunity it finds.
    caps = {"risk_max_total_exposure": "1000000", "risk_max_position_notional": "1000000"}
    result = asyncio.run(run_backtest(data, rules, settings=caps))
    return time.perf_counter() - started, result


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench backtest")
    p.add_argument("--markets", type=int, default=50)
    p.add_argument("--seconds", type=int, default=1800, help="recorded span (30 min)")
    p.add_argument("--rate", type=float, default=2.0, help="book changes per market per s")
    p.add_argument("--snapshot-s", type=int, default=60)
    p.add_argument("--no-heap", action="store_true", help="skip the tracemalloc run")
    a = p.parse_args(argv)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="polyd-bench-backtest-") as tmp:
        data = Path(tmp) / "rec"
        t = time.perf_counter()
        records = synthesise(
            data, markets=a.markets, seconds=a.seconds, rate=a.rate, snapshot_s=a.snapshot_s
        )
        synth_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in data.iterdir())
        wall, result = _replay(data)
        span_s = ((result.last_t or 0) - (result.first_t or 0)) / NS
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        heap_mb = None
        if not a.no_heap:
            tracemalloc.start()
            _replay(data)
            heap_mb = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()
    return {
        "markets": a.markets,
        "records": result.records,
        "records_written": records,
        "recording_bytes": size,
        "recorded_span_s": round(span_s, 1),
        "replay_wall_s": round(wall, 3),
        "speedup": round(span_s / wall, 1),
        "records_per_s": round(result.records / wall),
        "orders": len(result.orders),
        "fills": len(result.fills),
        "peak_rss_mb": round(rss_mb, 1),
        "peak_heap_mb": heap_mb,
        "synthesis_s": round(synth_s, 2),
        "pnl_check": str(sum((f.size for f in result.fills), Decimal(0))),
    }
