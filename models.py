"""Domain types shared by every component. Money is `Decimal`, always.

Messages are frozen pydantic models with `extra="forbid"`: a strategy cannot mutate an order after
handing it over, and a typo in a field name is an error rather than a silently ignored key.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final, Protocol, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

UINT256_MAX: Final = 2**256 - 1
ONE: Final = Decimal(1)
ZERO: Final = Decimal(0)


def utc_day(now: datetime | None = None) -> str:
    """The UTC day (YYYY-MM-DD) daily PnL is kept under, by the position book, the trading
    guard's persisted baseline and a shared account's rows alike."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


# The strategy name that books holdings no order of ours explains (manual trades, transfers,
# fills of orders missing from the journal). No strategy may use it, and none sells them.
UNATTRIBUTED: Final = "unattributed"
MONEY_MAX_DIGITS: Final = 15
"""Money values must be below 10**15 (see `_to_decimal`)."""


def _to_decimal(value: Any) -> Decimal:
    """Accept Decimal, int or str; refuse float (binary noise) and non-finite values."""
    if isinstance(value, bool):
        raise ValueError("money must be a Decimal, int or numeric string, not a bool")
    if isinstance(value, float):
        raise ValueError("money must be a Decimal, int or numeric string, not a float")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
    else:
        raise ValueError(f"expected a decimal number, got {type(value).__name__}")
    if not d.is_finite():
        raise ValueError("must be a finite number")
    if d.adjusted() >= MONEY_MAX_DIGITS:
        # No real price, size or amount is this large, and one that is overflows Decimal
        # arithmetic (price x size raises decimal.Overflow past 1e999999).
        raise ValueError(f"must be below 1e{MONEY_MAX_DIGITS}")
    return d


Money = Annotated[Decimal, BeforeValidator(_to_decimal)]
"""A finite Decimal parsed from Decimal/int/str (never float)."""


def validate_token_id(value: str) -> str:
    """Return `value` if it is a decimal uint256 string (Polymarket token ids are not hex)."""
    if not isinstance(value, str):
        raise ValueError("token_id must be a string of decimal digits")
    if not value or len(value) > 78 or not value.isdigit() or not value.isascii():
        raise ValueError("token_id must be a decimal uint256 string (1-78 digits, not 0x hex)")
    if int(value) > UINT256_MAX:
        raise ValueError("token_id exceeds uint256")
    return value


def validate_condition_id(value: str) -> str:
    """Return `value` lower-cased if it is `0x` + 64 hex characters."""
    v = value.lower() if isinstance(value, str) else ""
    if len(v) != 66 or not v.startswith("0x") or any(c not in "0123456789abcdef" for c in v[2:]):
        raise ValueError("condition_id must be 0x followed by 64 hex characters")
    return v


def on_tick(price: Decimal, tick: Decimal) -> bool:
    """Return True if `price` is an exact multiple of `tick`."""
    return tick > 0 and (price % tick) == 0


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    GTC = "GTC"
    GTD = "GTD"
    FOK = "FOK"
    FAK = "FAK"

    @property
    def rests(self) -> bool:
        """GTC and GTD rest on the book; FOK and FAK never do."""
        return self in (OrderType.GTC, OrderType.GTD)


class OrderStatus(StrEnum):
    """Life cycle of a journaled order.

    PENDING: journaled, not yet known to the venue (it may be in flight).
    UNKNOWN: sent, but the answer was lost (timeout); being reconciled by order hash.
    LIVE / PARTIALLY_FILLED: resting at the venue. The rest are terminal.
    """

    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    LIVE = "LIVE"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def open(self) -> bool:
        """True while the order may still trade (counts against open-order and exposure limits)."""
        return not self.terminal

    def can_become(self, new: OrderStatus) -> bool:
        """Return True if the life cycle allows moving from this status to `new`."""
        return new in ALLOWED_TRANSITIONS[self]


TERMINAL_STATUSES: Final = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)

