"""OrderBook and BookStore: snapshots, deltas, best prices, depth, usability."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from models import BookSource
from tests.helpers import FIXTURES as SHARED_FIXTURES
from venue.order_book import (
    BadLevel,
    BookStore,
    Link,
    OrderBook,
    parse_levels,
    rest_book_hash,
)

TOK = "1" * 70


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def levels(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"price": p, "size": s} for p, s in pairs]


def test_snapshot_best_last_wire_order_gives_best_prices() -> None:
    b = OrderBook(TOK)
    bids = parse_levels(levels(("0.40", "5"), ("0.45", "7"), ("0.47", "1")))  # ascending
    asks = parse_levels(levels(("0.60", "3"), ("0.55", "2"), ("0.50", "9")))  # descending
    b.replace(bids, asks, book_hash="h", timestamp_ms=1, now=1.0)
    assert b.best_bid() == (D("0.47"), D("1"))
    assert b.best_ask() == (D("0.50"), D("9"))
    assert b.bid_levels()[0][0] == D("0.47")
    assert [p for p, _ in b.ask_levels()] == [D("0.50"), D("0.55"), D("0.60")]
    assert b.usable
    assert b.invariant_problems() == []


def test_delta_zero_size_removes_level_and_best_moves() -> None:
    b = OrderBook(TOK)
    b.replace(
        {D("0.4"): D("1")},
        {D("0.5"): D("2"), D("0.6"): D("3")},
        book_hash="",
        timestamp_ms=0,
        now=0,
    )
    b.set_level(False, D("0.5"), D("0"))
    assert b.best_ask() == (D("0.6"), D("3"))
    b.set_level(True, D("0.45"), D("4"))
    assert b.best_bid() == (D("0.45"), D("4"))
    b.set_level(True, D("0.65"), D("4"))
    assert b.crossed()


def test_depth_at_or_under_price_sums_only_cheap_asks() -> None:
    b = OrderBook(TOK)
    b.replace(
        {},
        {D("0.9"): D("10"), D("0.95"): D("5"), D("0.99"): D("100")},
        book_hash="",
        timestamp_ms=0,
        now=0,
    )
    assert b.ask_depth_at_or_under(D("0.95")) == D("15")
    assert b.ask_depth_at_or_under(D("0.89")) == D("0")
    b2 = OrderBook(TOK)
    b2.replace({D("0.1"): D("1"), D("0.2"): D("2")}, {}, book_hash="", timestamp_ms=0, now=0)
    assert b2.bid_depth_at_or_over(D("0.15")) == D("2")


def test_crossed_snapshot_is_not_usable() -> None:
    b = OrderBook(TOK)
    b.replace({D("0.6"): D("1")}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=0)
    assert not b.usable


@pytest.mark.parametrize(
    "bad",
    [
        [{"price": "1.2", "size": "1"}],
        [{"price": "0", "size": "1"}],
        [{"price": "0.5", "size": "-1"}],
        [{"price": "NaN", "size": "1"}],
        [{"price": "0.5", "size": "Infinity"}],
        [{"price": 0.5, "size": "1"}],
        [{"price": "abc", "size": "1"}],
        ["0.5"],
        {"price": "0.5"},
    ],
)
def test_bad_levels_raise_badlevel(bad: object) -> None:
    with pytest.raises(BadLevel):
        parse_levels(bad)


def test_store_unsnapshotted_book_reads_none() -> None:
    store = BookStore(stale_after_s=5)
    store.ensure(TOK)
    assert isinstance(store, BookSource)
    assert store.asks(TOK) is None
    assert store.bids(TOK) is None
    assert store.asks("2" * 70) is None


def test_store_book_goes_stale_when_link_silent() -> None:
    clock = Clock()
    store = BookStore(stale_after_s=5, clock=clock)
    b = store.ensure(TOK)
    link = b.link = Link(last_frame=clock.now, connected=True)
    b.replace({D("0.4"): D("1")}, {D("0.5"): D("2")}, book_hash="", timestamp_ms=0, now=clock.now)
    assert store.asks(TOK) == [(D("0.5"), D("2"))]
    clock.now += 5.1
    assert store.asks(TOK) is None
    link.last_frame = clock.now
    assert store.bids(TOK) == [(D("0.4"), D("1"))]
    link.connected = False
    assert store.bids(TOK) is None


def test_mark_all_unusable_notifies_listeners_until_snapshot() -> None:
    store = BookStore(stale_after_s=5)
    b = store.ensure(TOK)
    b.replace({}, {D("0.5"): D("2")}, book_hash="", timestamp_ms=0, now=0)
    seen: list[list[str]] = []
    store.add_listener(lambda toks: seen.append(sorted(toks)))
    assert store.mark_all_unusable([TOK, "9" * 70]) == [TOK]
    assert seen == [[TOK]]
    assert store.asks(TOK) is None
    assert store.mark_all_unusable([TOK]) == []


def test_stats_count_usable_and_oldest_update() -> None:
    clock = Clock()
    store = BookStore(stale_after_s=50, clock=clock)
    store.ensure(TOK).replace(
        {}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=clock.now - 3
    )
    store.ensure("2" * 70)
    st = store.stats()
    assert (st.total, st.usable) == (2, 1)
    assert st.max_age_s == pytest.approx(3)


def test_rest_book_hash_matches_real_capture() -> None:
    import json

    fixtures = SHARED_FIXTURES
    p = fixtures / "clob_rest" / "book_2026_01_near_resolved_last_trade_price.json"
    body = json.loads(p.read_text())
    assert rest_book_hash(body) == body["hash"]
    assert rest_book_hash({"market": "x"}) is None
