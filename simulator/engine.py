"""The matching engine and authoritative ledger of the venue simulator.

Price-time priority across both tokens of a market, as Polymarket's exchange matches them
(`_deriveMatchType` and `CalculatorHelper._isCrossing` in
https://github.com/Polymarket/ctf-exchange/blob/main/src/exchange/mixins/Trading.sol, and the
V2 `Trading.sol` in https://github.com/Alatharee21/ctf-exchange-v2, docs/venue-mechanics.md §2):

- a BUY takes the same token's asks at `p <= limit`, and the other token's resting BUYs at
  `q >= 1 - limit` (a **mint**: both buyers pay their own price, the pUSD becomes full sets);
- a SELL takes the same token's bids at `p >= limit`, and the other token's resting SELLs at
  `q <= 1 - limit` (a **merge**: both sellers give their shares, the full sets become pUSD);
- the other book's level `q` ranks as `1 - q`; equal prices go to the older order.

Every taker order that matches is **one** trade with one `maker_orders` entry per maker order
(docs/venue-mechanics.md §6). Each order is accounted in its maker amount, as the exchange
tracks `remaining` (pUSD for a BUY, shares for a SELL): a BUY taker spends its pUSD at the
makers' prices and receives the price improvement as extra shares ("taking with surplus";
py-clob-client-v2 issue #89: a FAK BUY of 5 at 0.99 against an ask at 0.98 filled 5.051019),
a SELL taker sells its shares and receives every maker's price. The taker pays the market's
fee in pUSD at match time, per leg at the leg's price, floored to 0.00001 (§1); makers pay 0.

Money is `Decimal` throughout. The engine is synchronous and loop-agnostic; it reports what
happened through the `Sink` callbacks, and the simulator turns those into websocket frames.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from simulator.records import (
    FEE_RECEIVER,
    ONE,
    ZERO,
    Json,
    MakerFill,
    Order,
    OrderError,
    Trade,
    floor_shares,
    fmt,
    now_ms,
    rate_bps,
    taker_fee,
)

__all__ = [
    "FEE_RECEIVER",
    "ONE",
    "ZERO",
    "Book",
    "Engine",
    "LevelChange",
    "MakerFill",
    "Order",
    "OrderError",
    "Sink",
    "Trade",
    "floor_shares",
    "fmt",
    "now_ms",
    "rate_bps",
    "taker_fee",
]


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


class Engine:
    """Books, orders, trades and balances for every market of the simulator."""

    def __init__(self, rng: random.Random, sink: Sink | None = None) -> None:
        self.rng = rng
        self.sink = sink or Sink()
        self.books: dict[str, Book] = {}
        self.complement: dict[str, str] = {}
        self.orders: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.trades_by_id: dict[str, Trade] = {}
        self.collateral: dict[str, Decimal] = {}
        self.shares: dict[tuple[str, str], Decimal] = {}
        self.reserved_collateral: dict[str, Decimal] = {}
        self.reserved_shares: dict[tuple[str, str], Decimal] = {}
        # Full sets minted (+) or merged (-) by matches, per condition id.
        self.sets_minted: dict[str, Decimal] = {}
        self._seq = 0
        self.on_rest: Callable[[Order], None] | None = None
        # The one accessor for a token's fee schedule: (rate, exponent). The venue reads its
        # markets' `fee_rate` / `fee_exponent`; a bare engine charges no fee.
        self.fee_of: Callable[[str], tuple[Decimal, Decimal]] = lambda _token: (ZERO, ONE)
        # Whether user-channel trade events carry `maker_orders[].side` (REST rows always do).
        self.feed_maker_side = True
        # Whether user-channel trade events send `fee_rate_bps: ""` on maker entries.
        self.feed_empty_maker_fee_bps = False

    def pair(self, token_a: str, token_b: str) -> None:
        """Declare the two tokens of one condition: each matches the other's book too."""
        self.complement[token_a] = token_b
        self.complement[token_b] = token_a

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

    def _reserve(self, o: Order, amount: Decimal) -> None:
        """Reserve (> 0) or release (< 0) `amount` of a resting order's maker asset (pUSD for a
        BUY, shares for a SELL)."""
        a = o.maker.lower()
        if o.side == "BUY":
            self.reserved_collateral[a] = self.reserved_collateral.get(a, ZERO) + amount
        else:
            k = (a, o.token_id)
            self.reserved_shares[k] = self.reserved_shares.get(k, ZERO) + amount

    # matching ------------------------------------------------------------------------------
    def _queue(self, book: Book, side: str, cross: bool) -> Iterator[tuple[Decimal, int, Order]]:
        """Resting orders of one book that a taker on `side` could take, best first, as
        (price in the taker's token, time priority, order)."""
        if side == "BUY":
            # Same token: asks, lowest first. Other token: bids, highest first, ranked 1 - q.
            queues, prices = (
                (book.bids, reversed(book.bid_prices))
                if cross
                else (
                    book.asks,
                    iter(book.ask_prices),
                )
            )
        else:
            # Same token: bids, highest first. Other token: asks, lowest first, ranked 1 - q.
            queues, prices = (
                (book.asks, iter(book.ask_prices))
                if cross
                else (
                    book.bids,
                    reversed(book.bid_prices),
                )
            )
        for p in prices:
            pi = ONE - p if cross else p
            for m in queues[p]:
                yield pi, m.seq, m

    def _makers(self, side: str, token_id: str) -> Iterator[tuple[Decimal, Order, bool]]:
        """Every resting order a taker on (`side`, `token_id`) could take, in price-time
        priority across both books of the condition: (taker's price, order, other-token)."""
        own = ((pi, seq, m, False) for pi, seq, m in self._queue(self.books[token_id], side, False))
        streams: list[Iterator[tuple[Decimal, int, Order, bool]]] = [own]
        comp = self.complement.get(token_id)
        if comp is not None:
            streams.append(
                (pi, seq, m, True) for pi, seq, m in self._queue(self.books[comp], side, True)
            )
        sign = 1 if side == "BUY" else -1
        for pi, _seq, m, cross in heapq.merge(*streams, key=lambda x: (sign * x[0], x[1])):
            yield pi, m, cross

    def plan(self, o: Order) -> list[MakerFill]:
        """What `o` would take right now, without changing anything: one leg per maker order.

        A BUY spends its pUSD left at each maker's price (the improvement becomes shares); a
        SELL sells its shares left. Each leg carries the taker's fee at the leg's price.
        """
        left = o.left
        legs: list[MakerFill] = []
        rate, exponent = self.fee_of(o.token_id)
        for pi, m, cross in self._makers(o.side, o.token_id):
            if (o.side == "BUY" and pi > o.price) or (o.side == "SELL" and pi < o.price):
                break
            if o.side == "BUY":
                n = min(m.remaining, floor_shares(left / pi))
            else:
                n = min(m.remaining, left)
            if n <= 0:
                if m.remaining <= 0:
                    continue
                break
            legs.append(MakerFill(m, n, m.price, pi, cross, taker_fee(n, pi, rate, exponent)))
            left -= n * pi if o.side == "BUY" else n
            if left <= 0:
                break
        return legs

    def fillable(self, o: Order) -> tuple[Decimal, Decimal, Decimal]:
        """(shares, pUSD, taker fee) that `o` would match right now."""
        legs = self.plan(o)
        shares = sum((x.size for x in legs), ZERO)
        cash = sum((x.size * x.taker_price for x in legs), ZERO)
        return shares, cash, sum((x.taker_fee for x in legs), ZERO)

    def crosses(self, side: str, token_id: str, price: Decimal) -> bool:
        """Whether an order at `price` would take anything (either book of the condition)."""
        book = self.books[token_id]
        comp = self.complement.get(token_id)
        other = self.books[comp] if comp is not None else None
        if side == "BUY":
            ba = book.best_ask()
            ob = other.best_bid() if other is not None else None
            return (ba is not None and ba <= price) or (ob is not None and ONE - ob <= price)
        bb = book.best_bid()
        oa = other.best_ask() if other is not None else None
        return (bb is not None and bb >= price) or (oa is not None and ONE - oa >= price)

    def submit(self, o: Order) -> list[Trade]:
        """Match `o` and rest any GTC/GTD remainder; FOK/FAK remainders are killed.

        Validation (balance, FOK fillability, post-only) is the caller's job; this only
        executes. Returns the trades created: none, or one with every maker taken.
        """
        self._seq += 1
        o.seq = self._seq
        self.orders[o.id] = o
        book = self.books[o.token_id]
        changes: list[LevelChange] = []
        legs = self.plan(o)
        trade: Trade | None = None
        if legs:
            tx, ts = self.new_hash(), int(time.time())
            for leg in legs:
                m = leg.order
                self._settle_leg(o, leg)
                m.size_matched += leg.size
                o.size_matched += leg.size
                spent_m = leg.size * m.price if m.side == "BUY" else leg.size
                m.left -= spent_m
                self._reserve(m, -spent_m)
                o.left -= leg.size * leg.taker_price if o.side == "BUY" else leg.size
                full = m.remaining <= 0
                if full:
                    m.status = "MATCHED"
                    if m.left > 0:  # dust a BUY's pUSD cannot buy at its limit
                        self._reserve(m, -m.left)
                mbook = self.books[m.token_id]
                new_size = mbook.reduce(m, leg.size, remove=full)
                changes.append(LevelChange(m.token_id, m.price, m.side, new_size, m.id))
                if leg.cross:
                    mbook.last_trade_price = m.price
            rate, _ = self.fee_of(o.token_id)
            trade = Trade(
                id=self.new_uuid(),
                taker_order=o,
                makers=legs,
                size=sum((x.size for x in legs), ZERO),
                price=legs[0].taker_price,
                cash=sum((x.size * x.taker_price for x in legs), ZERO),
                fee=sum((x.taker_fee for x in legs), ZERO),
                fee_rate_bps=rate_bps(rate),
                match_time=ts,
                transaction_hash=tx,
                last_update=ts,
            )
            self.trades.append(trade)
            self.trades_by_id[trade.id] = trade
            o.associate_trades.append(trade.id)
            for leg in legs:
                if trade.id not in leg.order.associate_trades:
                    leg.order.associate_trades.append(trade.id)
            book.last_trade_price = legs[-1].taker_price
        if o.remaining > 0 and o.order_type in ("GTC", "GTD"):
            o.status = "LIVE"
            new_size = book.add(o)
            self._reserve(o, o.left)
            changes.append(LevelChange(o.token_id, o.price, o.side, new_size, o.id))
            if self.on_rest is not None:
                self.on_rest(o)
        else:
            o.status = "MATCHED" if o.size_matched > 0 else "CANCELED"
        # Order events first (placement, maker updates), then the trade, as production does.
        if not o.seeded:
            self.sink.order_event(o, "PLACEMENT")
        for leg in legs:
            self.sink.order_event(leg.order, "UPDATE")
        killed = o.order_type in ("FOK", "FAK") and o.size_matched < o.original_size
        if killed and o.remaining > 0 and o.size_matched > 0:
            self.sink.order_event(o, "CANCELLATION", "CANCELED")
        if trade is not None:
            self.sink.trade_event(trade)
        if changes:
            self.sink.level_changes(o.market, changes)
        if trade is not None:
            self.sink.last_trade(
                o.token_id, trade.price, trade.size, o.side, trade.transaction_hash
            )
            self.sink.book_traded(o.token_id)
            comp = self.complement.get(o.token_id)
            if comp is not None and any(x.cross for x in legs):
                self.sink.book_traded(comp)
        return [trade] if trade is not None else []

    def _move(self, address: str, amount: Decimal) -> None:
        a = address.lower()
        self.collateral[a] = self.collateral.get(a, ZERO) + amount

    def _move_shares(self, address: str, token_id: str, amount: Decimal) -> None:
        k = (address.lower(), token_id)
        self.shares[k] = self.shares.get(k, ZERO) + amount

    def _settle_leg(self, taker: Order, leg: MakerFill) -> None:
        """Move pUSD and shares for one leg; collateral is conserved exactly.

        Same token: the buyer pays the maker's price to the seller, the shares change hands.
        Mint (two BUYs): each buyer pays its own price (the taker `1 - q`, the maker `q`); the
        `n` pUSD become `n` full sets, each buyer gets its token. Merge (two SELLs): each seller
        gives its shares, the `n` full sets become `n` pUSD, each seller gets its own price. The
        taker's fee goes to the venue's fee receiver.
        """
        m, n = leg.order, leg.size
        tk, mk = taker.maker, m.maker
        if not leg.cross:
            cash = n * leg.price
            buyer, seller = (tk, mk) if taker.side == "BUY" else (mk, tk)
            self._move(buyer, -cash)
            self._move(seller, cash)
            self._move_shares(seller, taker.token_id, -n)
            self._move_shares(buyer, taker.token_id, n)
        elif taker.side == "BUY":
            self._move(tk, -(n * leg.taker_price))
            self._move(mk, -(n * leg.price))
            self._move_shares(tk, taker.token_id, n)
            self._move_shares(mk, m.token_id, n)
            self.sets_minted[taker.market] = self.sets_minted.get(taker.market, ZERO) + n
        else:
            self._move_shares(tk, taker.token_id, -n)
            self._move_shares(mk, m.token_id, -n)
            self._move(tk, n * leg.taker_price)
            self._move(mk, n * leg.price)
            self.sets_minted[taker.market] = self.sets_minted.get(taker.market, ZERO) - n
        if leg.taker_fee > 0:
            self._move(tk, -leg.taker_fee)
            self._move(FEE_RECEIVER, leg.taker_fee)

    def cancel(self, order_id: str, status: str = "CANCELED") -> Order | None:
        """Cancel a resting order; return it, or None if it is not open."""
        o = self.orders.get(order_id)
        if o is None or o.status != "LIVE":
            return None
        book = self.books[o.token_id]
        rem = o.remaining
        new_size = book.reduce(o, rem, remove=True)
        self._reserve(o, -o.left)
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
