"""In-memory positions, open-order exposure and PnL, marked from order books.

The database (`FillRepository`) is the durable truth; this book mirrors it so risk checks and
`PositionSource.position()` answer synchronously. Daily PnL is realized plus marked PnL now,
minus the same figure at the first look after 00:00 UTC.

Memory is bounded: past `MAX_FLAT` flat positions (no shares) the oldest to go flat are let go
of, their realized PnL staying in the running totals. A position the database writes again is
handed over with the row it replaced (`move`), so a token traded again after it was let go of
counts its realized PnL once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from models import ZERO, BookSource, OrderRequest, Position, Side, utc_day

if TYPE_CHECKING:
    from observability.metrics import Metrics

# Flat positions kept in memory: a daemon trading a new market every few minutes leaves one
# per (strategy, token) behind; past this many, the oldest to go flat are let go of.
MAX_FLAT = 10_000


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """What an order still in flight or resting commits: its remaining size at its price."""

    client_order_id: str
    strategy: str
    token_id: str
    side: Side
    price: Decimal
    remaining: Decimal

    @property
    def notional(self) -> Decimal:
        return self.price * self.remaining


class _Sums:
    """Running totals of a quantity by key, each with the number of orders behind it.

    A key whose last order leaves is dropped, so its total restarts from exact zero: Decimal
    addition and subtraction of the same terms is exact, and nothing accumulates across orders.
    """

    __slots__ = ("_count", "_total")

    def __init__(self) -> None:
        self._total: dict[object, Decimal] = {}
        self._count: dict[object, int] = {}

    def add(self, key: object, amount: Decimal, orders: int) -> None:
        n = self._count.get(key, 0) + orders
        if n <= 0:
            self._total.pop(key, None)
            self._count.pop(key, None)
            return
        self._count[key] = n
        self._total[key] = self._total.get(key, ZERO) + amount

    def get(self, key: object) -> Decimal:
        return self._total.get(key, ZERO)

    def __contains__(self, key: object) -> bool:
        return key in self._count


_ALL = object()  # the key of the book-wide total


class PositionBook:
    """Positions by (strategy, token), open orders by client order id, marks from a `BookSource`.

    Each strategy owns what its orders bought (holdings no order of ours explains are booked
    under `UNATTRIBUTED`): `position(token, strategy=...)` is that strategy's holding, and a
    SELL is measured against it. Account-wide figures (exposure, PnL, a token's total) are sums
    over strategies.

    Open-order commitments (BUY notional in all, by token, by strategy and by (strategy, token);
    SELL size by (strategy, token)) and realized PnL (in all and by strategy) are kept as running
    totals updated on every add, update and removal, so a risk check costs the same with five
    open orders or fifty thousand.

    At most `max_flat` flat positions are kept: past it the oldest to go flat, with no open
    order, are let go of. Their realized PnL stays in the totals, and the database keeps their
    rows; `position()` answers an empty position for them, as their size (0) is all a trade
    needs. A position the database writes again comes through `move` with the row it replaced.

    With several daemons on one database, the book is its daemon's: the strategies another
    daemon trades are `left_out` (never read, never moved), so their marks move none of this
    daemon's figures; the `unattributed` holdings are the account's and stay.
    """

    def __init__(self, *, books: BookSource | None = None, max_flat: int = MAX_FLAT) -> None:
        self.books = books
        self.max_flat = max_flat
        self._positions: dict[tuple[str, str], Position] = {}  # (strategy, token) ->
        # The keys of the flat positions above, the oldest to go flat first.
        self._flat: dict[tuple[str, str], None] = {}
        # The positions with shares, by token then strategy: what gets marked. A token is held
        # by a handful of strategies at most, so a per-token sum over them is O(1) in practice.
        self._held: dict[str, dict[str, Position]] = {}
        # Running sum of every position's realized PnL, those let go of included; by strategy.
        self._realized = ZERO
        self._realized_by: dict[str, Decimal] = {}
        self._open: dict[str, OpenOrder] = {}
        # keys: _ALL, ("token", id), ("strategy", name), ("strategy_token", name, id)
        self._buy_notional = _Sums()
        self._sell_size = _Sums()  # keys: (strategy, token id)
        self._day: str | None = None
        self._day_baseline = ZERO
        self._payouts: dict[str, Decimal] = {}  # resolved tokens: what a share redeems for
        self.left_out: frozenset[str] = frozenset()  # other daemons' strategies: see `load`

    # positions ---------------------------------------------------------------------------
    def load(self, positions: Iterable[Position], left_out: Iterable[str] = ()) -> None:
        """Take the database's positions (at start-up, into a book that let go of none);
        `left_out` names the strategies another daemon trades, whose rows were not read."""
        self.left_out = frozenset(left_out)
        for p in positions:
            self.set_position(p)

    def adopt(self, strategies: Iterable[str], positions: Iterable[Position]) -> None:
        """Take the positions of `strategies`, left out at start-up as another daemon's, now
        that this daemon trades them (it took their leases over), without moving today's PnL:
        what they made before was the other daemon's day."""
        before = self.realized() + self.unrealized()
        self.left_out -= set(strategies)
        for p in positions:
            self.set_position(p)
        if self._day is not None:
            self._day_baseline += self.realized() + self.unrealized() - before

    def move(self, moves: Sequence[tuple[Position, Position]]) -> None:
        """Apply positions the database wrote, in order, each as (row before, row after); an
        empty position stands for no row. A flat row the book let go of comes back with its
        realized PnL counted once: the totals already hold the row before's."""
        for before, after in moves:
            if after.strategy in self.left_out:
                continue  # another daemon's (an unattributed SELL took from it): not in this book
            key = (after.strategy, after.token_id)
            if key not in self._positions and before.size == 0 and before.realized_pnl:
                self._realized -= before.realized_pnl
                self._realized_by[after.strategy] = (
                    self._realized_by.get(after.strategy, ZERO) - before.realized_pnl
                )
            self.set_position(after)

    def position(self, token_id: str, *, strategy: str) -> Position:
        """`strategy`'s holding in `token_id` (size 0 if none)."""
        return self._positions.get((strategy, token_id)) or Position(
            token_id=token_id, strategy=strategy
        )

    def holding(self, token_id: str) -> Decimal:
        """Shares of `token_id` the account holds: every strategy's plus unattributed."""
        return sum((p.size for p in self._held.get(token_id, {}).values()), ZERO)

    def set_position(self, position: Position) -> None:
        """Hold `position` (a key let go of counts as new: use `move` for what the database
        wrote over a row)."""
        key = (position.strategy, position.token_id)
        old = self._positions.get(key)
        if old is not None:
            self._realized -= old.realized_pnl
            self._realized_by[position.strategy] -= old.realized_pnl
        self._positions[key] = position
        self._realized += position.realized_pnl
        self._realized_by[position.strategy] = (
            self._realized_by.get(position.strategy, ZERO) + position.realized_pnl
        )
        held = self._held.get(position.token_id)
        self._flat.pop(key, None)
        if position.size > 0:
            if held is None:
                held = self._held[position.token_id] = {}
            held[position.strategy] = position
        else:
            if held is not None:
                held.pop(position.strategy, None)
                if not held:
                    del self._held[position.token_id]
            self._flat[key] = None  # the newest written: let go of last
            self._let_go()

    def _let_go(self) -> None:
        """Drop the oldest flat positions past `max_flat`; keep one with an open order."""
        for _ in range(len(self._flat) - self.max_flat):
            key = next(iter(self._flat))
            del self._flat[key]
            if self._has_open(*key):
                self._flat[key] = None  # an order may still fill on it: look again later
            else:
                del self._positions[key]

    def _has_open(self, strategy: str, token_id: str) -> bool:
        return (strategy, token_id) in self._sell_size or (
            "strategy_token",
            strategy,
            token_id,
        ) in self._buy_notional

    def positions(self, *, strategy: str | None = None) -> list[Position]:
        """Every (strategy, token) position in memory, or one strategy's: every held one, and
        the flat ones not let go of."""
        if strategy is None:
            return list(self._positions.values())
        return [p for (s, _), p in self._positions.items() if s == strategy]

    def strategies(self) -> list[str]:
        """The strategies that ever had a position (held, flat or let go of) or have an open
        order, sorted."""
        names = set(self._realized_by) | {o.strategy for o in self._open.values()}
        return sorted(names)

    def publish(self, m: Metrics) -> None:
        """Set the open-order, exposure and PnL gauges: the account's and per strategy
        (`unattributed` included)."""
        m.open_orders.set(self.open_count)
        m.exposure_usd.set(float(self.exposure()))
        m.pnl_realized_usd.set(float(self.realized()))
        m.pnl_unrealized_usd.set(float(self.unrealized()))
        m.daily_pnl_usd.set(float(self.daily_pnl()))
        for name in self.strategies():
            m.strategy_exposure_usd.labels(name).set(float(self.exposure(strategy=name)))
            m.strategy_pnl_realized_usd.labels(name).set(float(self.realized(strategy=name)))
            m.strategy_pnl_unrealized_usd.labels(name).set(float(self.unrealized(strategy=name)))

    def _held_positions(self, strategy: str | None = None) -> Iterable[Position]:
        for by_strategy in self._held.values():
            if strategy is None:
                yield from by_strategy.values()
            elif (p := by_strategy.get(strategy)) is not None:
                yield p

    # open orders -------------------------------------------------------------------------
    def _count(self, o: OpenOrder, sign: int) -> None:
        if o.side is Side.BUY:
            amount = o.notional if sign > 0 else -o.notional
            self._buy_notional.add(_ALL, amount, sign)
            self._buy_notional.add(("token", o.token_id), amount, sign)
            self._buy_notional.add(("strategy", o.strategy), amount, sign)
            self._buy_notional.add(("strategy_token", o.strategy, o.token_id), amount, sign)
        else:
            key = (o.strategy, o.token_id)
            self._sell_size.add(key, o.remaining if sign > 0 else -o.remaining, sign)

    def _put(self, order: OpenOrder) -> None:
        old = self._open.pop(order.client_order_id, None)
        if old is not None:
            self._count(old, -1)
        self._open[order.client_order_id] = order
        self._count(order, +1)

    def add_open(self, req: OrderRequest) -> None:
        self._put(
            OpenOrder(
                req.client_order_id, req.strategy, req.token_id, req.side, req.price, req.size
            )
        )

    def add_open_row(self, order: OpenOrder) -> None:
        self._put(order)

    def update_open(self, client_order_id: str, remaining: Decimal | None) -> None:
        """Set the remaining size, or drop the order when `remaining` is None or zero."""
        if remaining is None or remaining <= 0:
            if (old := self._open.pop(client_order_id, None)) is not None:
                self._count(old, -1)
        elif (o := self._open.get(client_order_id)) is not None:
            self._put(replace(o, remaining=remaining))

    def open_orders(self) -> list[OpenOrder]:
        return list(self._open.values())

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_buy_notional(
        self, *, token_id: str | None = None, strategy: str | None = None
    ) -> Decimal:
        """Open BUY notional in all, of one token, of one strategy, or of one strategy in one
        token."""
        if token_id is not None and strategy is not None:
            return self._buy_notional.get(("strategy_token", strategy, token_id))
        if token_id is not None:
            return self._buy_notional.get(("token", token_id))
        if strategy is not None:
            return self._buy_notional.get(("strategy", strategy))
        return self._buy_notional.get(_ALL)

    def open_sell_size(self, token_id: str, *, strategy: str) -> Decimal:
        """Shares of `token_id` that `strategy`'s open SELLs offer."""
        return self._sell_size.get((strategy, token_id))

    # marks and PnL -----------------------------------------------------------------------
    # Each read below costs O(positions holding shares), with an O(1) mark apiece (the best
    # levels, never the whole book), and nothing for flat positions or for realized PnL.
    def set_payout(self, token_id: str, payout: Decimal) -> None:
        """The token's market resolved: its shares are marked at `payout` from now on."""
        self._payouts[token_id] = payout

    def forget_payout(self, token_id: str) -> None:
        """Stop marking `token_id` at its payout (a resolved token no longer held: bounded)."""
        self._payouts.pop(token_id, None)

    def payout(self, token_id: str) -> Decimal | None:
        return self._payouts.get(token_id)

    def redeemable(self, *, strategy: str | None = None) -> Decimal:
        """Shares x payout of held positions in resolved markets (all, or one strategy's):
        value, not cash, until they are redeemed on chain."""
        total = ZERO
        for p in self._held_positions(strategy):
            if (pay := self._payouts.get(p.token_id)) is not None:
                total += p.size * pay
        return total

    def mark(self, token_id: str) -> Decimal | None:
        """The payout of a resolved token; else mid of the best bid and ask, the best bid alone,
        or None without a usable book."""
        if (pay := self._payouts.get(token_id)) is not None:
            return pay
        if self.books is None:
            return None
        bid = self.books.best_bid(token_id)
        if bid is None:
            return None
        ask = self.books.best_ask(token_id)
        return (bid[0] + ask[0]) / 2 if ask is not None else bid[0]

    def cost_exposure(self, token_id: str | None = None, *, strategy: str | None = None) -> Decimal:
        """Cost basis of holdings: of one token or all, of one strategy or every one."""
        if token_id is not None:
            held = self._held.get(token_id, {})
            if strategy is not None:
                p = held.get(strategy)
                return p.size * p.avg_cost if p is not None else ZERO
            return sum((p.size * p.avg_cost for p in held.values()), ZERO)
        return sum((p.size * p.avg_cost for p in self._held_positions(strategy)), ZERO)

    def exposure(self, *, strategy: str | None = None) -> Decimal:
        """Marked value of holdings (cost where no mark) plus open BUY notional: the account's,
        or one strategy's."""
        total = ZERO
        for p in self._held_positions(strategy):
            m = self.mark(p.token_id)
            total += p.size * (m if m is not None else p.avg_cost)
        return total + self.open_buy_notional(strategy=strategy)

    def realized(self, *, strategy: str | None = None) -> Decimal:
        if strategy is None:
            return self._realized
        return self._realized_by.get(strategy, ZERO)

    def unrealized(self, *, strategy: str | None = None) -> Decimal:
        total = ZERO
        for p in self._held_positions(strategy):
            if (m := self.mark(p.token_id)) is not None:
                total += p.unrealized(m)
        return total

    def daily_pnl(self, now: datetime | None = None) -> Decimal:
        """Realized + marked PnL since the first look after 00:00 UTC today."""
        day = utc_day(now)
        total = self.realized() + self.unrealized()
        if self._day != day:
            self._day, self._day_baseline = day, total
        return total - self._day_baseline

    def set_day_baseline(self, day: str, baseline: Decimal) -> None:
        """Restore today's baseline after a restart (persisted by the executor)."""
        self._day, self._day_baseline = day, baseline

    @property
    def day(self) -> tuple[str | None, Decimal]:
        return self._day, self._day_baseline
