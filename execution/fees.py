"""The venue's taker fee: the one place the daemon computes it.

Polymarket charges the **taker** of a match, per fill, in pUSD:

    fee = C x rate x (p x (1 - p)) ^ exponent

`C` is the number of shares matched (BUY and SELL alike) and `p` the fill's price. A maker pays
nothing. `rate` and `exponent` are per market: `/clob-markets/{condition_id}` serves them as
`fd.r` / `fd.e` (with `fd.to`, taker only; `fd` is absent on a market without a fee) and Gamma as
`feeSchedule {rate, exponent, takerOnly}`. The legacy `/fee-rate` `base_fee` and the trades'
`fee_rate_bps` are not the rate charged and are never read here.

Sources: https://docs.polymarket.com/trading/fees, the formula in
https://github.com/Polymarket/py-clob-client-v2/blob/main/py_clob_client_v2/fees.py
(`platform_fee_rate = fee_rate * (price * (1 - price)) ** fee_exponent`), and the 5-decimal
precision quoted in https://github.com/nautechsystems/nautilus_trader (docs/integrations/
polymarket.md, "Fees"). Which way the venue rounds is not documented: a fee is **booked** rounded
down to 0.00001 and **budgeted** rounded up.

Budgeting a BUY that takes. Its shares cost at most its limit `L`, but a taker BUY takes with
surplus: what it saves at a better price `q` buys extra shares (docs/venue-mechanics.md §2), so
the pUSD it spends, `c`, buys `c / q` shares and pays `c x rate x (q(1-q))^e / q` in fees, which
is larger at lower prices (for e = 1 it is `c x rate x (1 - q)`). A BUY is therefore budgeted at
the most that fee can be for prices between the lowest ask it can take (`low`, the best ask) and
its limit (`fee_per_pusd`). For shares at fixed count the cost of one share,
`q + rate x (q(1-q))^e`, grows with `q` (its slope is `1 + rate x e x (q(1-q))^(e-1) x (1-2q)`,
positive while `rate x e x 4^(1-e) < 1`), so the limit bounds that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal
from typing import Final

from models import ONE, ZERO, Market

FEE_QUANTUM: Final = Decimal("0.00001")
"""Fees are charged to 5 decimals; smaller fees round to zero."""
SIZE_STEP: Final = Decimal("0.01")


class FeeSource:
    """Where a `FeeSchedule` came from (a label on logs and `status`)."""

    CLOB: Final = "clob"  # `/clob-markets/{condition_id}` `fd`
    GAMMA: Final = "gamma"  # Gamma `feeSchedule`, when the CLOB's was not read
    NONE: Final = "none"  # nothing read yet: no fee assumed


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """One market's taker fee: `rate` and `exponent` of the formula, and who pays."""

    rate: Decimal = ZERO
    exponent: Decimal = ONE
    taker_only: bool = True
    source: str = FeeSource.NONE

    def __post_init__(self) -> None:
        if not self.rate.is_finite() or not ZERO <= self.rate < ONE:
            raise ValueError(f"fee rate must be in [0, 1), got {self.rate}")
        if not self.exponent.is_finite() or not ZERO < self.exponent <= 10:
            raise ValueError(f"fee exponent must be in (0, 10], got {self.exponent}")

    @property
    def charged(self) -> bool:
        return self.rate > 0

    def payer_pays(self, taker: bool) -> bool:
        """True if a fill in this role pays the fee (a maker pays only without `taker_only`)."""
        return self.charged and (taker or not self.taker_only)


NO_FEE: Final = FeeSchedule()


