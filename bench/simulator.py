"""Benchmark the venue simulator: market-feed fan-out and order intake.

* `market_msgs_per_s`: one `websockets` client subscribed to one token receives and parses
  (orjson) the `price_change` events produced by seeding resting orders in-process. Counted in
  events (objects), not frames; `market_frames` says how many frames carried them.
* `orders_per_s`: the real py-clob-client-v2 signs and posts GTC orders (alternating a resting
  BUY and a SELL that matches it) to a simulator running in a subprocess (`python -m
  simulator`), so the venue and the client each get a core. Signing is included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._venue import add_market, fund, simulator  # noqa: E402
from simulator import Simulator  # noqa: E402


async def _market_feed_subprocess(n_events: int) -> dict[str, object]:
    """The venue in a subprocess (its own core) seeds; this process receives and parses."""
    with simulator(seed=1) as urls:  # set-up before timing, nothing else runs
        host = urls["clob_url"]
        tok = add_market(host, "B?", "b")[0]
        batch = 5000
        bodies = [
            orjson.dumps(
                [
                    {
                        "maker": "0x" + "ab" * 20,
                        "token_id": tok,
                        "side": "BUY",
                        "price": f"0.{1 + (i + j) % 49:02d}",
                        "size": "5",
                    }
                    for j in range(batch)
                ]
            )
            for i in range(0, n_events, batch)
        ]
        got = frames = 0
        async with websockets.connect(urls["market_ws_url"], max_size=None) as ws:
            await ws.send(json.dumps({"assets_ids": [tok], "type": "market"}))
            await ws.recv()

            def feed() -> None:
                with httpx.Client(timeout=60) as c:
                    for b in bodies:
                        c.post(host + "/_sim/seed_orders", content=b)

            t0 = time.perf_counter()
            feeder = asyncio.create_task(asyncio.to_thread(feed))
            while got < len(bodies) * batch:
                data = orjson.loads(await ws.recv())
                frames += 1
                items = data if isinstance(data, list) else [data]
                got += sum(1 for ev in items if ev["event_type"] == "price_change")
            dt = time.perf_counter() - t0
            await feeder
        return {
            "market_msgs_per_s": round(got / dt),
            "market_events": got,
            "market_frames": frames,
            "market_count_unit": "events (price_change objects), not frames",
            "market_venue": "subprocess",
        }


async def _market_feed(n_events: int) -> dict[str, object]:
    async with Simulator(seed=1) as sim:
        m = sim.add_market(question="Bench?", slug="bench")
        tok = m.token_ids[0]
        maker = "0x" + "ab" * 20
        got = 0
        frames = 0
        async with websockets.connect(sim.market_ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"assets_ids": [tok], "type": "market"}))
            await ws.recv()
            done = asyncio.Event()

            async def reader() -> None:
                nonlocal got, frames
                while got < n_events:
                    data = orjson.loads(await ws.recv())
                    frames += 1
                    if isinstance(data, list):
                        for ev in data:
                            if ev["event_type"] == "price_change":
                                got += 1
                    elif data["event_type"] == "price_change":
                        got += 1
                done.set()

            task = asyncio.create_task(reader())
            prices = [Decimal(p) / 100 for p in range(1, 50)]
            size = Decimal("5")
            t0 = time.perf_counter()
            for i in range(n_events):
                sim.seed_order(maker, tok, "BUY", prices[i % len(prices)], size)
                if i % 256 == 255:
                    await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 120)
            dt = time.perf_counter() - t0
            await task
        return {
            "market_msgs_per_s": round(got / dt),
            "market_events": got,
            "market_frames": frames,
            "market_count_unit": "events (price_change objects), not frames",
        }


def _orders(n_orders: int, threads: int) -> dict[str, object]:
    from eth_account import Account
    from py_clob_client_v2.client import ClobClient
    from py_clob_client_v2.clob_types import CreateOrderOptions, OrderArgsV2

    with simulator(seed=1) as urls:
        host = urls["clob_url"]
        tok = add_market(host, "B?", "b")[0]
        clients = []
        for _ in range(threads):
            acct = Account.create()
            c = ClobClient(host, 137, key=acct.key.hex())
            c.set_api_creds(c.create_or_derive_api_key())
            fund(host, acct.address, "1000000", token_id=tok, shares="1000000")
            clients.append(c)
        opts = CreateOrderOptions(tick_size="0.01", neg_risk=False)
        per = n_orders // threads
        matched = [0] * threads

        def work(k: int) -> None:
            c = clients[k]
            for i in range(per):
                side = "BUY" if i % 2 == 0 else "SELL"
                signed = c.builder.build_order(OrderArgsV2(tok, 0.5, 5, side), opts)
                res: dict[str, Any] = c.post_order(signed)
                matched[k] += res["status"] == "matched"

        t0 = time.perf_counter()
        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        return {
            "orders_per_s": round(per * threads / dt),
            "orders_posted": per * threads,
            "orders_matched": sum(matched),
            "order_client_threads": threads,
        }


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench simulator")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--orders", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    out: dict[str, object] = {}
    out.update(asyncio.run(_market_feed_subprocess(args.events)))
    out["market_msgs_per_s_in_process"] = asyncio.run(_market_feed(args.events // 2))[
        "market_msgs_per_s"
    ]
    out.update(_orders(args.orders, args.threads))
    out["targets"] = {"market_msgs_per_s": 50_000, "orders_per_s": 500}
    return out
