"""Copy sizing and pricing: how much to copy, at what limit, and the skips these decide.

Owns the arithmetic of one copy decision, free of I/O: the rule's notional (ratio,
fixed_notional or percent, capped by max_trade_notional), the room left under the market
exposure limit, the mirror-exit fraction (the share of its holding the leader sold), the limit
price (leader price +/- slippage on the tick grid), the size step and the venue's minimums. Also
owns `Skip` and the fixed set of skip reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Final

from execution.fees import NO_FEE, FeeSchedule, max_buy_size
from models import Side
from strategies.copy_trader.rules import WalletRule
from venue.data_api import LeaderTrade

SIZE_STEP: Final = Decimal("0.01")
"""Polymarket order sizes carry at most 2 decimals."""
MIN_MARKETABLE_BUY: Final = Decimal("1")
"""The venue refuses a marketable BUY under $1."""

SKIP_REASONS: Final = frozenset(
    {
        "side_not_copied",  # the rule does not copy this side
        "too_old",  # the leader trade is older than max_trade_age_s
        "leader_notional_too_small",  # entry below min_leader_notional
        "market_blocked",  # slug or tag on the block list
        "market_not_allowed",  # allow list set and the market is not on it
        "exposure_limit",  # max_market_exposure already used up
        "no_position",  # leader sold, we hold nothing to sell
        "slippage",  # the book is already past leader price +/- max_slippage
        "price_out_of_range",  # the limit price falls outside [tick, 1 - tick]
        "below_min_size",  # our copy would be under the market's minimum size
        "rejected",  # the executor (risk, market rules or venue) refused the order
        "unfilled",  # FAK/FOK found nothing to trade at our limit
    }
)
"""The fixed set of skip reasons (a metric label, so it must stay small)."""


@dataclass(frozen=True)
class Skip:
    """A leader trade we decided not to copy, and why (`reason` is one of `SKIP_REASONS`)."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}")


def snap_price(price: Decimal, tick: Decimal, side: Side) -> Decimal:
    """Put a limit price on the tick grid without loosening it (BUY down, SELL up)."""
    steps = price / tick
    rounded = steps.to_integral_value(rounding=ROUND_FLOOR if side is Side.BUY else ROUND_CEILING)
    return (rounded * tick).quantize(tick)


def limit_price(
    leader_price: Decimal, slippage: Decimal, tick: Decimal, side: Side
) -> Decimal | None:
    """Leader price +/- slippage on the grid, clamped to [tick, 1 - tick]; None if impossible."""
    raw = leader_price + slippage if side is Side.BUY else leader_price - slippage
    p = snap_price(raw, tick, side)
    lo, hi = tick, Decimal(1) - tick
    p = min(max(p, lo), hi)
    # Clamping may not move the price to the wrong side of the leader's by more than slippage.
    if side is Side.BUY and p < leader_price - tick:
        return None
    if side is Side.SELL and p > leader_price + tick:
        return None
    return p


def round_size(size: Decimal) -> Decimal:
    """Round a size down to the venue's size step."""
    return size.quantize(SIZE_STEP, rounding=ROUND_DOWN)


def rule_notional(rule: WalletRule, trade: LeaderTrade, price: Decimal) -> Decimal:
    """The notional the rule's sizing mode asks for, capped by `max_trade_notional`."""
    if rule.sizing == "ratio":
        assert rule.ratio is not None
        notional = trade.size * rule.ratio * price
    elif rule.sizing == "fixed_notional":
        assert rule.fixed_notional is not None
        notional = rule.fixed_notional
    else:
        assert rule.percent is not None
        notional = trade.notional * rule.percent / 100
        notional = max(notional, rule.percent_min_notional)
        if rule.percent_max_notional is not None:
            notional = min(notional, rule.percent_max_notional)
    return min(notional, rule.max_trade_notional)


def entry_size(
    rule: WalletRule,
    trade: LeaderTrade,
    price: Decimal,
    exposure: Decimal,
    fee: FeeSchedule = NO_FEE,
    low: Decimal | None = None,
) -> Decimal | Skip:
    """Size of a copied entry, shrunk to the room left under `max_market_exposure`: the most
    that budget buys at `price` once the market's taker `fee` (budgeted at the limit) is paid,
    rounded down to the size step. `low` is the best ask: a BUY taking below its limit buys
    extra shares, which pay the fee too."""
    notional = rule_notional(rule, trade, price)
    room = rule.max_market_exposure - exposure
    if room <= 0:
        return Skip("exposure_limit", f"market exposure at {rule.max_market_exposure}")
    notional = min(notional, room)
    return max_buy_size(notional, price, fee, step=SIZE_STEP, low=low)


def mirror_fraction(sold: Decimal, leader_before: Decimal) -> Decimal:
    """The share of its holding the leader sold (1 when its holding before is unknown or 0)."""
    return Decimal(1) if leader_before <= 0 else min(sold / leader_before, Decimal(1))


def exit_size(
    rule: WalletRule,
    trade: LeaderTrade,
    price: Decimal,
    *,
    ours: Decimal,
    leader_before: Decimal | None,
) -> Decimal:
    """Size of a copied exit, never beyond `ours` (what this strategy holds).

    With `mirror_exits` we sell the fraction of our holding the leader sold of its own
    (`leader_before` is its holding just before the trade); without it, an exit is sized like an
    entry (exposure aside: a sell reduces it).
    """
    if not rule.mirror_exits:
        return min(rule_notional(rule, trade, price) / price, ours)
    assert leader_before is not None, "a mirrored exit needs the leader's holding before it"
    return min(ours * mirror_fraction(trade.size, leader_before), ours)


def min_size_skip(size: Decimal, price: Decimal, min_size: Decimal, *, entry: bool) -> Skip | None:
    """Skip a copy under the market's minimum size, or a marketable BUY under $1."""
    if size <= 0 or size < min_size:
        return Skip("below_min_size", f"{size} < {min_size}")
    if entry and size * price < MIN_MARKETABLE_BUY:
        return Skip("below_min_size", f"notional {size * price} < {MIN_MARKETABLE_BUY}")
    return None


@dataclass
class Batch:
    """One poll's fresh trades of a wallet, and the leader's holdings after them (per token)."""

    trades: list[LeaderTrade]
    leader_after: dict[str, Decimal] = field(default_factory=dict)

    def holding_before(self, trade: LeaderTrade) -> Decimal:
        """The leader's holding just before `trade`: its holding now, minus what came after.

        `leader_after[trade.token_id]` must be known (the trader reads it from the Data API).
        """
        holding = self.leader_after[trade.token_id]
        idx = self.trades.index(trade)
        for later in reversed(self.trades[idx:]):
            if later.token_id != trade.token_id:
                continue
            holding += later.size if later.side is Side.SELL else -later.size
        return holding
