"""The daemon's per-market memory stays bounded while markets come and go.

A daemon that runs for weeks sees a new market every few minutes. Each test cycles 5,000 token
ids (2,500 markets) through one component's public API, as the daemon's wiring calls it, and
checks every per-token container against its bound: sizes, never times. docs/benchmarks.md
lists the containers and their bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from decimal import Decimal as D

import httpx
from prometheus_client import CollectorRegistry

from execution.market_rules import MarketRules
from execution.positions import PositionBook
from execution.resolution import Resolutions
from execution.settlement import Settlement
from execution.tracker import OrderTracker
from models import Market, Position, Side
from observability.metrics import Metrics
from observability.notify import Notifier
from storage import Repositories
from storage.keys import RESOLUTIONS_KEY
from storage.market_names import MarketNames
from strategies.copy_trader.state import MarketMemory
from strategies.sniper import Sniper
from tests.unit.test_positions_bound import Table
from tests.unit.test_sniper import Clock, RecordingExecutor, market, rule, settle
from venue.clob.public import BOOKS_PRUNE_AT, RestBookSource
from venue.market_feed import MarketFeed
from venue.order_book import BookStore
from wiring.market_data import load_markets

MARKETS = 2_500  # two tokens each: 5,000 token ids
WINDOW = 10  # markets discovery finds at once


def nth(i: int) -> Market:
    return market(
        condition_id="0x" + f"{i + 1:064x}",
        token_ids=(f"{7 * 10**69 + 2 * i}", f"{7 * 10**69 + 2 * i + 1}"),
        question=f"Will market {i} resolve Yes?",
    )


async def test_discovery_moving_through_5000_tokens_keeps_feed_sniper_rules_names_bounded() -> None:
    """The wiring of `wiring.market_data`: discovery's markets go to the rules, the names and the
    sniper, whose watched tokens the feed subscribes (its books follow). A window of markets
    slides over 2,500 of them."""
    metrics = Metrics(registry=CollectorRegistry())
    store = BookStore(stale_after_s=60)
    feed = MarketFeed(url="ws://x/ws/market", store=store, metrics=metrics, shard_size=8)
    rules, names = MarketRules(max_tokens=500), MarketNames(capacity=300)
    sniper = Sniper(rules=[rule()], books=store, orders=RecordingExecutor(), clock=Clock())
    sniper.on_watch = lambda tokens: feed.watch("sniper", tokens)
    feed.watch("holdings", nth(0).token_ids)  # held since the start: watched throughout
    task = asyncio.create_task(sniper.run())
    try:
        for i in range(MARKETS - WINDOW + 1):
            found = {"r1": [nth(j) for j in range(i, i + WINDOW)]}
            load_markets(found, rules, store)
            for m in found["r1"]:
                names.learn_market(m)
            sniper.set_markets(found)
            await settle()
            watched = 2 * WINDOW + 2
            assert len(feed.watched()) <= watched and len(store) <= watched
            assert sum(len(s.assets) for s in feed.shards) == len(feed.watched())
            assert len(feed.shards) <= -(-watched // 8)  # shards are reused, never piled up
            assert sniper._slots.live <= 2 * WINDOW and len(sniper._took) <= 2 * WINDOW
            assert len(sniper.watched_tokens()) == 2 * WINDOW
        assert rules.cached <= 500 and len(names) <= 300
        assert set(nth(0).token_ids) <= feed.watched()  # the held market stays watched
        assert store.get(nth(0).token_ids[0]) is not None
        assert store.get(nth(1).token_ids[0]) is None  # left discovery long ago: dropped
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Metric labels come from small fixed sets: no token id or market id reached them.
    text = metrics.render().decode()
    assert not any(t in text for i in range(0, MARKETS, 97) for t in nth(i).token_ids)


def resolutions(repos: Repositories, positions: PositionBook, keep: int) -> Resolutions:
    metrics = Metrics(registry=CollectorRegistry())
    tracker = OrderTracker(
        journal=repos.orders, positions=positions, metrics=metrics, on_storage_failure=print
    )
    settle_ = Settlement(repos=repos, tracker=tracker, metrics=metrics, on_storage_failure=print)
    return Resolutions(
        rules=MarketRules(max_tokens=keep),
        positions=positions,
        repos=repos,
        settle=settle_,
        metrics=metrics,
        max_resolved=keep,
    )


async def test_5000_resolved_tokens_keep_what_is_held_and_a_bounded_rest(
    repos: Repositories,
) -> None:
    """The feed tells of every watched market that resolves: what is remembered (in memory, in
    the positions' marks and in storage) stays at the bound, and what we hold stays in it."""
    positions = PositionBook()
    held = nth(3).token_ids[0]
    positions.set_position(Position(token_id=held, size=D("10"), avg_cost=D("0.4")))
    res = resolutions(repos, positions, keep=100)
    for i in range(MARKETS):
        yes, no = nth(i).token_ids
        assert await res.resolved(nth(i).condition_id, {yes: D(1), no: D(0)}, "market_feed")
        assert res.known <= 100 + 1
    assert res.known == 100 and res.payout(held) == D(1)
    assert positions.payout(held) == D(1) and positions.redeemable() == D(10)
    last = nth(MARKETS - 1).token_ids
    assert res.payout(last[0]) == D(1) and res.payout(nth(4).token_ids[0]) is None
    assert positions.payout(nth(4).token_ids[0]) is None  # forgotten in the marks too
    stored = json.loads(await repos.state.get(RESOLUTIONS_KEY) or "{}")
    assert len(stored) == 100 and held in stored
    # A restart reads back the same, bounded, set; a held token is never forgotten.
    positions2 = PositionBook()
    positions2.set_position(Position(token_id=held, size=D("10"), avg_cost=D("0.4")))
    again = resolutions(repos, positions2, keep=50)
    await again.load()
    assert again.known == 50 and again.payout(held) == D(1) and again.payout(last[1]) == D(0)


async def test_paper_rest_books_of_5000_tokens_keep_only_fresh_snapshots() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"bids": [{"price": "0.4", "size": "10"}], "asks": []})

    books = RestBookSource(
        host="http://clob.invalid", max_age_s=0.0, transport=httpx.MockTransport(answer)
    )
    try:
        for i in range(MARKETS):
            for token in nth(i).token_ids:
                await books.refresh(token)
                assert books.cached <= BOOKS_PRUNE_AT + 1
        kept = RestBookSource(
            host="http://clob.invalid", max_age_s=3600.0, transport=httpx.MockTransport(answer)
        )
        for i in range(BOOKS_PRUNE_AT):  # every one fresh: all are served, none dropped
            await kept.refresh(nth(i).token_ids[0])
        assert kept.cached == BOOKS_PRUNE_AT and kept.best_bid(nth(0).token_ids[0]) is not None
        await kept.close()
    finally:
        await books.close()


