"""Domain model validation, checked with generated inputs."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    UINT256_MAX,
    Market,
    OrderStatus,
    OrderType,
    Position,
    Side,
    on_tick,
)
from tests.helpers import TOKEN, make_order

order = make_order


prices_inside = st.decimals(min_value="0.0001", max_value="0.9999", places=4)
sizes_positive = st.decimals(min_value="0.01", max_value="1000000", places=2)


@given(price=prices_inside, size=sizes_positive)
def test_valid_price_and_size_are_accepted_as_decimal(price: Decimal, size: Decimal) -> None:
    o = order(price=str(price), size=str(size))
    assert isinstance(o.price, Decimal)
    assert o.price == price
    assert o.notional == price * size


@given(price=st.one_of(st.decimals(max_value="0"), st.decimals(min_value="1")))
def test_price_outside_open_unit_interval_is_rejected(price: Decimal) -> None:
    with pytest.raises(ValidationError):
        order(price=price)


@given(size=st.decimals(max_value="0", allow_nan=False, allow_infinity=False))
def test_non_positive_size_is_rejected(size: Decimal) -> None:
    with pytest.raises(ValidationError, match="size"):
        order(size=size)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "sNaN", "abc", "", 0.5, True])
def test_non_finite_or_non_decimal_money_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        order(price=bad)
    with pytest.raises(ValidationError):
        order(size=bad)


@given(token=st.integers(min_value=0, max_value=UINT256_MAX))
def test_any_decimal_uint256_token_id_is_accepted(token: int) -> None:
    assert order(token_id=str(token)).token_id == str(token)


@pytest.mark.parametrize(
    "token",
    ["0x1234", "", "12a", "-5", str(UINT256_MAX + 1), "1" * 79, " ", "١٢٣"],
)
def test_token_id_that_is_not_decimal_uint256_is_rejected(token: str) -> None:
    with pytest.raises(ValidationError, match="token_id"):
        order(token_id=token)


@given(text=st.text(max_size=90))
@settings(max_examples=300)
def test_arbitrary_token_text_is_accepted_only_if_decimal_uint256(text: str) -> None:
    stripped = text.strip()
    # Python's strip() also removes the ASCII separators \x1c-\x1f; the model strips only
    # Unicode white space, so an id padded with separators is refused (garbage, not an id).
    ok = (
        not any(c in text for c in "\x1c\x1d\x1e\x1f")
        and stripped.isascii()
        and stripped.isdigit()
        and 0 < len(stripped) <= 78
        and int(stripped) <= UINT256_MAX
    )
    if ok:
        assert order(token_id=text).token_id == stripped
    else:
        with pytest.raises(ValidationError):
            order(token_id=text)


def test_gtd_needs_a_future_expiration() -> None:
    with pytest.raises(ValidationError, match="needs an expiration"):
        order(order_type="GTD")
    with pytest.raises(ValidationError, match="future"):
        order(order_type="GTD", expiration=int(time.time()) - 1)
    assert order(order_type="GTD", expiration=int(time.time()) + 120).expiration


def test_expiration_only_on_gtd_and_post_only_only_on_resting_orders() -> None:
    with pytest.raises(ValidationError, match="only allowed on GTD"):
        order(order_type="GTC", expiration=int(time.time()) + 120)
    with pytest.raises(ValidationError, match="post_only"):
        order(order_type="FOK", post_only=True)
    assert order(order_type="GTC", post_only=True).post_only


def test_order_request_is_frozen_and_forbids_unknown_fields() -> None:
    o = order()
    with pytest.raises(ValidationError):
        o.price = Decimal("0.6")  # type: ignore[misc]  # the point of the test
    with pytest.raises(ValidationError, match="extra"):
        order(colour="blue")


def test_each_request_gets_a_unique_client_order_id() -> None:
    assert len({order().client_order_id for _ in range(1000)}) == 1000


def test_terminal_statuses_allow_no_transition() -> None:
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
    assert not OrderStatus.FILLED.can_become(OrderStatus.LIVE)
    assert OrderStatus.PENDING.can_become(OrderStatus.UNKNOWN)
    assert OrderStatus.UNKNOWN.can_become(OrderStatus.FILLED)
    assert not OrderStatus.LIVE.can_become(OrderStatus.PENDING)


def test_every_status_reaches_a_terminal_status() -> None:
    for start in OrderStatus:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL_STATUSES, start


@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            st.decimals(min_value="0.01", max_value="0.99", places=2),
            st.decimals(min_value="1", max_value="100", places=2),
        ),
        max_size=30,
    )
)
def test_position_never_goes_short_and_pnl_adds_up(
    fills: list[tuple[Side, Decimal, Decimal]],
) -> None:
    pos = Position(token_id=TOKEN)
    cash = Decimal(0)
    for side, price, size in fills:
        before = pos.size
        pos = pos.apply(side, price, size)
        assert pos.size >= 0
        traded = size if side is Side.BUY else min(size, before)
        cash += -price * traded if side is Side.BUY else price * traded
    # Realized + cost basis of what is still held equals the cash flow.
    assert abs(pos.realized_pnl - (cash + pos.avg_cost * pos.size)) < Decimal("1e-12")


def test_market_price_rules() -> None:
    m = Market(
        condition_id="0x" + "ab" * 32,
        token_ids=(TOKEN, "1"),
        tick_size=Decimal("0.01"),
    )
    assert m.price_ok(Decimal("0.55")) is None
    assert "tick grid" in (m.price_ok(Decimal("0.555")) or "")
    assert "outside" in (m.price_ok(Decimal("0.995")) or "")
    assert on_tick(Decimal("0.003"), Decimal("0.001"))
    assert not on_tick(Decimal("0.0035"), Decimal("0.001"))
    with pytest.raises(ValidationError, match="condition_id"):
        Market(condition_id="0x12", token_ids=(TOKEN,))


def test_order_type_rests() -> None:
    assert OrderType.GTC.rests
    assert OrderType.GTD.rests
    assert not OrderType.FOK.rests
    assert not OrderType.FAK.rests
