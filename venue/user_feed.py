"""The user websocket: our order and trade events, with a REST reconcile after every (re)connect.

The venue does not replay events missed while disconnected, so each successful subscription is
followed by `on_connected()` (the executor's reconcile: open orders + trades since the last
checkpoint); events that arrive meanwhile wait, in order, until it is done.

Liveness (`venue.liveness`, as the market feed): text `PING` every `ping_interval_s`; a PING
unanswered for `pong_timeout_s`, or no frame at all (PONGs included) for `stale_after_s`, ends
the connection, which is reconnected with `resilience.Backoff` and reconciled again. `health()`
is degraded from the moment a deadline passes until the reconcile after the reconnect is done.

Numbers outside `venue.parse`'s bounds make an event malformed: it is counted
(`polyd_feed_malformed_total{feed="user"}`), logged with a sample and never acted on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

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
from resilience.clock import Clock, SystemClock
from venue.clob.wire import fills_from_trade, venue_order
from venue.liveness import NO_PONG, STALL, Liveness
from venue.parse import MalformedLog

log = structlog.get_logger("venue.user_feed")

_KINDS = frozenset({"order", "trade"})
_BACKLOG: Final = 1024
"""Frames read while the reconcile runs wait in a queue this long; past it, reading pauses."""


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
        pong_timeout_s: float = 5.0,
        stale_after_s: float = 30.0,
        backoff: Backoff | None = None,
        markets: list[str] | None = None,
        clock: Clock | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if min(ping_interval_s, pong_timeout_s, stale_after_s) <= 0:
            raise ValueError("ping_interval_s, pong_timeout_s and stale_after_s must be > 0")
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
        self._pong_timeout_s = pong_timeout_s
        self._stale_after_s = stale_after_s
        self._tick_s = max(0.01, min(0.25, ping_interval_s / 4, pong_timeout_s / 4))
        self._backoff = backoff or Backoff(0.2, 30.0)
        self._markets = markets or []
        self._clock = clock or SystemClock()
        self._live = Liveness()
        self.malformed = MalformedLog("user", metrics=metrics, monotonic=self._clock.monotonic)
        self.connected = False
        self.reconciled = False
        """True once the reconcile after the current connection is done."""
        self.connects = 0
        self.reconciles = 0
        self.last_lost: str | None = None
        """Why the last connection ended (`no_pong`, `stall`, `closed`, `error`)."""
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
        """Healthy while connected, reconciled and within the PONG and silence deadlines."""
        now = self._clock.monotonic()
        waited = self._live.pong_overdue(now, self._pong_timeout_s) if self.connected else None
        silent = self._live.silent(now, self._stale_after_s) if self.connected else None
        ok = self.connected and self.reconciled and waited is None and silent is None
        detail: dict[str, Any] = {
            "connected": self.connected,
            "reconciled": self.reconciled,
            "connects": self.connects,
            "reconciles": self.reconciles,
            "malformed": self.malformed.count,
        }
        if self.connected:
            detail["last_frame_age_s"] = round(now - self._live.last_frame, 3)
        if waited is not None:
            detail["pong_overdue_s"] = round(waited, 3)
        if silent is not None:
            detail["silent_s"] = round(silent, 3)
        if self.last_lost is not None:
            detail["last_lost"] = self.last_lost
        return CheckResult(ok, detail)

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
                    reason = await self._session(ws)
                    if reason == "closed":
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
                self.reconciled = False
                self.last_lost = reason
            self._metrics.feed_reconnects_total.labels("user", reason).inc()
            await self._clock.sleep(self._backoff.next())

    async def _session(self, ws: ClientConnection) -> str:
        """Read, reconcile, dispatch and watch one connection; return why it ended."""
        self._live.on_connect(self._clock.monotonic())
        # The reader runs from the start, so PONGs are seen while a long REST reconcile runs;
        # data frames wait in `backlog`, in order, until the reconcile is done.
        backlog: asyncio.Queue[str | bytes] = asyncio.Queue(_BACKLOG)
        reader = asyncio.create_task(self._read(ws, backlog), name="feed:user:reader")
        dispatcher = asyncio.create_task(self._dispatch(backlog), name="feed:user:dispatch")
        tasks = (reader, dispatcher)
        try:
            return await self._watchdog(ws, reader, dispatcher)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)

    async def _read(self, ws: ClientConnection, backlog: asyncio.Queue[str | bytes]) -> None:
        live = self._live
        async for frame in ws:
            now = self._clock.monotonic()
            live.on_frame(now)
            if frame in ("PONG", b"PONG"):
                live.on_pong()
                continue
            live.on_data(now)
            await backlog.put(frame)

    async def _dispatch(self, backlog: asyncio.Queue[str | bytes]) -> None:
        await self._tracing.within("user_feed_resync", self._on_connected(), connects=self.connects)
        self.reconciles += 1
        self.reconciled = True
        self._backoff.reset()
        log.info("user_feed_reconciled", reconciles=self.reconciles)
        while True:
            await self.handle_frame(await backlog.get())

    async def _watchdog(
        self, ws: ClientConnection, reader: asyncio.Task[None], dispatcher: asyncio.Task[None]
    ) -> str:
        live = self._live
        while True:
            await asyncio.wait(
                (reader, dispatcher), timeout=self._tick_s, return_when=asyncio.FIRST_COMPLETED
            )
            for t in (dispatcher, reader):
                if t.done():
                    t.result()  # a failed reconcile or read ends the connection with its error
                    return "closed"
            now = self._clock.monotonic()
            # The venue drops a socket that sent nothing for ~10 s; pinging exactly every 10 s
            # races that timer, so ping with a margin.
            if live.ping_due(now, self._ping_s * 0.8):
                await ws.send("PING")
                live.pinged(now)
            waited = live.pong_overdue(now, self._pong_timeout_s)
            if waited is not None:
                log.warning("user_feed_no_pong", waited_s=round(waited, 3))
                return NO_PONG
            silent = live.silent(now, self._stale_after_s)
            if silent is not None:
                log.warning("user_feed_stalled", silent_s=round(silent, 3))
                return STALL

    async def handle_frame(self, frame: str | bytes) -> None:
        """Parse one frame (an object, an array of objects, or `PONG`) and dispatch it."""
        if frame in ("PONG", b"PONG"):
            return
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self.malformed("frame is not JSON", frame)
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
            vo = venue_order(ev, malformed=self.malformed)
            if vo is not None:
                await self._on_order(vo)
                status = str(ev.get("status", "")).upper()
                if status == "CANCELED_MARKET_RESOLVED" and self.on_market_resolved is not None:
                    self.on_market_resolved(vo.token_id)
        elif kind == "trade":
            fills = fills_from_trade(
                ev, owner=self._owner, address=self._funder, malformed=self.malformed
            )
            for fill in fills:
                await self._on_fill(fill)
