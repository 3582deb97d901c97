"""The market feed against the simulator over real sockets: books, drops, stalls, garbage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from observability.metrics import Metrics
from resilience.backoff import Backoff
from simulator import SimMarket, Simulator
from tests.helpers import until
from venue.market_feed import ClobBookFetcher, MarketFeed
from venue.order_book import BookStore

D = Decimal
MAKER = "0x" + "7b" * 20


class Ticks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Decimal]] = []

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        self.calls.append((token_id, tick_size))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=5, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    m = sim.add_market(question="Will the feed hold?", slug="feed-hold")
    tok = m.token_ids[0]
    for p, s in (("0.40", "10"), ("0.42", "20"), ("0.45", "5")):
        sim.seed_order(MAKER, tok, "BUY", D(p), D(s))
    for p, s in (("0.60", "10"), ("0.55", "7"), ("0.50", "3")):
        sim.seed_order(MAKER, tok, "SELL", D(p), D(s))
    return m


@contextlib.asynccontextmanager
async def feed_on(
    sim: Simulator, tokens: list[str], **kw: Any
) -> AsyncIterator[tuple[MarketFeed, BookStore, Metrics, Ticks]]:
    stale = kw.pop("stale_after_s", 2.0)
    store = BookStore(stale_after_s=stale)
    metrics = Metrics()
    ticks = Ticks()
    async with aiohttp.ClientSession() as session:
        feed = MarketFeed(
            url=sim.market_ws_url,
            store=store,
            metrics=metrics,
            tick_sink=ticks,
            fetcher=ClobBookFetcher(session=session, base_url=sim.clob_url),
            stale_after_s=stale,
            ping_interval_s=kw.pop("ping_interval_s", 0.5),
            backoff=lambda: Backoff(0.2, 2.0),
            **kw,
        )
        feed.watch("test", tokens)
        task = asyncio.create_task(feed.run(), name="test:feed")
        try:
            yield feed, store, metrics, ticks
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def sim_levels(sim: Simulator, token: str) -> tuple[list[tuple[D, D]], list[tuple[D, D]]]:
    body = sim.book_summary(token)
    bids = sorted(((D(x["price"]), D(x["size"])) for x in body["bids"]), reverse=True)
    asks = sorted((D(x["price"]), D(x["size"])) for x in body["asks"])
    return bids, asks


async def test_books_mirror_simulator_through_snapshot_and_deltas(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with feed_on(sim, list(market.token_ids)) as (feed, store, _, _):
        await until(lambda: store.usable_book(tok) is not None)
        assert (store.bids(tok), store.asks(tok)) == sim_levels(sim, tok)
        sim.seed_order(MAKER, tok, "SELL", D("0.48"), D("4"))
        oid = sim.seed_order(MAKER, tok, "BUY", D("0.44"), D("6"))
        sim.cancel_seeded(oid)
        sim.seed_order(MAKER, tok, "BUY", D("0.50"), D("1"))  # trades against the 0.48 ask
        await until(lambda: (store.bids(tok), store.asks(tok)) == sim_levels(sim, tok))
        assert feed.malformed == 0
        assert store.usable_book(tok) is not None


async def test_websocket_drop_is_resubscribed_with_a_fresh_snapshot(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with feed_on(sim, [tok]) as (feed, store, _, _):
        await until(lambda: store.usable_book(tok) is not None)
        before = feed.shards[0].connections
        assert await sim.drop_websockets("market") == 1
        await until(lambda: store.usable_book(tok) is None, 1.0)
        # How soon is a figure of `python -m bench feed` (resubscribed_after_drop_*).
        await until(lambda: store.usable_book(tok) is not None, 10.0)
        assert feed.shards[0].connections == before + 1
        assert (store.bids(tok), store.asks(tok)) == sim_levels(sim, tok)


async def test_silent_stall_is_detected_and_books_recover(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    stop = asyncio.Event()

    async def churn() -> None:  # a book that should move
        i = 0
        while not stop.is_set():
            oid = sim.seed_order(MAKER, tok, "BUY", D("0.3") + D(i % 5) / 100, D("1"))
            await asyncio.sleep(0.05)
            sim.cancel_seeded(oid)
            i += 1

    # Pings far apart so the stall, not the missing PONG, is what trips first.
    async with feed_on(sim, [tok], stale_after_s=1.0, ping_interval_s=5.0) as (
        feed,
        store,
        metrics,
        _,
    ):
        mover = asyncio.create_task(churn())
        try:
            await until(lambda: feed.shards[0].data_frames > 5)
            sim.stall_websockets("market", seconds=30)
            t_unusable = await until(lambda: store.usable_book(tok) is None, 3.0)
            assert t_unusable <= 1.5
            await until(lambda: store.usable_book(tok) is not None, 3.0)
        finally:
            stop.set()
            await mover
    stall = metrics.registry.get_sample_value(
        "polyd_feed_reconnects_total", {"feed": "market", "reason": "stall"}
    )
    assert stall == 1


async def test_malformed_frames_from_venue_are_counted_and_feed_continues(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with feed_on(sim, [tok]) as (feed, store, _, _):
        await until(lambda: store.usable_book(tok) is not None)
        sim.send_malformed("market", count=30)
        sim.seed_order(MAKER, tok, "SELL", D("0.52"), D("2"))
        await until(lambda: feed.malformed >= 20)
        await until(lambda: (store.bids(tok), store.asks(tok)) == sim_levels(sim, tok))
        assert feed.shards[0].connections == 1
        book = store.get(tok)
        assert book is not None and book.invariant_problems() == []


async def test_tick_size_change_reaches_tick_sink_and_book(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with feed_on(sim, [tok]) as (_, store, _, ticks):
        await until(lambda: store.usable_book(tok) is not None)
        sim.set_tick_size(tok, D("0.001"))
        await until(lambda: ticks.calls == [(tok, D("0.001"))])
        assert store.get(tok).tick_size == D("0.001")  # type: ignore[union-attr]


async def test_rest_resync_uses_simulator_book_and_verifies_hash(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with feed_on(sim, [tok]) as (feed, store, metrics, _):
        await until(lambda: store.usable_book(tok) is not None)
        book = store.get(tok)
        assert book is not None
        book.asks.clear()  # corrupt our copy and raise a doubt, as a bad delta would
        book.usable = False
        feed.request_resync(tok, "test")
        await until(lambda: store.usable_book(tok) is not None)
        assert (store.bids(tok), store.asks(tok)) == sim_levels(sim, tok)
    assert metrics.registry.get_sample_value("polyd_book_resyncs_total") == 1
