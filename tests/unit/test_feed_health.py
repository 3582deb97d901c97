"""The market feed's staleness verdict and the events that take books out of trading.

`MarketFeed.health` is what `/health` and the strategies' trust in the books rest on: a shard
silent for longer than `stale_after_s`, or disconnected, must read as down, and one heard from
within it must not. A resolved market's books must stop being usable at once (no more trading),
and a REST resync must retry a failed or doubtful `/book` and trust its hash only on the last
attempt. Driven on a fake clock: no waiting, no wall-clock bounds.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import orjson
import pytest

from errors import FeedError
from resilience.clock import FakeClock
from venue.market_feed import MarketFeed
from venue.order_book import BadLevel, BookStore, rest_book_hash

A = "1" * 70
B = "2" * 70
MARKET = "0x" + "cd" * 32


def feed_on(clock: FakeClock, *tokens: str, fetcher: Any = None) -> MarketFeed:
    feed = MarketFeed(
        url="ws://127.0.0.1:1/ws/market",
        store=BookStore(stale_after_s=30, clock=clock.monotonic),
        stale_after_s=5.0,
        clock=clock,
        fetcher=fetcher,
    )
    if tokens:
        feed.watch("test", tokens)
    return feed


def snapshot(token: str) -> bytes:
    return orjson.dumps(
        {
            "event_type": "book",
            "asset_id": token,
            "market": MARKET,
            "timestamp": "1",
            "hash": "",
            "bids": [{"price": "0.40", "size": "10"}],
            "asks": [{"price": "0.60", "size": "10"}],
        }
    )


def test_nothing_watched_is_healthy_and_says_so() -> None:
    result = feed_on(FakeClock(100)).health()
    assert (result.ok, result.detail) == (True, "no assets watched")


def test_a_shard_heard_from_within_stale_after_is_up_and_one_beyond_it_is_down() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A)
    shard = feed.shards[0]
    shard.on_connect(100.0)
    feed.handle_frame(snapshot(A), shard)
    clock.advance(5.0)  # exactly stale_after_s since the last frame: still up
    up = feed.health()
    assert up.ok
    assert up.detail == {
        "shards": 1,
        "shards_down": [],
        "books": 1,
        "books_usable": 1,
        "book_max_age_s": 5.0,
    }
    clock.advance(0.001)
    down = feed.health()
    assert not down.ok and down.detail["shards_down"] == [0]
    assert down.detail["book_max_age_s"] == 5.001


def test_a_disconnected_shard_is_down_however_recent_its_last_frame() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A)
    shard = feed.shards[0]
    shard.on_connect(100.0)
    shard.link.connected = False
    result = feed.health()
    assert not result.ok and result.detail["shards_down"] == [0]


def test_a_resolved_market_takes_its_books_out_of_trading_and_is_reported() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A, B)
    shard = feed.shards[0]
    shard.on_connect(100.0)
    feed.handle_frame(snapshot(A), shard)
    feed.handle_frame(snapshot(B), shard)
    told: list[tuple[str, list[str], str | None]] = []
    feed.on_resolved = lambda market, tokens, winner: told.append((market, tokens, winner))
    frame = {
        "event_type": "market_resolved",
        "market": MARKET,
        "assets_ids": [A, B],
        "winning_asset_id": A,
    }
    feed.handle_frame(orjson.dumps(frame), shard)
    assert told == [(MARKET, [A, B], A)]
    assert feed.store.usable_book(A) is None and feed.store.usable_book(B) is None


def test_last_trade_price_is_kept_on_the_watched_book_only() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A)
    shard = feed.shards[0]
    shard.on_connect(100.0)
    feed.handle_frame(snapshot(A), shard)
    for token in (A, B):
        ev = {
            "event_type": "last_trade_price",
            "asset_id": token,
            "price": "0.55",
            "market": MARKET,
        }
        feed.handle_frame(orjson.dumps(ev), shard)
    book = feed.store.get(A)
    assert book is not None and book.last_trade_price == D("0.55")
    assert feed.store.get(B) is None


class Fetcher:
    """A `/book` source answering from a script: an exception to raise, or a body."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def fetch_book(self, token_id: str) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


REST_BODY: dict[str, Any] = {
    "market": MARKET,
    "asset_id": A,
    "timestamp": "5",
    "hash": "0" * 40,  # never the reference hash: trusted only on the last attempt
    "bids": [],
    "asks": [{"price": "0.59", "size": "4"}],
    "min_order_size": "5",
    "tick_size": "0.01",
    "neg_risk": False,
    "last_trade_price": "",
}


