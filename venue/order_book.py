"""Local L2 order books fed by the market websocket: snapshots, deltas, usability, depth.

A book is *usable* (no trading on stale data) only when all of these hold:

* it received a full snapshot (websocket `book` or REST `/book`) since it was last invalidated;
* nothing has cast doubt on it since (crossed levels, a bad delta, a best-price mismatch);
* the connection that feeds it is alive: some frame (data or `PONG`) arrived within
  `stale_after_s`.

Wire levels arrive best-LAST (bids ascending, asks descending) but nothing here relies on the
order. Levels live in `SortedDict`s keyed by price, so the best bid/ask is an O(1) peek and a
delta is O(log n); no scan ever happens on the hot path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson
from sortedcontainers import SortedDict

from models import ONE, ZERO, Level
from venue import parse

BookListener = Callable[[Collection[str]], None]
"""Called with the token ids whose book changed (levels, usability or tick size)."""


_BAD_NUMBER: Final = (InvalidOperation, TypeError, ValueError)
_TEXT_MAX: Final = parse.MAX_NUMBER_TEXT
_SIZE_MAX: Final = parse.MAX_SHARES
_ADJUSTED_MIN: Final = parse.MIN_ADJUSTED


class BadLevel(ValueError):
    """A price level that cannot be on a Polymarket book (bad number, price outside (0, 1), size
    negative or above `venue.parse.MAX_SHARES`)."""


def parse_price(raw: Any) -> Decimal:
    """Return a price strictly inside (0, 1), from a decimal string (".48" is accepted).

    The bounds are `venue.parse`'s (NaN, infinities and overlong text are refused too). The
    common case is checked inline, this being the feed's hot path; anything it does not accept
    goes through `venue.parse.price` for the verdict and its message."""
    if not isinstance(raw, str):
        raise BadLevel("price must be a string")
    if len(raw) <= _TEXT_MAX:
        try:
            p = Decimal(raw)
            if ZERO < p < ONE and p.adjusted() >= _ADJUSTED_MIN:
                return p
        except _BAD_NUMBER:
            pass
    try:
        p = parse.price(raw)
    except parse.Unreadable as e:
        raise BadLevel(str(e)) from None
    raise BadLevel(f"price {raw[:40]!r} outside (0, 1)")


def parse_size(raw: Any) -> Decimal:
    """Return a size in [0, `venue.parse.MAX_SHARES`] (0 removes a level), from a decimal
    string; the same fast path as `parse_price`."""
    if not isinstance(raw, str):
        raise BadLevel("size must be a string")
    if len(raw) <= _TEXT_MAX:
        try:
            s = Decimal(raw)
            if ZERO <= s <= _SIZE_MAX and (not s or s.adjusted() >= _ADJUSTED_MIN):
                return s
        except _BAD_NUMBER:
            pass
    try:
        return parse.size(raw)
    except parse.Unreadable as e:
        raise BadLevel(str(e)) from None


def parse_levels(raw: Any) -> dict[Decimal, Decimal]:
    """Parse `[{"price": "0.5", "size": "10"}, ...]` in any order; zero sizes are dropped."""
    if not isinstance(raw, list):
        raise BadLevel("levels must be a list")
    out: dict[Decimal, Decimal] = {}
    for lvl in raw:
        if not isinstance(lvl, dict):
            raise BadLevel("a level must be an object")
        price = parse_price(lvl.get("price"))
        size = parse_size(lvl.get("size"))
        if size:
            out[price] = size
    return out


@dataclass(slots=True)
class Link:
    """Liveness of the connection feeding a set of books (one per websocket shard)."""

    last_frame: float = float("-inf")
    connected: bool = False


class OrderBook:
    """One token's book. Bids and asks are `SortedDict[price, size]`, both ascending by price."""

    __slots__ = (
        "asks",
        "bids",
        "hash",
        "last_trade_price",
        "link",
        "market",
        "snapshot_at",
        "snapshots",
        "tick_size",
        "timestamp_ms",
        "token_id",
        "updated_at",
        "usable",
    )

    def __init__(self, token_id: str, market: str = "", tick_size: Decimal | None = None) -> None:
        self.token_id = token_id
        self.market = market
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.hash = ""
        self.timestamp_ms = 0
        self.tick_size = tick_size
        self.last_trade_price: Decimal | None = None
        self.usable = False
        self.snapshot_at = float("-inf")
        self.updated_at = float("-inf")
        self.snapshots = 0
        self.link: Link | None = None

    # --- reads ---------------------------------------------------------------------------
    def best_bid(self) -> Level | None:
        """Return the highest bid (price, size), or None if there are no bids."""
        if not self.bids:
            return None
        p, s = self.bids.peekitem(-1)
        return p, s

    def best_ask(self) -> Level | None:
        """Return the lowest ask (price, size), or None if there are no asks."""
        if not self.asks:
            return None
        p, s = self.asks.peekitem(0)
        return p, s

    def crossed(self) -> bool:
        """Return True if the best bid is at or above the best ask (an impossible book)."""
        if not self.bids or not self.asks:
            return False
        bid: Decimal = self.bids.peekitem(-1)[0]
        ask: Decimal = self.asks.peekitem(0)[0]
        return bid >= ask

    def ask_levels(self) -> list[Level]:
        """Asks, lowest price first."""
        return list(self.asks.items())

    def bid_levels(self) -> list[Level]:
        """Bids, highest price first."""
        return list(reversed(self.bids.items()))

    def ask_depth_at_or_under(self, max_price: Decimal) -> Decimal:
        """Total ask size at prices <= `max_price` (what a BUY limited there could take)."""
        total = ZERO
        for p in self.asks.irange(maximum=max_price):
            total += self.asks[p]
        return total

    def bid_depth_at_or_over(self, min_price: Decimal) -> Decimal:
        """Total bid size at prices >= `min_price` (what a SELL limited there could hit)."""
        total = ZERO
        for p in self.bids.irange(minimum=min_price):
            total += self.bids[p]
        return total

    # --- writes --------------------------------------------------------------------------
    def replace(
        self,
        bids: Mapping[Decimal, Decimal],
        asks: Mapping[Decimal, Decimal],
        *,
        book_hash: str,
        timestamp_ms: int,
        now: float,
    ) -> None:
        """Install a full snapshot and make the book usable (unless it is crossed)."""
        self.bids = SortedDict(bids)
        self.asks = SortedDict(asks)
        self.hash = book_hash
        self.timestamp_ms = timestamp_ms
        self.snapshot_at = self.updated_at = now
        self.snapshots += 1
        self.usable = not self.crossed()

    def set_level(self, is_bid: bool, price: Decimal, size: Decimal) -> None:
        """Set the aggregate size at `price` (0 removes the level)."""
        side = self.bids if is_bid else self.asks
        if size:
            side[price] = size
        else:
            side.pop(price, None)

    def invariant_problems(self) -> list[str]:
        """Return what is wrong with this book (for tests and assertions); [] when sound."""
        problems = []
        for name, side in (("bid", self.bids), ("ask", self.asks)):
            for p, s in side.items():
                if not ZERO < p < ONE:
                    problems.append(f"{name} price {p} outside (0, 1)")
                if not s > ZERO:
                    problems.append(f"{name} size {s} at {p} not positive")
        if self.usable and self.crossed():
            problems.append("usable book is crossed")
        bb, ba = self.best_bid(), self.best_ask()
        if bb is not None and bb[0] != max(self.bids):
            problems.append("best bid is not the highest bid")
        if ba is not None and ba[0] != min(self.asks):
            problems.append("best ask is not the lowest ask")
        return problems


