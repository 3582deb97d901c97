"""The user feed keeps its socket alive while the post-connect REST reconcile runs."""

from __future__ import annotations

import asyncio
import contextlib

import websockets

from observability.metrics import Metrics
from venue.user_feed import UserFeed


async def test_pings_flow_while_the_reconcile_after_connect_runs() -> None:
    received: list[str] = []

    async def server(ws: websockets.ServerConnection) -> None:
        async for frame in ws:
            received.append(str(frame))

    pings_during_reconcile: list[int] = []

    async def slow_reconcile() -> None:
        # Many open orders: the REST reconcile outlasts several ping intervals.
        await asyncio.sleep(0.6)
        pings_during_reconcile.append(received.count("PING"))

    async def ignore(_: object) -> None:
        return None

    async with websockets.serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        feed = UserFeed(
            url=f"ws://127.0.0.1:{port}",
            api_key="k",
            api_secret="s",
            api_passphrase="p",
            funder="0x" + "11" * 20,
            on_order=ignore,
            on_fill=ignore,
            on_connected=slow_reconcile,
            metrics=Metrics(),
            ping_interval_s=0.1,
        )
        task = asyncio.create_task(feed.run())
        try:
            for _ in range(100):
                if pings_during_reconcile:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert received and '"type":"user"' in received[0]  # the subscription went first
    assert pings_during_reconcile and pings_during_reconcile[0] >= 3, pings_during_reconcile
