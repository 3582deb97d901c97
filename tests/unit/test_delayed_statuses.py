"""How the daemon reads a delayed market and the `delayed` / `unmatched` statuses.

Sources: `seconds_delay` on `GET /markets/{condition_id}` (real capture, NautilusTrader
`http_responses/market.json`); `POST /order` statuses `live | matched | delayed | unmatched`
(https://docs.polymarket.com/trading/orders/create, NautilusTrader `PolymarketOrderStatus`:
DELAYED "marketable but subject to matching delay", UNMATCHED "marketable but failure delaying,
placement not successful"); status suffixes such as `CANCELED_<reason>` (NautilusTrader
`enums.rs`, longest known prefix).
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from execution.ports import VenueStatus, journal_status
from models import OrderStatus, OrderType
from tests.helpers import FIXTURES, make_order
from venue.clob import meta_from_market
from venue.clob.wire import order_answer

MARKET = json.loads((FIXTURES / "clob_rest" / "market_2024_trump_negrisk.json").read_text())


def test_real_market_row_without_delay_reads_zero_and_a_delayed_one_its_seconds() -> None:
    cid = MARKET["condition_id"]
    assert {m.taker_delay_s for m in meta_from_market(cid, MARKET)} == {0.0}
    delayed = dict(MARKET, seconds_delay=3)
    assert {m.taker_delay_s for m in meta_from_market(cid, delayed)} == {3.0}


@pytest.mark.parametrize("order_type", ["GTC", "FAK", "FOK"])
def test_delayed_answer_is_pending_with_nothing_matched(order_type: str) -> None:
    req = make_order(order_type=order_type)
    ack = order_answer(
        {
            "success": True,
            "errorMsg": "",
            "orderID": "0xabc",
            "status": "delayed",
            "makingAmount": "",
            "takingAmount": "",
        },
        req,
        "0xabc",
    )
    assert (ack.status, ack.size_matched) == (VenueStatus.DELAYED, Decimal(0))
    status = journal_status(
        ack.status, size=Decimal(10), matched=ack.size_matched, order_type=OrderType(order_type)
    )
    assert status is OrderStatus.LIVE  # open: not filled, not refused, not canceled


@pytest.mark.parametrize("order_type", [OrderType.GTC, OrderType.FAK])
def test_unmatched_is_no_fill_and_not_resting(order_type: OrderType) -> None:
    status = journal_status(
        VenueStatus.UNMATCHED, size=Decimal(10), matched=Decimal(0), order_type=order_type
    )
    assert status is OrderStatus.CANCELED


@pytest.mark.parametrize(
    "raw", ["CANCELED_MARKET_RESOLVED", "canceled_order couldn't be fully filled", "CANCELLED"]
)
def test_canceled_statuses_are_read_by_prefix(raw: str) -> None:
    assert VenueStatus.parse(raw) is VenueStatus.CANCELED