@dataclass(frozen=True, slots=True)
class BookStats:
    total: int
    usable: int
    max_age_s: float


class BookStore:
    """Every watched token's `OrderBook`; implements `models.BookSource` for the executor.

    The market feed writes; strategies and the paper broker read. Listeners are told which
    tokens changed after each websocket frame, so a strategy evaluates only those.
    """

    def __init__(
        self, *, stale_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be > 0")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._books: dict[str, OrderBook] = {}
        self._listeners: list[BookListener] = []

    # --- registry ------------------------------------------------------------------------
    def ensure(
        self, token_id: str, *, market: str = "", tick_size: Decimal | None = None
    ) -> OrderBook:
        """Return the book for `token_id`, creating an empty (unusable) one if needed."""
        b = self._books.get(token_id)
        if b is None:
            b = self._books[token_id] = OrderBook(token_id, market, tick_size)
        else:
            if market and not b.market:
                b.market = market
            if tick_size is not None and b.tick_size is None:
                b.tick_size = tick_size
        return b

    def remove(self, token_id: str) -> None:
        """Forget a token's book (it is no longer watched)."""
        self._books.pop(token_id, None)

    def get(self, token_id: str) -> OrderBook | None:
        """Return the book object, usable or not (None if the token is not watched)."""
        return self._books.get(token_id)

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._books

    def __len__(self) -> int:
        return len(self._books)

    def token_ids(self) -> list[str]:
        return list(self._books)

    # --- usability -----------------------------------------------------------------------
    def is_usable(self, token_id: str) -> bool:
        """Return True if `token_id` has a book that may be traded on right now."""
        b = self._books.get(token_id)
        return b is not None and self._usable(b, self._clock())

    def _usable(self, b: OrderBook, now: float) -> bool:
        if not b.usable:
            return False
        link = b.link
        return link is None or (link.connected and now - link.last_frame <= self.stale_after_s)

    def usable_book(self, token_id: str) -> OrderBook | None:
        """Return the book if it is usable, else None (the strategy-facing read)."""
        b = self._books.get(token_id)
        if b is None or not self._usable(b, self._clock()):
            return None
        return b

    def mark_unusable(self, token_id: str) -> bool:
        """Mark one book unusable until its next snapshot; return True if it was usable."""
        b = self._books.get(token_id)
        if b is None or not b.usable:
            return False
        b.usable = False
        return True

    def mark_all_unusable(self, token_ids: Iterable[str]) -> list[str]:
        """Mark books unusable until their next snapshot; notify listeners; return those hit."""
        hit = [t for t in token_ids if self.mark_unusable(t)]
        if hit:
            self.notify(hit)
        return hit

    # --- BookSource ----------------------------------------------------------------------
    def asks(self, token_id: str) -> list[Level] | None:
        """Ask levels, lowest first, or None if the book is not usable."""
        b = self.usable_book(token_id)
        return None if b is None else b.ask_levels()

    def bids(self, token_id: str) -> list[Level] | None:
        """Bid levels, highest first, or None if the book is not usable."""
        b = self.usable_book(token_id)
        return None if b is None else b.bid_levels()

    def best_ask(self, token_id: str) -> Level | None:
        b = self.usable_book(token_id)
        return None if b is None else b.best_ask()

    def best_bid(self, token_id: str) -> Level | None:
        b = self.usable_book(token_id)
        return None if b is None else b.best_bid()

    def ask_depth_at_or_under(self, token_id: str, max_price: Decimal) -> Decimal | None:
        """Ask size at prices <= `max_price` on a usable book, else None."""
        b = self.usable_book(token_id)
        return None if b is None else b.ask_depth_at_or_under(max_price)

    def bid_depth_at_or_over(self, token_id: str, min_price: Decimal) -> Decimal | None:
        """Bid size at prices >= `min_price` on a usable book, else None."""
        b = self.usable_book(token_id)
        return None if b is None else b.bid_depth_at_or_over(min_price)

    # --- listeners -----------------------------------------------------------------------
    def add_listener(self, fn: BookListener) -> None:
        """Call `fn(token_ids)` whenever books change; adding the same function twice is a no-op."""
        if fn not in self._listeners:
            self._listeners.append(fn)

    def remove_listener(self, fn: BookListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def notify(self, token_ids: Collection[str]) -> None:
        """Tell every listener that these books changed."""
        for fn in self._listeners:
            fn(token_ids)

    # --- stats ---------------------------------------------------------------------------
    def stats(self) -> BookStats:
        """Count books, usable books and the age of the oldest update among usable ones."""
        now = self._clock()
        usable = 0
        oldest = 0.0
        for b in self._books.values():
            if self._usable(b, now):
                usable += 1
                oldest = max(oldest, now - b.updated_at)
        return BookStats(total=len(self._books), usable=usable, max_age_s=oldest)


# --- REST /book hash ------------------------------------------------------------------------

_HASH_KEYS: Final[Sequence[str]] = (
    "market",
    "asset_id",
    "timestamp",
    "hash",
    "bids",
    "asks",
    "min_order_size",
    "tick_size",
    "neg_risk",
    "last_trade_price",
)


def rest_book_hash(payload: Mapping[str, Any]) -> str | None:
    """Return the SHA-1 py-clob-client computes for a REST `/book` body, or None if uncheckable.

    The digest covers compact JSON of the keys above, in that order, with `hash` blanked, as
    `py_clob_client_v2.utilities.generate_orderbook_summary_hash` does. Payloads missing any
    key (older captures) cannot be checked.
    """
    if any(k not in payload for k in _HASH_KEYS):
        return None
    body = {k: ("" if k == "hash" else payload[k]) for k in _HASH_KEYS}
    return hashlib.sha1(orjson.dumps(body)).hexdigest()
