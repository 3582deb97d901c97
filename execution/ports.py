"""The contract between the executor and a broker (paper or live), and the venue's facts.

A broker signs (`prepare`), sends (`send`, `send_batch`), cancels and looks orders up. It raises
only the classes in `errors`; it never touches the journal — the executor does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from errors import OrderRejected, OutcomeUnknown, PolydError
from models import ZERO, Fill, OrderRequest, OrderStatus, OrderType, Side


class VenueStatus(StrEnum):
    """An order's status as the venue reports it, normalised from its several spellings."""

    LIVE = "LIVE"
    MATCHED = "MATCHED"
    DELAYED = "DELAYED"
    UNMATCHED = "UNMATCHED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @classmethod
    def parse(cls, raw: object) -> VenueStatus | None:
        """Accept `LIVE`, `live`, `ORDER_STATUS_LIVE`, `CANCELED_<reason>`; None if unknown."""
        text = str(raw or "").strip().upper().removeprefix("ORDER_STATUS_")
        if text.startswith("CANCELED") or text.startswith("CANCELLED"):
            return cls.CANCELED
        if text in ("INVALID", ""):
            return None
        try:
            return cls(text)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class MarketMeta:
    """What the market rules need to know about one token."""

    token_id: str
    condition_id: str
    tick_size: Decimal
    min_size: Decimal
    neg_risk: bool
    accepting_orders: bool = True
    closed: bool = False
    payout: Decimal | None = None
    """Set once the market resolved: what one share of this token redeems for (1, 0, 0.5)."""
    taker_delay_s: float = 0.0  # `seconds_delay`: marketable orders wait this long to match

    @property
    def tradable(self) -> bool:
        return self.accepting_orders and not self.closed


@dataclass(frozen=True, slots=True)
class Prepared:
    """A signed order ready to send. `payload` is sent byte for byte on every attempt.

    `signed_order` is what the journal keeps so the same order can be re-sent after a crash
    (`Restorable.restore`): the signed order without the API key id or any credential. None for
    brokers that cannot re-send (paper).
    """

    request: OrderRequest
    venue_order_id: str
    payload_hash: str
    payload: bytes
    signed_order: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The venue's answer to an accepted order."""

    venue_order_id: str
    status: VenueStatus
    size_matched: Decimal = ZERO
    avg_price: Decimal | None = None
    trade_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue knows it (REST `/data/order`, `/data/orders`, user WS `order`)."""

    venue_order_id: str
    status: VenueStatus
    original_size: Decimal
    size_matched: Decimal
    price: Decimal
    token_id: str = ""
    side: Side | None = None
    order_type: str = ""


@dataclass(frozen=True, slots=True)
class CancelResult:
    canceled: tuple[str, ...] = ()
    not_canceled: dict[str, str] = field(default_factory=dict)


BatchItem = Ack | OrderRejected | OutcomeUnknown
"""One order's part of a batch answer: acked, refused, or an answer that could not be read."""
FillHandler = Callable[[Fill], Awaitable[None]]
OrderEventHandler = Callable[[VenueOrder], Awaitable[None]]


class Broker(Protocol):
    """Where orders go: the paper broker or the live CLOB broker."""

    name: str

    async def prepare(self, request: OrderRequest, meta: MarketMeta) -> Prepared:
        """Sign `request` once (off the event loop) and compute its venue order id."""
        ...

    async def send(self, prepared: Prepared) -> Ack:
        """Send one signed order; raise RateLimited/VenueUnavailable/TransientError,
        OrderRejected or OutcomeUnknown."""
        ...

    async def send_batch(self, batch: Sequence[Prepared]) -> list[BatchItem]:
        """Send up to 15 signed orders in one request (never retried)."""
        ...

    async def cancel(self, venue_order_ids: Sequence[str]) -> CancelResult:
        """Cancel the given orders."""
        ...

    async def cancel_all(self) -> CancelResult:
        """Cancel every resting order of this account."""
        ...

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        """Return what the venue knows about an order, or None if it has never seen it."""
        ...

    async def open_orders(self) -> list[VenueOrder]:
        """Return every resting order of this account."""
        ...

    async def fills_since(self, after_unix_s: int, *, market: str | None = None) -> list[Fill]:
        """Return our fills (as maker or taker) matched at or after `after_unix_s`, in one
        market (condition id) when `market` is given."""
        ...

    async def close(self) -> None:
        """Release threads and connections."""
        ...


class StoredOrderMismatch(PolydError):
    """A journaled signed order does not hash to the order id or payload hash journaled with it
    (or cannot be read). It is not re-sent; the row is looked up and settled as before."""


@runtime_checkable
class Restorable(Protocol):
    """A broker that can rebuild a journaled signed order for a re-send (the live broker)."""

    def restore(
        self,
        request: OrderRequest,
        *,
        venue_order_id: str,
        payload_hash: str,
        signed_order: str,
    ) -> Prepared:
        """Rebuild the exact payload of a journaled order, never signing anything; raise
        StoredOrderMismatch unless it hashes to `venue_order_id` and `payload_hash`."""
        ...


class MetadataSource(Protocol):
    """Where market rules come from (the venue's `/markets-by-token` + `/markets`)."""

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        """Return the metadata of the token's market (both tokens), or [] if unknown."""
        ...


def journal_status(
    status: VenueStatus, *, size: Decimal, matched: Decimal, order_type: OrderType
) -> OrderStatus:
    """Map a venue status onto the journal's life cycle.

    A marketable order (FOK/FAK) that matched in part had its remainder killed: the journal row
    is CANCELED with its `size_matched` (it can trade no more); a resting order matched in part
    is PARTIALLY_FILLED.
    """
    if matched >= size and matched > 0:
        return OrderStatus.FILLED
    if status is VenueStatus.EXPIRED:
        return OrderStatus.EXPIRED
    if status is VenueStatus.CANCELED:
        return OrderStatus.CANCELED
    if status is VenueStatus.UNMATCHED:
        return OrderStatus.CANCELED  # "marketable but failure delaying": no fill, not resting
    if status is VenueStatus.MATCHED:
        if not order_type.rests:
            return OrderStatus.CANCELED
        return OrderStatus.PARTIALLY_FILLED if matched > 0 else OrderStatus.LIVE
    # LIVE or DELAYED (accepted, waiting for the market's taker delay): still working at the
    # venue; a DELAYED order keeps its reservation until the feed or a reconcile settles it.
    return OrderStatus.PARTIALLY_FILLED if matched > 0 else OrderStatus.LIVE


@runtime_checkable
class TickSizeSink(Protocol):
    """Where the market feed reports a `tick_size_change`, so the next order uses the new grid."""

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """Record the new minimum tick for `token_id`."""
        ...