def fee(size: Decimal, price: Decimal, rate: Decimal, exponent: Decimal, *, up: bool) -> Decimal:
    """`size x rate x (price x (1 - price)) ^ exponent`, quantized to 0.00001 pUSD: rounded up
    when budgeting (`up=True`), down when booking what was charged.

    Raise ValueError on a negative size or rate, a price outside (0, 1) or an exponent <= 0.
    """
    if size < 0:
        raise ValueError(f"fee: size must be 0 or more, got {size}")
    if not ZERO < price < ONE:
        raise ValueError(f"fee: price must be strictly between 0 and 1, got {price}")
    if rate < 0:
        raise ValueError(f"fee: rate must be 0 or more, got {rate}")
    if exponent <= 0:
        raise ValueError(f"fee: exponent must be greater than 0, got {exponent}")
    if size == 0 or rate == 0:
        return ZERO
    base = price * (ONE - price)
    # An integral exponent is exact in Decimal; a fractional one is correct to 28 digits.
    factor = base ** int(exponent) if exponent == exponent.to_integral_value() else base**exponent
    return (size * rate * factor).quantize(FEE_QUANTUM, rounding=ROUND_UP if up else ROUND_DOWN)


def fee_booked(size: Decimal, price: Decimal, schedule: FeeSchedule, *, taker: bool) -> Decimal:
    """The fee a fill was charged: rounded down, 0 for a maker (on a taker-only market)."""
    if not schedule.payer_pays(taker):
        return ZERO
    return fee(size, price, schedule.rate, schedule.exponent, up=False)


def fee_budget(size: Decimal, price: Decimal, schedule: FeeSchedule) -> Decimal:
    """The most a fill of `size` at `price` can be charged, rounded up (0 without a fee)."""
    if not schedule.charged:
        return ZERO
    return fee(size, price, schedule.rate, schedule.exponent, up=True)


def fee_per_pusd(low: Decimal, high: Decimal, schedule: FeeSchedule) -> Decimal:
    """The most fee a taker BUY pays per pUSD it spends at prices in [`low`, `high`]:
    `rate x max (q(1-q))^e / q` (spending c at q buys c / q shares)."""
    if not schedule.charged:
        return ZERO
    e = schedule.exponent
    prices = [low, high]
    if e > 1:  # (q(1-q))^e / q = q^(e-1) (1-q)^e peaks inside (0, 1)
        peak = (e - 1) / (2 * e - 1)
        if low < peak < high:
            prices.append(peak)
    return schedule.rate * max((q * (ONE - q)) ** e / q for q in prices)


def buy_cost(
    size: Decimal, price: Decimal, schedule: FeeSchedule, *, low: Decimal | None = None
) -> Decimal:
    """What a BUY of `size` at limit `price` may take from the wallet: notional + budgeted fee.

    `low` is the lowest price it can take at (the best ask; None: nothing better than `price`):
    a BUY that takes below its limit buys extra shares with the difference, and pays their fee.
    """
    notional = price * size
    fee_up = fee_budget(size, price, schedule)
    if low is not None and ZERO < low < price and schedule.charged:
        surplus = (notional * fee_per_pusd(low, price, schedule)).quantize(
            FEE_QUANTUM, rounding=ROUND_UP
        )
        fee_up = max(fee_up, surplus)
    return notional + fee_up


def max_buy_size(
    budget: Decimal,
    price: Decimal,
    schedule: FeeSchedule,
    *,
    step: Decimal = SIZE_STEP,
    low: Decimal | None = None,
) -> Decimal:
    """The largest size (a multiple of `step`) whose notional + budgeted fee at limit `price`
    (taking from `low` up, see `buy_cost`) fits in `budget`; 0 if none does."""
    if budget <= 0:
        return ZERO
    bottom = low if low is not None and ZERO < low < price else price
    per_share = price * (ONE + fee_per_pusd(bottom, price, schedule))
    size = (budget / per_share / step).to_integral_value(rounding=ROUND_FLOOR) * step
    # The fee's rounding up adds at most 0.00001: a step or two down is enough.
    while size > 0 and buy_cost(size, price, schedule, low=low) > budget:
        size -= step
    return max(size, ZERO)


def gamma_schedule(market: Market) -> FeeSchedule | None:
    """The fee Gamma showed for `market` (`feesEnabled`/`feeSchedule`), or None if it did not
    say. Only a fallback: the CLOB's `fd` wins when it has been read."""
    if market.fee_rate is None:
        return None
    try:
        return FeeSchedule(
            rate=market.fee_rate,
            exponent=market.fee_exponent,
            taker_only=market.fee_taker_only,
            source=FeeSource.GAMMA,
        )
    except ValueError:
        return None
