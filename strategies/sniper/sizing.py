"""Sniper sizing: whether a book is an opportunity for a rule, and what order it makes.

Owns the arithmetic, free of I/O and state: the band check on the best ask, the market-end
window, the limit price on the tick grid, the depth at or under it, the size (the most the rule's
notional buys at the limit once the taker fee is paid, capped by depth, rounded down to the size
step) against the market's and the venue's minimums, and the take-profit quote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

from execution.fees import NO_FEE, FeeSchedule, max_buy_size
from models import ONE, ZERO, Market
from strategies.sniper.rules import SniperRule
from venue.order_book import OrderBook

SIZE_STEP: Final = Decimal("0.01")
"""Polymarket order sizes carry at most 2 decimals."""
MIN_MARKETABLE_NOTIONAL: Final = Decimal("1")
"""Marketable BUYs under $1 are refused by the venue."""
DEFAULT_TICK: Final = Decimal("0.01")
"""The tick when neither the book nor the market knows one: Polymarket's common grid."""


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round `value` down to a multiple of `step`."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Round `value` up to a multiple of `step`."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


@dataclass(frozen=True, slots=True)
class Decision:
    """An order the sniper will submit, with what it saw."""

    rule: SniperRule
    token_id: str
    price: Decimal
    size: Decimal
    best_ask: Decimal
    depth: Decimal


def opportunity(
    rule: SniperRule,
    token: str,
    book: OrderBook,
    market: Market | None,
    wall: Callable[[], datetime],
    fee: FeeSchedule = NO_FEE,
) -> Decision | None:
    """Return the BUY `rule` makes on `book` now, or None if the book is no opportunity.

    Its notional plus the most the market's taker `fee` can charge it stays within
    `rule.max_notional`."""
    best = book.best_ask()
    if best is None:
        return None
    ask = best[0]
    if ask < rule.min_price or ask > rule.max_price:
        return None
    if market is not None and not market.tradable:
        return None
    if rule.ends_within_minutes is not None:
        end = market.end_date if market is not None else None
        if end is None:
            return None
        left = (end - wall()).total_seconds()
        if left < 0 or left > rule.ends_within_minutes * 60:
            return None
    tick = book.tick_size or (market.tick_size if market is not None else DEFAULT_TICK)
    limit = floor_to(rule.max_price, tick)
    if limit < ask or not tick <= limit <= ONE - tick:
        return None
    depth = book.ask_depth_at_or_under(limit)
    if depth < rule.min_size:
        return None
    # The taker fee is paid on top of the notional: budget it at the limit (the worst price).
    # It takes from the best ask up: what it saves below the limit buys extra shares, which pay
    # the fee too (`execution.fees.buy_cost`).
    size = min(max_buy_size(rule.max_notional, limit, fee, low=ask), floor_to(depth, SIZE_STEP))
    min_size = market.min_size if market is not None else ZERO
    if size <= 0 or size < min_size or size * limit < MIN_MARKETABLE_NOTIONAL:
        return None
    return Decision(rule, token, limit, size, ask, depth)


def take_profit_quote(
    entry: Decimal, filled: Decimal, take_profit: Decimal, tick: Decimal
) -> tuple[Decimal, Decimal]:
    """The take-profit SELL: entry x (1 + take_profit) rounded up to the tick, and its size."""
    return ceil_to(entry * (ONE + take_profit), tick), floor_to(filled, SIZE_STEP)
