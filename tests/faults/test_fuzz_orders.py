"""Fuzz `OrderRequest`: valid requests are accepted as given; anything else is refused with a
pydantic `ValidationError` that names the offending field, never another exception.

Default run: a few hundred cases per target. `pytest -m slow`: 10,000+ (profile `polyd-slow`).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from models import UINT256_MAX, OrderRequest, OrderType, Side
from tests.faults.fuzzing import FAST, SLOW

strategy_names = st.from_regex(r"\A[a-z0-9_\-:.]{1,64}\Z")
token_ids = st.integers(0, UINT256_MAX).map(str)
prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.9999"), places=4)
sizes = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2)


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    order_type = draw(st.sampled_from(list(OrderType)))
    fields: dict[str, Any] = {
        "strategy": draw(strategy_names),
        "token_id": draw(token_ids),
        "side": draw(st.sampled_from(list(Side))),
        "price": draw(st.one_of(prices, prices.map(str))),
        "size": draw(st.one_of(sizes, sizes.map(str), st.integers(1, 10**6))),
        "order_type": order_type,
    }
    if order_type is OrderType.GTD:
        fields["expiration"] = int(time.time()) + draw(st.integers(3600, 10**8))
    if order_type.rests:
        fields["post_only"] = draw(st.booleans())
    if draw(st.booleans()):
        fields["client_order_id"] = draw(st.from_regex(r"\A[a-f0-9]{8,64}\Z"))
    if draw(st.booleans()):
        fields["reason"] = draw(st.text(max_size=100).map(str.strip))
    return fields


garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**300), 2**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=120),
    st.sampled_from(
        ["NaN", "inf", "-1", "0", "1", "1e999999999", "0x10", " 0.5 ", "", "BUY", "GTD", "0.5.5"]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

FIELDS = [
    "strategy",
    "token_id",
    "side",
    "price",
    "size",
    "order_type",
    "expiration",
    "post_only",
    "client_order_id",
    "reason",
]


def check_valid(fields: dict[str, Any]) -> None:
    req = OrderRequest(**fields)
    assert req.token_id == fields["token_id"]
    assert req.price == Decimal(str(fields["price"]))
    assert req.size == Decimal(str(fields["size"]))
    assert isinstance(req.price, Decimal) and isinstance(req.size, Decimal)
    assert req.notional == req.price * req.size
    with pytest.raises(ValidationError):
        req.price = Decimal("0.5")  # type: ignore[misc]  # frozen: the point of the check


def check_corrupted(fields: dict[str, Any], field: str, value: Any) -> None:
    bad = {**fields, field: value}
    try:
        req = OrderRequest(**bad)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        named = {str(p) for err in errors for p in err.get("loc", ())}
        text = " ".join(str(err.get("msg", "")) for err in errors)
        # A field-level error names the field in its location; a cross-field rule (GTD needs
        # an expiration, post_only needs a resting type) has no location and names a field
        # in its message.
        cross_field = any(not err.get("loc") for err in errors)
        assert (
            field in named or field in text or (cross_field and any(f in text for f in FIELDS))
        ), (field, errors)
        return
    except Exception as e:  # anything else is the bug this fuzzer looks for
        raise AssertionError(f"{field}={value!r} raised {type(e).__name__}: {e}") from e
    # The garbage happened to be valid: the request must then be sound.
    assert Decimal(0) < req.price < Decimal(1)
    assert req.size > 0
    assert req.price.is_finite() and req.size.is_finite()
    _ = req.notional  # computing the notional must not overflow


def check_extra(fields: dict[str, Any], key: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        OrderRequest(**{**fields, key: value})
    locs = {str(p) for err in info.value.errors() for p in err.get("loc", ())}
    assert key in locs


@FAST
@given(valid_requests())
def test_fuzzed_valid_order_requests_are_accepted(fields: dict[str, Any]) -> None:
    check_valid(fields)


@pytest.mark.slow
@SLOW
@given(valid_requests())
def test_fuzzed_valid_order_requests_are_accepted_10k(fields: dict[str, Any]) -> None:
    check_valid(fields)


@FAST
@given(valid_requests(), st.sampled_from(FIELDS), garbage)
def test_fuzzed_invalid_order_requests_raise_validation_error_naming_field(
    fields: dict[str, Any], field: str, value: Any
) -> None:
    check_corrupted(fields, field, value)


@pytest.mark.slow
@SLOW
@given(valid_requests(), st.sampled_from(FIELDS), garbage)
def test_fuzzed_invalid_order_requests_raise_validation_error_naming_field_10k(
    fields: dict[str, Any], field: str, value: Any
) -> None:
    check_corrupted(fields, field, value)


@FAST
@given(
    valid_requests(),
    st.text(min_size=1, max_size=20).filter(lambda k: k not in FIELDS and k.isidentifier()),
    garbage,
)
def test_fuzzed_unknown_fields_are_refused_by_name(
    fields: dict[str, Any], key: str, value: Any
) -> None:
    check_extra(fields, key, value)


@pytest.mark.parametrize("size", ["1E1000010", "1e15", Decimal("9E+999999")])
def test_absurdly_large_size_is_refused_rather_than_overflowing_notional(size: Any) -> None:
    # Found by the fuzzer above: size=1E1000010 was accepted and `notional` raised Overflow.
    fields = {"strategy": "s", "token_id": "1", "side": "BUY", "price": "0.5", "order_type": "FOK"}
    with pytest.raises(ValidationError) as info:
        OrderRequest(**fields, size=size)
    assert info.value.errors()[0]["loc"] == ("size",)
