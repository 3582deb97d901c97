"""The books of one trader in a replay: holdings at average cost, realized PnL over time.

`Account` is what `vet` keeps for the leader and for the copier (and what a backtest can keep
for a strategy): every buy and sell at its price and fee, a resolution paying out a holding,
a final mark of what is still open; and from these the PnL changes in time order (the equity
curve), the round trips (hit rate, hold times), the fees and the PnL per market. Pure, Decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from backtest.metrics import RoundTrip

ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One fill of the leader or the copier, as the report draws it."""

    ts: int
    token_id: str
    condition_id: str
    side: str
    shares: Decimal
    price: Decimal
    fee: Decimal


@dataclass(slots=True)
class _Holding:
    shares: Decimal = ZERO
    cost: Decimal = ZERO
    opened: int = 0


class Account:
    """Holdings at average cost, realized PnL over time, round trips, fees, per-market PnL."""

    def __init__(self) -> None:
        self.holdings: dict[str, _Holding] = {}
        self.changes: list[tuple[int, Decimal]] = []
        self.trips: list[RoundTrip] = []
        self.fills: list[FillRecord] = []
        self.fees = ZERO
        self.by_market: dict[str, Decimal] = {}
        self._cond: dict[str, str] = {}
        self._open_pnl: dict[str, Decimal] = {}
        """PnL realized so far by each holding still open (its round trip's running total)."""

    def shares(self, token: str) -> Decimal:
        h = self.holdings.get(token)
        return h.shares if h is not None else ZERO

    def exposure(self, condition_id: str) -> Decimal:
        """What the account holds in the market, at cost (the copy trader's exposure)."""
        return sum(
            (h.cost for t, h in self.holdings.items() if self._cond.get(t) == condition_id),
            ZERO,
        )

    def _book(self, ts: int, condition_id: str, pnl: Decimal) -> None:
        self.changes.append((ts, pnl))
        self.by_market[condition_id] = self.by_market.get(condition_id, ZERO) + pnl

    def buy(
        self, ts: int, token: str, cid: str, shares: Decimal, price: Decimal, fee: Decimal
    ) -> None:
        self._cond[token] = cid
        h = self.holdings.setdefault(token, _Holding(opened=ts))
        if h.shares <= 0:
            h.opened = ts
        h.shares += shares
        h.cost += shares * price + fee
        self.fees += fee
        self.by_market.setdefault(cid, ZERO)
        self.fills.append(FillRecord(ts, token, cid, "BUY", shares, price, fee))

    def sell(
        self, ts: int, token: str, cid: str, shares: Decimal, price: Decimal, fee: Decimal
    ) -> None:
        h = self.holdings.get(token)
        if h is None or h.shares <= 0:
            return
        shares = min(shares, h.shares)
        basis = h.cost * shares / h.shares
        pnl = shares * price - fee - basis
        h.shares -= shares
        h.cost -= basis
        self.fees += fee
        self.fills.append(FillRecord(ts, token, cid, "SELL", shares, price, fee))
        self._book(ts, cid, pnl)
        self._trip_pnl(token, pnl)
        if h.shares <= 0:
            self._close(ts, token, cid)

    def _trip_pnl(self, token: str, pnl: Decimal) -> None:
        self._open_pnl[token] = self._open_pnl.get(token, ZERO) + pnl

    def _close(self, ts: int, token: str, cid: str) -> None:
        h = self.holdings.pop(token)
        pnl = self._open_pnl.pop(token, ZERO)
        self.trips.append(RoundTrip(token, cid, h.opened, ts, pnl))

    def resolve(self, ts: int, token: str, cid: str, payout: Decimal) -> None:
        """Pay out the holding at `payout` per share (redemption has no fee)."""
        h = self.holdings.get(token)
        if h is None or h.shares <= 0:
            return
        pnl = h.shares * payout - h.cost
        self._book(ts, cid, pnl)
        self._trip_pnl(token, pnl)
        self._close(ts, token, cid)

    def mark(self, ts: int, prices: Mapping[str, Decimal]) -> Decimal:
        """Book the open holdings at `prices` at `ts` (the end of the window); return the sum."""
        total = ZERO
        for token, h in sorted(self.holdings.items()):
            if h.shares <= 0 or token not in prices:
                continue
            pnl = h.shares * prices[token] - h.cost
            self._book(ts, self._cond.get(token, ""), pnl)
            total += pnl
        return total
