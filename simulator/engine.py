"""The matching engine and authoritative ledger of the venue simulator.

Price-time priority per token. Only orders on the *same* token match each other: the engine
does not mint (BUY Yes + BUY No) or merge (SELL Yes + SELL No) across the two tokens of a binary
market the way Polymarket's exchange can. Each (taker, maker) fill is one trade with one
`maker_orders` entry; production groups all makers of one taker order into one trade.

Money is `Decimal` throughout. The engine is synchronous and loop-agnostic; it reports what
happened through the `Sink` callbacks, and the simulator turns those into websocket frames.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
ONE = Decimal(1)

Json = dict[str, Any]


_FMT_CACHE: dict[Decimal, str] = {}


def fmt(d: Decimal) -> str:
    """Format a Decimal the way Polymarket prints prices and sizes ("0.5", "100", "192.3")."""
    s = _FMT_CACHE.get(d)
    if s is None:
        s = str(d.quantize(ONE)) if d == d.to_integral_value() else format(d.normalize(), "f")
        if len(_FMT_CACHE) < 100_000:
            _FMT_CACHE[d] = s
    return s


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class OrderError(Exception):
    """A refusal with the production HTTP status and `error` text."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class Order:
    """One order in the ledger (resting, filled, killed or cancelled)."""

    id: str
    owner: str
    maker: str
    signer: str
    token_id: str
    market: str
    outcome: str
    side: str
    price: Decimal
    original_size: Decimal
    order_type: str
    expiration: int
    created_at: int
    post_only: bool = False
    seeded: bool = False
    size_matched: Decimal = ZERO
    status: str = "LIVE"
    associate_trades: list[str] = field(default_factory=list)
    seq: int = 0
    maker_amount: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.original_size - self.size_matched

    def rest_dict(self) -> Json:
        """The REST OpenOrder shape (`/data/orders`, `/data/order/{id}`)."""
        return {
            "id": self.id,
            "status": self.status,
            "owner": self.owner,
            "maker_address": self.maker,
            "market": self.market,
            "asset_id": self.token_id,
            "side": self.side,
            "original_size": fmt(self.original_size),
            "size_matched": fmt(self.size_matched),
            "price": fmt(self.price),
            "outcome": self.outcome,
            "expiration": str(self.expiration),
            "order_type": self.order_type,
            "associate_trades": list(self.associate_trades),
            "created_at": self.created_at,
        }

    def ledger_dict(self) -> Json:
        d = self.rest_dict()
        d["maker"] = self.maker
        d["token_id"] = self.token_id
        d["post_only"] = self.post_only
        d["seeded"] = self.seeded
        return d

    def ws_dict(self, kind: str, status: str | None = None) -> Json:
        """The user-channel `order` event."""
        return {
            "asset_id": self.token_id,
            "associate_trades": list(self.associate_trades) if self.associate_trades else None,
            "created_at": str(self.created_at),
            "event_type": "order",
            "expiration": str(self.expiration),
            "id": self.id,
            "maker_address": self.maker,
            "market": self.market,
            "order_owner": self.owner,
            "order_type": self.order_type,
            "original_size": fmt(self.original_size),
            "outcome": self.outcome,
            "owner": self.owner,
            "price": fmt(self.price),
            "side": self.side,
            "size_matched": fmt(self.size_matched),
            "status": status or self.status,
            "timestamp": str(now_ms()),
            "type": kind,
        }


