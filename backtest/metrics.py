"""Performance figures of a run: equity curve, drawdown, hit rate, hold times. Pure, Decimal.

Every function takes plain values and returns new ones; nothing here does I/O or keeps state,
so `vet` now and `backtest` later compute their figures the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Cumulative PnL at `ts` (unix seconds) and the drawdown from its running peak."""

    ts: int
    equity: Decimal
    drawdown: Decimal


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One holding of one token from its first buy to its close (exit or resolution)."""

    token_id: str
    condition_id: str
    opened: int
    closed: int
    pnl: Decimal

    @property
    def hold_s(self) -> int:
        return self.closed - self.opened


def equity_curve(changes: Iterable[tuple[int, Decimal]]) -> list[EquityPoint]:
    """Cumulative PnL after each `(ts, pnl change)`, in time order (ties keep their order).

    The drawdown of a point is its distance below the highest equity seen so far (0 included:
    a run that loses from the start is in drawdown from its first loss), never negative.
    """
    out: list[EquityPoint] = []
    equity = ZERO
    peak = ZERO
    for ts, delta in sorted(changes, key=lambda c: c[0]):
        equity += delta
        peak = max(peak, equity)
        out.append(EquityPoint(ts, equity, peak - equity))
    return out


def max_drawdown(curve: Sequence[EquityPoint]) -> Decimal:
    """The largest drawdown on the curve (0 for an empty or never-falling curve)."""
    return max((p.drawdown for p in curve), default=ZERO)


def hit_rate(trips: Sequence[RoundTrip]) -> Decimal | None:
    """Share of closed round trips with a positive PnL (None when there is none)."""
    if not trips:
        return None
    wins = sum(1 for t in trips if t.pnl > 0)
    return Decimal(wins) / Decimal(len(trips))


def median(values: Sequence[int]) -> Decimal | None:
    """The median of `values` (the mean of the middle two for an even count); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return Decimal(ordered[mid])
    return (Decimal(ordered[mid - 1]) + Decimal(ordered[mid])) / 2


def median_hold_s(trips: Sequence[RoundTrip]) -> Decimal | None:
    """The median time a round trip was held, in seconds (None when there is none)."""
    return median([t.hold_s for t in trips])