_S = OrderStatus
ALLOWED_TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    _S.PENDING: frozenset(
        {_S.UNKNOWN, _S.LIVE, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.REJECTED}
    ),
    # UNKNOWN may stay UNKNOWN (another lookup that found nothing yet) until the venue answers.
    _S.UNKNOWN: frozenset(
        {_S.UNKNOWN, _S.LIVE, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.REJECTED}
    ),
    _S.LIVE: frozenset({_S.LIVE, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.REJECTED: frozenset(),
}
"""The only moves the journal accepts; storage mirrors this table in SQL (a trigger refuses others).
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def new_client_order_id() -> str:
    """Return a fresh, unique client order id."""
    return uuid.uuid4().hex


class OrderRequest(_Frozen):
    """What a strategy asks the executor to do. Validated on construction; immutable after."""

    strategy: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-:.]+$")
    token_id: str
    side: Side
    price: Money
    size: Money
    order_type: OrderType
    expiration: int | None = Field(default=None, description="unix seconds; GTD only")
    post_only: bool = False
    client_order_id: str = Field(default_factory=new_client_order_id, min_length=8, max_length=64)
    reason: str = Field(default="", max_length=500)

    @field_validator("token_id")
    @classmethod
    def _token(cls, v: str) -> str:
        return validate_token_id(v)

    @field_validator("price")
    @classmethod
    def _price(cls, v: Decimal) -> Decimal:
        if not ZERO < v < ONE:
            raise ValueError("price must be strictly between 0 and 1")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("size must be greater than 0")
        return v

    @model_validator(mode="after")
    def _order_type_rules(self) -> OrderRequest:
        if self.order_type is OrderType.GTD:
            if self.expiration is None:
                raise ValueError("a GTD order needs an expiration (unix seconds)")
            if self.expiration <= int(time.time()):
                raise ValueError("a GTD order's expiration must be in the future")
        elif self.expiration not in (None, 0):
            raise ValueError("expiration is only allowed on GTD orders")
        if self.post_only and not self.order_type.rests:
            raise ValueError("post_only is only allowed on GTC/GTD orders")
        return self

    @property
    def notional(self) -> Decimal:
        """Price times size, in pUSD."""
        return self.price * self.size


class OrderResult(_Frozen):
    """What `executor.submit` returns to a strategy."""

    client_order_id: str
    status: OrderStatus
    venue_order_id: str | None = None
    filled_size: Money = ZERO
    avg_price: Money | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        """True if the venue took the order (resting or traded)."""
        return self.status in (OrderStatus.LIVE, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)


class TradeStatus(StrEnum):
    MATCHED = "MATCHED"
    MINED = "MINED"
    CONFIRMED = "CONFIRMED"
    RETRYING = "RETRYING"
    FAILED = "FAILED"


class LiquidityRole(StrEnum):
    MAKER = "MAKER"
    TAKER = "TAKER"


class Fill(_Frozen):
    """One execution of one of our orders."""

    trade_id: str = Field(min_length=1)
    venue_order_id: str
    client_order_id: str | None = None
    token_id: str
    side: Side
    price: Money
    size: Money
    fee: Money = ZERO
    role: LiquidityRole = LiquidityRole.TAKER
    status: TradeStatus = TradeStatus.MATCHED
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    legs: tuple[tuple[Decimal, Decimal], ...] = ()
    """A taker fill's legs as (shares, price in our token), one per maker order it took. The venue
    charges the taker fee per leg at the leg's price (each floored), so the fee is booked from
    them when known; empty for a maker fill or when the legs were not read."""

    @field_validator("token_id")
    @classmethod
    def _token(cls, v: str) -> str:
        return validate_token_id(v)

    @field_validator("size", "price")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v


class Position(_Frozen):
    """One strategy's holding in one token: size, average cost, realized PnL. Long-only.

    `strategy` is the strategy whose orders made the fills; holdings no order of ours explains
    belong to `UNATTRIBUTED`.
    """

    token_id: str
    strategy: str = UNATTRIBUTED
    size: Money = ZERO
    avg_cost: Money = ZERO
    realized_pnl: Money = ZERO

    def apply(self, side: Side, price: Decimal, size: Decimal, fee: Decimal = ZERO) -> Position:
        """Return the position after a fill. A sell beyond the holding is clamped to the holding."""
        if side is Side.BUY:
            new_size = self.size + size
            cost = self.avg_cost * self.size + price * size + fee
            return self.model_copy(update={"size": new_size, "avg_cost": cost / new_size})
        sold = min(size, self.size)
        pnl = (price - self.avg_cost) * sold - fee
        new_size = self.size - sold
        return self.model_copy(
            update={
                "size": new_size,
                "avg_cost": self.avg_cost if new_size > 0 else ZERO,
                "realized_pnl": self.realized_pnl + pnl,
            }
        )

    def unrealized(self, mark: Decimal) -> Decimal:
        """PnL if the holding were valued at `mark`."""
        return (mark - self.avg_cost) * self.size


class Market(_Frozen):
    """Trading parameters of one binary market (a condition with two outcome tokens)."""

    condition_id: str
    token_ids: tuple[str, ...]
    outcomes: tuple[str, ...] = ("Yes", "No")
    tick_size: Money = Decimal("0.01")
    min_size: Money = Decimal("5")
    neg_risk: bool = False
    end_date: datetime | None = None
    accepting_orders: bool = True
    active: bool = True
    closed: bool = False
    slug: str = ""
    question: str = ""
    fee_rate: Money | None = None
    """Gamma's taker fee rate (`feeSchedule.rate`, 0 when `feesEnabled` is false); None when
    Gamma did not say. The CLOB's `fd` takes precedence (see `execution.fees`)."""
    fee_exponent: Money = ONE
    fee_taker_only: bool = True

    @field_validator("condition_id")
    @classmethod
    def _cond(cls, v: str) -> str:
        return validate_condition_id(v)

    @field_validator("token_ids")
    @classmethod
    def _tokens(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_token_id(t) for t in v)

    @field_validator("tick_size")
    @classmethod
    def _tick(cls, v: Decimal) -> Decimal:
        if not ZERO < v < ONE:
            raise ValueError("tick_size must be between 0 and 1")
        return v

    @field_validator("min_size")
    @classmethod
    def _min_size(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("min_size must be 0 or more")
        return v

    @property
    def tradable(self) -> bool:
        return self.active and self.accepting_orders and not self.closed

    def price_ok(self, price: Decimal) -> str | None:
        """Return why `price` is not tradable here, or None if it is."""
        if not self.tick_size <= price <= ONE - self.tick_size:
            return f"price {price} outside [{self.tick_size}, {ONE - self.tick_size}]"
        if not on_tick(price, self.tick_size):
            return f"price {price} is not on the tick grid {self.tick_size}"
        return None


Level = tuple[Decimal, Decimal]
"""One price level: (price, aggregate size)."""


@runtime_checkable
class BookSource(Protocol):
    """Read access to local order books (the market feed's BookStore implements it).

    Levels are best first: asks ascending by price, bids descending. `None` means there is no
    *usable* book for the token (never snapshotted, stale, or resynchronising): callers must not
    trade on it: no trading on stale data.
    """

    def asks(self, token_id: str) -> list[Level] | None:
        """Ask levels, lowest price first, or None if the book is not usable."""
        ...

    def bids(self, token_id: str) -> list[Level] | None:
        """Bid levels, highest price first, or None if the book is not usable."""
        ...

    def best_ask(self, token_id: str) -> Level | None:
        """The lowest ask, or None if there is none or the book is not usable (O(1))."""
        ...

    def best_bid(self, token_id: str) -> Level | None:
        """The highest bid, or None if there is none or the book is not usable (O(1))."""
        ...