@dataclass(slots=True)
class Trade:
    """One fill between a taker order and one resting maker order."""

    id: str
    taker_order: Order
    maker_order: Order
    size: Decimal
    price: Decimal
    match_time: int
    transaction_hash: str
    status: str = "MATCHED"
    last_update: int = 0

    def _maker_entry(self) -> Json:
        m = self.maker_order
        return {
            "order_id": m.id,
            "owner": m.owner,
            "maker_address": m.maker,
            "matched_amount": fmt(self.size),
            "price": fmt(self.price),
            "fee_rate_bps": "0",
            "asset_id": m.token_id,
            "outcome": m.outcome,
            "side": m.side,
        }

    def rest_dict(self, viewer_owner: str | None = None) -> Json:
        """The REST `/data/trades` row, seen by the taker (TAKER) or the maker (MAKER)."""
        t = self.taker_order
        is_maker = viewer_owner is not None and viewer_owner == self.maker_order.owner
        is_maker = is_maker and viewer_owner != t.owner
        return {
            "id": self.id,
            "taker_order_id": t.id,
            "market": t.market,
            "asset_id": t.token_id,
            "side": t.side,
            "size": fmt(self.size),
            "fee_rate_bps": "0",
            "price": fmt(self.price),
            "status": self.status,
            "match_time": str(self.match_time),
            "last_update": str(self.last_update or self.match_time),
            "outcome": t.outcome,
            "bucket_index": 0,
            "owner": self.maker_order.owner if is_maker else t.owner,
            "maker_address": self.maker_order.maker if is_maker else t.maker,
            "transaction_hash": self.transaction_hash,
            "maker_orders": [self._maker_entry()],
            "trader_side": "MAKER" if is_maker else "TAKER",
        }

    def ws_dict(self, viewer_owner: str) -> Json:
        """The user-channel `trade` event for one side of the fill."""
        d = self.rest_dict(viewer_owner)
        del d["match_time"]
        d["matchtime"] = str(self.match_time)
        d["bucket_index"] = "0"
        d["event_type"] = "trade"
        d["type"] = "TRADE"
        d["trade_owner"] = d["owner"]
        d["timestamp"] = str(now_ms())
        return d


class Book:
    """One token's order book: FIFO queues per price level and aggregate level sizes."""

    __slots__ = (
        "ask_levels",
        "ask_prices",
        "asks",
        "bid_levels",
        "bid_prices",
        "bids",
        "last_trade_price",
        "market",
        "token_id",
    )

    def __init__(self, token_id: str, market: str) -> None:
        self.token_id = token_id
        self.market = market
        self.bids: dict[Decimal, deque[Order]] = {}
        self.asks: dict[Decimal, deque[Order]] = {}
        self.bid_prices: list[Decimal] = []  # ascending
        self.ask_prices: list[Decimal] = []  # ascending
        self.bid_levels: dict[Decimal, Decimal] = {}
        self.ask_levels: dict[Decimal, Decimal] = {}
        self.last_trade_price: Decimal | None = None

    def best_bid(self) -> Decimal | None:
        return self.bid_prices[-1] if self.bid_prices else None

    def best_ask(self) -> Decimal | None:
        return self.ask_prices[0] if self.ask_prices else None

    def add(self, o: Order) -> Decimal:
        queues, prices, levels = self._side(o.side)
        q = queues.get(o.price)
        if q is None:
            q = queues[o.price] = deque()
            bisect.insort(prices, o.price)
            levels[o.price] = ZERO
        q.append(o)
        levels[o.price] += o.remaining
        return levels[o.price]

    def reduce(self, o: Order, qty: Decimal, remove: bool) -> Decimal:
        """Take `qty` off o's level (and o off its queue if `remove`); return the new level size."""
        queues, prices, levels = self._side(o.side)
        levels[o.price] -= qty
        if remove:
            q = queues[o.price]
            with contextlib.suppress(ValueError):
                q.remove(o)
            if not q:
                del queues[o.price]
                del levels[o.price]
                i = bisect.bisect_left(prices, o.price)
                del prices[i]
                return ZERO
        return levels.get(o.price, ZERO)

    def _side(
        self, side: str
    ) -> tuple[dict[Decimal, deque[Order]], list[Decimal], dict[Decimal, Decimal]]:
        if side == "BUY":
            return self.bids, self.bid_prices, self.bid_levels
        return self.asks, self.ask_prices, self.ask_levels

    def levels_best_last(self) -> tuple[list[Json], list[Json]]:
        """Bids ascending and asks descending: the best level is last on both sides."""
        bl = self.bid_levels
        al = self.ask_levels
        bids = [{"price": fmt(p), "size": fmt(bl[p])} for p in self.bid_prices]
        asks = [{"price": fmt(p), "size": fmt(al[p])} for p in reversed(self.ask_prices)]
        return bids, asks


@dataclass(slots=True)
class LevelChange:
    token_id: str
    price: Decimal
    side: str
    size: Decimal
    order_id: str