def test_copy_traders_market_memory_of_5000_tokens_stays_at_its_bound() -> None:
    positions = PositionBook()
    held = nth(7)
    positions.set_position(
        Position(token_id=held.token_ids[0], strategy="copy", size=D(5), avg_cost=D("0.5"))
    )
    memory = MarketMemory(positions, strategy="copy", max_markets=50)
    memory.note(held.condition_id, held.token_ids[0])
    for i in range(MARKETS):
        m = nth(i)
        for token in m.token_ids:
            memory.note(m.condition_id, token)
        assert len(memory) <= 50 and len(memory._condition_of) <= 2 * 50
    assert memory.condition_of(held.token_ids[0]) == held.condition_id  # held: kept
    assert memory.locks == 0


def test_5000_tokens_traded_flat_keep_positions_bounded_with_the_same_pnl() -> None:
    """Each token is bought and sold flat as the executor books fills (`move`): the flat
    positions stay at the bound, the held one stays, and the realized PnL is the table's."""
    positions, everything = PositionBook(max_flat=100), PositionBook(max_flat=10**9)
    table = Table(positions, everything)
    held = nth(0).token_ids[0]
    table.fill("sniper", held, Side.BUY, "0.40", "10")
    for i in range(1, MARKETS):
        for n, token in enumerate(nth(i).token_ids):
            strategy = ("sniper", "copy")[n]
            table.fill(strategy, token, Side.BUY, "0.40", "10")
            table.fill(strategy, token, Side.SELL, "0.45", "10")
            assert len(positions.positions()) <= 100 + 1
            assert positions.realized(strategy=strategy) == everything.realized(strategy=strategy)
    assert positions.position(held, strategy="sniper").size == 10
    assert positions.realized() == everything.realized() == table.realized()


def test_notifier_keys_of_5000_markets_stay_bounded() -> None:
    """The redeemer's alerts are keyed by market (`redemption_refused:<condition id>`): the
    dedupe keys are pruned to those still within the dedupe interval once past 1,000."""
    now = [0.0]
    notifier = Notifier(min_interval_s=60.0, max_per_window=20, window_s=60.0, clock=lambda: now[0])
    notifier.add_sink(lambda msg: True)
    accepted = 0
    for i in range(MARKETS * 2):
        now[0] += 5.0
        accepted += notifier.notify("market", f"redemption_refused:{nth(i // 2).condition_id}", "x")
        assert len(notifier._last_by_key) <= 1000 + 1
    assert accepted == MARKETS  # the second of each pair was deduplicated
