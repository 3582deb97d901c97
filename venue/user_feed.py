"""The user websocket: our order and trade events, with a REST reconcile after every (re)connect.

The venue does not replay events missed while disconnected, so each successful subscription is
followed by `on_connected()` (the executor's reconcile: open orders + trades since the last
checkpoint). Text `PING` every `ping_interval_s`; reconnects use `resilience.Backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection

from execution.ports import VenueOrder
from models import Fill
from observability.health import CheckResult
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience import Backoff
from venue.clob.wire import fills_from_trade, venue_order

log = structlog.get_logger("venue.user_feed")

_KINDS = frozenset({"order", "trade"})


class UserFeed:
    """Subscribe to the user channel and hand events to the executor."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        api_passphrase: str,
        funder: str,
        on_order: Callable[[VenueOrder], Awaitable[None]],
        on_fill: Callable[[Fill], Awaitable[None]],
        on_connected: Callable[[], Awaitable[Any]],
        metrics: Metrics,
        ping_interval_s: float = 10.0,
        backoff: Backoff | None = None,
        markets: list[str] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        self._ws: ClientConnection | None = None
        self._closing: asyncio.Task[None] | None = None  # kept: a task nobody holds may vanish
        self.url = url
        self._auth = {"apiKey": api_key, "secret": api_secret, "passphrase": api_passphrase}
        self._owner = api_key
        self._funder = funder
        self._on_order = on_order
        self._on_fill = on_fill
        self._on_connected = on_connected
        self._metrics = metrics
        self._ping_s = ping_interval_s
        self._backoff = backoff or Backoff(0.2, 30.0)
        self._markets = markets or []
        self.connected = False
        self.connects = 0
        self.on_market_resolved: Callable[[str], None] | None = None
        """Told the token of every order the venue ended `CANCELED_MARKET_RESOLVED`."""

    def set_creds(self, *, api_key: str, api_secret: str, api_passphrase: str) -> None:
        """Subscribe with new API credentials: the open connection is closed, and the next one
        (at once, then the usual reconcile) authenticates with these."""
        self._auth = {"apiKey": api_key, "secret": api_secret, "passphrase": api_passphrase}
        self._owner = api_key
        self._backoff.reset()
        ws = self._ws
        if ws is not None:
            log.info("user_feed_resubscribing", reason="credentials rotated")
            # Closing wakes the pump with a clean close; `run` reconnects with the new auth.
            self._closing = asyncio.get_running_loop().create_task(
                ws.close(), name="feed:user:rotate-close"
            )

    def health(self) -> CheckResult:
        return CheckResult(self.connected, {"connected": self.connected, "connects": self.connects})

    async def run(self) -> None:
        """Connect, subscribe, reconcile, dispatch; reconnect with backoff. Until cancelled."""
        while True:
            reason = "closed"
            try:
                async with websockets.connect(
                    self.url, ping_interval=None, open_timeout=10, close_timeout=1
                ) as ws:
                    await ws.send(
                        orjson.dumps(
                            {"auth": self._auth, "markets": self._markets, "type": "user"}
                        ).decode()
                    )
                    self.connected = True
                    self._ws = ws
                    self.connects += 1
                    self._metrics.feed_connected.labels("user").set(1)
                    log.info("user_feed_connected", connects=self.connects)
                    await self._pump(ws)
                    # The server ended the connection cleanly; say so, then reconnect.
                    log.warning("user_feed_closed", code=ws.close_code, reason=ws.close_reason)
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as e:
                reason = "error"
                log.warning("user_feed_disconnected", error=type(e).__name__)
            except Exception:  # the task boundary: count, log, reconnect
                reason = "error"
                log.exception("user_feed_failed")
            finally:
                if self.connected:
                    self._metrics.feed_connected.labels("user").set(0)
                self.connected = False
                self._ws = None
            self._metrics.feed_reconnects_total.labels("user", reason).inc()
            await asyncio.sleep(self._backoff.next())

    async def _pump(self, ws: ClientConnection) -> None:
        # The pinger starts before the reconcile: with many open orders the REST reconcile can
        # outlast the venue's ~10 s idle limit, and a socket dropped for silence would reconnect
        # and reconcile again. Frames that arrive meanwhile wait in the socket's buffer.
        pinger = asyncio.create_task(self._ping(ws), name="feed:user:ping")
        try:
            with self._tracing.span("user_feed_resync", connects=self.connects):
                await self._on_connected()
            self._backoff.reset()
            async for frame in ws:
                await self.handle_frame(frame)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping(self, ws: ClientConnection) -> None:
        # The venue drops a socket that sent nothing for ~10 s; pinging exactly every 10 s races
        # that timer, so ping with a margin.
        while True:
            await asyncio.sleep(self._ping_s * 0.8)
            await ws.send("PING")

    async def handle_frame(self, frame: str | bytes) -> None:
        """Parse one frame (an object, an array of objects, or `PONG`) and dispatch it."""
        if frame in ("PONG", b"PONG"):
            return
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._metrics.feed_malformed_total.labels("user").inc()
            return
        for ev in data if isinstance(data, list) else [data]:
            if isinstance(ev, dict):
                await self.handle_event(ev)

    async def handle_event(self, ev: dict[str, Any]) -> None:
        kind = str(ev.get("event_type", ""))
        # A label from a fixed set: the wire's event type is unbounded text, and
        # a label per distinct value would grow the metric without bound.
        label = kind if kind in _KINDS else "unknown"
        self._metrics.feed_messages_total.labels("user", label).inc()
        if kind == "order":
            vo = venue_order(ev)
            if vo is not None:
                await self._on_order(vo)
                status = str(ev.get("status", "")).upper()
                if status == "CANCELED_MARKET_RESOLVED" and self.on_market_resolved is not None:
                    self.on_market_resolved(vo.token_id)
        elif kind == "trade":
            for fill in fills_from_trade(ev, owner=self._owner, address=self._funder):
                await self._on_fill(fill)