async def test_resync_retries_a_failed_fetch_and_trusts_a_doubtful_hash_only_last() -> None:
    clock = FakeClock(100)
    fetcher = Fetcher(FeedError("503"), REST_BODY, REST_BODY)
    feed = feed_on(clock, A, fetcher=fetcher)
    await feed._resync(A)
    assert fetcher.calls == 3
    assert clock.sleeps == pytest.approx(
        [0.2, 0.4]
    )  # backs off between attempts, not after the last
    book = feed.store.get(A)
    assert book is not None and book.usable and book.best_ask() == (D("0.59"), D("4"))


async def test_resync_gives_up_after_three_attempts_leaving_the_book_unusable() -> None:
    clock = FakeClock(100)
    fetcher = Fetcher(FeedError("a"), FeedError("b"), {**REST_BODY, "asset_id": B})
    feed = feed_on(clock, A, fetcher=fetcher)
    await feed._resync(A)
    assert fetcher.calls == 3 and clock.sleeps == pytest.approx([0.2, 0.4, 0.6])
    assert feed.store.usable_book(A) is None


async def test_resync_of_a_book_already_usable_fetches_nothing() -> None:
    clock = FakeClock(100)
    fetcher = Fetcher()
    feed = feed_on(clock, A, fetcher=fetcher)
    shard = feed.shards[0]
    shard.on_connect(100.0)
    feed.handle_frame(snapshot(A), shard)
    await feed._resync(A)
    await feed._resync(B)  # not watched
    assert fetcher.calls == 0


# -- a REST /book installed as the snapshot ----------------------------------------------------


def rest_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        **REST_BODY,
        "bids": [{"price": "0.41", "size": "3"}],
        "timestamp": "5000",
        **kw,
    }
    body["hash"] = rest_book_hash(body)
    return body


def test_a_rest_book_with_the_reference_hash_is_installed_whole() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A)
    changed: list[list[str]] = []
    feed.store.add_listener(lambda tokens: changed.append(list(tokens)))
    body = rest_body()
    assert feed.apply_rest_book(A, body) is True
    book = feed.store.get(A)
    assert book is not None and book.usable
    assert (book.best_bid(), book.best_ask()) == ((D("0.41"), D("3")), (D("0.59"), D("4")))
    assert (book.hash, book.timestamp_ms, book.tick_size) == (body["hash"], 5000, D("0.01"))
    assert book.snapshot_at == 100.0
    assert changed == [[A]]


def test_a_rest_book_older_than_the_one_held_is_refused_and_one_as_old_is_taken() -> None:
    clock = FakeClock(100)
    feed = feed_on(clock, A)
    assert feed.apply_rest_book(A, rest_body())
    older = rest_body(timestamp="4999", asks=[{"price": "0.70", "size": "1"}])
    assert feed.apply_rest_book(A, older) is False
    book = feed.store.get(A)
    assert book is not None and book.best_ask() == (D("0.59"), D("4"))
    same = rest_body(asks=[{"price": "0.58", "size": "2"}])
    assert feed.apply_rest_book(A, same) is True
    assert book.best_ask() == (D("0.58"), D("2"))


def test_a_rest_book_for_another_token_is_refused_by_name() -> None:
    feed = feed_on(FakeClock(100), A, B)
    with pytest.raises(BadLevel, match=r"^/book answered for another token$"):
        feed.apply_rest_book(A, rest_body(asset_id=B))
    assert feed.apply_rest_book("9" * 70, rest_body()) is False  # not watched: nothing to fix


def test_a_rest_books_new_tick_size_is_passed_on() -> None:
    ticks: list[tuple[str, D]] = []

    class Sink:
        def set_tick_size(self, token_id: str, tick_size: D) -> None:
            ticks.append((token_id, tick_size))

    clock = FakeClock(100)
    feed = feed_on(clock, A)
    feed.tick_sink = Sink()
    assert feed.apply_rest_book(A, rest_body())
    assert feed.apply_rest_book(A, rest_body(tick_size="0.001", timestamp="6000"))
    assert feed.apply_rest_book(A, rest_body(tick_size="", timestamp="7000"))  # none said
    assert ticks == [(A, D("0.001"))]
    book = feed.store.get(A)
    assert book is not None and book.tick_size == D("0.001")
