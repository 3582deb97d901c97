"""Market feed benchmark: `python -m bench feed [--events N] [--batch B] [--orders N]`.

Figures (one JSON line):

* `msgs_per_s`: market events per second a `MarketFeed` applies to its books on one core. A
  local websocket server in *another process* replays `book` snapshots and then `price_change`
  events, `--batch` per frame (the venue and the simulator batch bursts into JSON arrays); the
  clock runs from the first to the last event applied. `msgs_per_s_single_frames` is the same
  with one event per frame.
* `tick_to_order_p50_ms` / `tick_to_order_p99_ms`: from the moment the feed received the frame
  that opened an opportunity to the moment the sniper handed its `OrderRequest` to the sink,
  over real loopback websockets with background traffic on other books.
* `resubscribed_after_drop_p50_ms` / `_max_ms`: from the simulator aborting the market socket
  (no close frame) to the book being usable again: reconnect with the daemon's default backoff,
  resubscribe, fresh snapshot. `stall_detected_p50_ms` / `_max_ms`: from the socket going silent
  (open, PINGs unanswered) to the book being marked unusable, with `stale_after_s` = 1 s. The
  tests check that both happen; these are the figures (tests hold no timing bounds).
* `rss_mb_1000_books`: resident memory of a fresh process holding 1,000 books of 100 levels each,
  loaded through the feed.

Targets: >= 50,000 msgs/s, p99 <= 1 ms, <= 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import structlog

MARKET = "0x" + "ee" * 32


def token(i: int) -> str:
    return str(10**76 + i)


def book_event(
    tok: str, levels: int, rng: random.Random, *, bid_top: int = 450, ask_low: int = 550
) -> dict[str, Any]:
    """A snapshot with `levels` levels on 0.001 steps, wire order (best last on each side)."""
    half = levels // 2
    bids = [
        {"price": f"0.{p:03d}", "size": str(rng.randint(1, 500))}
        for p in range(bid_top - half + 1, bid_top + 1)
    ]
    asks = [
        {"price": f"0.{p:03d}", "size": str(rng.randint(1, 500))}
        for p in range(ask_low + half - 1, ask_low - 1, -1)
    ]
    return {
        "event_type": "book",
        "asset_id": tok,
        "market": MARKET,
        "bids": bids,
        "asks": asks,
        "timestamp": "1",
        "hash": "0" * 40,
    }


def change_event(tok: str, side: str, price: str, size: str) -> dict[str, Any]:
    return {
        "event_type": "price_change",
        "market": MARKET,
        "timestamp": "2",
        "price_changes": [
            {"asset_id": tok, "price": price, "size": size, "side": side, "hash": "x"}
        ],
    }


def noise(n: int, tokens: list[str], rng: random.Random) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        side = rng.choice(("BUY", "SELL"))
        p = rng.randint(1, 45) if side == "BUY" else rng.randint(55, 99)
        yield change_event(rng.choice(tokens), side, f"0.{p:02d}", str(rng.randint(0, 300)))


def frames_of(events: list[dict[str, Any]], batch: int) -> list[bytes]:
    if batch <= 1:
        return [orjson.dumps(e) for e in events]
    return [orjson.dumps(events[i : i + batch]) for i in range(0, len(events), batch)]


# --- the replay server (another process) -----------------------------------------------------


def _serve(port_q: Any, n_tokens: int, n_events: int, batch: int, seed: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    rng = random.Random(seed)
    tokens = [token(i) for i in range(n_tokens)]
    snapshots = orjson.dumps([book_event(t, 20, rng) for t in tokens])
    frames = frames_of(list(noise(n_events, tokens, rng)), batch)

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            if raw == "PING":
                await ws.send("PONG")
                continue
            await ws.send(snapshots.decode())
            for f in frames:
                await ws.send(f.decode())

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port_q.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.Future()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def _throughput(port: int, n_tokens: int, n_events: int) -> float:
    from resilience.backoff import Backoff
    from venue.market_feed import MarketFeed
    from venue.order_book import BookStore

    store = BookStore(stale_after_s=60)
    feed = MarketFeed(
        url=f"ws://127.0.0.1:{port}",
        store=store,
        stale_after_s=60,
        ping_interval_s=5,
        backoff=lambda: Backoff(0.1, 1.0),
    )
    feed.watch("bench", [token(i) for i in range(n_tokens)])
    task = asyncio.create_task(feed.run())
    try:
        while feed.counts().get("book", 0) < n_tokens:  # noqa: ASYNC110 - sampling a counter
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        while feed.counts().get("price_change", 0) < n_events:  # noqa: ASYNC110 - as above
            await asyncio.sleep(0.005)
        took = time.perf_counter() - t0
        assert feed.malformed == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return n_events / took


def throughput(n_tokens: int, n_events: int, batch: int) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(q, n_tokens, n_events, batch, 7), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=30)
        return asyncio.run(_throughput(port, n_tokens, n_events))
    finally:
        proc.terminate()
        proc.join(5)


# --- tick to order ---------------------------------------------------------------------------


async def _tick_to_order(n_orders: int, noise_per_opportunity: int) -> list[float]:
    from websockets.asyncio.server import ServerConnection, serve

    from models import Market, OrderRequest, OrderResult, OrderStatus
    from resilience.backoff import Backoff
    from strategies.sniper import Sniper, SniperRule
    from venue.market_feed import MarketFeed
    from venue.order_book import BookStore

    rng = random.Random(3)
    n_tokens = 100
    tokens = [token(i) for i in range(n_tokens)]
    snipe = tokens[:50]
    latencies: list[float] = []
    stamp: dict[str, int] = {}
    done = asyncio.Event()

    class Sink:
        async def submit(self, request: OrderRequest) -> OrderResult:
            t = stamp.pop(request.token_id, None)
            if t is not None:
                latencies.append((time.perf_counter_ns() - t) / 1e6)
            if len(latencies) >= n_orders:
                done.set()
            return OrderResult(
                client_order_id=request.client_order_id,
                status=OrderStatus.FILLED,
                filled_size=request.size,
                avg_price=request.price,
            )

    async def handler(ws: ServerConnection) -> None:
        async def pump() -> None:
            # Asks from 0.960 up: no book opens with an opportunity already there.
            snaps = [book_event(t, 20, rng, bid_top=800, ask_low=960) for t in tokens]
            await ws.send(orjson.dumps(snaps).decode())
            await asyncio.sleep(0.2)
            i = 0
            while not done.is_set():
                tok = snipe[i % len(snipe)]
                for f in frames_of(list(noise(noise_per_opportunity, tokens[50:], rng)), 10):
                    await ws.send(f.decode())
                await ws.send(orjson.dumps(change_event(tok, "SELL", "0.93", "100")).decode())
                await asyncio.sleep(0.002)
                await ws.send(orjson.dumps(change_event(tok, "SELL", "0.93", "0")).decode())
                i += 1
                await asyncio.sleep(0.001)

        pumper = asyncio.create_task(pump())
        try:
            async for raw in ws:
                if raw == "PING":
                    await ws.send("PONG")
        finally:
            pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumper

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        store = BookStore(stale_after_s=60)
        feed = MarketFeed(
            url=f"ws://127.0.0.1:{port}",
            store=store,
            stale_after_s=60,
            ping_interval_s=5,
            backoff=lambda: Backoff(0.1, 1.0),
        )
        snipe_set = set(snipe)

        def on_change(touched: Any) -> None:
            # Runs inside handle_frame: last_frame_ns is this frame's arrival time.
            for t in touched:
                if t in snipe_set:
                    stamp[t] = feed.last_frame_ns

        store.add_listener(on_change)
        rule = SniperRule.model_validate(
            {
                "name": "bench",
                "select": {"token_ids": snipe},
                "min_price": "0.90",
                "max_price": "0.95",
                "min_size": "10",
                "max_notional": "20",
                "max_entries": 1000,
                "cooldown_s": 0,
            }
        )
        sniper = Sniper(rules=[rule], books=store, orders=Sink())
        for k in range(0, len(tokens), 2):
            sniper.set_market(
                Market(
                    condition_id="0x" + f"{k:064x}",
                    token_ids=(tokens[k], tokens[k + 1]),
                    tick_size=Decimal("0.01"),
                    min_size=Decimal("5"),
                ),
                rules=[rule] if tokens[k] in snipe_set else [],
            )
        feed.watch("bench", tokens)
        tasks = [asyncio.create_task(feed.run()), asyncio.create_task(sniper.run())]
        try:
            async with asyncio.timeout(120):
                await done.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    return latencies


# --- memory ----------------------------------------------------------------------------------


async def _drops_and_stalls(rounds: int) -> tuple[list[float], list[float]]:
    import aiohttp

    from observability.metrics import Metrics
    from simulator import Simulator
    from venue.market_feed import ClobBookFetcher, MarketFeed
    from venue.order_book import BookStore

    maker = "0x" + "7b" * 20
    resubscribed: list[float] = []
    detected: list[float] = []
    async with Simulator(seed=5, settle_delay_s=0.02) as sim, aiohttp.ClientSession() as http:
        tok = sim.add_market(question="Will the feed hold?", slug="feed-hold").token_ids[0]
        sim.seed_order(maker, tok, "BUY", Decimal("0.40"), Decimal("10"))
        sim.seed_order(maker, tok, "SELL", Decimal("0.60"), Decimal("10"))
        store = BookStore(stale_after_s=1.0)
        feed = MarketFeed(
            url=sim.market_ws_url,
            store=store,
            metrics=Metrics(),
            fetcher=ClobBookFetcher(session=http, base_url=sim.clob_url),
            stale_after_s=1.0,
            ping_interval_s=0.5,
        )
        feed.watch("bench", [tok])
        task = asyncio.create_task(feed.run(), name="bench:feed")
        loop = asyncio.get_running_loop()

        async def until(cond: Any, limit_s: float = 30.0) -> float:
            t0 = loop.time()
            while not cond():
                if loop.time() - t0 > limit_s:
                    raise RuntimeError("the feed did not recover within 30 s")
                await asyncio.sleep(0.001)
            return (loop.time() - t0) * 1000

        async def churn(stop: asyncio.Event) -> None:  # data frames, so silence is news
            while not stop.is_set():
                oid = sim.seed_order(maker, tok, "BUY", Decimal("0.30"), Decimal("1"))
                await asyncio.sleep(0.05)
                sim.cancel_seeded(oid)

        try:
            for _ in range(rounds):
                await until(lambda: store.usable_book(tok) is not None)
                await asyncio.sleep(0.5)  # a healthy connection for a while: backoff resets
                t0 = loop.time()
                await sim.drop_websockets("market")
                await until(lambda: store.usable_book(tok) is None)
                await until(lambda: store.usable_book(tok) is not None)
                resubscribed.append((loop.time() - t0) * 1000)
            for _ in range(max(1, rounds // 3)):
                await until(lambda: store.usable_book(tok) is not None)
                stop = asyncio.Event()
                mover = asyncio.create_task(churn(stop))
                await asyncio.sleep(0.3)
                sim.stall_websockets("market", seconds=30)
                detected.append(await until(lambda: store.usable_book(tok) is None))
                stop.set()
                await mover
                await sim.drop_websockets("market")  # end the stall: the feed reconnects
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return resubscribed, detected


def _rss(q: Any, n_books: int, levels: int) -> None:
    import gc

    from venue.market_feed import MarketFeed, Shard
    from venue.order_book import BookStore

    rng = random.Random(5)
    store = BookStore(stale_after_s=60)
    feed = MarketFeed(url="ws://127.0.0.1:1", store=store, shard_size=200)
    tokens = [token(i) for i in range(n_books)]
    feed.watch("bench", tokens)
    shard = feed.shards[0] if feed.shards else Shard(0)
    for i in range(0, n_books, 50):
        feed.handle_frame(
            orjson.dumps([book_event(t, levels, rng) for t in tokens[i : i + 50]]), shard
        )
    gc.collect()
    assert feed.malformed == 0 and len(store) == n_books
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    q.put(kb / 1024)


def rss_mb(n_books: int, levels: int) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_rss, args=(q, n_books, levels))
    proc.start()
    try:
        mb: float = q.get(timeout=60)
        return mb
    finally:
        proc.join(10)


def main(argv: list[str]) -> dict[str, object]:
    # Log lines still get formatted (they are part of the measured path) but go to stderr, so
    # stdout carries only the JSON figures.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    ap = argparse.ArgumentParser(prog="python -m bench feed")
    ap.add_argument("--events", type=int, default=200_000, help="price_change events replayed")
    ap.add_argument("--batch", type=int, default=20, help="events per frame")
    ap.add_argument("--orders", type=int, default=1000, help="opportunities for tick-to-order")
    ap.add_argument("--books", type=int, default=1000)
    ap.add_argument("--drops", type=int, default=9, help="socket drops for the resubscribe figure")
    args = ap.parse_args(argv)
    rate = throughput(200, args.events, args.batch)
    single = throughput(200, max(10_000, args.events // 4), 1)
    lat = asyncio.run(_tick_to_order(args.orders, noise_per_opportunity=20))
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    resub, stalls = asyncio.run(_drops_and_stalls(args.drops))
    return {
        "resubscribed_after_drop_p50_ms": round(statistics.median(resub), 1),
        "resubscribed_after_drop_max_ms": round(max(resub), 1),
        "stall_detected_p50_ms": round(statistics.median(stalls), 1),
        "stall_detected_max_ms": round(max(stalls), 1),
        "msgs_per_s": round(rate),
        "msgs_per_s_single_frames": round(single),
        "batch": args.batch,
        "tick_to_order_p50_ms": round(statistics.median(lat), 3),
        "tick_to_order_p99_ms": round(p99, 3),
        "tick_to_order_samples": len(lat),
        "rss_mb_1000_books": round(rss_mb(args.books, 100), 1),
        "targets": {
            "resubscribed_after_drop_p50_ms": 1000,
            "msgs_per_s": 50_000,
            "tick_to_order_p99_ms": 1.0,
            "rss_mb_1000_books": 150,
        },
    }
