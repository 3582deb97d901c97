"""The simulator's plain records of what reached it: HTTP requests and Data API trade rows.

Their own module so that the venue (`simulator.venue`), which makes them, and the bounded
history (`simulator.history`), which keeps and folds them, both import them without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from simulator.market import SimMarket


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request that reached the venue."""

    server: str
    method: str
    path: str
    query: str
    status: int
    ts: float


@dataclass(slots=True)
class DataRow:
    """One Data API trade row (also an /activity TRADE row)."""

    wallet: str
    side: str
    token_id: str
    market: SimMarket
    size: Decimal
    price: Decimal
    timestamp: int
    tx: str
    is_taker: bool
