"""Market-channel frame parsing: wire frames and events in, typed events and counts out.

Owns every schema the market websocket has spoken and what counts as malformed:

* a frame is the text `PONG`, one JSON object, or a JSON array of objects (the venue batches
  bursts); anything else that is not JSON is malformed, and a blank frame is only counted;
* `book` snapshots (`bids`/`asks`, or `buys`/`sells` with no `event_type` in early captures);
* `price_change` in the current schema (a `price_changes` list, one entry per asset, with the
  venue's best bid/ask), the interim one (a `changes` list for one asset, Oct 2024 - Sep 2025)
  and the legacy flat one (one level per message);
* `tick_size_change`, `last_trade_price`, `best_bid_ask`, `market_resolved`; `new_market` is
  known and ignored; other event types are counted as `unknown`.

Parsing never touches a book: each `parse_*` function returns a typed event or raises one of
`PARSE_ERRORS`, and `FrameStats` counts events by type and malformed input, logging malformed
samples at most every few seconds. Prices, sizes and levels follow the book's rules
(`venue.order_book`); timestamps are read by the shared lenient parsers (`venue.parse`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from venue.order_book import BadLevel, parse_levels, parse_price, parse_size
from venue.parse import MalformedLog, unix_ms

if TYPE_CHECKING:
    from observability.metrics import Metrics

PONG: Final = "PONG"
PING: Final = "PING"
PARSE_ERRORS: Final = (BadLevel, KeyError, TypeError, ValueError, InvalidOperation, AttributeError)
"""What a malformed event raises; anything else escaping a handler is a bug in the feed."""
MALFORMED_LOG_EVERY_S: Final = 5.0

LevelChange = tuple[str, bool, Decimal, Decimal]
"""One level update: (token id, is bid, price, size); size 0 removes the level."""
VenueBest = tuple[Decimal | None, Decimal | None] | None
"""The venue's (best bid, best ask) after a change, None for an empty side; None if unparseable."""


@dataclass(slots=True)
class BookSnapshot:
    """A full book for one token (websocket `book` or REST `/book`)."""

    token_id: str
    bids: dict[Decimal, Decimal]
    asks: dict[Decimal, Decimal]
    timestamp_ms: int
    book_hash: str
    tick_size: Decimal | None = None
    last_trade_price: Decimal | None = None


PriceChange = tuple[list[LevelChange], dict[str, VenueBest]]
"""One `price_change` event: its level updates, all parsed before any is applied, and the
venue's best bid/ask per token for the entries that carried both. A plain tuple: this is the
hot path, and a tuple costs a fraction of an object to build."""


@dataclass(slots=True)
class TickSizeChange:
    """The market's tick size changed (prices near 0 or 1 move to a finer grid)."""

    token_id: str
    tick_size: Decimal


@dataclass(slots=True)
class LastTradePrice:
    """The price of the latest trade on a token."""

    token_id: str
    price: Decimal


@dataclass(slots=True)
class BestBidAsk:
    """The venue's best bid/ask for a token (validated; the books are kept from deltas)."""

    token_id: str
    best_bid: Decimal | None
    best_ask: Decimal | None


@dataclass(slots=True)
class MarketResolved:
    """A market resolved: its books will not trade again."""

    market: str
    token_ids: list[str]
    winner: str | None = None


# --- fields ------------------------------------------------------------------------------
def parse_token(raw: Any) -> str:
    """Return an asset (token) id: a non-empty string."""
    if not isinstance(raw, str) or not raw:
        raise ValueError("asset_id must be a non-empty string")
    return raw


