"""In-memory positions, open-order exposure and PnL, marked from order books.

The database (`FillRepository`) is the durable truth; this book mirrors it so risk checks and
`PositionSource.position()` answer synchronously. Daily PnL is realized plus marked PnL now,
minus the same figure at the first look after 00:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from models import ZERO, BookSource, OrderRequest, Position, Side


@dataclass(slots=True)
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


class PositionBook:
    """Positions by token, open orders by client order id, marks from a `BookSource`."""

    def __init__(self, *, books: BookSource | None = None) -> None:
        self.books = books
        self._positions: dict[str, Position] = {}
        self._open: dict[str, OpenOrder] = {}
        self._day: str | None = None
        self._day_baseline = ZERO

    # positions ---------------------------------------------------------------------------
    def load(self, positions: Iterable[Position]) -> None:
        for p in positions:
            self._positions[p.token_id] = p

    def position(self, token_id: str) -> Position:
        return self._positions.get(token_id) or Position(token_id=token_id)

    def set_position(self, position: Position) -> None:
        self._positions[position.token_id] = position

    def positions(self) -> list[Position]:
        return list(self._positions.values())

    # open orders -------------------------------------------------------------------------
    def add_open(self, req: OrderRequest) -> None:
        self._open[req.client_order_id] = OpenOrder(
            req.client_order_id, req.strategy, req.token_id, req.side, req.price, req.size
        )

    def add_open_row(self, order: OpenOrder) -> None:
        self._open[order.client_order_id] = order

    def update_open(self, client_order_id: str, remaining: Decimal | None) -> None:
        """Set the remaining size, or drop the order when `remaining` is None or zero."""
        if remaining is None or remaining <= 0:
            self._open.pop(client_order_id, None)
        elif (o := self._open.get(client_order_id)) is not None:
            o.remaining = remaining

    def open_orders(self) -> list[OpenOrder]:
        return list(self._open.values())

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_buy_notional(
        self, *, token_id: str | None = None, strategy: str | None = None
    ) -> Decimal:
        return sum(
            (
                o.notional
                for o in self._open.values()
                if o.side is Side.BUY
                and (token_id is None or o.token_id == token_id)
                and (strategy is None or o.strategy == strategy)
            ),
            ZERO,
        )

    def open_sell_size(self, token_id: str) -> Decimal:
        return sum(
            (
                o.remaining
                for o in self._open.values()
                if o.side is Side.SELL and o.token_id == token_id
            ),
            ZERO,
        )

    # marks and PnL -----------------------------------------------------------------------
    def mark(self, token_id: str) -> Decimal | None:
        """Mid of the best bid and ask, the best bid alone, or None without a usable book."""
        if self.books is None:
            return None
        bids = self.books.bids(token_id)
        asks = self.books.asks(token_id)
        best_bid = bids[0][0] if bids else None
        best_ask = asks[0][0] if asks else None
        if best_bid is not None and best_ask is not None:
            return (best_bid + best_ask) / 2
        return best_bid

    def cost_exposure(self, token_id: str | None = None) -> Decimal:
        """Cost basis of holdings (one token or all)."""
        return sum(
            (
                p.size * p.avg_cost
                for p in self._positions.values()
                if token_id is None or p.token_id == token_id
            ),
            ZERO,
        )

    def exposure(self) -> Decimal:
        """Marked value of holdings (cost where no mark) plus open BUY notional."""
        total = ZERO
        for p in self._positions.values():
            if p.size > 0:
                m = self.mark(p.token_id)
                total += p.size * (m if m is not None else p.avg_cost)
        return total + self.open_buy_notional()

    def realized(self) -> Decimal:
        return sum((p.realized_pnl for p in self._positions.values()), ZERO)

    def unrealized(self) -> Decimal:
        total = ZERO
        for p in self._positions.values():
            if p.size > 0 and (m := self.mark(p.token_id)) is not None:
                total += p.unrealized(m)
        return total

    def daily_pnl(self, now: datetime | None = None) -> Decimal:
        """Realized + marked PnL since the first look after 00:00 UTC today."""
        day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
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
