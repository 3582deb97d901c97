"""The taker fee: the formula the SDK uses, 5-decimal rounding (down booked, up budgeted), who
pays, and BUY sizing that leaves room for the fee.

Sources: https://github.com/Polymarket/py-clob-client-v2/blob/main/py_clob_client_v2/fees.py
(`platform_fee_rate = fee_rate * (price * (1 - price)) ** fee_exponent`, the installed SDK is
compared with directly below) and https://docs.polymarket.com/trading/fees (taker only, 5 decimals).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_clob_client_v2.fees import adjust_buy_amount_for_fees

from execution.fees import (
    FEE_QUANTUM,
    NO_FEE,
    FeeSchedule,
    FeeSource,
    buy_cost,
    fee,
    fee_booked,
    fee_budget,
    gamma_schedule,
    max_buy_size,
)
from models import Market

D = Decimal


def sdk_fee_per_share(price: str, rate: str, exponent: str) -> float:
    """The SDK's platform fee on one share: `adjust_buy_amount_for_fees` with a balance of
    exactly `amount` + fee returns `amount - fee` (the fee it computed on `amount` pUSD at
    `price`, i.e. on `amount / price` shares). With amount = price, that is one share."""
    p, r, e = float(price), float(rate), float(exponent)
    # balance == amount: the SDK trims to balance - platform_fee.
    trimmed: float = adjust_buy_amount_for_fees(p, p, p, r, e, 0.0)
    return p - trimmed


@pytest.mark.parametrize(
    ("price", "rate", "exponent"),
    [
        ("0.5", "0.072", "1"),
        ("0.97", "0.072", "1"),
        ("0.98", "0.072", "1"),
        ("0.03", "0.03", "1"),
        ("0.42", "0.04", "1"),
        ("0.9", "0.25", "2"),
        ("0.61", "0.0175", "1"),
        ("0.33", "0.05", "1.5"),
    ],
)
def test_fee_matches_the_sdk_formula(price: str, rate: str, exponent: str) -> None:
    shares = D(1000)
    ours = fee(shares, D(price), D(rate), D(exponent), up=False)
    sdk = D(repr(sdk_fee_per_share(price, rate, exponent))) * shares
    # The SDK works in float; ours is exact then floored to 0.00001.
    assert abs(ours - sdk) <= D("0.00002"), (ours, sdk)
    assert ours > 0


def test_worked_numbers_of_the_docs() -> None:
    # docs/venue-mechanics.md section 1: crypto 0.072, 100 shares.
    crypto = FeeSchedule(rate=D("0.072"), exponent=D(1), source="clob")
    assert fee_booked(D(100), D("0.97"), crypto, taker=True) == D("0.20952")
    assert fee_booked(D(100), D("0.98"), crypto, taker=True) == D("0.14112")
    sports = FeeSchedule(rate=D("0.03"))
    assert fee_booked(D(100), D("0.97"), sports, taker=True) == D("0.08730")


def test_rounding_is_down_when_booked_and_up_when_budgeted() -> None:
    s = FeeSchedule(rate=D("0.072"))
    # 7 x 0.072 x 0.37 x 0.63 = 0.11748... : floor 0.11747, ceiling 0.11748
    exact = D(7) * D("0.072") * D("0.37") * D("0.63")
    assert exact == D("0.1174824")
    assert fee_booked(D(7), D("0.37"), s, taker=True) == D("0.11748")
    assert fee_budget(D(7), D("0.37"), s) == D("0.11749")
    # Under the smallest unit: nothing charged, the unit budgeted.
    assert fee_booked(D("0.01"), D("0.99"), s, taker=True) == 0
    assert fee_budget(D("0.01"), D("0.99"), s) == FEE_QUANTUM


def test_maker_pays_nothing_on_a_taker_only_market() -> None:
    s = FeeSchedule(rate=D("0.072"), taker_only=True)
    assert fee_booked(D(100), D("0.5"), s, taker=False) == 0
    both = FeeSchedule(rate=D("0.072"), taker_only=False)
    assert fee_booked(D(100), D("0.5"), both, taker=False) == D("1.8")


def test_no_fee_market() -> None:
    assert fee_booked(D(100), D("0.5"), NO_FEE, taker=True) == 0
    assert fee_budget(D(100), D("0.5"), NO_FEE) == 0
    assert buy_cost(D(100), D("0.5"), NO_FEE) == D(50)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ((D("-0.1"), D(1)), "rate"),
        ((D("1"), D(1)), "rate"),
        ((D("0.1"), D("0")), "exponent"),
        ((D("0.1"), D("NaN")), "exponent"),
    ],
)
def test_bad_schedule_is_refused_naming_the_field(kw: tuple[Decimal, Decimal], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FeeSchedule(rate=kw[0], exponent=kw[1])


@pytest.mark.parametrize(
    ("args", "what"),
    [
        ((D(-1), D("0.5"), D("0.1"), D(1)), "size"),
        ((D(1), D(1), D("0.1"), D(1)), "price"),
        ((D(1), D("0.5"), D("-0.1"), D(1)), "rate"),
        ((D(1), D("0.5"), D("0.1"), D(0)), "exponent"),
    ],
)
def test_bad_input_names_the_problem(args: tuple[Decimal, ...], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        fee(*args, up=True)


def test_max_buy_size_leaves_room_for_the_fee() -> None:
    s = FeeSchedule(rate=D("0.072"))
    size = max_buy_size(D(100), D("0.97"), s)
    # Without the fee 103.09 shares would fit; with it only 102.87.
    assert size == D("102.87")
    assert buy_cost(size, D("0.97"), s) <= D(100) < buy_cost(size + D("0.01"), D("0.97"), s)
    assert max_buy_size(D(100), D("0.97"), NO_FEE) == D("103.09")
    assert max_buy_size(D(0), D("0.5"), s) == 0


@settings(max_examples=300, deadline=None)
@given(
    budget=st.decimals(min_value="0.01", max_value="100000", places=2),
    price=st.decimals(min_value="0.001", max_value="0.999", places=3),
    rate=st.decimals(min_value="0", max_value="0.3", places=4),
    exponent=st.sampled_from([D(1), D(2), D("1.5"), D("0.5")]),
)
def test_max_buy_size_is_the_largest_that_fits(
    budget: Decimal, price: Decimal, rate: Decimal, exponent: Decimal
) -> None:
    s = FeeSchedule(rate=rate, exponent=exponent)
    size = max_buy_size(budget, price, s)
    assert size >= 0 and size == size.quantize(D("0.01"))
    if size > 0:
        assert buy_cost(size, price, s) <= budget
    assert buy_cost(size + D("0.01"), price, s) > budget


@settings(max_examples=300, deadline=None)
@given(
    size=st.decimals(min_value="0.01", max_value="100000", places=2),
    low=st.decimals(min_value="0.001", max_value="0.998", places=3),
    rate=st.sampled_from([D("0.072"), D("0.03"), D("0.25")]),
    exponent=st.sampled_from([D(1), D(2)]),
)
def test_cost_per_share_grows_with_the_price(
    size: Decimal, low: Decimal, rate: Decimal, exponent: Decimal
) -> None:
    """Budgeting at the limit covers fills at better prices (the module's claim)."""
    s = FeeSchedule(rate=rate, exponent=exponent)
    high = low + D("0.001")
    assert buy_cost(size, low, s) <= buy_cost(size, high, s) + FEE_QUANTUM


@settings(max_examples=300, deadline=None)
@given(
    size=st.decimals(min_value="1", max_value="10000", places=2),
    limit=st.decimals(min_value="0.02", max_value="0.99", places=2),
    frac=st.decimals(min_value="0", max_value="1", places=3),
    rate=st.sampled_from([D("0.072"), D("0.03"), D("0.25")]),
    exponent=st.sampled_from([D(1), D(2), D("1.5"), D("0.5")]),
)
def test_budget_covers_a_taker_buy_whose_surplus_buys_extra_shares(
    size: Decimal, limit: Decimal, frac: Decimal, rate: Decimal, exponent: Decimal
) -> None:
    """A BUY spending limit x size pUSD that fills at q <= limit gets (limit x size) / q shares
    (docs/venue-mechanics.md section 2, surplus as shares) and pays their fee: the budget taken
    from the best ask `low` up covers it for every q in [low, limit]."""
    s = FeeSchedule(rate=rate, exponent=exponent)
    low = max(D("0.01"), (limit * frac).quantize(D("0.01")))
    cash = limit * size
    budget = buy_cost(size, limit, s, low=low) - cash
    for q in {low, limit, ((low + limit) / 2).quantize(D("0.001"))}:
        assert fee(cash / q, q, rate, exponent, up=False) <= budget


def test_surplus_fee_at_a_lower_price_is_budgeted() -> None:
    s = FeeSchedule(rate=D("0.072"))
    # 10.48 at limit 0.95 spends 9.956; at 0.93 that buys 10.7054 shares: fee 0.05017, not 0.03584.
    assert buy_cost(D("10.48"), D("0.95"), s) == D("9.956") + D("0.03585")
    assert buy_cost(D("10.48"), D("0.95"), s, low=D("0.93")) == D("9.956") + D("0.05018")
    assert max_buy_size(D(10), D("0.95"), s, low=D("0.93")) == D("10.47")


# --- the edges of the formula and of BUY sizing ---------------------------------------------------


def test_the_formula_at_its_edges() -> None:
    """Nothing matched or no rate costs nothing; one share pays its fee; the formula holds up to
    a rate of 1; a price of 0 is refused like a price of 1."""
    assert fee(D(0), D("0.5"), D("0.072"), D(1), up=True) == 0
    assert fee(D(100), D("0.5"), D(0), D(1), up=True) == 0
    assert fee(D(1), D("0.5"), D("0.072"), D(1), up=False) == D("0.018")
    assert fee(D(10), D("0.5"), D(1), D(1), up=False) == D("2.5")
    with pytest.raises(ValueError, match="price"):
        fee(D(1), D(0), D("0.1"), D(1), up=True)


def test_an_exponent_up_to_10_is_accepted_and_above_it_refused() -> None:
    assert FeeSchedule(rate=D("0.1"), exponent=D(10)).exponent == 10
    with pytest.raises(ValueError, match="exponent"):
        FeeSchedule(rate=D("0.1"), exponent=D("10.5"))


def test_gammas_schedule_keeps_its_exponent_and_who_pays() -> None:
    m = Market(
        condition_id="0x" + "ab" * 32,
        token_ids=("1" * 70, "2" * 70),
        fee_rate=D("0.25"),
        fee_exponent=D(2),
        fee_taker_only=False,
    )
    assert gamma_schedule(m) == FeeSchedule(
        rate=D("0.25"), exponent=D(2), taker_only=False, source=FeeSource.GAMMA
    )


def test_a_best_ask_of_zero_is_no_better_price() -> None:
    """`low` is the best ask; 0 (no ask read) prices the BUY at its limit, as None does."""
    s = FeeSchedule(rate=D("0.072"))
    assert buy_cost(D(10), D("0.5"), s, low=D(0)) == buy_cost(D(10), D("0.5"), s)
    assert max_buy_size(D(10), D("0.5"), s, low=D(0)) == max_buy_size(D(10), D("0.5"), s)


# Rates small enough that one share's fee sits below the 0.00001 quantum, so the rounding up
# decides (price 0.5, exponent 1: the fee per share at q is rate x q(1-q)).
TINY = FeeSchedule(rate=D("0.000032"))  # 0.000008 a share at 0.5
EXACT = FeeSchedule(rate=D("0.00004"))  # 0.00001 a share at 0.5; 0.00003 per pUSD at 0.25
ODD = FeeSchedule(rate=D("0.000044"))  # 0.000011 a share at 0.5


def test_the_surplus_fee_of_a_buy_below_its_limit_rounds_up() -> None:
    """From a best ask of 0.25 a 0.5 BUY's pUSD buys twice the shares: the surplus fee per pUSD
    is rate x 0.75 = 0.000024, 0.000012 on one share's 0.5 pUSD, budgeted as 0.00002."""
    assert buy_cost(D(1), D("0.5"), TINY) == D("0.50001")
    assert buy_cost(D(1), D("0.5"), TINY, low=D("0.25")) == D("0.50002")


def test_max_buy_size_steps_down_when_the_fees_rounding_overshoots() -> None:
    """The estimate from the exact cost per share can overshoot by the fee's rounding up: the
    largest size that fits is then a step below it, never the estimate, and never one step."""
    # 1 share at 0.5 costs 0.500011 exactly and 0.50002 budgeted: 0.99 is the most that fits.
    assert buy_cost(D(1), D("0.5"), ODD) == D("0.50002")
    assert max_buy_size(D("0.500011"), D("0.5"), ODD) == D("0.99")
    # From a best ask of 0.25 its surplus fee decides: 1 share fits at the limit's fee
    # (0.50001) but not with the surplus (0.50002).
    assert buy_cost(D(1), D("0.5"), EXACT) == D("0.50001")
    assert max_buy_size(D("0.500015"), D("0.5"), EXACT) == D(1)
    assert max_buy_size(D("0.500015"), D("0.5"), EXACT, low=D("0.25")) == D("0.99")
