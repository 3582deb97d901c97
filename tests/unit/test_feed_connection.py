"""Market feed connection behaviour against a small local websocket server on 127.0.0.1:0.

The server is scripted per test: answer PINGs or not, stream deltas or go silent, so the
no-PONG and silent-stall paths are exercised separately (the simulator's stall does both).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal as D
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from observability.metrics import Metrics
from resilience.backoff import Backoff
from tests.helpers import until
from venue.market_feed import MarketFeed
from venue.order_book import BookStore

A = "1" * 70
B = "2" * 70
C = "3" * 70


@dataclass
class FakeVenue:
    answer_pings: bool = True
    stream: bool = True
    silent_after_s: float | None = None
    no_book_for: frozenset[str] = frozenset()  # tokens the venue never sends a snapshot of
    connections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    pings: int = 0
    conns: list[ServerConnection] = field(default_factory=list)
    url: str = ""

    def book(self, token: str, ask: str = "0.6") -> bytes:
        return orjson.dumps(
            [
                {
                    "event_type": "book",
                    "asset_id": token,
                    "market": "0x" + "cd" * 32,
                    "bids": [{"price": "0.4", "size": "5"}],
                    "asks": [{"price": ask, "size": "5"}],
                    "timestamp": "1",
                    "hash": "h",
                }
            ]
        )

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.conns.append(ws)
        assets: set[str] = set()
        started = asyncio.get_running_loop().time()
        streamer: asyncio.Task[None] | None = None

        async def stream() -> None:
            n = 0
            while True:
                await asyncio.sleep(0.02)
                silent = self.silent_after_s
                if silent is not None and asyncio.get_running_loop().time() - started > silent:
                    continue
                n += 1
                for t in sorted(assets - self.no_book_for):
                    ev = {
                        "event_type": "price_change",
                        "market": "0x" + "cd" * 32,
                        "timestamp": str(n),
                        "price_changes": [
                            {"asset_id": t, "price": "0.3", "size": str(n), "side": "BUY"}
                        ],
                    }
                    await ws.send(orjson.dumps(ev).decode())

        try:
            async for raw in ws:
                if raw == "PING":
                    self.pings += 1
                    if self.answer_pings:
                        await ws.send("PONG")
                    continue
                msg = orjson.loads(raw)
                self.messages.append(msg)
                if msg.get("operation") == "unsubscribe":
                    assets.difference_update(msg["assets_ids"])
                    continue
                new = [a for a in msg["assets_ids"] if a not in assets]
                assets.update(new)
                for a in new:
                    if a not in self.no_book_for:
                        await ws.send(self.book(a).decode())
                if self.stream and streamer is None:
                    streamer = asyncio.create_task(stream())
        except Exception:
            pass
        finally:
            if streamer is not None:
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streamer


@contextlib.asynccontextmanager
async def venue(**kw: Any) -> AsyncIterator[FakeVenue]:
    v = FakeVenue(**kw)
    async with serve(v.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        v.url = f"ws://127.0.0.1:{port}"
        yield v


@contextlib.asynccontextmanager
async def running(feed: MarketFeed) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run(), name="test:feed")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(url: str, **kw: Any) -> tuple[MarketFeed, BookStore, Metrics]:
    store = BookStore(stale_after_s=kw.pop("stale_after_s", 1.0))
    metrics = Metrics()
    feed = MarketFeed(
        url=url,
        store=store,
        metrics=metrics,
        stale_after_s=store.stale_after_s,
        ping_interval_s=kw.pop("ping_interval_s", 0.2),
        backoff=lambda: Backoff(0.05, 0.5),
        **kw,
    )
    return feed, store, metrics


def reconnects(metrics: Metrics, reason: str) -> float:
    v = metrics.registry.get_sample_value(
        "polyd_feed_reconnects_total", {"feed": "market", "reason": reason}
    )
    return v or 0.0


async def test_feed_defaults_detect_stall_within_fifteen_seconds() -> None:
    from config import load_settings

    s = load_settings(env_file=None)
    assert s.feed_stale_after_s <= 15
    assert s.feed_ping_interval_s <= 10
    assert s.feed_shard_size <= 200


async def test_subscribe_gets_snapshots_then_books_usable() -> None:
    async with venue() as v:
        feed, store, _ = make(v.url)
        feed.watch("t", [A, B])
        async with running(feed):
            await until(lambda: store.usable_book(A) and store.usable_book(B))
        assert v.messages[0]["type"] == "market"
        assert sorted(v.messages[0]["assets_ids"]) == [A, B]
        assert v.messages[0]["custom_feature_enabled"] is True


async def test_assets_beyond_shard_size_open_more_connections() -> None:
    async with venue() as v:
        feed, store, _ = make(v.url, shard_size=2)
        feed.watch("t", [A, B, C])
        async with running(feed):
            await until(lambda: all(store.usable_book(t) for t in (A, B, C)))
        assert v.connections == 2
        assert sorted(len(m["assets_ids"]) for m in v.messages) == [1, 2]


async def test_watch_change_subscribes_and_unsubscribes_without_reconnect() -> None:
    async with venue() as v:
        feed, store, _ = make(v.url)
        feed.watch("t", [A])
        async with running(feed):
            await until(lambda: store.usable_book(A) is not None)
            feed.watch("t", [B])
            await until(lambda: store.usable_book(B) is not None, limit_s=2)
            await until(lambda: any(m.get("operation") == "unsubscribe" for m in v.messages))
        ops = [(m.get("operation"), m["assets_ids"]) for m in v.messages]
        assert ("subscribe", [B]) in ops
        assert ("unsubscribe", [A]) in ops
        assert A not in store
        assert v.connections == 1


async def test_pings_sent_every_interval() -> None:
    async with venue(stream=False) as v:
        feed, _, _ = make(v.url, ping_interval_s=0.1, stale_after_s=5.0)
        feed.watch("t", [A])
        async with running(feed):
            await asyncio.sleep(0.65)
        assert 4 <= v.pings <= 8
        assert v.connections == 1


async def test_no_pong_reconnects_and_books_wait_for_new_snapshot() -> None:
    async with venue(answer_pings=False, stream=False) as v:
        feed, store, metrics = make(v.url, ping_interval_s=0.1, pong_timeout_s=0.2, stale_after_s=5)
        feed.watch("t", [A])
        async with running(feed):
            await until(lambda: store.usable_book(A) is not None)
            await until(lambda: v.connections >= 2, limit_s=3)
        assert reconnects(metrics, "no_pong") >= 1


async def test_silent_stall_with_pongs_is_detected_and_reconnected() -> None:
    async with venue(answer_pings=True, silent_after_s=0.3) as v:
        feed, store, metrics = make(v.url, ping_interval_s=0.1, stale_after_s=0.5)
        feed.watch("t", [A])
        async with running(feed):
            await until(lambda: store.usable_book(A) is not None)
            await until(lambda: feed.shards[0].data_frames > 5)
            unusable_seen = False

            def became_unusable() -> bool:
                nonlocal unusable_seen
                unusable_seen = unusable_seen or store.usable_book(A) is None
                return unusable_seen

            await until(became_unusable, limit_s=10)
            await until(lambda: reconnects(metrics, "stall") >= 1, limit_s=3)
            await until(lambda: store.usable_book(A) is not None, limit_s=2)
        assert v.connections >= 2


async def test_server_drop_resubscribes_every_watched_token() -> None:
    async with venue(stream=False) as v:
        feed, store, metrics = make(v.url, stale_after_s=5)
        feed.watch("t", [A, B])
        async with running(feed):
            await until(lambda: store.usable_book(A) and store.usable_book(B))
            v.conns[-1].transport.abort()
            await until(lambda: store.usable_book(A) is None)
            await until(
                lambda: v.connections == 2 and store.usable_book(A) and store.usable_book(B),
                limit_s=10,
            )
        assert reconnects(metrics, "closed") == 1
        assert sorted(v.messages[-1]["assets_ids"]) == [A, B]


async def test_refused_connection_retries_with_backoff() -> None:
    feed, store, metrics = make("ws://127.0.0.1:9", stale_after_s=5)
    feed.watch("t", [A])
    async with running(feed):
        await until(lambda: reconnects(metrics, "error") >= 2, limit_s=3)
    assert store.usable_book(A) is None


async def test_health_reports_down_shard() -> None:
    feed, _, _ = make("ws://127.0.0.1:9")
    assert feed.health().ok  # nothing watched
    feed.watch("t", [A])
    assert not feed.health().ok


class FakeFetcher:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.calls = 0

    async def fetch_book(self, token_id: str) -> dict[str, Any]:
        self.calls += 1
        return self.body


async def test_gap_triggers_rest_resync_that_restores_book() -> None:
    body = {
        "market": "0x" + "cd" * 32,
        "asset_id": A,
        "timestamp": "5",
        "hash": "not-checked-when-keys-missing",
        "bids": [{"price": "0.41", "size": "3"}],
        "asks": [{"price": "0.59", "size": "4"}],
    }
    fetcher = FakeFetcher(body)
    feed, store, metrics = make("ws://127.0.0.1:9", fetcher=fetcher)
    feed.watch("t", [A])
    feed.request_resync(A, "test")
    feed.request_resync(A, "test")  # deduplicated
    worker = asyncio.create_task(feed._resync_worker())
    try:
        await until(lambda: store.get(A).usable)  # type: ignore[union-attr]
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert fetcher.calls == 1
    assert store.get(A).best_ask() == (D("0.59"), D("4"))  # type: ignore[union-attr]
    assert metrics.registry.get_sample_value("polyd_book_resyncs_total") == 1


async def test_rest_book_with_wrong_hash_is_refetched() -> None:
    body = {
        "market": "0x" + "cd" * 32,
        "asset_id": A,
        "timestamp": "5",
        "hash": "0" * 40,
        "bids": [],
        "asks": [{"price": "0.59", "size": "4"}],
        "min_order_size": "5",
        "tick_size": "0.01",
        "neg_risk": False,
        "last_trade_price": "",
    }
    feed, store, _ = make("ws://127.0.0.1:9")
    feed.watch("t", [A])
    assert feed.apply_rest_book(A, body) is False
    assert not store.get(A).usable  # type: ignore[union-attr]
    assert feed.apply_rest_book(A, body, trust_hash=True) is True


async def test_rotating_watched_tokens_keeps_feed_state_to_what_is_watched() -> None:
    feed, store, _ = make("ws://127.0.0.1:9", shard_size=50)
    for round_ in range(40):
        tokens = [f"{round_:04d}{i:066d}" for i in range(120)]
        feed.watch("rotating", tokens)
        feed.watch(f"one-off-{round_}", tokens[:3])
        feed.watch(f"one-off-{round_}", [])
    assert len(store) == 120
    assert len(feed.shards) == 3  # shards are reused once they have room again
    assert sum(len(s.assets) for s in feed.shards) == 120
    assert set(feed._wanted) == {"rotating"}  # an owner that wants nothing is forgotten
    feed.watch("rotating", [])
    assert len(store) == 0
    assert feed._wanted == {}
    assert feed.health().ok  # nothing watched


async def test_a_hostile_rest_resync_is_counted_as_malformed_rest_input_and_never_installed() -> (
    None
):
    body = {
        "market": "0x" + "cd" * 32,
        "asset_id": A,
        "timestamp": "5",
        "hash": "not-checked-when-keys-missing",
        "bids": [{"price": "0.41", "size": "3"}],
        "asks": [{"price": "0.59", "size": "1e308"}],
    }
    fetcher = FakeFetcher(body)
    feed, store, metrics = make("ws://127.0.0.1:9", fetcher=fetcher)
    feed.watch("t", [A])
    feed.request_resync(A, "test")
    worker = asyncio.create_task(feed._resync_worker())
    try:
        await until(lambda: fetcher.calls >= 3, limit_s=5)  # every attempt refused
        await until(lambda: A not in feed._resync_pending)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert store.usable_book(A) is None
    assert store.get(A).asks == {}  # type: ignore[union-attr]
    value = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "rest"})
    assert value == 3
    assert metrics.registry.get_sample_value("polyd_book_resyncs_total") in (None, 0)


async def test_a_token_never_snapshotted_is_resynced_over_rest_not_reconnected() -> None:
    # The watchdog asks REST for a token with no snapshot after stale_after_s, rather than
    # reconnecting the shard (a token the venue never serves must not reconnect it forever).
    body = {
        "market": "0x" + "cd" * 32,
        "asset_id": B,
        "timestamp": "5",
        "hash": "not-checked-when-keys-missing",
        "bids": [{"price": "0.41", "size": "3"}],
        "asks": [{"price": "0.59", "size": "4"}],
    }
    fetched: list[str] = []

    class Fetcher:
        async def fetch_book(self, token_id: str) -> dict[str, Any]:
            fetched.append(token_id)
            return body

    async with venue(no_book_for=frozenset({B})) as v:
        feed, store, metrics = make(v.url, stale_after_s=0.5, fetcher=Fetcher())
        feed.watch("t", [A, B])
        async with running(feed):
            await until(lambda: store.usable_book(A) is not None)
            assert store.usable_book(B) is None
            await until(lambda: store.usable_book(B) is not None, limit_s=5)
        assert fetched == [B]
        assert v.connections == 1 and reconnects(metrics, "stall") == 0


async def test_a_burst_of_frames_is_decided_on_frame_by_frame() -> None:
    """Frames that arrive together are applied one at a time, and a strategy woken by a frame
    runs before the next is applied: it sees every state the venue's frames describe, as the
    backtest's replay does (it decides after each recorded frame). websockets hands out
    buffered messages without suspending, so without a yield a burst would be applied whole
    and the strategy would only see its end."""
    burst = [
        {
            "event_type": "price_change",
            "market": "0x" + "cd" * 32,
            "timestamp": str(n),
            "price_changes": [{"asset_id": A, "price": "0.6", "size": str(n), "side": "SELL"}],
        }
        for n in (7, 8, 9)
    ]
    subscribed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            if raw == "PING":
                await ws.send("PONG")
                continue
            await ws.send(FakeVenue().book(A).decode())
            subscribed.set()
            await asyncio.sleep(0.05)
            # One write holding three frames: the client's reader gets them as one read.
            for ev in burst:
                ws.protocol.send_text(orjson.dumps(ev))
            ws.send_data()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        feed, store, _ = make(f"ws://127.0.0.1:{port}")
        feed.watch("t", [A])
        woke = asyncio.Event()
        store.add_listener(lambda tokens: woke.set())
        seen: list[str] = []

        async def strategy() -> None:
            while True:
                await woke.wait()
                woke.clear()
                ask = store.best_ask(A)
                if ask is not None:
                    seen.append(str(ask[1]))

        async with running(feed):
            watcher = asyncio.create_task(strategy())
            try:
                await subscribed.wait()
                await until(lambda: seen[-1:] == ["9"])
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    assert seen[-3:] == ["7", "8", "9"], seen
