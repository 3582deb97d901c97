"""Copy sizing at its boundaries: how much a copy buys or sells, at what limit, and the skips.

Pure arithmetic (`strategies/copy_trader/sizing.py`), so each rule is checked at, just under and
just over its edge with exact Decimal results and the exact skip, not through a poll.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from execution.fees import NO_FEE, FeeSchedule, max_buy_size
from models import Side
from strategies.copy_trader.rules import WalletRule
from strategies.copy_trader.sizing import (
    Batch,
    Skip,
    entry_size,
    exit_size,
    limit_price,
    min_size_skip,
    mirror_fraction,
    round_size,
    rule_notional,
)
from venue.data_api import LeaderTrade

D = Decimal
LEADER = "0x" + "ab" * 20
TOKEN = "1" * 77
TOKEN_NO = "2" * 77
COND = "0x" + "cd" * 32


def rule(**kw: Any) -> WalletRule:
    base: dict[str, Any] = {"address": LEADER, "ratio": "0.5", "max_trade_notional": "1000"}
    return WalletRule.model_validate(base | kw)


def lt(
    side: Side = Side.BUY, size: str = "100", price: str = "0.50", token: str = TOKEN
) -> LeaderTrade:
    return LeaderTrade(
        LEADER, "0x" + "ee" * 32, token, COND, side, D(size), D(price), 1_700_000_000
    )


# -- entry: the room left under max_market_exposure ------------------------------------------


@pytest.mark.parametrize(
    ("exposure", "want"),
    [
        (D("99.5"), D("1.00")),  # 0.5 of room left: buys what 0.5 buys at 0.50
        (D("100"), Skip("exposure_limit", "market exposure at 100")),  # at the cap
        (D("100.01"), Skip("exposure_limit", "market exposure at 100")),  # over it
        (D("0"), D("50.00")),  # the whole rule notional (100 x 0.5 x 0.50 = 25) fits
    ],
)
def test_entry_is_shrunk_to_the_room_under_the_market_cap(exposure: Decimal, want: object) -> None:
    got = entry_size(rule(), lt(), D("0.50"), exposure)
    assert got == want


def test_entry_budgets_the_fee_on_the_extra_shares_a_lower_best_ask_buys() -> None:
    fee = FeeSchedule(rate=D("0.25"))
    at_limit = entry_size(rule(), lt(), D("0.50"), D(0), fee)
    lower_ask = entry_size(rule(), lt(), D("0.50"), D(0), fee, low=D("0.10"))
    assert lower_ask == max_buy_size(D(25), D("0.50"), fee, low=D("0.10"))
    assert isinstance(at_limit, Decimal) and isinstance(lower_ask, Decimal)
    assert lower_ask < at_limit  # taking at 0.10 would buy more shares, each paying a fee


# -- the rule's notional -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({"ratio": "0.5"}, D("25.000")),  # 100 x 0.5 x 0.50
        ({"ratio": None, "sizing": "fixed_notional", "fixed_notional": "7"}, D("7")),
        (
            {"ratio": None, "sizing": "percent", "percent": "10", "percent_min_notional": "1"},
            D("5"),
        ),
        ({"ratio": None, "sizing": "percent", "percent": "1", "percent_min_notional": "2"}, D("2")),
        (
            {"ratio": None, "sizing": "percent", "percent": "50", "percent_max_notional": "9"},
            D("9"),
        ),
        ({"ratio": "0.5", "max_trade_notional": "20"}, D("20")),
    ],
)
def test_rule_notional_per_sizing_mode_and_caps(kw: dict[str, Any], want: Decimal) -> None:
    assert rule_notional(rule(**kw), lt(), D("0.50")) == want


# -- exits -------------------------------------------------------------------------------------


def test_exit_without_mirroring_is_sized_like_an_entry_and_never_beyond_our_holding() -> None:
    r = rule(mirror_exits=False)
    sell = lt(Side.SELL, size="40")  # rule notional 40 x 0.5 x 0.50 = 10 → 20 shares at 0.50
    assert exit_size(r, sell, D("0.50"), ours=D("100"), leader_before=None) == D("20")
    assert exit_size(r, sell, D("0.50"), ours=D("15"), leader_before=None) == D("15")


def test_mirrored_exit_sells_the_share_the_leader_sold() -> None:
    sell = lt(Side.SELL, size="30")
    assert exit_size(rule(), sell, D("0.50"), ours=D("10"), leader_before=D("120")) == D("2.50")
    # the leader sold more than it was known to hold: everything, never more
    assert exit_size(rule(), sell, D("0.50"), ours=D("10"), leader_before=D("20")) == D("10")


def test_mirrored_exit_without_the_leaders_holding_is_a_programming_error() -> None:
    with pytest.raises(
        AssertionError, match=r"^a mirrored exit needs the leader's holding before it$"
    ):
        exit_size(rule(), lt(Side.SELL), D("0.50"), ours=D("10"), leader_before=None)


@pytest.mark.parametrize(
    ("sold", "before", "want"),
    [
        (D("5"), D("0"), D("1")),  # holding unknown (0): everything
        (D("5"), D("-1"), D("1")),
        (D("0.25"), D("0.5"), D("0.5")),  # a holding under one share is still a holding
        (D("1"), D("4"), D("0.25")),
        (D("3"), D("1"), D("1")),  # sold more than it held: all, never more
    ],
)
def test_mirror_fraction(sold: Decimal, before: Decimal, want: Decimal) -> None:
    assert mirror_fraction(sold, before) == want


def test_holding_before_adds_back_later_sells_and_takes_off_later_buys_of_that_token() -> None:
    first = lt(Side.SELL, size="10")
    other = lt(Side.BUY, size="7", token=TOKEN_NO)  # another token: not counted
    later_buy = lt(Side.BUY, size="4")
    last = lt(Side.SELL, size="3")
    b = Batch([first, other, later_buy, last], leader_after={TOKEN: D("50"), TOKEN_NO: D("7")})
    # before `first`: 50 + 3 (sold after) - 4 (bought after) + 10 (first itself)
    assert b.holding_before(first) == D("59")
    assert b.holding_before(last) == D("53")
    assert b.holding_before(other) == D("0")


# -- limit price -------------------------------------------------------------------------------


def test_limit_price_clamped_to_the_grid_edge_one_tick_from_the_leader_is_kept() -> None:
    tick = D("0.01")
    assert limit_price(D("1"), D("0.02"), tick, Side.BUY) == D("0.99")
    assert limit_price(D("0"), D("0.02"), tick, Side.SELL) == D("0.01")
    assert limit_price(D("1.01"), D("0.02"), tick, Side.BUY) is None
    assert limit_price(D("-0.01"), D("0.02"), tick, Side.SELL) is None


# -- size step and minimums --------------------------------------------------------------------


def test_round_size_rounds_down_to_the_step() -> None:
    assert round_size(D("1.239")) == D("1.23")
    assert round_size(D("1.999")) == D("1.99")


@pytest.mark.parametrize(
    ("size", "price", "min_size", "entry", "want"),
    [
        (D("0"), D("0.5"), D("0"), False, Skip("below_min_size", "0 < 0")),
        (D("0.5"), D("0.5"), D("0"), False, None),
        (D("3"), D("0.5"), D("5"), False, Skip("below_min_size", "3 < 5")),
        (D("5"), D("0.5"), D("5"), False, None),
        (D("2"), D("0.5"), D("1"), True, None),  # exactly $1: allowed
        (D("2"), D("0.4"), D("1"), True, Skip("below_min_size", "notional 0.8 < 1")),
        (D("2"), D("0.4"), D("1"), False, None),  # the $1 minimum is for entries only
    ],
)
def test_min_size_skip(
    size: Decimal, price: Decimal, min_size: Decimal, entry: bool, want: Skip | None
) -> None:
    assert min_size_skip(size, price, min_size, entry=entry) == want


def test_an_unknown_skip_reason_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown skip reason 'nope'"):
        Skip("nope")


def test_no_fee_entry_buys_the_notional_at_the_price() -> None:
    assert entry_size(rule(ratio="0.1"), lt(), D("0.50"), D(0), NO_FEE) == D("10.00")
