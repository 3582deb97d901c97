"""Market feed frame handling: real captured payloads, schemas, doubts, and fuzzed garbage."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal as D
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import FIXTURES as SHARED_FIXTURES
from venue.market_feed import MarketFeed, Shard
from venue.market_feed.parsing import parse_price_change
from venue.order_book import BookStore

FIXTURES = SHARED_FIXTURES / "ws_market"
YES = "98022490269692409998126496127597032490334070080325855126491859374983463996227"
NO = "53831553061883006530739877284105938919721408776239639687877978808906551086026"
A = "1" * 70
B = "2" * 70


class Ticks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, D]] = []

    def set_tick_size(self, token_id: str, tick_size: D) -> None:
        self.calls.append((token_id, tick_size))


def make_feed(*tokens: str) -> tuple[MarketFeed, Shard, Ticks]:
    store = BookStore(stale_after_s=30)
    ticks = Ticks()
    feed = MarketFeed(url="ws://127.0.0.1:1/ws/market", store=store, tick_sink=ticks)
    feed.watch("test", tokens)
    shard = feed.shards[0] if feed.shards else Shard(0)
    shard.link.connected = True
    return feed, shard, ticks


def fixture_frames() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not FIXTURES.is_dir():
        return out  # collected in a clone without the captures: the test is skipped
    for p in sorted(FIXTURES.iterdir()):
        if p.suffix == ".json":
            out.append((p.name, p.read_text()))
        elif p.suffix == ".jsonl":
            for i, line in enumerate(p.read_text().split("\n")):
                out.append((f"{p.name}:{i + 1}", line))
    return out


def tokens_in(text: str) -> set[str]:
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("asset_id", "winning_asset_id") and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    with contextlib.suppress(ValueError):
        walk(json.loads(text))
    return found


def snapshot(token: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> bytes:
    return orjson.dumps(
        {
            "event_type": "book",
            "asset_id": token,
            "market": "0x" + "ab" * 32,
            "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks],
            "timestamp": "1",
            "hash": "h",
        }
    )


def change(token: str, side: str, price: str, size: str, bb: str, ba: str) -> bytes:
    return orjson.dumps(
        {
            "event_type": "price_change",
            "market": "0x" + "ab" * 32,
            "timestamp": "2",
            "price_changes": [
                {
                    "asset_id": token,
                    "price": price,
                    "size": size,
                    "side": side,
                    "hash": "x",
                    "best_bid": bb,
                    "best_ask": ba,
                }
            ],
        }
    )


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
@pytest.mark.parametrize(("name", "frame"), fixture_frames())
def test_captured_frame_parses_without_malformed(name: str, frame: str) -> None:
    feed, shard, _ = make_feed(*tokens_in(frame))
    feed.handle_frame(frame, shard)
    assert feed.malformed == 0, name
    for t in feed.store.token_ids():
        book = feed.store.get(t)
        assert book is not None
        assert book.invariant_problems() == [], name


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
def test_captured_session_replay_matches_venue_best_prices() -> None:
    feed, shard, _ = make_feed(YES)
    lines = (FIXTURES / "market_channel_session_excerpt_2026_05.jsonl").read_text().split("\n")
    for line in lines:
        feed.handle_frame(line, shard)
    assert feed.malformed == 0
    assert feed.counts()["pong"] == 1
    assert feed.counts()["empty"] >= 1
    book = feed.store.usable_book(YES)
    assert book is not None, "a venue best bid/ask disagreed with the replayed book"
    last = json.loads(lines[11])["price_changes"]
    mine = next(c for c in last if c["asset_id"] == YES)
    assert book.best_bid() is not None and book.best_bid()[0] == D(mine["best_bid"])  # type: ignore[index]
    assert book.best_ask() is not None and book.best_ask()[0] == D(mine["best_ask"])  # type: ignore[index]
    assert book.tick_size == D("0.01")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
def test_tick_size_change_fixture_reaches_tick_sink() -> None:
    raw = (FIXTURES / "tick_size_change_2025_02.json").read_text()
    token = json.loads(raw)["asset_id"]
    feed, shard, ticks = make_feed(token)
    feed.handle_frame(raw, shard)
    assert ticks.calls == [(token, D("0.001"))]
    assert feed.store.get(token).tick_size == D("0.001")  # type: ignore[union-attr]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
def test_legacy_schemas_apply_after_snapshot() -> None:
    flat = json.loads((FIXTURES / "price_change_legacy_flat_schema_2024_08.json").read_text())
    interim = json.loads(
        (FIXTURES / "price_change_legacy_changes_array_2024_10_DOCDERIVED.json").read_text()
    )
    for ev in (flat, interim):
        tok = ev["asset_id"]
        feed, shard, _ = make_feed(tok)
        feed.handle_frame(snapshot(tok, [("0.01", "1")], [("0.99", "1")]), shard)
        feed.handle_frame(json.dumps(ev), shard)
        assert feed.malformed == 0
        book = feed.store.usable_book(tok)
        assert book is not None
        assert len(book.bids) + len(book.asks) > 2


def test_array_frame_applies_every_event() -> None:
    feed, shard, _ = make_feed(A, B)
    frame = (
        b"["
        + snapshot(A, [("0.4", "1")], [("0.6", "1")])
        + b","
        + snapshot(B, [], [("0.7", "2")])
        + b"]"
    )
    feed.handle_frame(frame, shard)
    assert feed.store.best_ask(A) == (D("0.6"), D("1"))
    assert feed.store.best_ask(B) == (D("0.7"), D("2"))


def test_delta_before_snapshot_requests_resync_not_applied() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(change(A, "SELL", "0.5", "10", "0", "0.5"), shard)
    assert feed.store.usable_book(A) is None
    assert A in feed._resync_pending
    assert feed.malformed == 0


def test_best_price_mismatch_marks_book_unusable_and_resyncs() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    feed.handle_frame(change(A, "SELL", "0.55", "3", "0.4", "0.55"), shard)
    assert feed.store.best_ask(A) == (D("0.55"), D("3"))
    feed.handle_frame(change(A, "SELL", "0.58", "3", "0.4", "0.57"), shard)  # venue says 0.57
    assert feed.store.usable_book(A) is None
    assert A in feed._resync_pending


def test_crossing_delta_marks_book_unusable() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    legacy = {
        "event_type": "price_change",
        "asset_id": A,
        "price": "0.7",
        "side": "BUY",
        "size": "1",
    }
    feed.handle_frame(orjson.dumps(legacy), shard)
    assert feed.store.usable_book(A) is None


def test_bad_entry_rejects_whole_price_change_message() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    ev = orjson.loads(change(A, "SELL", "0.55", "3", "0.4", "0.55"))
    ev["price_changes"].append({"asset_id": A, "price": "oops", "size": "1", "side": "BUY"})
    feed.handle_frame(orjson.dumps(ev), shard)
    assert feed.malformed == 1
    book = feed.store.get(A)
    assert book is not None and book.best_ask() == (D("0.6"), D("1"))  # nothing applied
    # The book missed an update: unusable until a fresh snapshot.
    assert feed.store.usable_book(A) is None
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    assert feed.store.best_ask(A) == (D("0.6"), D("1"))


def test_unknown_event_type_is_counted_and_ignored() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(b'{"event_type":"brand_new_thing","x":1}', shard)
    assert feed.counts()["unknown"] == 1
    assert feed.malformed == 0


def test_market_resolved_makes_books_unusable() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    ev = {"event_type": "market_resolved", "market": "0x", "assets_ids": [A], "winning_asset_id": A}
    feed.handle_frame(orjson.dumps(ev), shard)
    assert feed.store.usable_book(A) is None


def test_unwatched_asset_is_ignored() -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(B, [("0.4", "1")], [("0.6", "1")]), shard)
    assert B not in feed.store
    assert feed.malformed == 0


# --- fuzzing -----------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["0.5", "0", "1", "-0.1", "1e9", "NaN", ".48", "BUY", "SELL", A, B, ""]),
)
json_any = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
level = st.fixed_dictionaries(
    {
        "price": st.sampled_from(["0.1", "0.5", "0.9", "0.99", "1", "0", "x", "-1", "0.50"]),
        "size": st.sampled_from(["0", "1", "10", "-5", "NaN", "2.5", "Infinity"]),
    }
)
book_ev = st.fixed_dictionaries(
    {
        "event_type": st.just("book"),
        "asset_id": st.sampled_from([A, B]),
        "bids": st.lists(level, max_size=5),
        "asks": st.lists(level, max_size=5),
    }
)
change_entry = st.fixed_dictionaries(
    {
        "asset_id": st.sampled_from([A, B]),
        "price": st.sampled_from(["0.1", "0.5", "0.9", "0.99", "1.5", "abc"]),
        "size": st.sampled_from(["0", "3", "-1", "7.25"]),
        "side": st.sampled_from(["BUY", "SELL", "buy", None]),
        "best_bid": st.sampled_from(["0", "0.1", "0.5", "x"]),
        "best_ask": st.sampled_from(["1", "0.5", "0.9", "x"]),
    }
)
change_ev = st.fixed_dictionaries(
    {"event_type": st.just("price_change"), "price_changes": st.lists(change_entry, max_size=3)}
)
tick_ev = st.fixed_dictionaries(
    {
        "event_type": st.just("tick_size_change"),
        "asset_id": st.sampled_from([A, B]),
        "new_tick_size": st.sampled_from(["0.01", "0.001", "0", "2", None, 0.01]),
    }
)
event = st.one_of(book_ev, change_ev, tick_ev, json_any)


def _safe_dumps(e: Any) -> bytes:
    try:
        return orjson.dumps(e)
    except (TypeError, orjson.JSONEncodeError):
        return b"{}"


frame = st.one_of(
    event.map(_safe_dumps),
    st.lists(event, max_size=5).map(_safe_dumps),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.sampled_from([b"PONG", "PONG", "", b"[", b"{}", b"[]", b"null", b'"x"']),
)


def _check_books(feed: MarketFeed) -> None:
    for t in (A, B):
        book = feed.store.get(t)
        assert book is not None
        for side in (book.bids, book.asks):
            for p, s in side.items():
                assert D(0) < p < D(1)
                assert s > 0
        if feed.store.usable_book(t) is not None:
            assert not book.crossed()
        assert book.invariant_problems() == []


def _fuzz(frames: list[bytes | str]) -> None:
    feed, shard, _ = make_feed(A, B)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    for f in frames:
        feed.handle_frame(f, shard)
        _check_books(feed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame, min_size=1, max_size=3))
def test_fuzzed_frames_never_crash_or_corrupt_books(frames: list[bytes | str]) -> None:
    _fuzz(frames)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame, min_size=1, max_size=3))
def test_ten_thousand_fuzzed_frames_never_crash_or_corrupt_books(
    frames: list[bytes | str],
) -> None:
    _fuzz(frames)


# --- nothing grows without bound ---------------------------------------------------------


def test_repeated_doubts_between_snapshots_queue_one_resync_per_token() -> None:
    # Each snapshot clears the pending mark; the doubt after it must not queue the token again
    # while it still waits in the queue (no worker runs here, as when REST is slow).
    feed, shard, _ = make_feed(A, B)
    for _ in range(200):
        for t in (A, B):
            feed.handle_frame(snapshot(t, [("0.4", "1")], [("0.6", "1")]), shard)
            feed.handle_frame(change(t, "BUY", "0.7", "1", "0.7", "0.6"), shard)  # crosses
    assert feed.store.usable_book(A) is None
    assert {A, B} <= feed._resync_pending
    assert feed._resync_q.qsize() == 2


def test_unknown_event_types_share_one_counter() -> None:
    feed, shard, _ = make_feed(A)
    for i in range(500):
        feed.handle_frame(orjson.dumps({"event_type": f"brand_new_{i}"}), shard)
    assert feed.counts() == {"unknown": 500}


def test_three_price_change_schemas_parse_to_the_same_level_changes() -> None:
    current = {
        "event_type": "price_change",
        "price_changes": [{"asset_id": A, "price": "0.5", "size": "10", "side": "SELL"}],
    }
    interim = {
        "event_type": "price_change",
        "asset_id": A,
        "changes": [{"price": "0.5", "size": "10", "side": "SELL"}],
    }
    flat = {"event_type": "price_change", "asset_id": A, "price": "0.5", "size": "10"}
    flat["side"] = "SELL"
    want = [(A, False, D("0.5"), D("10"))]
    for ev in (current, interim, flat):
        assert parse_price_change(ev)[0] == want


def test_unreadable_venue_best_is_kept_as_a_doubt_not_a_bad_event() -> None:
    ev = orjson.loads(change(A, "SELL", "0.55", "3", "x", "0.55"))
    assert parse_price_change(ev)[1] == {A: None}
    ev = orjson.loads(change(A, "SELL", "0.55", "3", "0", "0.55"))
    assert parse_price_change(ev)[1] == {A: (None, D("0.55"))}
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    feed.handle_frame(change(A, "SELL", "0.55", "3", "x", "0.55"), shard)
    assert feed.malformed == 0
    assert feed.store.usable_book(A) is None
    assert A in feed._resync_pending


# --- bounds: hostile numbers never reach the executor ----------------------------------------

# (price, size) of an ask inside the sniper rule's band (0.90-0.95, >= 10 shares) with one
# hostile number; the last is the control that must trade.
HOSTILE_ASKS = [
    ("0.93", "1e308"),
    ("0.93", "-100"),
    ("1.5", "100"),
    ("NaN", "100"),
    ("0.93", "NaN"),
    ("0.93", "Infinity"),
    ("0.93", "1e999"),
    ("0.93", "1" * 80),
]


async def test_hostile_book_frames_never_reach_the_executor_and_are_counted() -> None:
    import asyncio

    from observability.metrics import Metrics
    from strategies.sniper import Sniper
    from tests.unit.test_sniper import Clock, RecordingExecutor, market, rule

    metrics = Metrics()
    store = BookStore(stale_after_s=30)
    feed = MarketFeed(url="ws://127.0.0.1:1/ws/market", store=store, metrics=metrics)
    feed.watch("test", [A])
    shard = feed.shards[0]
    shard.link.connected = True
    ex = RecordingExecutor()
    sniper = Sniper(rules=[rule()], books=store, orders=ex, clock=Clock())
    sniper.set_market(market())
    task = asyncio.create_task(sniper.run())
    try:
        for i, (price, size) in enumerate(HOSTILE_ASKS):
            # A sound book first, outside the band, then the hostile one replacing it.
            feed.handle_frame(snapshot(A, [("0.5", "10")], [("0.99", "10")]), shard)
            assert store.usable_book(A) is not None
            feed.handle_frame(snapshot(A, [("0.5", "10")], [(price, size)]), shard)
            for _ in range(5):
                await asyncio.sleep(0)
            assert store.usable_book(A) is None, (price, size)  # until a fresh snapshot
            assert feed.malformed == i + 1
        assert ex.requests == []
        feed.flush_metrics()
        value = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "market"})
        assert value == len(HOSTILE_ASKS)
        # The control: the same frame with sound numbers trades once.
        feed.handle_frame(snapshot(A, [("0.5", "10")], [("0.93", "100")]), shard)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(ex.buys) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(("price", "size"), HOSTILE_ASKS)
def test_a_hostile_price_change_is_refused_and_makes_the_book_unusable(
    price: str, size: str
) -> None:
    feed, shard, _ = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    feed.handle_frame(change(A, "SELL", price, size, "0.4", "0.6"), shard)
    assert feed.malformed == 1
    book = feed.store.get(A)
    assert book is not None and book.ask_levels() == [(D("0.6"), D("1"))]
    assert feed.store.usable_book(A) is None


@pytest.mark.parametrize("value", ["1e308", "-0.01", "1.5", "NaN", "Infinity", "1e999"])
def test_hostile_tick_last_trade_and_best_bid_ask_events_are_counted_and_ignored(
    value: str,
) -> None:
    feed, shard, ticks = make_feed(A)
    feed.handle_frame(snapshot(A, [("0.4", "1")], [("0.6", "1")]), shard)
    book = feed.store.get(A)
    assert book is not None
    tick_before, last_before = book.tick_size, book.last_trade_price
    frames: list[dict[str, Any]] = [
        {"event_type": "tick_size_change", "asset_id": A, "new_tick_size": value},
        {"event_type": "last_trade_price", "asset_id": A, "price": value, "size": "1"},
        {"event_type": "best_bid_ask", "asset_id": A, "best_bid": value, "best_ask": "0.6"},
    ]
    for ev in frames:
        feed.handle_frame(orjson.dumps(ev), shard)
    assert feed.malformed == len(frames)
    assert (book.tick_size, book.last_trade_price) == (tick_before, last_before)
    assert ticks.calls == []
    assert feed.store.usable_book(A) is not None  # these do not touch the levels


def test_a_hostile_rest_book_is_refused() -> None:
    from venue.order_book import BadLevel

    feed, _, _ = make_feed(A)
    body = {"asset_id": A, "bids": [], "asks": [{"price": "0.5", "size": "1e308"}]}
    with pytest.raises(BadLevel, match="above"):
        feed.apply_rest_book(A, body, trust_hash=True)
    assert feed.store.usable_book(A) is None
