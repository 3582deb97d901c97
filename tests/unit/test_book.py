"""OrderBook and BookStore: snapshots, deltas, best prices, depth, usability."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal as D

import pytest

from models import ONE, ZERO, BookSource
from tests.helpers import FIXTURES as SHARED_FIXTURES
from venue import parse as vparse
from venue.order_book import (
    BadLevel,
    BookStats,
    BookStore,
    Link,
    OrderBook,
    parse_levels,
    parse_price,
    parse_size,
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


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="shared fixtures not present")
def test_rest_book_hash_matches_real_capture() -> None:
    import json

    fixtures = SHARED_FIXTURES
    p = fixtures / "clob_rest" / "book_2026_01_near_resolved_last_trade_price.json"
    body = json.loads(p.read_text())
    assert rest_book_hash(body) == body["hash"]
    assert rest_book_hash({"market": "x"}) is None


# --- parsing: what is refused, and why --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"price": "0.5"}, "levels must be a list"),
        (["0.5"], "a level must be an object"),
        ([{"price": 0.5, "size": "1"}], "price must be a string"),
        ([{"price": "1", "size": "1"}], "price '1' outside (0, 1)"),
        ([{"price": "0", "size": "1"}], "price '0' outside (0, 1)"),
        ([{"price": "abc", "size": "1"}], "price 'abc' is not a number"),
        ([{"price": "9" * 50, "size": "1"}], f"price {'9' * 40!r} outside [0, 1]"),
        (
            [{"price": "0.5", "size": "-" + "9" * 50}],
            f"size {'-' + '9' * 39!r} is negative",
        ),
        ([{"price": "x" * 50, "size": "1"}], f"price {'x' * 40!r} is not a number"),
        ([{"price": "0.5", "size": 1}], "size must be a string"),
        ([{"price": "0.5", "size": "-1"}], "size '-1' is negative"),
        ([{"price": "0.5", "size": "Infinity"}], "size 'Infinity' is not finite"),
        ([{"price": "0.5", "size": "NaN"}], "size 'NaN' is not finite"),
        ([{"price": "0.5", "size": "1e308"}], "size '1e308' above 1000000000"),
        ([{"price": "0.5", "size": "1e999"}], "size '1e999' above 1000000000"),
        (
            [{"price": "0.5", "size": "1000000000.000001"}],
            "size '1000000000.000001' above 1000000000",
        ),
        ([{"price": "1.5", "size": "1"}], "price '1.5' outside [0, 1]"),
        ([{"price": "NaN", "size": "1"}], "price 'NaN' is not finite"),
        (
            [{"price": "1e-999999999", "size": "1"}],
            "price '1e-999999999' is too small to be a venue number",
        ),
        ([{"price": "0.5", "size": "1" * 65}], "size is 65 characters long"),
        ([{"price": "0.5", "size": "y" * 50}], f"size {'y' * 40!r} is not a number"),
        # A non-zero size below 10^-30 (venue numbers have 6 decimals) is refused like a price.
        ([{"price": "0.5", "size": "1e-31"}], "size '1e-31' is too small to be a venue number"),
        # A long number at an end of (0, 1) is shown by its first 40 characters.
        ([{"price": "1." + "0" * 43, "size": "1"}], f"price {'1.' + '0' * 38!r} outside (0, 1)"),
    ],
)
def test_a_refused_level_says_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(BadLevel) as e:
        parse_levels(raw)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "raw",
    [
        *("0", "1", "1e-30", "1E-30", "1e-31", "0.000001", "1000000000", "1000000000.0", "1e9"),
        *("5", "0." + "0" * 61 + "1", "0." + "1" * 62, "1" * 64, "-0", ".48", "0.999999"),
    ],
)
def test_the_fast_path_answers_as_venue_parse_does(raw: str) -> None:
    """The book's parsers check the common case inline (the feed's hot path) and hand anything
    else to `venue.parse`: at every bound the two give the same value or both refuse."""

    def verdict(f: Callable[[str], D]) -> D | str:
        try:
            return f(raw)
        except ValueError:
            return "refused"

    def venue_price(r: str) -> D:
        p = vparse.price(r)
        if not ZERO < p < ONE:
            raise ValueError(r)
        return p

    assert verdict(parse_price) == verdict(venue_price)
    assert verdict(parse_size) == verdict(vparse.size)


def test_a_zero_size_level_parses_and_is_dropped() -> None:
    assert parse_size("0") == D("0")
    assert parse_price(".48") == D("0.48")
    assert parse_levels(levels(("0.5", "0"), ("0.4", "3"))) == {D("0.4"): D("3")}


# --- one book ----------------------------------------------------------------------------------


def test_a_new_book_is_empty_and_unusable_until_its_first_snapshot() -> None:
    b = OrderBook(TOK, "0xabc", D("0.01"))
    assert (b.token_id, b.market, b.tick_size) == (TOK, "0xabc", D("0.01"))
    assert b.best_bid() is None and b.best_ask() is None and not b.crossed()
    assert b.bid_levels() == [] and b.ask_levels() == []
    assert b.ask_depth_at_or_under(D("0.99")) == 0 and b.bid_depth_at_or_over(D("0.01")) == 0
    assert b.usable is False
    assert (b.hash, b.timestamp_ms, b.snapshots, b.last_trade_price) == ("", 0, 0, None)
    assert b.snapshot_at == b.updated_at == float("-inf")
    assert b.invariant_problems() == []
    assert OrderBook(TOK).market == "" and OrderBook(TOK).tick_size is None


def test_each_snapshot_records_its_hash_time_and_count() -> None:
    b = OrderBook(TOK)
    b.replace({D("0.4"): D("1")}, {D("0.6"): D("1")}, book_hash="h1", timestamp_ms=111, now=5.0)
    assert (b.hash, b.timestamp_ms, b.snapshots, b.snapshot_at, b.updated_at) == (
        "h1",
        111,
        1,
        5.0,
        5.0,
    )
    b.replace({D("0.3"): D("2")}, {}, book_hash="h2", timestamp_ms=222, now=9.0)
    assert (b.hash, b.timestamp_ms, b.snapshots, b.snapshot_at) == ("h2", 222, 2, 9.0)
    assert b.bid_levels() == [(D("0.3"), D("2"))] and b.ask_levels() == []  # replaced, not merged


def test_a_locked_book_is_crossed_and_not_usable() -> None:
    b = OrderBook(TOK)
    b.replace({D("0.5"): D("1")}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=0)
    assert b.crossed()
    assert not b.usable


def test_bid_depth_sums_every_bid_at_or_over_the_price() -> None:
    b = OrderBook(TOK)
    b.replace(
        {D("0.1"): D("1"), D("0.2"): D("2"), D("0.3"): D("4")},
        {},
        book_hash="",
        timestamp_ms=0,
        now=0,
    )
    assert b.bid_depth_at_or_over(D("0.2")) == D("6")
    assert b.bid_depth_at_or_over(D("0.31")) == D("0")


def test_removing_a_level_that_is_not_there_is_harmless() -> None:
    b = OrderBook(TOK)
    b.set_level(True, D("0.4"), D("0"))
    b.set_level(False, D("0.6"), D("0"))
    assert b.bid_levels() == [] and b.ask_levels() == []


def test_invariant_problems_name_every_impossible_level() -> None:
    b = OrderBook(TOK)
    b.replace({D("0.4"): D("1")}, {D("0.6"): D("1")}, book_hash="", timestamp_ms=0, now=0)
    # Written behind the parser's back: levels no venue book can have.
    b.bids[D("0")] = D("1")
    b.bids[D("0.45")] = D("0")
    b.asks[D("1")] = D("2")
    b.asks[D("0.3")] = D("1")  # now crossed, and still marked usable
    assert b.invariant_problems() == [
        "bid price 0 outside (0, 1)",
        "bid size 0 at 0.45 not positive",
        "ask price 1 outside (0, 1)",
        "usable book is crossed",
    ]


# --- the store ---------------------------------------------------------------------------------


def test_store_needs_a_positive_staleness_bound() -> None:
    with pytest.raises(ValueError, match=r"^stale_after_s must be > 0$"):
        BookStore(stale_after_s=0)
    assert BookStore(stale_after_s=0.5).stale_after_s == 0.5


def test_store_registry_ensure_get_remove() -> None:
    store = BookStore(stale_after_s=5)
    other = "2" * 70
    b = store.ensure(TOK, market="0xm", tick_size=D("0.01"))
    assert (b.token_id, b.market, b.tick_size) == (TOK, "0xm", D("0.01"))
    assert store.ensure(TOK) is b and store.get(TOK) is b
    assert TOK in store and other not in store
    assert store.get(other) is None
    store.ensure(other)
    assert store.token_ids() == [TOK, other] and len(store) == 2
    store.remove(TOK)
    store.remove("9" * 70)  # not watched: nothing to do
    assert store.token_ids() == [other] and TOK not in store and store.get(TOK) is None


def test_store_ensure_fills_in_what_a_book_lacks_and_never_overwrites() -> None:
    store = BookStore(stale_after_s=5)
    b = store.ensure(TOK)
    assert (b.market, b.tick_size) == ("", None)
    store.ensure(TOK)  # nothing new: nothing changes
    assert (b.market, b.tick_size) == ("", None)
    store.ensure(TOK, market="0xm", tick_size=D("0.01"))
    assert (b.market, b.tick_size) == ("0xm", D("0.01"))
    store.ensure(TOK, market="0xother", tick_size=D("0.001"))
    assert (b.market, b.tick_size) == ("0xm", D("0.01"))
    store.ensure(TOK)
    assert (b.market, b.tick_size) == ("0xm", D("0.01"))


def test_store_reads_answer_only_for_a_usable_book() -> None:
    clock = Clock()
    store = BookStore(stale_after_s=5, clock=clock)
    b = store.ensure(TOK)
    b.link = Link(last_frame=clock.now, connected=True)
    assert not store.is_usable(TOK) and not store.is_usable("9" * 70)
    b.replace(
        {D("0.3"): D("1"), D("0.4"): D("2")},
        {D("0.6"): D("3"), D("0.7"): D("4")},
        book_hash="",
        timestamp_ms=0,
        now=clock.now,
    )
    assert store.is_usable(TOK) and store.usable_book(TOK) is b
    assert store.best_bid(TOK) == (D("0.4"), D("2"))
    assert store.best_ask(TOK) == (D("0.6"), D("3"))
    assert store.ask_depth_at_or_under(TOK, D("0.7")) == D("7")
    assert store.ask_depth_at_or_under(TOK, D("0.65")) == D("3")
    assert store.bid_depth_at_or_over(TOK, D("0.3")) == D("3")
    assert store.bid_depth_at_or_over(TOK, D("0.35")) == D("2")
    clock.now += 5  # exactly at the bound: still fresh
    assert store.is_usable(TOK) and store.best_bid(TOK) == (D("0.4"), D("2"))
    clock.now += 0.5
    assert not store.is_usable(TOK)
    for read in (store.best_bid, store.best_ask, store.asks, store.bids):
        assert read(TOK) is None
    assert store.ask_depth_at_or_under(TOK, D("0.7")) is None
    assert store.bid_depth_at_or_over(TOK, D("0.3")) is None
    for read in (store.best_bid, store.best_ask):
        assert read("9" * 70) is None


def test_mark_unusable_reports_whether_it_changed_anything() -> None:
    store = BookStore(stale_after_s=5)
    b = store.ensure(TOK)
    assert store.mark_unusable(TOK) is False  # never snapshotted
    b.replace({}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=0)
    assert store.mark_unusable(TOK) is True
    assert b.usable is False and not store.is_usable(TOK)
    assert store.mark_unusable("9" * 70) is False


def test_listeners_are_told_once_each_until_removed() -> None:
    store = BookStore(stale_after_s=5)
    seen_a: list[list[str]] = []
    seen_b: list[list[str]] = []

    def a(toks: object) -> None:
        seen_a.append(sorted(toks))  # type: ignore[call-overload]

    def b(toks: object) -> None:
        seen_b.append(sorted(toks))  # type: ignore[call-overload]

    store.add_listener(a)
    store.add_listener(a)
    store.add_listener(b)
    store.notify([TOK])
    store.remove_listener(a)
    store.remove_listener(a)  # already gone: harmless
    store.notify(["2" * 70])
    assert seen_a == [[TOK]]
    assert seen_b == [[TOK], ["2" * 70]]


def test_stats_count_every_usable_book_and_the_oldest_among_them() -> None:
    clock = Clock()
    store = BookStore(stale_after_s=50, clock=clock)
    assert store.stats() == BookStats(total=0, usable=0, max_age_s=0.0)
    for i, age in enumerate((3.0, 7.0, 1.0)):
        b = store.ensure(str(i + 1) * 70)
        b.link = Link(last_frame=clock.now, connected=True)
        b.replace({}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=clock.now - age)
    stale = store.ensure("9" * 70)
    stale.replace({}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=clock.now - 99)
    stale.link = Link(last_frame=clock.now - 60, connected=True)  # its link went silent
    assert store.stats() == BookStats(total=4, usable=3, max_age_s=7.0)


def test_stats_of_fresh_books_report_zero_age() -> None:
    clock = Clock()
    store = BookStore(stale_after_s=50, clock=clock)
    store.ensure(TOK).replace({}, {D("0.5"): D("1")}, book_hash="", timestamp_ms=0, now=clock.now)
    assert store.stats().max_age_s == 0.0


# --- REST /book hash ---------------------------------------------------------------------------


def book_body() -> dict[str, object]:
    return {
        "market": "0x" + "ab" * 32,
        "asset_id": TOK,
        "timestamp": "1757000000000",
        "hash": "",
        "bids": [{"price": "0.4", "size": "10"}],
        "asks": [{"price": "0.6", "size": "5"}],
        "min_order_size": "5",
        "tick_size": "0.01",
        "neg_risk": False,
        "last_trade_price": "0.5",
    }


def expected_hash(body: dict[str, object]) -> str:
    """The SDK's digest, computed independently: compact JSON, fixed key order, hash blanked."""
    import hashlib
    import json

    keys = list(book_body())
    doc = {k: ("" if k == "hash" else body[k]) for k in keys}
    return hashlib.sha1(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def test_rest_book_hash_covers_every_field_but_the_hash_itself() -> None:
    body = book_body()
    digest = rest_book_hash(body)
    assert digest == expected_hash(body)
    # The body's own hash field is blanked, key order does not matter, extra keys are ignored.
    signed = {**body, "hash": digest, "extra": 1}
    assert rest_book_hash(dict(reversed(list(signed.items())))) == digest
    # Any covered field changing changes the digest.
    for key, value in (("bids", []), ("tick_size", "0.001"), ("last_trade_price", "0.51")):
        assert rest_book_hash({**body, key: value}) not in (None, digest)


def test_rest_book_hash_is_none_when_any_field_is_missing() -> None:
    for key in book_body():
        body = book_body()
        del body[key]
        assert rest_book_hash(body) is None
