"""A simulated market's life cycle: tick size changes and resolution.

Tick size (docs/venue-mechanics.md §4)
    The market channel docs (https://docs.polymarket.com/market-data/websocket/market-channel,
    `tick_size_change`) say the minimum tick becomes finer when the book's price goes above 0.96
    or below 0.04; NautilusTrader's adapter docs ("Tick size change handling",
    https://github.com/nautechsystems/nautilus_trader/blob/a95c8042b00133829d252ae8cf68f78fc176a973/docs/integrations/polymarket.md)
    show it also turns coarser again. A market listed at 0.01 (`SimMarket.listed_tick`) moves to
    0.001 while the price of one of its tokens (mid of the best levels, or the one side there is)
    is above 0.96 or below 0.04, and back to 0.01 when both are inside again. Each change is a
    `tick_size_change` per token to every subscriber of the token (NT's capture
    `tick_size_change.json`) and is served at once on `/tick-size`, `/clob-markets` `mts`,
    `/markets` and the book's `tick_size`.

    Resting orders off the new grid (a 0.975 bid after the tick went back to 0.01) are left
    resting and can still match: the venue's behaviour is undocumented, and NT's adapter handles
    book levels "that fit a 0.001 tick but not a 0.01 tick" after a coarsening, which only
    happens if the venue keeps them. New orders must be on the new grid (`clob_orders`).

Resolution (docs/venue-mechanics.md §7)
    `resolve()` (a test hook, `POST /_sim/resolve`) or `schedule()` (a wall-clock time) ends a
    market: matching stops, `accepting_orders` turns false, every resting order ends with status
    `CANCELED_MARKET_RESOLVED` (a user-feed `CANCELLATION` carrying that status, and the same
    status on REST; https://github.com/hbr-l/polypy/issues/11 reports the status live), and a
    `market_resolved` goes to `custom_feature_enabled` subscribers (docs' market channel page,
    NT's `ws_market_resolved_msg.json`) unless withheld, so the polling path can be tested. Gamma
    then serves `closed`, `umaResolutionStatus: "resolved"`, `outcomePrices` 1/0, the CLOB
    `tokens[].winner`/`price` and `is_50_50_outcome` (NT's real captures in PR #4164), and the
    Data API `redeemable: true` with `curPrice` 1/0 and `currentValue = size x payout`
    (https://docs.polymarket.com/api-reference/core/get-current-positions-for-a-user).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from simulator.engine import Book
from simulator.market import SimMarket
from simulator.venue import Venue

COARSE_TICK = Decimal("0.01")
FINE_TICK = Decimal("0.001")
HIGH = Decimal("0.96")
LOW = Decimal("0.04")
CANCELED_MARKET_RESOLVED = "CANCELED_MARKET_RESOLVED"
HALF = Decimal("0.5")


def book_price(book: Book) -> Decimal | None:
    """The book's price: mid of the best levels, the one side there is, or None when empty."""
    bb, ba = book.best_bid(), book.best_ask()
    if bb is not None and ba is not None:
        return (bb + ba) / 2
    return bb if bb is not None else ba


def wanted_tick(m: SimMarket) -> Decimal:
    """The tick `m` should have for its books' prices now."""
    listed = m.listed_tick if m.listed_tick is not None else m.tick_size
    if not m.auto_tick or listed != COARSE_TICK:
        return m.tick_size
    for t in m.token_ids:
        p = book_price(m.books[t])
        if p is not None and (p > HIGH or p < LOW):
            return FINE_TICK
    return COARSE_TICK


class Lifecycle:
    """Tick changes and resolutions of the venue's markets; events go to the venue's sink."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    # ticks -------------------------------------------------------------------------------
    def set_tick(self, m: SimMarket, tick: Decimal, *, relist: bool = False) -> None:
        """Change `m`'s tick (both tokens) and tell subscribers. `relist`: the new tick is the
        market's listed one (an operator's change), which the automatic rule starts from."""
        tick = Decimal(tick)
        if not Decimal(0) < tick < 1:
            raise ValueError(f"tick size {tick} outside (0, 1)")
        if m.listed_tick is None or relist:
            m.listed_tick = tick if relist else m.tick_size
        old = m.tick_size
        if old == tick:
            return
        m.tick_size = tick
        self.venue.sink.tick_changed(m, old)

    def recompute_tick(self, condition_id: str) -> None:
        """After the book of a market moved: apply the 0.96/0.04 rule."""
        m = self.venue.markets_by_cid.get(condition_id)
        if m is None or m.resolved:
            return
        if m.listed_tick is None:
            m.listed_tick = m.tick_size
        new = wanted_tick(m)
        if new != m.tick_size:
            self.set_tick(m, new)

    # resolution --------------------------------------------------------------------------
    def resolve(self, condition_id: str, winner: str | None, *, announce: bool = True) -> None:
        """Resolve a market now. `winner`: the winning token id, or None for a 50-50 outcome.
        `announce=False` withholds `market_resolved` (the venue's event is not reliable)."""
        m = self.venue.markets_by_cid.get(condition_id)
        if m is None:
            raise ValueError(f"unknown market {condition_id}")
        if m.resolved:
            raise ValueError(f"market {condition_id} is already resolved")
        if winner is not None and winner not in m.token_ids:
            raise ValueError(f"winner {winner} is not a token of market {condition_id}")
        m.payouts = {
            t: HALF if winner is None else (Decimal(1) if t == winner else Decimal(0))
            for t in m.token_ids
        }
        m.resolved_at = datetime.now(UTC)
        m.closed = True
        m.accepting_orders = False
        eng = self.venue.engine
        for o in [o for o in eng.open_orders() if o.market == condition_id]:
            if eng.cancel(o.id, CANCELED_MARKET_RESOLVED) is not None:
                o.status = CANCELED_MARKET_RESOLVED  # REST says what the user feed said
        self.venue.sink.market_resolved(m, winner, announce)

    def schedule(
        self, condition_id: str, winner: str | None, at: datetime, *, announce: bool = True
    ) -> None:
        """Resolve a market at wall-clock time `at` (at once if it has passed)."""
        m = self.venue.markets_by_cid.get(condition_id)
        if m is None:
            raise ValueError(f"unknown market {condition_id}")
        if winner is not None and winner not in m.token_ids:
            raise ValueError(f"winner {winner} is not a token of market {condition_id}")
        delay = max(0.0, (at - datetime.now(UTC)).total_seconds())
        self.venue._later(delay, self._resolve_scheduled, condition_id, winner, announce)

    def _resolve_scheduled(self, condition_id: str, winner: str | None, announce: bool) -> None:
        if not self.venue.markets_by_cid[condition_id].resolved:
            self.resolve(condition_id, winner, announce=announce)
