"""The user feed: out-of-bound numbers never reach the executor; a silent or PONG-less socket
degrades health, reconnects and reconciles (against a real local websocket server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from execution.ports import VenueOrder
from models import Fill
from observability.metrics import Metrics
from resilience import Backoff
from tests.helpers import until
from venue.user_feed import UserFeed

USER_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ws_user"
OWNER = "k"
FUNDER = "0x" + "11" * 20
HOSTILE = [
    ("size", "1e308"),
    ("size", "-5"),
    ("price", "1.5"),
    ("price", "NaN"),
    ("size", "NaN"),
    ("size", "Infinity"),
    ("size", "1e999"),
]


class Sink:
    def __init__(self) -> None:
        self.orders: list[VenueOrder] = []
        self.fills: list[Fill] = []
        self.reconciles = 0

    async def on_order(self, vo: VenueOrder) -> None:
        self.orders.append(vo)

    async def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    async def on_connected(self) -> None:
        self.reconciles += 1


def make_feed(sink: Sink, metrics: Metrics, url: str = "ws://127.0.0.1:9", **kw: Any) -> UserFeed:
    return UserFeed(
        url=url,
        api_key=OWNER,
        api_secret="s",
        api_passphrase="p",
        funder=FUNDER,
        on_order=sink.on_order,
        on_fill=sink.on_fill,
        on_connected=sink.on_connected,
        metrics=metrics,
        backoff=Backoff(0.05, 0.2),
        **kw,
    )


def malformed(metrics: Metrics) -> float:
    v = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "user"})
    return v or 0.0


# --- bounds -----------------------------------------------------------------------------------


def order_event(**over: str) -> dict[str, Any]:
    ev = {
        "event_type": "order",
        "id": "0x" + "ab" * 32,
        "status": "LIVE",
        "price": "0.5",
        "original_size": "10",
        "size_matched": "0",
        "asset_id": "1" * 70,
        "side": "BUY",
    }
    return ev | over


def maker_trade(field: str | None = None, value: str = "") -> dict[str, Any]:
    """A real captured trade where our order is the second maker order."""
    t: dict[str, Any] = json.loads(
        (USER_FIXTURES / "trade_mined_maker_multi_maker_orders_2024_09.json").read_text()
    )
    makers = [dict(m) for m in t["maker_orders"]]
    makers[1]["owner"] = OWNER
    if field is not None:
        makers[1]["matched_amount" if field == "size" else "price"] = value
    return t | {"trader_side": "MAKER", "maker_orders": makers}


def taker_trade(field: str | None = None, value: str = "") -> dict[str, Any]:
    """Our taker fill with no maker legs: the top-level price and size are the fill."""
    ev = maker_trade() | {"trader_side": "TAKER", "owner": OWNER, "maker_orders": []}
    ev |= {"price": "0.518", "size": "10"}
    if field is not None:
        ev[field] = value
    return ev


async def test_sound_user_events_reach_the_executor() -> None:
    # The control for the hostile cases below: the same events, sound, are acted on.
    sink, metrics = Sink(), Metrics()
    feed = make_feed(sink, metrics)
    for ev in (order_event(), maker_trade(), taker_trade()):
        await feed.handle_frame(orjson.dumps(ev))
    assert len(sink.orders) == 1 and len(sink.fills) == 2
    assert malformed(metrics) == 0


@pytest.mark.parametrize(("field", "value"), HOSTILE)
async def test_hostile_user_events_never_reach_the_executor_and_are_counted(
    field: str, value: str
) -> None:
    sink, metrics = Sink(), Metrics()
    feed = make_feed(sink, metrics)
    order_field = "original_size" if field == "size" else "price"
    frames = [
        order_event(**{order_field: value}),
        maker_trade(field, value),
        taker_trade(field, value),
    ]
    await feed.handle_frame(orjson.dumps(frames))  # one array frame, as the venue batches
    assert sink.orders == [] and sink.fills == []
    assert malformed(metrics) == 3
    assert feed.health().detail["malformed"] == 3


# --- liveness ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def venue(answer: Callable[[int], bool]) -> AsyncIterator[tuple[str, list[int]]]:
    """A user-channel server; connection n (from 1) answers PING with PONG iff `answer(n)`."""
    conns: list[int] = []

    async def handler(ws: websockets.ServerConnection) -> None:
        conns.append(len(conns) + 1)
        n = conns[-1]
        async for frame in ws:
            if frame == "PING" and answer(n):
                await ws.send("PONG")

    async with websockets.serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", conns


@contextlib.asynccontextmanager
async def running(feed: UserFeed) -> AsyncIterator[None]:
    task = asyncio.create_task(feed.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_unanswered_ping_degrades_health_then_reconnects_and_reconciles() -> None:
    sink, metrics = Sink(), Metrics()
    async with venue(lambda n: n != 1) as (url, conns):  # the first connection goes quiet
        feed = make_feed(
            sink, metrics, url, ping_interval_s=0.1, pong_timeout_s=0.3, stale_after_s=5
        )
        async with running(feed):
            await until(lambda: feed.connected and feed.reconciled)
            assert sink.reconciles == 1
            # Still connected, but the PING has waited past its deadline: degraded.
            await until(lambda: not feed.health().ok)
            assert feed.connects == 1 or feed.last_lost == "no_pong"
            await until(lambda: sink.reconciles == 2 and feed.health().ok)
            assert len(conns) == 2 and feed.last_lost == "no_pong"
            await asyncio.sleep(0.5)  # the second connection answers: it stays up
            assert feed.health().ok and len(conns) == 2
    v = metrics.registry.get_sample_value(
        "polyd_feed_reconnects_total", {"feed": "user", "reason": "no_pong"}
    )
    assert v == 1


async def test_a_silent_socket_is_stalled_even_without_a_pong_deadline() -> None:
    sink, metrics = Sink(), Metrics()
    async with venue(lambda n: False) as (url, _):
        # The PONG deadline is far away; silence (no frame at all) ends the connection first.
        feed = make_feed(
            sink, metrics, url, ping_interval_s=0.1, pong_timeout_s=30, stale_after_s=0.3
        )
        async with running(feed):
            await until(lambda: feed.reconciled)
            await until(lambda: not feed.health().ok)
            assert "silent_s" in feed.health().detail or not feed.connected
            await until(lambda: sink.reconciles >= 2)
            assert feed.last_lost == "stall"


async def test_frames_that_arrive_during_the_reconcile_wait_and_come_in_order() -> None:
    release = asyncio.Event()
    sink, metrics = Sink(), Metrics()

    async def slow_reconcile() -> None:
        sink.reconciles += 1
        await release.wait()

    async def handler(ws: websockets.ServerConnection) -> None:
        await ws.recv()  # the subscription
        for i in range(3):
            await ws.send(orjson.dumps(order_event(id=f"0x{i}")).decode())
        async for frame in ws:
            if frame == "PING":
                await ws.send("PONG")

    async with websockets.serve(handler, "127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        feed = make_feed(sink, metrics, url, ping_interval_s=0.05, pong_timeout_s=0.2)
        feed._on_connected = slow_reconcile
        async with running(feed):
            await until(lambda: sink.reconciles == 1)
            await asyncio.sleep(0.5)  # many ping intervals: PONGs are read meanwhile
            assert sink.orders == [] and feed.connects == 1
            assert not feed.health().ok  # not reconciled yet
            release.set()
            await until(lambda: len(sink.orders) == 3)
            assert [o.venue_order_id for o in sink.orders] == ["0x0", "0x1", "0x2"]
            assert feed.health().ok


def test_liveness_windows_are_validated() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        make_feed(Sink(), Metrics(), pong_timeout_s=0)
