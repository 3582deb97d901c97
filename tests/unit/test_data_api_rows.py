"""Data API rows, refused with the exact reason and detail: the reason is the skip metric's label
and the detail is what the log line shows, so a row refused for the wrong reason, or a field read
from the wrong key, is a test failure here (the captured payloads are in test_data_api.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from errors import FeedError
from models import Side
from tests.unit.test_data_api import V2_TRADE
from venue.data_api import (
    LeaderPosition,
    LeaderTrade,
    RowError,
    parse_position_row,
    parse_trade_row,
    to_decimal,
    unwrap,
)

D = Decimal
WALLET = V2_TRADE["proxy_wallet"]
TOKEN = V2_TRADE["token_id"]
COND = V2_TRADE["condition_id"]
V1_POSITION: dict[str, Any] = {
    "proxyWallet": WALLET,
    "asset": TOKEN,
    "conditionId": COND,
    "size": "12.5",
    "avgPrice": "0.41",
}


def without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"type": "REDEEM"}, "not_trade: REDEEM"),
        ({"proxy_wallet": "0x12"}, "bad_wallet: 0x12"),
        ({"proxy_wallet": 12}, "bad_wallet: 12"),
        ({"proxy_wallet": "1x" + "a" * 40}, "bad_wallet: 1x" + "a" * 40),
        ({"proxy_wallet": "0xg" + "a" * 39}, "bad_wallet: 0xg" + "a" * 39),
        ({"proxy_wallet": "0x" + "a" * 100}, "bad_wallet: 0x" + "a" * 78),  # detail cut at 80
        ({"transaction_hash": "0x" + "z" * 64}, "bad_tx_hash: 0x" + "z" * 64),
        ({"token_id": "z" * 100}, "bad_token_id: " + "z" * 80),
        ({"condition_id": "0x12"}, "bad_condition_id"),
        ({"side": "HOLD-THE-BAG-FOREVER"}, "bad_side: HOLD-THE-BAG-FOR"),  # cut at 16
        ({"size": "abc"}, "bad_number: size"),
        ({"size": "-1"}, "out_of_range: size '-1' is negative"),
        ({"size": 0}, "out_of_range: size=0 price=0.62"),
        ({"price": 0}, "out_of_range: size=78.55 price=0"),
        ({"price": 1}, "out_of_range: size=78.55 price=1"),
        ({"price": "-0.5"}, "out_of_range: price '-0.5' outside [0, 1]"),
        ({"price": "x"}, "bad_number: price"),
        ({"timestamp": True}, "bad_timestamp"),
        ({"timestamp": None}, "missing_field: timestamp"),
        (
            {"timestamp": "yesterday at noon, more or less"},
            "bad_timestamp: yesterday at noon, more or less",
        ),
        (
            {"timestamp": "yesterday at noon, more or less, give or take"},
            "bad_timestamp: yesterday at noon, more or less,",
        ),
        ({"timestamp": 0}, "bad_timestamp: 0"),
        ({"timestamp": "0." + "0" * 40}, "bad_timestamp: 0." + "0" * 30),  # cut at 32
        (
            {"type": "CONVERSION-OF-A-VERY-LONG-KIND-NAME"},
            "not_trade: CONVERSION-OF-A-VERY-LONG-KIND-N",
        ),
        ({"timestamp": 1}, None),  # any positive second is a time
        ({"size": "0.5", "price": "0.999"}, None),  # under one share, just under 1: a trade
    ],
)
def test_trade_row_refusals_name_reason_and_detail(
    change: dict[str, Any], error: str | None
) -> None:
    row = {**V2_TRADE, **change}
    if error is None:
        parse_trade_row(row)
        return
    with pytest.raises(RowError) as e:
        parse_trade_row(row)
    assert str(e.value) == error
    assert e.value.reason == error.partition(":")[0]


def test_trade_row_not_an_object_and_missing_fields() -> None:
    with pytest.raises(RowError, match=r"^not_object: str$"):
        parse_trade_row("a row")
    for key, names in [("side", "side"), ("size", "size"), ("price", "price")]:
        with pytest.raises(RowError) as e:
            parse_trade_row(without(V2_TRADE, key))
        assert str(e.value) == f"missing_field: {names}"


def test_an_upper_case_wallet_and_hash_are_read_lower_case() -> None:
    row = {
        **V2_TRADE,
        "proxy_wallet": "0x" + WALLET[2:].upper(),
        "transaction_hash": V2_TRADE["transaction_hash"].upper().replace("0X", "0x"),
    }
    t = parse_trade_row(row)
    assert (t.wallet, t.tx_hash) == (WALLET, V2_TRADE["transaction_hash"])


def test_v1_position_row_reads_every_field() -> None:
    assert parse_position_row(V1_POSITION) == LeaderPosition(
        WALLET, TOKEN, COND, D("12.5"), D("0.41")
    )
    assert parse_position_row(without(V1_POSITION, "avgPrice")).avg_price is None
    token_id_key = without(V1_POSITION, "asset") | {"tokenId": TOKEN}
    assert parse_position_row(token_id_key).token_id == TOKEN
    v2 = {
        "proxy_wallet": WALLET,
        "token_id": TOKEN,
        "condition_id": COND,
        "current_size": 3,
        "avg_price": "0.2",
    }
    assert parse_position_row(v2) == LeaderPosition(WALLET, TOKEN, COND, D("3"), D("0.2"))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("x", "not_object: str"),
        ({**V1_POSITION, "asset": "z" * 100}, "bad_token_id: " + "z" * 80),
        ({**V1_POSITION, "conditionId": "0x1"}, "bad_condition_id"),
        ({**V1_POSITION, "size": "-1"}, "out_of_range: size '-1' is negative"),
        ({**V1_POSITION, "avgPrice": "1.5"}, "out_of_range: avg_price '1.5' outside [0, 1]"),
        (without(V1_POSITION, "size"), "missing_field: size/current_size"),
        ({**V1_POSITION, "proxyWallet": "0x12"}, "bad_wallet: 0x12"),
    ],
)
def test_position_row_refusals_name_reason_and_detail(row: Any, error: str) -> None:
    with pytest.raises(RowError) as e:
        parse_position_row(row)
    assert str(e.value) == error


def test_to_decimal_keeps_integers_plain_and_names_what_it_could_not_read() -> None:
    assert str(to_decimal(10)) == "10"
    assert str(to_decimal("400000")) == "400000"
    assert str(to_decimal("0.1234565")) == "0.123456"  # half to even at 6 decimals
    with pytest.raises(RowError, match=r"^bad_number: avg$"):
        to_decimal("abc", what="avg")
    with pytest.raises(RowError, match=r"^bad_number: size$"):
        to_decimal("1e30", what="size")
    with pytest.raises(RowError, match=r"^bad_number: number$"):
        to_decimal("abc")


def test_unwrap_reads_has_more_only_from_the_envelope() -> None:
    assert unwrap([2]) == ([2], False)
    assert unwrap({"data": [1]}) == ([1], False)
    assert unwrap({"data": [1], "pagination": "yes"}) == ([1], False)
    assert unwrap({"data": [1], "pagination": {"has_more": True}}) == ([1], True)
    with pytest.raises(
        FeedError, match=r"^Data API answered neither a list nor a \{data: \[\.\.\.\]\} envelope$"
    ):
        unwrap({"rows": []})


def test_v1_trade_row_reads_every_field() -> None:
    v1 = {
        "proxyWallet": WALLET,
        "transactionHash": V2_TRADE["transaction_hash"],
        "asset": TOKEN,
        "conditionId": COND,
        "side": "sell",
        "size": "5",
        "price": "0.25",
        "timestamp": 1_700_000_000,
        "slug": "will-it-rain",
        "eventSlug": "weather",
        "outcome": "Yes",
        "type": "trade",
    }
    assert parse_trade_row(v1) == LeaderTrade(
        WALLET,
        V2_TRADE["transaction_hash"],
        TOKEN,
        COND,
        Side.SELL,
        D("5"),
        D("0.25"),
        1_700_000_000,
        slug="will-it-rain",
        event_slug="weather",
        outcome="Yes",
    )
    v2 = {**V2_TRADE, "event_slug": "weather", "token_id": None, "tokenId": int(TOKEN)}
    t = parse_trade_row(v2)
    assert (t.token_id, t.event_slug, t.slug, t.outcome) == (TOKEN, "weather", "", "")
    bare = parse_trade_row(V2_TRADE)
    assert (bare.slug, bare.event_slug, bare.outcome) == ("", "", "")
