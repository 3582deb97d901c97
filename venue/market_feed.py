"""The CLOB market websocket: shards, keepalive, stall detection, parsing, book upkeep.

Behaviour (reference §3):

* Watched tokens are split into shards of at most `shard_size` assets; each shard is one
  websocket connection. Tokens added or removed while connected are (un)subscribed in place
  with the `operation` messages, without reconnecting.
* Every shard sends the text `PING` at least every `ping_interval_s` (never later, since the
  venue drops a socket that stays quiet for ~10 s) and expects `PONG` within `pong_timeout_s`.
* A shard whose books were moving and then go silent for `stale_after_s` is *stalled* even if
  the socket is open; it is reconnected. Dead sockets, missing PONGs and stalls all reconnect
  with jittered exponential backoff (first retry well within 1 s) and resubscribe.
* The moment a shard is in doubt, every book it feeds is marked unusable; a book becomes usable
  again only with its next snapshot (DESIGN invariant 6).
* Frames are one JSON object, a JSON array of objects, or the text `PONG`. Malformed frames and
  events are counted and logged (rate-limited) and never stop the feed. Unknown event types
  are counted and ignored.
* A gap or a doubt about one book (delta without snapshot, crossed book, best bid/ask that
  disagrees with the venue's, a bad level) triggers a rate-limited REST `/book` resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Protocol

import aiohttp
import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from errors import FeedError
from execution.ports import TickSizeSink
from observability.health import CheckResult
from observability.metrics import Metrics
from resilience.backoff import Backoff
from resilience.clock import Clock, SystemClock
from resilience.rate_limit import RateLimiter
from venue.order_book import (
    BadLevel,
    BookStore,
    Link,
    OrderBook,
    parse_levels,
    parse_price,
    parse_size,
    rest_book_hash,
)

log = structlog.get_logger("market_feed")

FEED: Final = "market"
_PONG: Final = "PONG"
_PING: Final = "PING"
_MALFORMED_LOG_EVERY_S: Final = 5.0
_RESYNC_ATTEMPTS: Final = 3
_PARSE_ERRORS: Final = (BadLevel, KeyError, TypeError, ValueError, InvalidOperation, AttributeError)


class BookFetcher(Protocol):
    """Fetch one REST `/book` body (a resync source)."""

    async def fetch_book(self, token_id: str) -> Mapping[str, Any]:
        """Return the parsed JSON body of `GET /book?token_id=`; raise FeedError if unusable."""
        ...


class ClobBookFetcher:
    """`GET {clob_host}/book?token_id=` over aiohttp, through the `book` rate-limit bucket."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        limiter: RateLimiter | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/book"
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch_book(self, token_id: str) -> Mapping[str, Any]:
        if self._limiter is not None:
            await self._limiter.acquire("book")
        try:
            async with self._session.get(
                self._url, params={"token_id": token_id}, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise FeedError(f"/book answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise FeedError(f"/book request failed: {type(e).__name__}") from e
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise FeedError("/book body is not JSON") from e
        if not isinstance(data, dict):
            raise FeedError("/book body is not an object")
        return data


def _ts_ms(raw: Any) -> int:
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ValueError("timestamp must be a string of digits")
    return int(raw)


def _token(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError("asset_id must be a non-empty string")
    return raw


def _tick(raw: Any) -> Decimal:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(raw)
    return parse_price(raw)


def _venue_best(raw: Any) -> Decimal | None:
    """Parse a `best_bid`/`best_ask` field; the venue writes "0"/"1" for an empty side."""
    if raw in ("0", "1"):
        return None
    return parse_price(raw)


class Shard:
    """One websocket connection and the assets it carries."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"feed:{FEED}:{index}"
        self.assets: set[str] = set()
        self.subscribed: set[str] = set()
        self.awaiting: dict[str, float] = {}
        self.link = Link()
        self.ws: ClientConnection | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connected_at = float("-inf")
        self.last_data = float("-inf")
        self.data_frames = 0
        self.gap_ewma = 0.0
        self.ping_sent_at = float("-inf")
        self.ping_outstanding_since: float | None = None
        self.connections = 0

    def on_connect(self, now: float) -> None:
        self.connected_at = now
        self.last_data = now
        self.data_frames = 0
        self.gap_ewma = 0.0
        self.ping_sent_at = now
        self.ping_outstanding_since = None
        self.link.last_frame = now
        self.link.connected = True
        self.connections += 1

    def on_data(self, now: float) -> None:
        if self.data_frames:
            gap = now - self.last_data
            self.gap_ewma = gap if self.data_frames == 1 else 0.8 * self.gap_ewma + 0.2 * gap
        self.data_frames += 1
        self.last_data = now


class MarketFeed:
    """Keep a `BookStore` current from the market websocket; see the module docstring.

    `watch(owner, token_ids)` declares what an owner (the sniper, the copy trader, ...) wants;
    the feed subscribes the union. `run()` is the long-lived service task.
    """

    def __init__(
        self,
        *,
        url: str,
        store: BookStore,
        metrics: Metrics | None = None,
        tick_sink: TickSizeSink | None = None,
        fetcher: BookFetcher | None = None,
        shard_size: int = 200,
        ping_interval_s: float = 10.0,
        pong_timeout_s: float | None = None,
        stale_after_s: float = 15.0,
        backoff: Callable[[], Backoff] = lambda: Backoff(0.25, 10.0),
        clock: Clock | None = None,
        connect: Callable[..., Any] = ws_connect,
        open_timeout_s: float = 10.0,
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.url = url
        self.store = store
        self.metrics = metrics
        self.tick_sink = tick_sink
        self.fetcher = fetcher
        self.shard_size = shard_size
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s or min(5.0, ping_interval_s)
        self.stale_after_s = stale_after_s
        # The watchdog's granularity: fine enough that a ping is never late and a stall is
        # caught within a fraction of `stale_after_s`.
        self._tick_s = max(0.01, min(0.25, ping_interval_s / 4, stale_after_s / 4))
        self._backoff = backoff
        self._clock = clock or SystemClock()
        self._connect = connect
        self._open_timeout_s = open_timeout_s
        self._wanted: dict[str, set[str]] = {}
        self._shard_of: dict[str, Shard] = {}
        self.shards: list[Shard] = []
        self._tg: asyncio.TaskGroup | None = None
        self._resync_q: asyncio.Queue[str] = asyncio.Queue()
        self._resync_pending: set[str] = set()
        self._counts: dict[str, int] = {}
        self._malformed = 0
        self._malformed_flushed = 0
        self._malformed_logged_at = float("-inf")
        self._malformed_suppressed = 0
        self._resyncs = 0
        self._flushed: dict[str, int] = {}
        self.last_frame_ns = 0
        """`time.perf_counter_ns()` when the latest frame arrived (tick-to-order benchmark)."""
        self._handlers: dict[str, Callable[[dict[str, Any], set[str], float, Shard], None]] = {
            "book": self._on_book,
            "price_change": self._on_price_change,
            "tick_size_change": self._on_tick_size_change,
            "last_trade_price": self._on_last_trade_price,
            "best_bid_ask": self._on_best_bid_ask,
            "new_market": self._on_ignored,
            "market_resolved": self._on_market_resolved,
        }

    # --- what to watch -------------------------------------------------------------------
    def watch(self, owner: str, token_ids: Iterable[str]) -> None:
        """Set the tokens `owner` needs; the feed subscribes the union of all owners."""
        self._wanted[owner] = set(token_ids)
        self._apply_wanted()

    def watched(self) -> set[str]:
        """Return every token some owner wants."""
        out: set[str] = set()
        for tokens in self._wanted.values():
            out |= tokens
        return out

    def _apply_wanted(self) -> None:
        want = self.watched()
        current = set(self._shard_of)
        for t in current - want:
            shard = self._shard_of.pop(t)
            shard.assets.discard(t)
            shard.awaiting.pop(t, None)
            shard.wake.set()
            self.store.remove(t)
        for t in sorted(want - current):
            shard = self._shard_with_room()
            shard.assets.add(t)
            self._shard_of[t] = shard
            book = self.store.ensure(t)
            book.link = shard.link
            shard.wake.set()

    def _shard_with_room(self) -> Shard:
        for s in self.shards:
            if len(s.assets) < self.shard_size:
                return s
        s = Shard(len(self.shards))
        self.shards.append(s)
        if self._tg is not None:
            s.task = self._tg.create_task(self._run_shard(s), name=s.name)
        return s

    # --- service -------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every shard, the resync worker and the gauges until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for s in self.shards:
                    s.task = tg.create_task(self._run_shard(s), name=s.name)
                tg.create_task(self._resync_worker(), name=f"feed:{FEED}:resync")
                tg.create_task(self._gauges(), name=f"feed:{FEED}:gauges")
        finally:
            self._tg = None
            for s in self.shards:
                s.link.connected = False
                s.ws = None
            self.store.mark_all_unusable(list(self._shard_of))

    async def _run_shard(self, shard: Shard) -> None:
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
                self._set_connected_gauge()
                hit = self.store.mark_all_unusable(list(shard.assets))
            if self.metrics is not None:
                self.metrics.feed_reconnects_total.labels(FEED, reason).inc()
            delay = backoff.next()
            log.warning(
                "feed_reconnecting",
                shard=shard.index,
                reason=reason,
                in_s=round(delay, 3),
                books_unusable=len(hit),
            )
            await self._clock.sleep(delay)

    async def _session(self, shard: Shard, backoff: Backoff) -> str:
        """Connect, subscribe and supervise one connection; return why it ended."""
        async with self._connect(
            self.url,
            ping_interval=None,  # keepalive is the venue's text PING, sent by the watchdog
            compression=None,
            max_size=1 << 24,
            open_timeout=self._open_timeout_s,
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
            self._set_connected_gauge()
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
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for msg in ws:
                self.handle_frame(msg, shard)

    async def _watchdog(
        self, shard: Shard, ws: ClientConnection, reader: asyncio.Task[None], backoff: Backoff
    ) -> str:
        """Ping, sync subscriptions and watch liveness; return the reason to reconnect."""
        healthy = False
        while True:
            await asyncio.wait([reader], timeout=self._tick_s)
            if reader.done():
                return "closed"
            now = self._clock.monotonic()
            await self._sync_subscriptions(shard, ws, now)
            if now - shard.ping_sent_at >= self.ping_interval_s - self._tick_s:
                await ws.send(_PING)
                shard.ping_sent_at = now
                if shard.ping_outstanding_since is None:
                    shard.ping_outstanding_since = now
            since = shard.ping_outstanding_since
            if since is not None and now - since > self.pong_timeout_s:
                log.warning("feed_no_pong", shard=shard.index, waited_s=round(now - since, 3))
                return "no_pong"
            silence = now - shard.last_data
            if (
                shard.data_frames >= 2
                and silence > self.stale_after_s
                and silence > 4 * shard.gap_ewma
            ):
                log.warning("feed_stalled", shard=shard.index, silent_s=round(silence, 3))
                return "stall"
            for token, t0 in list(shard.awaiting.items()):
                if now - t0 > self.stale_after_s:
                    # No snapshot came for this token: ask REST rather than reconnect, so a
                    # token the venue never serves cannot make the shard reconnect forever.
                    shard.awaiting.pop(token, None)
                    self.request_resync(token, "no_snapshot")
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

    # --- frames --------------------------------------------------------------------------
    def handle_frame(self, data: str | bytes, shard: Shard) -> None:
        """Parse and apply one websocket frame; never raises for bad input."""
        self.last_frame_ns = time.perf_counter_ns()
        now = self._clock.monotonic()
        shard.link.last_frame = now
        if data == _PONG or data == b"PONG":
            shard.ping_outstanding_since = None
            self._count("pong")
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            if not data.strip():
                self._count("empty")
            else:
                self._bad("frame is not JSON", data)
            return
        shard.on_data(now)
        touched: set[str] = set()
        try:
            if type(obj) is list:
                for ev in obj:
                    self._dispatch(ev, touched, now, shard)
            else:
                self._dispatch(obj, touched, now, shard)
        except Exception:  # the frame boundary: a bug here must not stop the feed
            self._malformed += 1
            log.exception("feed_frame_failed")
        if touched:
            self.store.notify(touched)

    def _dispatch(self, ev: Any, touched: set[str], now: float, shard: Shard) -> None:
        if type(ev) is not dict:
            self._bad("event is not an object", ev)
            return
        raw = ev.get("event_type")
        et = raw if type(raw) is str else ""
        handler = self._handlers.get(et)
        if handler is None:
            if raw is None and ("bids" in ev or "buys" in ev):
                et, handler = "book", self._on_book  # early snapshots had no event_type
            else:
                self._count("unknown")
                return
        self._count(et)
        try:
            handler(ev, touched, now, shard)
        except _PARSE_ERRORS as e:
            self._bad(f"bad {et}: {e}", ev)

    def _count(self, event_type: str) -> None:
        c = self._counts
        c[event_type] = c.get(event_type, 0) + 1

    def _bad(self, why: str, sample: Any) -> None:
        self._malformed += 1
        now = self._clock.monotonic()
        if now - self._malformed_logged_at < _MALFORMED_LOG_EVERY_S:
            self._malformed_suppressed += 1
            return
        text = sample if isinstance(sample, (str, bytes)) else repr(sample)
        log.warning(
            "feed_malformed",
            why=why[:200],
            sample=str(text)[:200],
            suppressed_since_last=self._malformed_suppressed,
        )
        self._malformed_logged_at = now
        self._malformed_suppressed = 0

    @property
    def malformed(self) -> int:
        """Frames and events that could not be parsed since start."""
        return self._malformed

    def counts(self) -> dict[str, int]:
        """Events received by type since start (`pong`, `empty`, `unknown` included)."""
        return dict(self._counts)

    # --- event handlers ------------------------------------------------------------------
    def _on_book(self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard) -> None:
        token = _token(ev.get("asset_id"))
        book = self.store.get(token)
        if book is None:
            return  # not (or no longer) watched
        try:
            bids = parse_levels(ev["bids"] if "bids" in ev else ev.get("buys"))
            asks = parse_levels(ev["asks"] if "asks" in ev else ev.get("sells"))
            ts = _ts_ms(ev.get("timestamp"))
            tick = ev.get("tick_size")
            new_tick = _tick(tick) if tick not in (None, "") else None
        except _PARSE_ERRORS:
            self._doubt(book, "bad_snapshot", touched)
            raise
        book_hash = ev.get("hash")
        book.replace(
            bids,
            asks,
            book_hash=book_hash if isinstance(book_hash, str) else "",
            timestamp_ms=ts,
            now=now,
        )
        book.link = shard.link
        shard.awaiting.pop(token, None)
        self._resync_pending.discard(token)
        if new_tick is not None:
            self._set_tick(book, new_tick)
        ltp = ev.get("last_trade_price")
        if ltp:
            with contextlib.suppress(BadLevel):
                book.last_trade_price = parse_price(ltp)
        if not book.usable:
            self._doubt(book, "crossed_snapshot", touched)
        touched.add(token)

    def _on_price_change(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        # Parse everything first so a bad entry cannot half-apply a message.
        parsed: list[tuple[str, bool, Decimal, Decimal]] = []
        bests: dict[str, tuple[Any, Any]] = {}
        if "price_changes" in ev:  # current schema (since 2025-09-15)
            entries = ev["price_changes"]
            if type(entries) is not list:
                raise BadLevel("price_changes must be a list")
            for e in entries:
                token = _token(e["asset_id"])
                parsed.append(
                    (token, _is_bid(e["side"]), parse_price(e["price"]), parse_size(e["size"]))
                )
                if "best_bid" in e and "best_ask" in e:
                    bests[token] = (e["best_bid"], e["best_ask"])
        elif "changes" in ev:  # interim schema (Oct 2024 - Sep 2025)
            token = _token(ev["asset_id"])
            changes = ev["changes"]
            if type(changes) is not list:
                raise BadLevel("changes must be a list")
            for c in changes:
                parsed.append(
                    (token, _is_bid(c["side"]), parse_price(c["price"]), parse_size(c["size"]))
                )
        else:  # legacy flat schema: one level per message
            token = _token(ev["asset_id"])
            parsed.append(
                (token, _is_bid(ev["side"]), parse_price(ev["price"]), parse_size(ev["size"]))
            )
        changed: set[str] = set()
        store = self.store
        for token, is_bid, price, size in parsed:
            book = store.get(token)
            if book is None:
                continue
            if not book.snapshots:
                self._doubt(book, "delta_before_snapshot", touched)
                continue
            book.set_level(is_bid, price, size)
            book.updated_at = now
            changed.add(token)
        for token in changed:
            book = store.get(token)
            assert book is not None
            if book.crossed():
                self._doubt(book, "crossed", touched)
            elif book.usable and token in bests:
                bb_raw, ba_raw = bests[token]
                try:
                    vb, va = _venue_best(bb_raw), _venue_best(ba_raw)
                except _PARSE_ERRORS:
                    vb = va = None
                    self._doubt(book, "bad_best_price", touched)
                else:
                    ob, oa = book.best_bid(), book.best_ask()
                    if (ob[0] if ob else None) != vb or (oa[0] if oa else None) != va:
                        self._doubt(book, "best_price_mismatch", touched)
            touched.add(token)

    def _on_tick_size_change(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        token = _token(ev["asset_id"])
        tick = _tick(ev["new_tick_size"])
        book = self.store.get(token)
        if book is None:
            return
        self._set_tick(book, tick, force=True)
        touched.add(token)

    def _set_tick(self, book: OrderBook, tick: Decimal, *, force: bool = False) -> None:
        old = book.tick_size
        book.tick_size = tick
        if self.tick_sink is not None and (force or (old is not None and old != tick)):
            self.tick_sink.set_tick_size(book.token_id, tick)
        if old != tick:
            log.info("tick_size_changed", token_id=book.token_id, old=str(old), new=str(tick))

    def _on_last_trade_price(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        token = _token(ev["asset_id"])
        price = parse_price(ev["price"])
        book = self.store.get(token)
        if book is not None:
            book.last_trade_price = price

    def _on_best_bid_ask(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        _token(ev["asset_id"])
        _venue_best(ev["best_bid"])
        _venue_best(ev["best_ask"])

    def _on_ignored(self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard) -> None:
        return None

    def _on_market_resolved(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        assets = ev.get("assets_ids")
        if type(assets) is not list:
            raise BadLevel("assets_ids must be a list")
        for a in assets:
            book = self.store.get(a) if type(a) is str else None
            if book is not None and book.usable:
                book.usable = False  # resolved: no more trading, whatever the book says
                touched.add(book.token_id)
        log.info("market_resolved", market=str(ev.get("market", ""))[:66])

    # --- doubt and resync ----------------------------------------------------------------
    def _doubt(self, book: OrderBook, reason: str, touched: set[str]) -> None:
        book.usable = False
        touched.add(book.token_id)
        self.request_resync(book.token_id, reason)

    def request_resync(self, token_id: str, reason: str) -> None:
        """Queue a REST `/book` resync for `token_id` (deduplicated; rate-limited when run)."""
        if token_id in self._resync_pending or token_id not in self.store:
            return
        self._resync_pending.add(token_id)
        self._resync_q.put_nowait(token_id)
        log.info("book_resync_requested", token_id=token_id, reason=reason)

    async def _resync_worker(self) -> None:
        while True:
            token = await self._resync_q.get()
            try:
                await self._resync(token)
            except Exception:  # the task's loop boundary: one bad resync must not end them all
                log.exception("book_resync_crashed", token_id=token)
            finally:
                self._resync_pending.discard(token)

    async def _resync(self, token: str) -> None:
        if self.fetcher is None:
            return
        for attempt in range(1, _RESYNC_ATTEMPTS + 1):
            book = self.store.get(token)
            if book is None or book.usable:
                return  # unwatched, or a websocket snapshot already fixed it
            try:
                payload = await self.fetcher.fetch_book(token)
                ok = self.apply_rest_book(token, payload, trust_hash=attempt == _RESYNC_ATTEMPTS)
            except (FeedError, *_PARSE_ERRORS) as e:
                log.warning("book_resync_failed", token_id=token, attempt=attempt, error=str(e))
                ok = False
            if ok:
                return
            await self._clock.sleep(0.2 * attempt)

    def apply_rest_book(
        self, token: str, payload: Mapping[str, Any], *, trust_hash: bool = False
    ) -> bool:
        """Install a REST `/book` body as the snapshot; return True if the book is usable now.

        A body whose hash disagrees with the reference computation is refused (and refetched)
        unless `trust_hash`: the algorithm is reverse-engineered, so the last attempt keeps it.
        """
        book = self.store.get(token)
        if book is None:
            return False
        if payload.get("asset_id") not in (None, token):
            raise BadLevel("/book answered for another token")
        expected = rest_book_hash(payload)
        if expected is not None and payload.get("hash") != expected:
            log.warning("book_hash_mismatch", token_id=token, trusted=trust_hash)
            if not trust_hash:
                return False
        bids = parse_levels(payload.get("bids"))
        asks = parse_levels(payload.get("asks"))
        ts = _ts_ms(payload.get("timestamp"))
        if ts and book.timestamp_ms and ts < book.timestamp_ms:
            return False  # older than what we already hold
        h = payload.get("hash")
        book.replace(
            bids,
            asks,
            book_hash=h if isinstance(h, str) else "",
            timestamp_ms=ts,
            now=self._clock.monotonic(),
        )
        tick = payload.get("tick_size")
        if tick not in (None, ""):
            self._set_tick(book, _tick(tick))
        self._resyncs += 1
        if self.metrics is not None:
            self.metrics.book_resyncs_total.inc()
        log.info("book_resynced", token_id=token, usable=book.usable)
        self.store.notify((token,))
        return book.usable

    # --- health and gauges ---------------------------------------------------------------
    def health(self) -> CheckResult:
        """Healthy when every shard with assets is connected and heard from recently."""
        now = self._clock.monotonic()
        busy = [s for s in self.shards if s.assets]
        if not busy:
            return CheckResult(True, "no assets watched")
        bad = [
            s.index
            for s in busy
            if not s.link.connected or now - s.link.last_frame > self.stale_after_s
        ]
        st = self.store.stats()
        detail = {
            "shards": len(busy),
            "shards_down": bad,
            "books": st.total,
            "books_usable": st.usable,
            "book_max_age_s": round(st.max_age_s, 3),
        }
        return CheckResult(not bad, detail)

    def _set_connected_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.feed_connected.labels(FEED).set(
                sum(1 for s in self.shards if s.link.connected)
            )

    def flush_metrics(self) -> None:
        """Push locally counted events and book gauges to Prometheus."""
        m = self.metrics
        if m is None:
            return
        for et, n in self._counts.items():
            child = m.feed_messages_total.labels(FEED, et)
            done = self._flushed.get(et, 0)
            if n > done:
                child.inc(n - done)
                self._flushed[et] = n
        if self._malformed > self._malformed_flushed:
            m.feed_malformed_total.labels(FEED).inc(self._malformed - self._malformed_flushed)
            self._malformed_flushed = self._malformed
        now = self._clock.monotonic()
        live = [s.link.last_frame for s in self.shards if s.assets and s.link.connected]
        m.feed_last_message_age_seconds.labels(FEED).set(now - max(live) if live else 0.0)
        st = self.store.stats()
        m.books_total.labels("fresh").set(st.usable)
        m.books_total.labels("stale").set(st.total - st.usable)
        m.book_max_age_seconds.set(st.max_age_s)

    async def _gauges(self) -> None:
        while True:
            self.flush_metrics()
            await self._clock.sleep(1.0)


def _is_bid(side: Any) -> bool:
    if side == "BUY":
        return True
    if side == "SELL":
        return False
    raise BadLevel(f"side must be BUY or SELL, got {str(side)[:20]!r}")
