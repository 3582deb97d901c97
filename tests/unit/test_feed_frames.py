"""The market feed between the socket and the books, driven frame by frame on a fake clock:
PONGs and blank frames are not data, the recorder tap hears every frame and connection change,
tick sizes reach the executor only when they change (or the venue announces a change), a
resolved market is reported to its owner, resyncs are queued once per token and retried with
a growing pause, and the gauges operators alert on (`polyd_feed_last_message_age_seconds`,
`polyd_books{state}`, `polyd_book_max_age_seconds`, `polyd_feed_messages_total`) say what
the books are.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal as D
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from errors import FeedError
from observability.metrics import Metrics
from resilience.clock import FakeClock
from tests.helpers import until
from tests.unit.test_feed_liveness import scripted
from venue.market_feed import MarketFeed, Shard
from venue.order_book import BookStore

A = "1" * 70
B = "2" * 70
C = "3" * 70
MARKET = "0x" + "cd" * 32


class Tap:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def frame(self, data: str | bytes, shard: int) -> None:
        self.calls.append(("frame", data, shard))

    def connected(self, shard: int, tokens: int) -> None:
        self.calls.append(("connected", shard, tokens))

    def lost(self, shard: int, tokens: int) -> None:
        self.calls.append(("lost", shard, tokens))

    def watching(self, tokens: list[str]) -> None:
        self.calls.append(("watching", tokens))


class Ticks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, D]] = []

    def set_tick_size(self, token_id: str, tick_size: D) -> None:
        self.calls.append((token_id, tick_size))


def make(
    *tokens: str, fetcher: Any = None, shard_size: int = 200
) -> tuple[MarketFeed, BookStore, Metrics, FakeClock, Ticks]:
    clock = FakeClock(500.0)
    store = BookStore(stale_after_s=4.0, clock=clock.monotonic)
    metrics, ticks = Metrics(), Ticks()
    feed = MarketFeed(
        url="ws://127.0.0.1:1/ws/market",
        store=store,
        metrics=metrics,
        tick_sink=ticks,
        fetcher=fetcher,
        stale_after_s=4.0,
        clock=clock,
        shard_size=shard_size,
    )
    if tokens:
        feed.watch("test", tokens)
    return feed, store, metrics, clock, ticks


def up(shard: Shard, now: float) -> Shard:
    shard.on_connect(now)
    return shard


def snapshot(token: str, *, tick: str | None = None, ask: str = "0.60") -> str:
    ev: dict[str, Any] = {
        "event_type": "book",
        "asset_id": token,
        "market": MARKET,
        "timestamp": "1",
        "hash": "",
        "bids": [{"price": "0.40", "size": "10"}],
        "asks": [{"price": ask, "size": "10"}],
    }
    if tick is not None:
        ev["tick_size"] = tick
    return orjson.dumps(ev).decode()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("pong", ["PONG", b"PONG"], ids=["text", "bytes"])
def test_a_pong_answers_the_ping_and_is_not_data(pong: str | bytes) -> None:
    feed, _, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    shard.pinged(clock.monotonic())
    clock.advance(1.5)
    feed.handle_frame(pong, shard)
    assert shard.ping_outstanding_since is None
    assert shard.link.last_frame == 501.5  # heard from: health counts it
    assert (shard.data_frames, shard.last_data) == (0, 500.0)  # but it is no data
    assert feed.counts() == {"pong": 1}
    assert feed.malformed == 0


def test_blank_frames_are_counted_as_empty_and_garbage_as_malformed() -> None:
    feed, _, metrics, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame("  ", shard)
    feed.handle_frame("{not json", shard)
    feed.handle_frame(b"\xff", shard)
    assert feed.counts() == {"empty": 1}
    assert feed.malformed == 2
    assert shard.data_frames == 0
    feed.flush_metrics()
    assert sample(metrics, "polyd_feed_malformed_total", feed="market") == 2
    assert sample(metrics, "polyd_feed_messages_total", feed="market", event_type="empty") == 1


def test_a_data_frame_is_timed_for_the_stall_watchdog_and_the_benchmark() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    assert feed.last_frame_ns == 0
    clock.advance(2.0)
    feed.handle_frame(snapshot(A), shard)
    assert (shard.data_frames, shard.last_data, shard.link.last_frame) == (1, 502.0, 502.0)
    assert feed.last_frame_ns > 0
    book = store.get(A)
    assert book is not None and book.updated_at == 502.0 and book.link is shard.link


def test_the_tap_hears_every_frame_and_connection_change_and_the_watched_set() -> None:
    feed, _, _, clock, _ = make()
    tap = Tap()
    feed.tap = tap
    feed.watch("a", [B, A])
    feed.watch("b", [A])  # nothing new watched: not told again
    shard = up(feed.shards[0], clock.monotonic())
    shard.subscribed = {A}
    feed.shard_connected(shard)
    feed.handle_frame("PONG", shard)
    feed.handle_frame(snapshot(A), shard)
    assert feed.shard_lost(shard) == 1  # A's book was usable
    feed.watch("a", [])
    feed.watch("b", [])
    assert tap.calls == [
        ("watching", [A, B]),
        ("connected", 0, 1),
        ("frame", "PONG", 0),
        ("frame", snapshot(A), 0),
        ("lost", 0, 2),
        ("watching", [A]),
        ("watching", []),
    ]


def test_the_connected_gauge_counts_connected_shards() -> None:
    feed, _, metrics, clock, _ = make(A, B, C, shard_size=1)
    s0, s1, _ = feed.shards
    up(s0, clock.monotonic())
    feed.shard_connected(s0)
    up(s1, clock.monotonic())
    feed.shard_connected(s1)
    assert sample(metrics, "polyd_feed_connected", feed="market") == 2
    s0.link.connected = False
    assert feed.shard_lost(s0) == 0  # no book had a snapshot yet
    assert sample(metrics, "polyd_feed_connected", feed="market") == 1


def test_a_snapshot_tick_reaches_the_executor_only_when_it_changes() -> None:
    feed, store, _, clock, ticks = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A, tick="0.01"), shard)  # first known tick: the book's own
    feed.handle_frame(snapshot(A, tick="0.01"), shard)
    assert ticks.calls == []
    feed.handle_frame(snapshot(A, tick="0.001"), shard)
    assert ticks.calls == [(A, D("0.001"))]
    change = {
        "event_type": "tick_size_change",
        "asset_id": A,
        "market": MARKET,
        "old_tick_size": "0.001",
        "new_tick_size": "0.001",
    }
    feed.handle_frame(orjson.dumps(change), shard)  # announced by the venue: always passed on
    assert ticks.calls == [(A, D("0.001")), (A, D("0.001"))]
    book = store.get(A)
    assert book is not None and book.tick_size == D("0.001")
    change["asset_id"] = C  # not watched: nothing
    feed.handle_frame(orjson.dumps(change), shard)
    assert len(ticks.calls) == 2


def test_a_last_trade_price_is_kept_on_its_book() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    ev = {"event_type": "last_trade_price", "asset_id": A, "market": MARKET, "price": "0.55"}
    feed.handle_frame(orjson.dumps(ev), shard)
    book = store.get(A)
    assert book is not None and book.last_trade_price == D("0.55")


def test_a_resolved_market_is_reported_to_its_owner_and_listeners() -> None:
    feed, store, _, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A), shard)
    resolved: list[tuple[str, list[str], str | None]] = []
    feed.on_resolved = lambda market, tokens, winner: resolved.append((market, tokens, winner))
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    ev = {
        "event_type": "market_resolved",
        "market": MARKET,
        "assets_ids": [A, B],
        "winning_asset_id": B,
    }
    feed.handle_frame(orjson.dumps(ev), shard)
    assert resolved == [(MARKET, [A, B], B)]
    assert told == [{A}]  # A's book stopped being usable; B had none to stop
    assert store.usable_book(A) is None
    assert feed.counts() == {"book": 1, "market_resolved": 1}


def test_a_resync_is_queued_once_per_token_and_only_for_watched_ones() -> None:
    feed, _, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.request_resync(C, "gap")  # not watched
    feed.request_resync(A, "gap")
    feed.request_resync(A, "gap")
    assert feed._resync_pending == {A}
    assert feed._resync_q.qsize() == 1
    feed.handle_frame(snapshot(A), shard)  # a snapshot settles it; the queued entry stays
    assert feed._resync_pending == set()
    feed.request_resync(A, "crossed")  # doubted again before the worker got to it
    assert feed._resync_pending == {A}
    assert feed._resync_q.qsize() == 1


class Failing:
    def __init__(self, failures: int, body: dict[str, Any]) -> None:
        self.failures = failures
        self.body = body
        self.calls = 0

    async def fetch_book(self, token_id: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise FeedError("503")
        return self.body


def rest_body(token: str, tick: str = "") -> dict[str, Any]:
    return {
        "asset_id": token,
        "timestamp": "9",
        "bids": [{"price": "0.41", "size": "3"}],
        "asks": [{"price": "0.59", "size": "4"}],
        "tick_size": tick,
    }


async def test_a_resync_pauses_longer_after_each_failed_attempt() -> None:
    fetcher = Failing(2, rest_body(A))
    feed, store, metrics, clock, _ = make(A, fetcher=fetcher)
    await feed._resync(A)
    assert fetcher.calls == 3
    assert clock.sleeps == [0.2, 0.4]
    book = store.get(A)
    assert book is not None and book.usable  # installed (trading waits for the socket)
    assert sample(metrics, "polyd_book_resyncs_total") == 1


async def test_a_resync_without_a_fetcher_or_for_a_usable_book_fetches_nothing() -> None:
    feed, _, _, clock, _ = make(A)
    await feed._resync(A)  # no fetcher: nothing to do, no pause
    assert clock.sleeps == []
    fetcher = Failing(0, rest_body(A))
    feed, _, _, clock, _ = make(A, fetcher=fetcher)
    feed.handle_frame(snapshot(A), up(feed.shards[0], clock.monotonic()))
    await feed._resync(A)
    await feed._resync(C)
    assert fetcher.calls == 0


def test_a_rest_book_passes_its_tick_on_and_tells_the_listeners() -> None:
    feed, store, _, _, ticks = make(A)
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    assert feed.apply_rest_book(A, rest_body(A)) is True  # no tick: none set
    book = store.get(A)
    assert book is not None and book.tick_size is None
    assert feed.apply_rest_book(A, rest_body(A, "0.01")) is True
    assert book.tick_size == D("0.01")
    assert feed.apply_rest_book(A, rest_body(A, "0.001")) is True
    assert ticks.calls == [(A, D("0.001"))]
    assert told == [{A}, {A}, {A}]
    assert feed.apply_rest_book(C, rest_body(C)) is False  # not watched


def test_the_feed_gauges_say_how_old_the_data_and_the_books_are() -> None:
    feed, _, metrics, clock, _ = make(A, B, C, shard_size=2)
    s0, s1 = feed.shards
    feed.flush_metrics()
    assert sample(metrics, "polyd_feed_last_message_age_seconds", feed="market") == 0.0
    up(s0, clock.monotonic())
    up(s1, clock.monotonic())
    feed.handle_frame(snapshot(A), s0)
    clock.advance(1.0)
    feed.handle_frame(snapshot(C), s1)
    clock.advance(0.5)
    feed.handle_frame(snapshot(B), s0)
    clock.advance(2.0)
    feed.flush_metrics()
    # the freshest connected shard: s0 spoke 2 s ago
    assert sample(metrics, "polyd_feed_last_message_age_seconds", feed="market") == 2.0
    assert sample(metrics, "polyd_books", state="fresh") == 3
    assert sample(metrics, "polyd_books", state="stale") == 0
    assert sample(metrics, "polyd_book_max_age_seconds") == 3.5  # A's snapshot
    assert sample(metrics, "polyd_feed_messages_total", feed="market", event_type="book") == 3
    s0.link.connected = False  # a dropped shard no longer speaks for the feed
    feed.shard_lost(s0)
    feed.flush_metrics()
    assert sample(metrics, "polyd_feed_last_message_age_seconds", feed="market") == 2.5
    assert sample(metrics, "polyd_books", state="fresh") == 1
    assert sample(metrics, "polyd_books", state="stale") == 2
    assert sample(metrics, "polyd_book_max_age_seconds") == 2.5
    feed.flush_metrics()  # flushing again adds nothing
    assert sample(metrics, "polyd_feed_messages_total", feed="market", event_type="book") == 3


def test_health_names_the_shards_down_and_counts_the_books() -> None:
    feed, _, _, clock, _ = make(A, B, shard_size=1)
    s0, s1 = feed.shards
    up(s0, clock.monotonic())
    up(s1, clock.monotonic())
    feed.handle_frame(snapshot(A), s0)
    feed.handle_frame(snapshot(B), s1)
    clock.advance(4.0)  # exactly stale_after_s: still up
    feed.handle_frame("PONG", s1)
    h = feed.health()
    assert h.ok
    clock.advance(0.25)
    h = feed.health()
    assert not h.ok
    assert h.detail == {
        "shards": 2,
        "shards_down": [0],
        "books": 2,
        "books_usable": 1,
        "book_max_age_s": 4.25,
    }


def test_the_settings_read_back_and_the_pong_deadline_defaults_to_the_ping_interval() -> None:
    store = BookStore(stale_after_s=4.0)
    feed = MarketFeed(url="ws://x/ws/market", store=store, ping_interval_s=3.0, stale_after_s=9)
    assert (feed.url, feed.ping_interval_s, feed.pong_timeout_s, feed.stale_after_s) == (
        "ws://x/ws/market",
        3.0,
        3.0,
        9,
    )
    slow = MarketFeed(url="ws://x", store=store, ping_interval_s=20.0)
    assert slow.pong_timeout_s == 5.0  # never more than 5 s
    with pytest.raises(ValueError, match=r"^shard_size must be >= 1$"):  # the whole message
        MarketFeed(url="ws://x", store=store, shard_size=0)


def test_unwatching_a_token_drops_its_book_and_its_snapshot_wait() -> None:
    feed, store, _, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    shard.awaiting = {A: 500.0, B: 500.0}
    shard.wake.clear()
    feed.watch("test", [B])
    assert A not in store and shard.assets == {B}
    assert shard.awaiting == {B: 500.0}
    assert shard.wake.is_set()  # the connection is told to unsubscribe
    assert feed.watched() == {B}


def price_change(*entries: dict[str, str]) -> bytes:
    ev = {"event_type": "price_change", "market": MARKET, "timestamp": "3"}
    return orjson.dumps({**ev, "price_changes": list(entries)})


def entry(token: str, price: str, size: str, side: str = "BUY", **bests: str) -> dict[str, str]:
    return {"asset_id": token, "price": price, "size": size, "side": side, **bests}


def test_a_snapshot_is_installed_with_its_hash_time_and_last_trade() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    ev = orjson.loads(snapshot(A))
    ev.update(hash="abc", timestamp="1700000000123", last_trade_price="0.52")
    feed.handle_frame(orjson.dumps(ev), shard)
    book = store.get(A)
    assert book is not None
    assert (book.hash, book.timestamp_ms, book.last_trade_price) == (
        "abc",
        1700000000123,
        D("0.52"),
    )
    older = rest_body(A)
    older["timestamp"] = "1700000000000"
    assert feed.apply_rest_book(A, older) is False  # older than the snapshot held


def test_a_crossed_or_unreadable_snapshot_takes_the_book_out_and_asks_rest() -> None:
    feed, store, _, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    feed.handle_frame(snapshot(A, ask="0.30"), shard)  # ask under the bid: crossed
    book = store.get(A)
    assert book is not None and not book.usable
    assert feed._resync_pending == {A}
    assert told == [{A}]
    assert feed.malformed == 0
    feed.handle_frame(snapshot(B), shard)
    bad = orjson.loads(snapshot(B))
    bad["bids"] = [{"price": "2", "size": "1"}]  # a price above 1: refused
    good = orjson.loads(snapshot(A))
    feed.handle_frame(orjson.dumps([bad, good]), shard)  # one frame, two events
    b = store.get(B)
    assert b is not None and not b.usable
    assert feed._resync_pending == {B}  # A's good snapshot settled A's
    assert told[-1] == {A, B}
    assert feed.malformed == 1
    assert store.usable_book(A) is not None  # the bad event did not cost the good one


def test_a_delta_event_applies_to_every_watched_book_it_names() -> None:
    feed, store, metrics, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(B), shard)
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    clock.advance(1.0)
    # C is not watched, A has no snapshot yet: neither stops B's level from applying
    feed.handle_frame(
        price_change(entry(C, "0.30", "5"), entry(A, "0.30", "5"), entry(B, "0.35", "7")), shard
    )
    b = store.get(B)
    assert b is not None and b.bids.get(D("0.35")) == D("7") and b.updated_at == 501.0
    assert feed._resync_pending == {A}  # a delta before its snapshot: A is resynced
    assert told == [{A, B}]
    feed.flush_metrics()
    assert sample(metrics, "polyd_book_max_age_seconds") == 0.0  # B was just updated


def test_a_side_emptied_at_the_venue_and_here_is_no_doubt() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A), shard)
    # our only bid goes; the venue says its bid side is empty ("0") and its best ask 0.60
    feed.handle_frame(price_change(entry(A, "0.40", "0", best_bid="0", best_ask="0.60")), shard)
    book = store.get(A)
    assert book is not None and book.usable and book.best_bid() is None
    feed.handle_frame(
        price_change(entry(A, "0.60", "0", "SELL", best_bid="0", best_ask="1")), shard
    )
    assert book.usable and book.best_ask() is None
    assert feed.malformed == 0 and feed._resync_pending == set()


def test_a_malformed_delta_for_an_unwatched_token_costs_nothing_else() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    bad = orjson.loads(price_change(entry(C, "2", "5")))
    feed.handle_frame(orjson.dumps([bad, orjson.loads(snapshot(A))]), shard)
    assert feed.malformed == 1
    assert store.usable_book(A) is not None


def test_a_malformed_delta_takes_out_every_held_book_it_names_and_asks_rest() -> None:
    # The event is refused whole, so each book it names missed an update. Its tokens are a set:
    # with thirty unwatched ones (no book) beside the held one, some come before it, and none
    # may stop it from being taken out.
    feed, store, _, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A), shard)
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    unwatched = [entry(str(i).rjust(70, "9"), "0.30", "5") for i in range(30)]
    feed.handle_frame(price_change(*unwatched, entry(A, "2", "5"), entry(B, "0.3", "1")), shard)
    assert feed.malformed == 1
    book = store.get(A)
    assert book is not None and not book.usable
    assert feed._resync_pending == {A}  # B has no snapshot yet: nothing of it to doubt
    assert told == [{A}]


def test_a_tick_size_change_tells_the_books_listeners() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A, tick="0.01"), shard)
    told: list[set[str]] = []
    store.add_listener(lambda tokens: told.append(set(tokens)))
    change = {
        "event_type": "tick_size_change",
        "asset_id": A,
        "market": MARKET,
        "old_tick_size": "0.01",
        "new_tick_size": "0.001",
    }
    feed.handle_frame(orjson.dumps(change), shard)
    assert told == [{A}]  # a strategy re-reads the book's tick before its next order


async def test_the_feed_gauges_are_flushed_every_second_while_it_runs() -> None:
    feed, _, metrics, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A), shard)
    clock.advance(3.0)
    gauges = asyncio.create_task(feed._gauges())
    try:
        await until(lambda: len(clock.sleeps) >= 3)
    finally:
        gauges.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gauges
    assert clock.sleeps[:3] == [1.0, 1.0, 1.0]
    age = sample(metrics, "polyd_feed_last_message_age_seconds", feed="market")
    assert age is not None and age >= 3.0


async def test_a_token_can_be_resynced_again_after_its_last_resync_ended() -> None:
    fetcher = Failing(3, rest_body(A))  # the first resync's three attempts all fail
    feed, store, _, _, _ = make(A, fetcher=fetcher)
    worker = asyncio.create_task(feed._resync_worker())
    try:
        feed.request_resync(A, "gap")
        await until(lambda: fetcher.calls == 3 and not feed._resync_pending)
        feed.request_resync(A, "gap")  # doubted again later: asked again
        await until(lambda: fetcher.calls == 4)
        await until(lambda: not feed._resync_pending)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    book = store.get(A)
    assert book is not None and book.usable


async def test_tokens_watched_while_running_are_connected_and_a_stopped_feed_is_down() -> None:
    async with scripted() as v:
        store = BookStore(stale_after_s=5.0)
        feed = MarketFeed(url=v.url, store=store, stale_after_s=5.0, shard_size=1)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.sleep(0)
            feed.watch("t", [A])  # a shard made while running gets its connection
            await until(lambda: store.usable_book(A) is not None)
            assert feed.health().ok
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not feed.shards[0].link.connected
        assert not feed.health().ok
        assert store.usable_book(A) is None
        feed.watch("t", [A, B])  # after the run: a new shard is tracked, no task started
        assert len(feed.shards) == 2 and feed.shards[1].task is None


def test_a_book_filled_over_rest_is_judged_by_its_shards_connection() -> None:
    # A REST resync installs a snapshot without a frame: the book is only as fresh as the
    # websocket it is watched on, so it is not traded while that shard is down or silent.
    feed, store, _, clock, _ = make(A)
    shard = feed.shards[0]
    assert feed.apply_rest_book(A, rest_body(A)) is True  # the book itself is whole
    assert store.usable_book(A) is None  # but its shard has never connected
    up(shard, clock.monotonic())
    assert store.usable_book(A) is not None
    clock.advance(4.5)  # nothing heard for longer than stale_after_s
    assert store.usable_book(A) is None


def test_a_snapshot_without_an_event_type_is_applied_as_a_book() -> None:
    # Early snapshots carried no event_type; one with levels is still a book.
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    ev = orjson.loads(snapshot(A, ask="0.55"))
    del ev["event_type"]
    feed.handle_frame(orjson.dumps([ev]), shard)
    book = store.get(A)
    assert book is not None and book.best_ask() == (D("0.55"), D("10"))
    assert feed.counts() == {"book": 1} and feed.malformed == 0


def test_an_event_type_that_is_not_text_is_unknown_and_the_rest_of_its_array_is_applied() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    odd = {"event_type": ["book"], "asset_id": A}  # a list: not a name to look up
    feed.handle_frame(b"[" + orjson.dumps(odd) + b"," + snapshot(A).encode() + b"]", shard)
    assert feed.counts() == {"unknown": 1, "book": 1} and feed.malformed == 0
    assert store.usable_book(A) is not None


def test_every_event_of_an_array_frame_is_stamped_with_the_frames_time() -> None:
    feed, store, _, clock, _ = make(A, B)
    shard = up(feed.shards[0], clock.monotonic())
    clock.advance(2.0)
    feed.handle_frame(b"[" + snapshot(A).encode() + b"," + snapshot(B).encode() + b"]", shard)
    for token in (A, B):
        book = store.get(token)
        assert book is not None and book.updated_at == 502.0


def test_a_bug_past_the_parsers_is_counted_per_frame_and_the_feed_goes_on() -> None:
    # The frame boundary catches what no parser expects, here a fault in the tick size's
    # listener (the executor's market rules): each such frame counts once as malformed.
    feed, store, _, clock, ticks = make(A)
    shard = up(feed.shards[0], clock.monotonic())

    def broken(token_id: str, tick_size: D) -> None:
        raise RuntimeError("a bug in the listener")

    ticks.set_tick_size = broken  # type: ignore[method-assign]
    change = {"event_type": "tick_size_change", "asset_id": A, "market": MARKET}
    with capture_logs() as logs:
        for new in ("0.001", "0.01"):
            feed.handle_frame(orjson.dumps({**change, "new_tick_size": new}), shard)
    assert feed.malformed == 2
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["feed_frame_failed"] * 2
    feed.handle_frame(snapshot(A), shard)  # the next frame is applied as ever
    assert store.usable_book(A) is not None and feed.malformed == 2


def test_a_new_market_event_is_counted_by_its_name_and_changes_no_book() -> None:
    feed, store, _, clock, _ = make(A)
    shard = up(feed.shards[0], clock.monotonic())
    feed.handle_frame(snapshot(A), shard)
    ev = {"event_type": "new_market", "market": MARKET, "assets_ids": [B, C]}
    feed.handle_frame(orjson.dumps(ev), shard)
    assert feed.counts() == {"book": 1, "new_market": 1} and feed.malformed == 0
    assert store.token_ids() == [A]
