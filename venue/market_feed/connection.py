"""Market websocket connections: one per shard, kept alive, watched, and reconnected.

Owns the life of each shard's socket:

* connect (no library keepalive, no compression), send the `market` subscription for the shard's
  assets, and later add or drop assets in place with `subscribe`/`unsubscribe` operations;
* send the text `PING` at least every `ping_interval_s` (the venue drops a socket that stays quiet
  for ~10 s) and give up on the socket when no `PONG` comes within `pong_timeout_s`;
* the silent-stall watchdog: a shard whose data was flowing and then stops for `stale_after_s`
  (and for several times its usual gap) is stalled even if PONGs still come; it is reconnected;
* an asset that gets no snapshot within `stale_after_s` is handed to the owner for a REST resync
  rather than reconnecting, so a token the venue never serves cannot make a shard flap;
* reconnect with jittered exponential backoff, reset once a connection has delivered data and
  every snapshot it waited for.

Frames are handed to the owner unparsed; what they mean is the feed's business.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection

from resilience.backoff import Backoff
from resilience.clock import Clock
from venue.liveness import NO_PONG, STALL, Liveness
from venue.market_feed.parsing import PING
from venue.order_book import Link

if TYPE_CHECKING:
    from observability.metrics import Metrics

log = structlog.get_logger("market_feed")

FEED: Final = "market"


class Shard(Liveness):
    """One websocket connection, the assets it carries and its liveness clocks."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.name = f"feed:{FEED}:{index}"
        self.assets: set[str] = set()
        self.subscribed: set[str] = set()
        self.awaiting: dict[str, float] = {}
        self.link = Link()
        self.ws: ClientConnection | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connections = 0

    def on_connect(self, now: float) -> None:
        """Start the liveness clocks of a fresh connection."""
        super().on_connect(now)
        self.link.last_frame = now
        self.link.connected = True
        self.connections += 1


class ShardOwner(Protocol):
    """What a shard's connection hands frames to and reports its state to (the feed)."""

    def handle_frame(self, data: str | bytes, shard: Shard) -> None:
        """Apply one frame; never raises for bad input."""
        ...

    def request_resync(self, token_id: str, reason: str) -> None:
        """Fetch `token_id`'s book over REST: its snapshot did not come."""
        ...

    def shard_connected(self, shard: Shard) -> None:
        """`shard` is connected and subscribed."""
        ...

    def shard_lost(self, shard: Shard) -> int:
        """`shard`'s connection ended; return how many books that made unusable."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where to connect and the keepalive / liveness deadlines."""

    url: str
    ping_interval_s: float
    pong_timeout_s: float
    stale_after_s: float
    open_timeout_s: float

    @property
    def tick_s(self) -> float:
        """The watchdog's granularity: a ping is never late, a stall is caught early."""
        return max(0.01, min(0.25, self.ping_interval_s / 4, self.stale_after_s / 4))


