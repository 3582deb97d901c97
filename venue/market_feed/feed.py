"""The market feed: keeps a `BookStore` current from the CLOB market websocket.

Owns the feed as a whole; the sockets live in `connection`, the wire schemas in `parsing`.

* Owners (the sniper, the copy trader, ...) declare the tokens they need with `watch`; the feed
  subscribes the union, split into shards of at most `shard_size` assets, one websocket each.
  Tokens added or removed while connected are (un)subscribed in place, without reconnecting,
  and an unwatched token's book leaves the store.
* Frames are parsed into typed events and applied to the books; tick sizes go to the
  `TickSizeSink` (the executor's market rules). Malformed frames and events are counted and
  never stop the feed.
* The moment a shard is in doubt (dead socket, no PONG, stall), every book it feeds is marked
  unusable; a book becomes usable again only with its next snapshot, so nothing trades on stale
  data.
* A gap or a doubt about one book (delta without snapshot, crossed book, best bid/ask that
  disagrees with the venue's, a bad level, no snapshot in time) triggers a rate-limited REST
  `/book` resync. At most one resync per token is queued at a time.
* `health()` is healthy while every shard with assets is connected and heard from recently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol

import orjson
import structlog
from websockets.asyncio.client import connect as ws_connect

from errors import FeedError
from execution.ports import TickSizeSink
from observability.health import CheckResult
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience.backoff import Backoff
from resilience.clock import Clock, SystemClock
from venue.market_feed.connection import FEED, ConnectionSettings, Shard, ShardConnector
from venue.market_feed.parsing import (
    PARSE_ERRORS,
    PONG,
    FrameStats,
    parse_best_bid_ask,
    parse_book,
    parse_last_trade_price,
    parse_market_resolved,
    parse_price_change,
    parse_rest_book,
    parse_tick,
    parse_tick_size_change,
    parse_token,
    price_change_tokens,
    untyped_event_type,
)
from venue.market_feed.rest import BookFetcher
from venue.order_book import BadLevel, BookStore, OrderBook, rest_book_hash
from venue.parse import MalformedLog

log = structlog.get_logger("market_feed")

_RESYNC_ATTEMPTS: Final = 3

Handler = Callable[[dict[str, Any], set[str], float, Shard], None]


class FrameTap(Protocol):
    """Told of every raw frame and connection change, before parsing (a market recorder).
    Each call must be quick and must not raise: it runs on the feed's hot path."""

    def frame(self, data: str | bytes, shard: int) -> None:
        """A frame arrived on connection `shard`, as received."""
        ...

    def connected(self, shard: int, tokens: int) -> None:
        """Connection `shard` is up and subscribed to `tokens` tokens."""
        ...

    def lost(self, shard: int, tokens: int) -> None:
        """Connection `shard` ended; its `tokens` tokens get no frames until it is back."""
        ...

    def watching(self, tokens: list[str]) -> None:
        """The set of watched tokens is now `tokens`."""
        ...


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
        rest_malformed: MalformedLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.store = store
        self.metrics = metrics
        self.tick_sink = tick_sink
        self.on_resolved: Callable[[str, list[str], str | None], None] | None = None
        """Told (market, token ids, winning token or None) of every `market_resolved`."""
        self.fetcher = fetcher
        self.tap: FrameTap | None = None
        """Told of every raw frame and connection change (recording; `RECORD_DIR`)."""
        self.shard_size = shard_size
        self._clock = clock or SystemClock()
        self._connector = ShardConnector(
            ConnectionSettings(
                url=url,
                ping_interval_s=ping_interval_s,
                pong_timeout_s=pong_timeout_s or min(5.0, ping_interval_s),
                stale_after_s=stale_after_s,
                open_timeout_s=open_timeout_s,
            ),
            owner=self,
            backoff=backoff,
            clock=self._clock,
            connect=connect,
            metrics=metrics,
        )
        self._wanted: dict[str, set[str]] = {}
        self._shard_of: dict[str, Shard] = {}
        self.shards: list[Shard] = []
        self._tg: asyncio.TaskGroup | None = None
        self._resync_q: asyncio.Queue[str] = asyncio.Queue()
        self._resync_queued: set[str] = set()
        self._resync_pending: set[str] = set()
        self._stats = FrameStats(self._clock.monotonic)
        self._rest_malformed = rest_malformed or MalformedLog(
            "rest", metrics=metrics, monotonic=self._clock.monotonic
        )
        """Told of every REST `/book` body refused (an out-of-bound level)."""
        self._resyncs = 0
        self.last_frame_ns = 0
        """`time.perf_counter_ns()` when the latest frame arrived (tick-to-order benchmark)."""
        self._handlers: dict[str, Handler] = {
            "book": self._on_book,
            "price_change": self._on_price_change,
            "tick_size_change": self._on_tick_size_change,
            "last_trade_price": self._on_last_trade_price,
            "best_bid_ask": self._on_best_bid_ask,
            "new_market": self._on_ignored,
            "market_resolved": self._on_market_resolved,
        }

    @property
    def url(self) -> str:
        """The market websocket URL."""
        return self._connector.settings.url

    @property
    def ping_interval_s(self) -> float:
        """Each shard sends `PING` at least this often."""
        return self._connector.settings.ping_interval_s

    @property
    def pong_timeout_s(self) -> float:
        """A shard whose `PING` gets no `PONG` within this is reconnected."""
        return self._connector.settings.pong_timeout_s

    @property
    def stale_after_s(self) -> float:
        """Silence after which a shard is stalled (and unhealthy)."""
        return self._connector.settings.stale_after_s

    # --- what to watch -------------------------------------------------------------------
    def watch(self, owner: str, token_ids: Iterable[str]) -> None:
        """Set the tokens `owner` needs; the feed subscribes the union of all owners."""
        tokens = set(token_ids)
        if tokens:
            self._wanted[owner] = tokens
        else:
            self._wanted.pop(owner, None)
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
        if self.tap is not None and want != current:
            self.tap.watching(sorted(want))
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
        # Shards are reused once they have room again, so there are never more of them than
        # the most tokens ever watched at once needs.
        for s in self.shards:
            if len(s.assets) < self.shard_size:
                return s
        s = Shard(len(self.shards))
        self.shards.append(s)
        if self._tg is not None:
            s.task = self._tg.create_task(self._connector.run(s), name=s.name)
        return s

    # --- service -------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every shard, the resync worker and the gauges until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for s in self.shards:
                    s.task = tg.create_task(self._connector.run(s), name=s.name)
                tg.create_task(self._resync_worker(), name=f"feed:{FEED}:resync")
                tg.create_task(self._gauges(), name=f"feed:{FEED}:gauges")
        finally:
            self._tg = None
            for s in self.shards:
                s.link.connected = False
                s.ws = None
            self.store.mark_all_unusable(list(self._shard_of))

    def shard_connected(self, shard: Shard) -> None:
        """A shard connected and subscribed: update the connected gauge."""
        with self._tracing.span("market_feed_connected", assets=len(shard.assets)):
            self._set_connected_gauge()
        if self.tap is not None:
            self.tap.connected(shard.index, len(shard.subscribed))

    def shard_lost(self, shard: Shard) -> int:
        """A shard's connection ended: its books wait for new snapshots. Return how many."""
        self._set_connected_gauge()
        if self.tap is not None:
            self.tap.lost(shard.index, len(shard.assets))
        return len(self.store.mark_all_unusable(list(shard.assets)))

    # --- frames --------------------------------------------------------------------------
    def handle_frame(self, data: str | bytes, shard: Shard) -> None:
        """Parse and apply one websocket frame; never raises for bad input."""
        self.last_frame_ns = time.perf_counter_ns()
        if self.tap is not None:
            self.tap.frame(data, shard.index)
        now = self._clock.monotonic()
        shard.link.last_frame = now
        if data == PONG or data == b"PONG":
            shard.on_pong()
            self._stats.count("pong")
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._stats.not_json(data)
            return
        shard.on_data(now)
        touched: set[str] = set()
        try:
            if type(obj) is list:  # the venue batches bursts into one array frame
                for ev in obj:
                    self._dispatch(ev, touched, now, shard)
            else:
                self._dispatch(obj, touched, now, shard)
        except Exception:  # the frame boundary: a bug here must not stop the feed
            self._stats.malformed += 1
            log.exception("feed_frame_failed")
        if touched:
            self.store.notify(touched)

    def _dispatch(self, ev: Any, touched: set[str], now: float, shard: Shard) -> None:
        stats = self._stats
        if type(ev) is not dict:
            stats.bad("event is not an object", ev)
            return
        raw = ev.get("event_type")
        et = raw if type(raw) is str else ""
        handler = self._handlers.get(et)
        if handler is None:
            untyped = untyped_event_type(ev)
            if untyped is None:
                stats.count("unknown")
                return
            et, handler = untyped, self._handlers[untyped]
        counts = stats.events  # stats.count(et), inlined: once per event
        counts[et] = counts.get(et, 0) + 1
        try:
            handler(ev, touched, now, shard)
        except PARSE_ERRORS as e:
            stats.bad(f"bad {et}: {e}", ev)

    @property
    def malformed(self) -> int:
        """Frames and events that could not be parsed since start."""
        return self._stats.malformed

    def counts(self) -> dict[str, int]:
        """Events received by type since start (`pong`, `empty`, `unknown` included)."""
        return dict(self._stats.events)

    # --- applying events to books --------------------------------------------------------
    def _on_book(self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard) -> None:
        token = parse_token(ev.get("asset_id"))
        book = self.store.get(token)
        if book is None:
            return  # not (or no longer) watched
        try:
            snap = parse_book(ev, token)
        except PARSE_ERRORS:
            self._doubt(book, "bad_snapshot", touched)
            raise
        book.replace(
            snap.bids,
            snap.asks,
            book_hash=snap.book_hash,
            timestamp_ms=snap.timestamp_ms,
            now=now,
        )
        book.link = shard.link
        shard.awaiting.pop(token, None)
        self._resync_pending.discard(token)
        if snap.tick_size is not None:
            self._set_tick(book, snap.tick_size)
        if snap.last_trade_price is not None:
            book.last_trade_price = snap.last_trade_price
        if not book.usable:
            self._doubt(book, "crossed_snapshot", touched)
        touched.add(token)

    def _on_price_change(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        try:
            changes, bests = parse_price_change(ev)  # all of it first: no half-applied event
        except PARSE_ERRORS:
            # The event was refused whole, so the books it names missed an update: they wait
            # for a fresh snapshot rather than trade on levels that may be wrong.
            for token in price_change_tokens(ev):
                book = self.store.get(token)
                if book is not None and book.snapshots:
                    self._doubt(book, "bad_delta", touched)
            raise
        changed: set[str] = set()
        store = self.store
        for token, is_bid, price, size in changes:
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
                venue = bests[token]
                if venue is None:
                    self._doubt(book, "bad_best_price", touched)
                else:
                    ob, oa = book.best_bid(), book.best_ask()
                    if (ob[0] if ob else None) != venue[0] or (oa[0] if oa else None) != venue[1]:
                        self._doubt(book, "best_price_mismatch", touched)
            touched.add(token)

    def _on_tick_size_change(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        change = parse_tick_size_change(ev)
        book = self.store.get(change.token_id)
        if book is None:
            return
        self._set_tick(book, change.tick_size, force=True)
        touched.add(change.token_id)

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
        trade = parse_last_trade_price(ev)
        book = self.store.get(trade.token_id)
        if book is not None:
            book.last_trade_price = trade.price

    def _on_best_bid_ask(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        parse_best_bid_ask(ev)  # validated and counted; books are kept from snapshots and deltas

    def _on_ignored(self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard) -> None:
        return None

    def _on_market_resolved(
        self, ev: dict[str, Any], touched: set[str], now: float, shard: Shard
    ) -> None:
        resolved = parse_market_resolved(ev)
        for a in resolved.token_ids:
            book = self.store.get(a)
            if book is not None and book.usable:
                book.usable = False  # resolved: no more trading, whatever the book says
                touched.add(book.token_id)
        log.info("market_resolved", market=resolved.market, winner=resolved.winner)
        if self.on_resolved is not None:
            self.on_resolved(resolved.market, resolved.token_ids, resolved.winner)

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
        if token_id not in self._resync_queued:
            # A snapshot clears the pending mark while the token may still be queued; one
            # queued entry per token is enough, and keeps the queue no longer than the store.
            self._resync_queued.add(token_id)
            self._resync_q.put_nowait(token_id)
        log.info("book_resync_requested", token_id=token_id, reason=reason)

    async def _resync_worker(self) -> None:
        while True:
            token = await self._resync_q.get()
            self._resync_queued.discard(token)
            try:
                await self._tracing.within("book_resync", self._resync(token), token_id=token)
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
            except FeedError as e:
                log.warning("book_resync_failed", token_id=token, attempt=attempt, error=str(e))
                ok = False
            else:
                try:
                    ok = self.apply_rest_book(
                        token, payload, trust_hash=attempt == _RESYNC_ATTEMPTS
                    )
                except PARSE_ERRORS as e:
                    self._rest_malformed(f"bad /book: {e}", payload)
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
        snap = parse_rest_book(payload, token)
        if snap.timestamp_ms and book.timestamp_ms and snap.timestamp_ms < book.timestamp_ms:
            return False  # older than what we already hold
        book.replace(
            snap.bids,
            snap.asks,
            book_hash=snap.book_hash,
            timestamp_ms=snap.timestamp_ms,
            now=self._clock.monotonic(),
        )
        tick = payload.get("tick_size")
        if tick not in (None, ""):
            self._set_tick(book, parse_tick(tick))
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
        self._stats.flush(m, FEED)
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
