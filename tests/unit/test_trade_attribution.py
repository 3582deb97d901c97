"""Which fill a trade row is for us: the maker side from the asset ids, the taker's average.

Sources (docs/venue-mechanics.md §2 and §6): a maker on the other token of the market is on the
taker's side (two BUYs mint, two SELLs merge; `_deriveMatchType` in
https://github.com/Polymarket/ctf-exchange/blob/main/src/exchange/mixins/Trading.sol), its
`side` is optional on the user channel (`MakerOrder.side?` in
https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts), and NautilusTrader
booked it on the wrong side until https://github.com/nautechsystems/nautilus_trader/pull/3172.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from models import LiquidityRole, Side
from venue.clob.wire import fills_from_trade

D = Decimal
CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "ws_user"
NO_MAKER_OWNER = "78132bc3-22af-6aa2-79ae-11929f821cae"
NO_MAKER_ADDRESS = "0xFfd192468b7a05b38c37C82d09fA941289FaEB23"
YES = "21742633143463906290569050155826241533067272736897614950488156847949938836455"
NO = "48331043336612883890938759509493159234755048973500640148014422747788308965732"


def capture() -> dict[str, Any]:
    """The real 2024-09 user-channel trade: a taker BUY Yes met five Yes sellers and one No
    buyer (a mint leg), no maker carrying `side`."""
    t: dict[str, Any] = json.loads(
        (CAPTURE / "trade_mined_maker_multi_maker_orders_2024_09.json").read_text()
    )
    return t


@pytest.mark.parametrize(
    ("owner", "address"), [(NO_MAKER_OWNER, "0x0"), ("someone-else", NO_MAKER_ADDRESS.lower())]
)
def test_the_mint_leg_of_the_real_capture_is_our_buy_no_10_at_0_482(
    owner: str, address: str
) -> None:
    t = capture()
    assert all("side" not in m for m in t["maker_orders"])
    (fill,) = fills_from_trade(t, owner=owner, address=address)
    assert (fill.side, fill.token_id, fill.size, fill.price) == (Side.BUY, NO, D("10"), D("0.482"))
    assert fill.role is LiquidityRole.MAKER and fill.fee == 0
    assert fill.venue_order_id == t["maker_orders"][0]["order_id"]


def test_a_maker_on_the_takers_token_is_on_the_other_side() -> None:
    t = capture()
    m = t["maker_orders"][1]
    (fill,) = fills_from_trade(t, owner=m["owner"], address="0x0")
    assert (fill.side, fill.token_id, fill.size, fill.price) == (
        Side.SELL,
        YES,
        D("247.68"),
        D("0.518"),
    )


def test_a_wrong_wire_side_is_logged_and_the_asset_ids_decide() -> None:
    t = capture()
    t["maker_orders"][0]["side"] = "SELL"  # "opposite of the taker": the inverted-side bug
    with capture_logs() as logs:
        (fill,) = fills_from_trade(t, owner=NO_MAKER_OWNER, address="0x0")
    assert fill.side is Side.BUY
    assert [e["event"] for e in logs] == ["maker_side_disagrees"]
    t["maker_orders"][0]["side"] = "BUY"
    with capture_logs() as logs:
        (fill,) = fills_from_trade(t, owner=NO_MAKER_OWNER, address="0x0")
    assert fill.side is Side.BUY and logs == []


def test_a_merge_leg_is_a_sell_of_the_makers_own_token() -> None:
    t = capture() | {"side": "SELL", "price": "0.7", "size": "10"}
    t["maker_orders"] = [
        t["maker_orders"][0] | {"price": "0.3", "matched_amount": "10"},  # SELL No at 0.3
    ]
    (fill,) = fills_from_trade(t, owner=NO_MAKER_OWNER, address="0x0")
    assert (fill.side, fill.token_id, fill.price) == (Side.SELL, NO, D("0.3"))


def test_our_taker_fill_in_the_capture_is_the_whole_size_at_the_average() -> None:
    t = capture() | {"trader_side": "TAKER"}
    (fill,) = fills_from_trade(t, owner=t["owner"], address="0x0")
    # (1086.87 x 0.518 + 10 x (1 - 0.482)) / 1096.87 = 0.518
    assert (fill.side, fill.token_id, fill.size, fill.price) == (
        Side.BUY,
        YES,
        D("1096.87"),
        D("0.518"),
    )
    assert fill.role is LiquidityRole.TAKER


def test_a_taker_sweep_is_booked_at_the_size_weighted_average_not_the_top_price() -> None:
    t = capture() | {"trader_side": "TAKER", "price": "0.5", "size": "19.615384"}
    yes_maker = t["maker_orders"][1]
    t["maker_orders"] = [
        yes_maker | {"price": "0.5", "matched_amount": "10"},
        yes_maker | {"order_id": "0x2", "price": "0.52", "matched_amount": "9.615384"},
    ]
    (fill,) = fills_from_trade(t, owner=t["owner"], address="0x0")
    assert fill.size == D("19.615384")
    notional = D("5") + D("9.615384") * D("0.52")  # 9.99999968 pUSD
    assert (fill.price * fill.size).quantize(D("1e-12")) == notional
    assert fill.price > D("0.5")


def test_a_taker_fill_with_a_mint_leg_counts_it_at_one_minus_the_makers_price() -> None:
    t = capture() | {"trader_side": "TAKER", "price": "0.6", "size": "20"}
    no_maker, yes_maker = t["maker_orders"][0], t["maker_orders"][1]
    t["maker_orders"] = [
        yes_maker | {"price": "0.6", "matched_amount": "10"},
        no_maker | {"price": "0.45", "matched_amount": "10"},  # taker pays 0.55 a share
    ]
    (fill,) = fills_from_trade(t, owner=t["owner"], address="0x0")
    assert (fill.size, fill.price) == (D("20"), D("0.575"))


def test_unreadable_legs_fall_back_to_the_top_level_price_and_size() -> None:
    t = capture() | {"trader_side": "TAKER"}
    t["maker_orders"] = [t["maker_orders"][0] | {"price": "NaN"}]
    (fill,) = fills_from_trade(t, owner=t["owner"], address="0x0")
    assert (fill.size, fill.price) == (D("1096.87"), D("0.518"))


def test_legs_that_do_not_add_up_to_the_top_level_size_are_logged() -> None:
    t = capture() | {"trader_side": "TAKER"}
    with capture_logs() as logs:
        fills_from_trade(t, owner=t["owner"], address="0x0")
    assert logs == []
    with capture_logs() as logs:
        (fill,) = fills_from_trade(t | {"size": "1100"}, owner=t["owner"], address="0x0")
    assert [e["event"] for e in logs] == ["taker_size_disagrees"]
    assert fill.size == D("1096.87")  # the legs are what was exchanged