class Sink:
    """Receives what the engine did. The simulator overrides these to emit WS events."""

    def level_changes(self, market: str, changes: list[LevelChange]) -> None:
        """Price levels changed (aggregate sizes after the operation)."""

    def order_event(self, order: Order, kind: str, status: str | None = None) -> None:
        """An order was placed, updated by a fill, or cancelled."""

    def trade_event(self, trade: Trade) -> None:
        """A trade was created or moved to a new status."""

    def last_trade(self, token_id: str, price: Decimal, size: Decimal, side: str, tx: str) -> None:
        """A trade printed on `token_id` (taker side)."""

    def book_traded(self, token_id: str) -> None:
        """A trade changed this book; production follows with a `book` snapshot."""


@dataclass(slots=True)
class TokenInfo:
    token_id: str
    condition_id: str
    outcome: str
    index: int


class Engine:
    """Books, orders, trades and balances for every market of the simulator."""

    def __init__(self, rng: random.Random, sink: Sink | None = None) -> None:
        self.rng = rng
        self.sink = sink or Sink()
        self.books: dict[str, Book] = {}
        self.tokens: dict[str, TokenInfo] = {}
        self.orders: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.trades_by_id: dict[str, Trade] = {}
        self.collateral: dict[str, Decimal] = {}
        self.shares: dict[tuple[str, str], Decimal] = {}
        self.reserved_collateral: dict[str, Decimal] = {}
        self.reserved_shares: dict[tuple[str, str], Decimal] = {}
        self._seq = 0
        self.on_rest: Callable[[Order], None] | None = None

    # ids -----------------------------------------------------------------------------------
    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_hash(self) -> str:
        return "0x" + self.rng.getrandbits(256).to_bytes(32, "big").hex()

    # balances ------------------------------------------------------------------------------
    def credit(self, address: str, amount: Decimal) -> None:
        a = address.lower()
        self.collateral[a] = self.collateral.get(a, ZERO) + amount

    def credit_shares(self, address: str, token_id: str, amount: Decimal) -> None:
        k = (address.lower(), token_id)
        self.shares[k] = self.shares.get(k, ZERO) + amount

    def available_collateral(self, address: str) -> Decimal:
        a = address.lower()
        return self.collateral.get(a, ZERO) - self.reserved_collateral.get(a, ZERO)

    def available_shares(self, address: str, token_id: str) -> Decimal:
        k = (address.lower(), token_id)
        return self.shares.get(k, ZERO) - self.reserved_shares.get(k, ZERO)

    def _reserve(self, o: Order, qty: Decimal) -> None:
        """Reserve (qty > 0) or release (qty < 0) funds backing `qty` shares of a resting order."""
        a = o.maker.lower()
        if o.side == "BUY":
            self.reserved_collateral[a] = self.reserved_collateral.get(a, ZERO) + qty * o.price
        else:
            k = (a, o.token_id)
            self.reserved_shares[k] = self.reserved_shares.get(k, ZERO) + qty

    # orders --------------------------------------------------------------------------------
    def fillable(self, side: str, token_id: str, limit: Decimal, size: Decimal) -> Decimal:
        """How much of `size` could fill right now at `limit` or better."""
        book = self.books[token_id]
        got = ZERO
        if side == "BUY":
            for p in book.ask_prices:
                if p > limit:
                    break
                got += book.ask_levels[p]
                if got >= size:
                    return size
        else:
            for p in reversed(book.bid_prices):
                if p < limit:
                    break
                got += book.bid_levels[p]
                if got >= size:
                    return size
        return got

    def crosses(self, side: str, token_id: str, price: Decimal) -> bool:
        book = self.books[token_id]
        if side == "BUY":
            ba = book.best_ask()
            return ba is not None and ba <= price
        bb = book.best_bid()
        return bb is not None and bb >= price

    def submit(self, o: Order) -> list[Trade]:
        """Match `o` and rest any GTC/GTD remainder; FOK/FAK remainders are killed.

        Validation (balance, FOK fillability, post-only) is the caller's job; this only
        executes. Returns the trades created.
        """
        self._seq += 1
        o.seq = self._seq
        self.orders[o.id] = o
        book = self.books[o.token_id]
        changes: list[LevelChange] = []
        trades: list[Trade] = []
        tx = ""
        ts = 0
        if o.side == "BUY":
            prices, queues = book.ask_prices, book.asks
        else:
            prices, queues = book.bid_prices, book.bids
        while o.remaining > 0 and prices:
            p = prices[0] if o.side == "BUY" else prices[-1]
            if (o.side == "BUY" and p > o.price) or (o.side == "SELL" and p < o.price):
                break
            q = queues[p]
            m = q[0]
            qty = min(o.remaining, m.remaining)
            if not tx:
                tx, ts = self.new_hash(), int(time.time())
            self._settle_fill(o, m, qty, p)
            m.size_matched += qty
            o.size_matched += qty
            self._reserve(m, -qty)
            trade = Trade(
                id=self.new_uuid(),
                taker_order=o,
                maker_order=m,
                size=qty,
                price=p,
                match_time=ts,
                transaction_hash=tx,
                last_update=ts,
            )
            trades.append(trade)
            self.trades.append(trade)
            self.trades_by_id[trade.id] = trade
            o.associate_trades.append(trade.id)
            m.associate_trades.append(trade.id)
            full = m.remaining == 0
            if full:
                m.status = "MATCHED"
            new_size = book.reduce(m, qty, remove=full)
            changes.append(LevelChange(o.token_id, p, m.side, new_size, m.id))
            self.sink.order_event(m, "UPDATE")
        book.last_trade_price = trades[-1].price if trades else book.last_trade_price
        if o.remaining > 0 and o.order_type in ("GTC", "GTD"):
            o.status = "LIVE"
            new_size = book.add(o)
            self._reserve(o, o.remaining)
            changes.append(LevelChange(o.token_id, o.price, o.side, new_size, o.id))
            if self.on_rest is not None:
                self.on_rest(o)
        else:
            o.status = "MATCHED" if o.size_matched > 0 else "CANCELED"
        # Order events first (placement), then the trades, as production does.
        if not o.seeded:
            self.sink.order_event(o, "PLACEMENT")
        if o.order_type in ("FOK", "FAK") and o.remaining > 0 and o.size_matched > 0:
            self.sink.order_event(o, "CANCELLATION", "CANCELED")
        for t in trades:
            self.sink.trade_event(t)
        if changes:
            self.sink.level_changes(o.market, changes)
        if trades:
            last = trades[-1]
            size = sum((t.size for t in trades), ZERO)
            self.sink.last_trade(o.token_id, last.price, size, o.side, tx)
            self.sink.book_traded(o.token_id)
        return trades

    def _settle_fill(self, taker: Order, maker: Order, qty: Decimal, price: Decimal) -> None:
        cash = qty * price
        tok = taker.token_id
        buyer, seller = (taker, maker) if taker.side == "BUY" else (maker, taker)
        b, s = buyer.maker.lower(), seller.maker.lower()
        self.collateral[b] = self.collateral.get(b, ZERO) - cash
        self.collateral[s] = self.collateral.get(s, ZERO) + cash
        self.shares[(s, tok)] = self.shares.get((s, tok), ZERO) - qty
        self.shares[(b, tok)] = self.shares.get((b, tok), ZERO) + qty

    def cancel(self, order_id: str, status: str = "CANCELED") -> Order | None:
        """Cancel a resting order; return it, or None if it is not open."""
        o = self.orders.get(order_id)
        if o is None or o.status != "LIVE":
            return None
        book = self.books[o.token_id]
        rem = o.remaining
        new_size = book.reduce(o, rem, remove=True)
        self._reserve(o, -rem)
        o.status = "CANCELED"
        self.sink.order_event(o, "CANCELLATION", status)
        self.sink.level_changes(
            o.market, [LevelChange(o.token_id, o.price, o.side, new_size, o.id)]
        )
        return o

    def open_orders(self, owner: str | None = None) -> Iterator[Order]:
        for o in self.orders.values():
            if o.status == "LIVE" and (owner is None or o.owner == owner):
                yield o

    def advance_trade(self, trade: Trade, status: str) -> None:
        trade.status = status
        trade.last_update = int(time.time())
        self.sink.trade_event(trade)
