"""A market feed shard's connection against a scripted websocket server on loopback, with the
liveness deadlines on a fake clock: the PING schedule, the PONG deadline, the silent-stall
watchdog, the missing-snapshot REST resync and the reconnect back-off are each driven at and
just past their boundary, so a deadline off by one comparison or one setting shows.

The socket is real (websockets on 127.0.0.1:0); only time is fake. The watchdog still wakes on
the real loop every `tick_s` (0.125 s here) and reads the fake clock, so a "not yet" check
waits a few real ticks (`settle`) and a "now" check polls with a generous `until`. Nothing is
asserted about how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from structlog.testing import capture_logs
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve

from observability.metrics import Metrics
from resilience.backoff import Backoff
from resilience.clock import FakeClock
from tests.helpers import until
from tests.unit.test_feed_health import snapshot
from venue.market_feed import MarketFeed
from venue.market_feed.connection import Shard
from venue.order_book import BookStore

A = "1" * 70
B = "2" * 70
MARKET = "0x" + "cd" * 32
# Fake seconds, all exact in binary so the boundaries are exact: the watchdog's tick is
# PING_S / 4 = 0.125, so a PING is due 0.375 after the last one.
PING_S = 0.5
PONG_S = 0.25
STALE_S = 2.0
START = 1000.0


def delta(token: str, size: int) -> str:
    return orjson.dumps(
        {
            "event_type": "price_change",
            "market": MARKET,
            "timestamp": "2",
            "price_changes": [
                {"asset_id": token, "price": "0.30", "size": str(size), "side": "BUY"}
            ],
        }
    ).decode()


@dataclass
class Script:
    """The venue: answers PINGs (or not), sends a snapshot per subscribed token (except
    `no_book_for`), closes the first `close_first` connections right after their subscription,
    and sends whatever the test pushes with `push`."""

    answer_pings: bool = True
    no_book_for: frozenset[str] = frozenset()
    close_first: int = 0
    conns: list[ServerConnection] = field(default_factory=list)
    received: list[tuple[int, Any]] = field(default_factory=list)
    url: str = ""

    def pings(self) -> int:
        return sum(1 for _, m in self.received if m == "PING")

    def messages(self) -> list[dict[str, Any]]:
        return [m for _, m in self.received if isinstance(m, dict)]

    async def handler(self, ws: ServerConnection) -> None:
        index = len(self.conns)
        self.conns.append(ws)
        with contextlib.suppress(Exception):
            async for raw in ws:
                if raw == "PING":
                    self.received.append((index, raw))
                    if self.answer_pings:
                        await ws.send("PONG")
                    continue
                msg = orjson.loads(raw)
                self.received.append((index, msg))
                if index < self.close_first:
                    await ws.close()
                    return
                if msg.get("operation") == "unsubscribe":
                    continue
                for token in msg["assets_ids"]:
                    if token not in self.no_book_for:
                        await ws.send(snapshot(token).decode())

    async def push(self, frame: str) -> None:
        await self.conns[-1].send(frame)


@contextlib.asynccontextmanager
async def scripted(**kw: Any) -> AsyncIterator[Script]:
    s = Script(**kw)
    async with serve(s.handler, "127.0.0.1", 0) as server:
        s.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        yield s


@dataclass
class Rig:
    feed: MarketFeed
    store: BookStore
    metrics: Metrics
    clock: FakeClock
    backoffs: list[Backoff]
    dials: list[dict[str, Any]]

    @property
    def shard(self) -> Shard:
        return self.feed.shards[0]

    def reconnects(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "polyd_feed_reconnects_total", {"feed": "market", "reason": reason}
        )
        return value or 0.0

    def connected_gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("polyd_feed_connected", {"feed": "market"})


def rig(url: str) -> Rig:
    clock = FakeClock(START)
    store = BookStore(stale_after_s=STALE_S, clock=clock.monotonic)
    metrics = Metrics()
    backoffs: list[Backoff] = []
    dials: list[dict[str, Any]] = []

    def backoff() -> Backoff:
        backoffs.append(Backoff(1.0, 8.0, jitter=0.0))
        return backoffs[-1]

    feed: MarketFeed

    def connect(u: str, **kw: Any) -> Any:
        s = feed.shards[0]
        dials.append(
            {
                "url": u,
                "kw": kw,
                "connected": s.link.connected,
                "ws": s.ws,
                "subscribed": set(s.subscribed),
                "awaiting": dict(s.awaiting),
                "usable": [t for t in sorted(s.assets) if store.usable_book(t)],
                "gauge": metrics.registry.get_sample_value(
                    "polyd_feed_connected", {"feed": "market"}
                ),
            }
        )
        return ws_connect(u, **kw)

    feed = MarketFeed(
        url=url,
        store=store,
        metrics=metrics,
        ping_interval_s=PING_S,
        pong_timeout_s=PONG_S,
        stale_after_s=STALE_S,
        backoff=backoff,
        clock=clock,
        connect=connect,
        open_timeout_s=3.0,
    )
    return Rig(feed, store, metrics, clock, backoffs, dials)


@contextlib.asynccontextmanager
async def shard_running(r: Rig) -> AsyncIterator[asyncio.Task[None]]:
    """Run the first shard's connection loop alone (no gauges task, which would move the fake
    clock, and no resync worker: requested resyncs stay visible as pending)."""
    task = asyncio.create_task(r.feed._connector.run(r.shard))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle() -> None:
    """Let the watchdog run several ticks at the current fake time."""
    await asyncio.sleep(0.5)


async def test_a_shard_dials_without_library_keepalive_and_subscribes_its_assets_once() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [B, A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A) and r.store.usable_book(B))
            assert r.connected_gauge() == 1
            assert r.shard.link.connected and r.shard.ws is not None
            assert r.shard.subscribed == {A, B}
            assert r.shard.awaiting == {}
        assert v.messages() == [
            {"assets_ids": [A, B], "type": "market", "custom_feature_enabled": True}
        ]
        (dial,) = r.dials
        assert dial["url"] == v.url
        # keepalive is the venue's text PING (the library's would be ignored); a full book
        # snapshot can be large; open and close are bounded
        assert dial["kw"] == {
            "ping_interval": None,
            "compression": None,
            "max_size": 1 << 24,
            "open_timeout": 3.0,
            "close_timeout": 1.0,
        }
        assert r.shard.connections == 1


async def test_a_ping_goes_out_when_due_and_an_answered_one_keeps_the_connection() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))
            r.clock.advance(0.25)  # not due yet (due 0.375 after connecting)
            await settle()
            assert v.pings() == 0
            r.clock.advance(0.125)
            await until(lambda: v.pings() == 1)
            await until(lambda: r.shard.ping_outstanding_since is None)  # the PONG came
            r.clock.advance(0.375)
            await until(lambda: v.pings() == 2)
            r.clock.advance(0.375)
            await until(lambda: v.pings() == 3)
            await settle()
        assert len(v.conns) == 1
        assert r.reconnects("no_pong") == 0


async def test_an_unanswered_ping_reconnects_just_past_the_pong_deadline() -> None:
    async with scripted(answer_pings=False) as v:
        r = rig(v.url)
        r.feed.watch("t", [A, B])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A) and r.store.usable_book(B))
            r.clock.advance(0.375)
            await until(lambda: v.pings() == 1)
            with capture_logs() as logs:
                r.clock.advance(PONG_S)  # exactly the deadline: still waiting
                await settle()
                assert len(v.conns) == 1
                # the next PING goes out, but the deadline runs from the first unanswered one
                r.clock.advance(0.125)
                await until(lambda: len(v.conns) == 2)
                await until(lambda: r.store.usable_book(A) and r.store.usable_book(B))
        assert r.reconnects("no_pong") == 1
        assert v.pings() == 2
        (event,) = [e for e in logs if e["event"] == "feed_reconnecting"]
        assert (event["reason"], event["books_unusable"], event["in_s"]) == ("no_pong", 2, 1.0)
        # what the second dial saw: the first connection's state was let go, its books too
        second = r.dials[1]
        assert (second["connected"], second["ws"], second["subscribed"], second["awaiting"]) == (
            False,
            None,
            set(),
            {},
        )
        assert second["usable"] == []
        assert second["gauge"] == 0
        assert v.messages()[-1] == {
            "assets_ids": [A, B],
            "type": "market",
            "custom_feature_enabled": True,
        }


async def test_data_silence_past_stale_after_is_a_stall_even_while_pongs_come() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))  # one data frame at START
            for n in range(1, 4):  # deltas 0.125 apart: a busy market
                r.clock.advance(0.125)
                await v.push(delta(A, n))
                await until(lambda n=n: r.shard.data_frames == 1 + n)  # type: ignore[misc]
            r.clock.advance(STALE_S)  # silent for exactly stale_after_s: not yet
            await settle()
            assert v.pings() >= 1 and r.shard.ping_outstanding_since is None  # PONGs answered
            assert len(v.conns) == 1
            r.clock.advance(0.125)
            await until(lambda: len(v.conns) == 2)
        assert r.reconnects("stall") == 1
        assert r.reconnects("no_pong") == 0


async def test_a_sparse_feed_is_not_stalled_until_four_of_its_usual_gaps_have_passed() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))
            r.clock.advance(1.0)  # a delta one second after the snapshot: the usual gap is 1 s
            await v.push(delta(A, 1))
            await until(lambda: r.shard.data_frames == 2)
            r.clock.advance(2.5)  # past stale_after_s, under four gaps
            await settle()
            r.clock.advance(1.5)  # exactly four gaps
            await settle()
            assert len(v.conns) == 1
            r.clock.advance(0.125)
            await until(lambda: len(v.conns) == 2)
        assert r.reconnects("stall") == 1


async def test_a_token_without_a_snapshot_is_resynced_just_past_stale_after() -> None:
    async with scripted(no_book_for=frozenset({B})) as v:
        r = rig(v.url)
        r.feed.watch("t", [A, B])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))
            assert set(r.shard.awaiting) == {B}
            attempts = r.backoffs[0].attempts
            r.clock.advance(STALE_S)
            await settle()
            assert set(r.shard.awaiting) == {B}
            assert r.feed._resync_pending == set()
            r.clock.advance(0.125)
            await until(lambda: not r.shard.awaiting)
            assert r.feed._resync_pending == {B}  # REST is asked; A is fine
            assert len(v.conns) == 1  # and the shard is not reconnected
            assert r.backoffs[0].attempts == attempts == 0


async def test_tokens_added_and_removed_are_subscribed_in_place_and_await_their_snapshot() -> None:
    async with scripted(no_book_for=frozenset({B})) as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))
            r.clock.advance(1.0)
            r.feed.watch("t", [A, B])
            await until(lambda: len(v.messages()) == 2)
            assert v.messages()[1] == {
                "assets_ids": [B],
                "operation": "subscribe",
                "custom_feature_enabled": True,
            }
            assert r.shard.awaiting == {B: START + 1.0}  # its deadline runs from now
            assert r.shard.subscribed == {A, B}
            r.clock.advance(STALE_S + 0.125)
            await until(lambda: B in r.feed._resync_pending)
            r.feed.watch("t", [B])
            await until(lambda: len(v.messages()) == 3)
            assert v.messages()[2] == {"assets_ids": [A], "operation": "unsubscribe"}
            assert r.shard.subscribed == {B}
        assert len(v.conns) == 1


async def test_backoff_grows_while_connections_fail_and_restarts_after_a_healthy_one() -> None:
    async with scripted(close_first=2) as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: len(v.conns) == 3 and r.store.usable_book(A))
            assert r.clock.sleeps == [1.0, 2.0]
            await until(lambda: r.backoffs[0].attempts == 0)  # data and every snapshot: reset
            await v.conns[-1].close()
            await until(lambda: len(v.conns) == 4 and r.store.usable_book(A))
        assert r.clock.sleeps == [1.0, 2.0, 1.0]
        assert r.reconnects("closed") == 3
        assert r.shard.connections == 4
        assert len(r.backoffs) == 1  # one back-off for the shard's whole life


async def test_a_connection_still_waiting_for_a_snapshot_does_not_reset_the_backoff() -> None:
    async with scripted(close_first=1, no_book_for=frozenset({B})) as v:
        r = rig(v.url)
        r.feed.watch("t", [A, B])
        async with shard_running(r):
            await until(lambda: len(v.conns) == 2 and r.store.usable_book(A))
            await settle()
            assert r.backoffs[0].attempts == 1


async def test_a_shard_with_no_assets_does_not_connect_until_it_has_some() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        r.feed.watch("t", [])
        async with shard_running(r):
            await settle()
            assert v.conns == []
            r.feed.watch("t", [A])
            await until(lambda: r.store.usable_book(A))
        assert len(v.conns) == 1


async def test_shutting_down_closes_the_socket_normally() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        async with shard_running(r):
            await until(lambda: r.store.usable_book(A))
        await until(lambda: v.conns[0].close_code is not None)
        assert v.conns[0].close_code == 1000


async def test_a_refused_dial_is_counted_as_an_error_and_retried() -> None:
    r = rig("ws://127.0.0.1:9")
    r.feed.watch("t", [A])
    with capture_logs() as logs:
        async with shard_running(r):
            await until(lambda: r.reconnects("error") >= 2)
    failed = [e for e in logs if e["event"] == "feed_connect_failed"]
    assert failed and failed[0]["shard"] == 0
    assert r.clock.sleeps[:2] == [1.0, 2.0]


async def test_a_fresh_connection_counts_as_heard_from_before_its_first_frame() -> None:
    async with scripted(no_book_for=frozenset({A})) as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        r.clock.advance(7.0)
        async with shard_running(r):
            await until(lambda: r.shard.link.connected)
            assert r.shard.link.last_frame == START + 7.0  # the connect time, not the past
            assert r.feed.health().ok
        assert len(v.conns) == 1


async def test_an_abrupt_close_is_a_plain_reconnect_not_a_reader_error() -> None:
    async with scripted() as v:
        r = rig(v.url)
        r.feed.watch("t", [A])
        with capture_logs() as logs:
            async with shard_running(r):
                await until(lambda: r.store.usable_book(A))
                v.conns[0].transport.abort()  # no close frame: the client sees 1006
                await until(lambda: len(v.conns) == 2 and r.store.usable_book(A))
        assert r.reconnects("closed") == 1
        assert [e for e in logs if e["event"] == "feed_reader_ended"] == []
