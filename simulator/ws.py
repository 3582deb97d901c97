"""Market and user websocket channels: subscriptions, keepalive, batched fan-out, faults.

Every event is serialised once (orjson). Each connection has a writer task that sends whatever
accumulated since its last send as one frame: a bare object for a single event, a JSON array
for several, so bursts arrive as arrays like production.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

Json = dict[str, Any]

MAX_BUFFERED = 20_000
"""Events a connection may hold unsent. A client that stops reading while the feed keeps
moving is dropped past this (its socket aborted, the buffer freed), so it cannot grow the
venue's memory without bound; one that reads keeps its buffer near empty. The simulator's own
guard, not a documented behaviour of Polymarket's websocket (whose handling of a slow reader is
not published); no daemon test relies on it."""

MALFORMED_FRAMES: tuple[bytes, ...] = (
    b'{"event_type":"price_change","market":"0x',
    b"",
    b"not json at all",
    b'[{"event_type":"book","asset_id":}]',
    b"\xef\xbf\xbd\xef\xbf\xbd",
    b'{"event_type": null, "price_changes": "oops"}',
)


@dataclass(eq=False)
class Conn:
    """One websocket client."""

    ws: web.WebSocketResponse
    request: web.Request
    channel: str
    assets: set[str] = field(default_factory=set)
    markets: set[str] = field(default_factory=set)
    owner: str | None = None
    custom: bool = False
    subscribed: bool = False
    buf: list[bytes] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stalled_until: float = 0.0
    malformed: int = 0
    closed: bool = False
    frames_sent: int = 0

    def push(self, payload: bytes) -> None:
        if self.closed:
            return
        self.buf.append(payload)
        if len(self.buf) > MAX_BUFFERED:
            self.buf.clear()
            self.abort()
            return
        if not self.wake.is_set():
            self.wake.set()

    def push_frame(self, frame: bytes) -> None:
        """Queue a complete frame (e.g. the initial `book` array) ahead of batched events."""
        self.raw.append(frame)
        self.wake.set()

    def abort(self) -> None:
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.wake.set()


class Hub:
    """Connections of one channel, with keepalive rules and fault hooks."""

    def __init__(
        self,
        channel: str,
        *,
        idle_timeout_s: float,
        subscribe_timeout_s: float,
        on_subscribe: Callable[[Conn, Json], str | None],
        on_dynamic: Callable[[Conn, Json], None],
    ) -> None:
        self.channel = channel
        self.idle_timeout_s = idle_timeout_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.conns: set[Conn] = set()
        self._on_subscribe = on_subscribe
        self._on_dynamic = on_dynamic
        self._malformed_i = 0

    # fan-out ------------------------------------------------------------------------------
    def to_assets(self, asset_id: str, payload: bytes, custom_only: bool = False) -> None:
        for c in self.conns:
            if asset_id in c.assets and (c.custom or not custom_only):
                c.push(payload)

    def to_owner(self, owner: str, market: str, payload: bytes) -> None:
        for c in self.conns:
            if c.owner == owner and (not c.markets or market in c.markets):
                c.push(payload)

    # faults -------------------------------------------------------------------------------
    async def drop(self) -> int:
        n = 0
        for c in list(self.conns):
            c.abort()
            n += 1
        await asyncio.sleep(0)
        return n

    def stall(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        for c in self.conns:
            c.stalled_until = until

    def malformed(self, count: int) -> None:
        for c in self.conns:
            c.malformed += count
            c.wake.set()

    # serving ------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = Conn(ws=ws, request=request, channel=self.channel)
        self.conns.add(conn)
        writer = asyncio.create_task(self._writer(conn), name=f"sim:ws-writer:{self.channel}")
        try:
            await self._reader(conn)
        finally:
            conn.closed = True
            conn.wake.set()
            self.conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _reader(self, conn: Conn) -> None:
        ws = conn.ws
        opened = time.monotonic()
        last_ping = opened
        while not conn.closed:
            now = time.monotonic()
            if conn.subscribed:
                deadline = last_ping + self.idle_timeout_s
            else:
                deadline = opened + self.subscribe_timeout_s
            if now >= deadline:
                await ws.close(code=1000, message=b"idle")
                return
            try:
                msg = await ws.receive(timeout=deadline - now)
            except TimeoutError:
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                continue
            data = msg.data
            stalled = time.monotonic() < conn.stalled_until
            if data == "PING":
                last_ping = time.monotonic()
                if not stalled:
                    await ws.send_str("PONG")
                continue
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                await ws.close(code=1003, message=b"invalid message")
                return
            if not isinstance(body, dict):
                await ws.close(code=1003, message=b"invalid message")
                return
            if "operation" in body:
                if conn.subscribed:
                    self._on_dynamic(conn, body)
                continue
            err = self._on_subscribe(conn, body)
            if err is not None:
                await ws.close(code=1008, message=err.encode())
                return
            conn.subscribed = True
            last_ping = time.monotonic()

    def _garbage(self) -> bytes:
        frame = MALFORMED_FRAMES[self._malformed_i % len(MALFORMED_FRAMES)]
        self._malformed_i += 1
        return frame

    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        while not conn.closed:
            await conn.wake.wait()
            conn.wake.clear()
            if conn.closed:
                return
            stall_left = conn.stalled_until - time.monotonic()
            if stall_left > 0:
                await asyncio.sleep(stall_left)
                conn.buf.clear()  # what a stalled feed held back is lost
                continue
            while conn.raw:
                await ws.send_frame(conn.raw.pop(0), WSMsgType.TEXT)
                conn.frames_sent += 1
            while conn.buf or conn.malformed:
                if conn.malformed:
                    conn.malformed -= 1
                    await ws.send_frame(self._garbage(), WSMsgType.TEXT)
                if not conn.buf:
                    continue
                items, conn.buf = conn.buf, []
                frame = items[0] if len(items) == 1 else b"[" + b",".join(items) + b"]"
                await ws.send_frame(frame, WSMsgType.TEXT)
                conn.frames_sent += 1