class ShardConnector:
    """Run shards' connections: connect, subscribe, ping, watch, reconnect with backoff."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        owner: ShardOwner,
        backoff: Callable[[], Backoff],
        clock: Clock,
        connect: Callable[..., Any],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._owner = owner
        self._backoff = backoff
        self._clock = clock
        self._connect = connect
        self._metrics = metrics
        self._tick_s = settings.tick_s

    async def run(self, shard: Shard) -> None:
        """Keep `shard` connected while it has assets, until cancelled."""
        backoff = self._backoff()
        while True:
            if not shard.assets:
                shard.wake.clear()
                await shard.wake.wait()
                continue
            reason = "error"
            try:
                reason = await self._session(shard, backoff)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as e:
                log.warning("feed_connect_failed", shard=shard.index, error=type(e).__name__)
            finally:
                shard.link.connected = False
                shard.ws = None
                shard.subscribed.clear()
                shard.awaiting.clear()
                unusable = self._owner.shard_lost(shard)
            if self._metrics is not None:
                self._metrics.feed_reconnects_total.labels(FEED, reason).inc()
            delay = backoff.next()
            log.warning(
                "feed_reconnecting",
                shard=shard.index,
                reason=reason,
                in_s=round(delay, 3),
                books_unusable=unusable,
            )
            await self._clock.sleep(delay)

    async def _session(self, shard: Shard, backoff: Backoff) -> str:
        """Connect, subscribe and supervise one connection; return why it ended."""
        async with self._connect(
            self.settings.url,
            ping_interval=None,  # keepalive is the venue's text PING, sent by the watchdog
            compression=None,
            max_size=1 << 24,
            open_timeout=self.settings.open_timeout_s,
            close_timeout=1.0,
        ) as ws:
            now = self._clock.monotonic()
            shard.ws = ws
            shard.on_connect(now)
            assets = sorted(shard.assets)
            await ws.send(
                orjson.dumps(
                    {"assets_ids": assets, "type": "market", "custom_feature_enabled": True}
                ).decode()
            )
            shard.subscribed = set(assets)
            shard.awaiting = dict.fromkeys(assets, now)
            self._owner.shard_connected(shard)
            log.info("feed_connected", shard=shard.index, assets=len(assets))
            reader = asyncio.create_task(self._reader(shard, ws), name=f"{shard.name}:reader")
            try:
                return await self._watchdog(shard, ws, reader, backoff)
            except asyncio.CancelledError:
                # Shutting down: say goodbye with a normal close (1000), not 1011, bounded by
                # the connection's close_timeout.
                with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                    await ws.close()
                raise
            finally:
                reader.cancel()
                await asyncio.wait([reader])
                if not reader.cancelled() and reader.exception() is not None:
                    log.warning(
                        "feed_reader_ended", shard=shard.index, error=repr(reader.exception())
                    )

    async def _reader(self, shard: Shard, ws: ClientConnection) -> None:
        handle_frame = self._owner.handle_frame
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for msg in ws:
                handle_frame(msg, shard)
                # websockets hands out buffered messages without suspending: yield, so a
                # strategy woken by this frame decides on it before the next one is applied
                # (as the backtest's replay does, frame by frame), not on the end of a burst.
                await asyncio.sleep(0)

    async def _watchdog(
        self, shard: Shard, ws: ClientConnection, reader: asyncio.Task[None], backoff: Backoff
    ) -> str:
        """Ping, sync subscriptions and watch liveness; return the reason to reconnect."""
        cfg = self.settings
        healthy = False
        while True:
            await asyncio.wait([reader], timeout=self._tick_s)
            if reader.done():
                return "closed"
            now = self._clock.monotonic()
            await self._sync_subscriptions(shard, ws, now)
            if shard.ping_due(now, cfg.ping_interval_s - self._tick_s):
                await ws.send(PING)
                shard.pinged(now)
            waited = shard.pong_overdue(now, cfg.pong_timeout_s)
            if waited is not None:
                log.warning("feed_no_pong", shard=shard.index, waited_s=round(waited, 3))
                return NO_PONG
            silence = shard.data_stalled(now, cfg.stale_after_s)
            if silence is not None:
                log.warning("feed_stalled", shard=shard.index, silent_s=round(silence, 3))
                return STALL
            for token, t0 in list(shard.awaiting.items()):
                if now - t0 > cfg.stale_after_s:
                    # No snapshot came for this token: ask REST rather than reconnect, so a
                    # token the venue never serves cannot make the shard reconnect forever.
                    shard.awaiting.pop(token, None)
                    self._owner.request_resync(token, "no_snapshot")
            if not healthy and shard.data_frames and not shard.awaiting:
                healthy = True
                backoff.reset()

    async def _sync_subscriptions(self, shard: Shard, ws: ClientConnection, now: float) -> None:
        add = shard.assets - shard.subscribed
        remove = shard.subscribed - shard.assets
        if add:
            body: dict[str, Any] = {
                "assets_ids": sorted(add),
                "operation": "subscribe",
                "custom_feature_enabled": True,
            }
            await ws.send(orjson.dumps(body).decode())
            shard.subscribed |= add
            for t in add:
                shard.awaiting[t] = now
            log.info("feed_subscribed", shard=shard.index, added=len(add))
        if remove:
            body = {"assets_ids": sorted(remove), "operation": "unsubscribe"}
            await ws.send(orjson.dumps(body).decode())
            shard.subscribed -= remove
            log.info("feed_unsubscribed", shard=shard.index, removed=len(remove))