def parse_tick(raw: Any) -> Decimal:
    """Return a tick size in (0, 1); the venue writes it as a string, some captures as a number."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(raw)
    return parse_price(raw)


def parse_venue_best(raw: Any) -> Decimal | None:
    """Parse a `best_bid`/`best_ask` field; the venue writes "0"/"1" for an empty side."""
    if raw in ("0", "1"):
        return None
    return parse_price(raw)


def parse_side(side: Any) -> bool:
    """Return True for a bid (`BUY`), False for an ask (`SELL`)."""
    if side == "BUY":
        return True
    if side == "SELL":
        return False
    raise BadLevel(f"side must be BUY or SELL, got {str(side)[:20]!r}")


def _bests(bid: Any, ask: Any) -> VenueBest:
    try:
        return parse_venue_best(bid), parse_venue_best(ask)
    except PARSE_ERRORS:
        return None


# --- frames and events -------------------------------------------------------------------
def untyped_event_type(ev: dict[str, Any]) -> str | None:
    """Name an event that carries no usable `event_type`: early snapshots had none."""
    if ev.get("event_type") is None and ("bids" in ev or "buys" in ev):
        return "book"
    return None


def parse_book(ev: dict[str, Any], token_id: str) -> BookSnapshot:
    """Parse a websocket `book` snapshot for `token_id` (its `asset_id`, already parsed)."""
    bids = parse_levels(ev["bids"] if "bids" in ev else ev.get("buys"))
    asks = parse_levels(ev["asks"] if "asks" in ev else ev.get("sells"))
    ts = unix_ms(ev.get("timestamp"))
    tick = ev.get("tick_size")
    new_tick = parse_tick(tick) if tick not in (None, "") else None
    book_hash = ev.get("hash")
    ltp = ev.get("last_trade_price")
    last: Decimal | None = None
    if ltp:
        try:
            last = parse_price(ltp)
        except BadLevel:
            last = None  # an odd last trade price does not spoil the snapshot
    return BookSnapshot(
        token_id,
        bids,
        asks,
        ts,
        book_hash if isinstance(book_hash, str) else "",
        new_tick,
        last,
    )


def parse_rest_book(payload: Any, token_id: str) -> BookSnapshot:
    """Parse the levels, timestamp and hash of a REST `/book` body (tick size not included)."""
    bids = parse_levels(payload.get("bids"))
    asks = parse_levels(payload.get("asks"))
    ts = unix_ms(payload.get("timestamp"))
    h = payload.get("hash")
    return BookSnapshot(token_id, bids, asks, ts, h if isinstance(h, str) else "")


def parse_price_change(ev: dict[str, Any]) -> PriceChange:
    """Parse a `price_change` in any of its three schemas; one bad entry rejects the event."""
    parsed: list[LevelChange] = []
    bests: dict[str, VenueBest] = {}
    if "price_changes" in ev:  # current schema (since 2025-09-15)
        entries = ev["price_changes"]
        if type(entries) is not list:
            raise BadLevel("price_changes must be a list")
        for e in entries:
            token = parse_token(e["asset_id"])
            parsed.append(
                (token, parse_side(e["side"]), parse_price(e["price"]), parse_size(e["size"]))
            )
            if "best_bid" in e and "best_ask" in e:
                bests[token] = _bests(e["best_bid"], e["best_ask"])
    elif "changes" in ev:  # interim schema (Oct 2024 - Sep 2025)
        token = parse_token(ev["asset_id"])
        changes = ev["changes"]
        if type(changes) is not list:
            raise BadLevel("changes must be a list")
        for c in changes:
            parsed.append(
                (token, parse_side(c["side"]), parse_price(c["price"]), parse_size(c["size"]))
            )
    else:  # legacy flat schema: one level per message
        token = parse_token(ev["asset_id"])
        parsed.append(
            (token, parse_side(ev["side"]), parse_price(ev["price"]), parse_size(ev["size"]))
        )
    return parsed, bests


def price_change_tokens(ev: dict[str, Any]) -> set[str]:
    """The asset ids a `price_change` names, in any schema, readable or not (for doubt)."""
    out: set[str] = set()
    if type(ev.get("asset_id")) is str:
        out.add(ev["asset_id"])
    entries = ev.get("price_changes")
    if type(entries) is list:
        out.update(
            e["asset_id"] for e in entries if type(e) is dict and type(e.get("asset_id")) is str
        )
    return out


def parse_tick_size_change(ev: dict[str, Any]) -> TickSizeChange:
    """Parse a `tick_size_change`."""
    return TickSizeChange(parse_token(ev["asset_id"]), parse_tick(ev["new_tick_size"]))


def parse_last_trade_price(ev: dict[str, Any]) -> LastTradePrice:
    """Parse a `last_trade_price`."""
    return LastTradePrice(parse_token(ev["asset_id"]), parse_price(ev["price"]))


def parse_best_bid_ask(ev: dict[str, Any]) -> BestBidAsk:
    """Parse a `best_bid_ask`."""
    return BestBidAsk(
        parse_token(ev["asset_id"]),
        parse_venue_best(ev["best_bid"]),
        parse_venue_best(ev["best_ask"]),
    )


def parse_market_resolved(ev: dict[str, Any]) -> MarketResolved:
    """Parse a `market_resolved`; asset ids that are not strings are left out."""
    assets = ev.get("assets_ids")
    if type(assets) is not list:
        raise BadLevel("assets_ids must be a list")
    tokens = [a for a in assets if type(a) is str]
    winner = ev.get("winning_asset_id")
    return MarketResolved(
        str(ev.get("market", ""))[:66],
        tokens,
        winner if type(winner) is str and winner in tokens else None,
    )


# --- counting ----------------------------------------------------------------------------
class FrameStats:
    """Events received by type and malformed input since start; rate-limited malformed logs.

    Counters are keyed by the known event types plus `pong`, `empty` and `unknown`, so they stay
    a handful of entries whatever the venue sends.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.events: dict[str, int] = {}
        self.malformed = 0
        # Counted here and pushed to Prometheus in batches by `flush` (the hot path).
        self._log = MalformedLog("market", monotonic=monotonic, every_s=MALFORMED_LOG_EVERY_S)
        self._flushed: dict[str, int] = {}
        self._malformed_flushed = 0

    def count(self, event_type: str) -> None:
        """Count one event of `event_type`."""
        c = self.events
        c[event_type] = c.get(event_type, 0) + 1

    def not_json(self, data: str | bytes) -> None:
        """Count a frame that is not JSON: `empty` when blank, malformed otherwise."""
        if not data.strip():
            self.count("empty")
        else:
            self.bad("frame is not JSON", data)

    def bad(self, why: str, sample: Any) -> None:
        """Count a malformed frame or event; log a sample unless one was logged recently."""
        self.malformed += 1
        self._log(why, sample, counted=True)

    def flush(self, metrics: Metrics, feed: str) -> None:
        """Add what was counted since the last flush to the Prometheus counters."""
        for et, n in self.events.items():
            done = self._flushed.get(et, 0)
            if n > done:
                metrics.feed_messages_total.labels(feed, et).inc(n - done)
                self._flushed[et] = n
        if self.malformed > self._malformed_flushed:
            metrics.feed_malformed_total.labels(feed).inc(self.malformed - self._malformed_flushed)
            self._malformed_flushed = self.malformed
