"""The real py-clob-client-v2 against the simulator's CLOB REST API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import ParamSpec, TypeVar

import httpx
import pytest
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import (
    MarketOrderArgsV2,
    OpenOrderParams,
    OrderArgsV2,
    OrderPayload,
    OrderType,
    PostOrdersV2Args,
    TradeParams,
)
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.utilities import generate_orderbook_summary_hash, parse_raw_orderbook_summary

from simulator import SimMarket, Simulator
from simulator.testing import l2_headers, new_trader

P = ParamSpec("P")
R = TypeVar("R")

D = Decimal
MAKER = "0x" + "ab" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=7, settle_delay_s=0.02, page_size=3) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(question="Will X?", slug="will-x")


async def run(fn: Callable[P, R], /, *a: P.args, **kw: P.kwargs) -> R:
    """Run a blocking SDK call on a worker thread, as the daemon does."""
    return await asyncio.to_thread(fn, *a, **kw)


def api_error(exc: PolyApiException) -> object:
    return exc.error_msg.get("error") if isinstance(exc.error_msg, dict) else exc.error_msg


async def test_create_then_derive_api_key_returns_same_creds(sim: Simulator) -> None:
    client, _ = await run(new_trader, sim)
    derived = await run(client.derive_api_key)
    assert derived == client.creds
    assert [k.api_key for k in sim.api_keys] == [client.creds.api_key]
    with pytest.raises(PolyApiException) as e:  # creating twice is refused; SDK falls back
        await run(client.create_api_key)
    assert (e.value.status_code, api_error(e.value)) == (400, "Could not create api key")


async def test_l1_headers_with_wrong_address_are_refused_401(sim: Simulator) -> None:
    client, _ = await run(new_trader, sim)
    headers = client._l1_headers()
    headers["POLY_ADDRESS"] = "0x" + "12" * 20
    r = await run(httpx.get, sim.clob_url + "/auth/derive-api-key", headers=headers)
    assert (r.status_code, r.json()) == (401, {"error": "Invalid L1 Request headers"})


async def test_server_basics_return_production_shapes(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    assert isinstance(await run(client.get_server_time), int)
    assert await run(client.get_version) == 2
    assert await run(client.get_ok) == "OK"
    tok = market.token_ids[0]
    assert await run(client.get_tick_size, tok) == "0.01"
    assert await run(client.get_neg_risk, tok) is False
    info = await run(client.get_clob_market_info, market.condition_id)
    assert info["t"][0] == {"t": tok, "o": "Yes"}
    assert 76 <= len(tok) <= 78
    assert tok.isdigit()


async def test_gtc_buy_without_counterparty_rests_live(sim: Simulator, market: SimMarket) -> None:
    client, acct = await run(new_trader, sim)
    tok = market.token_ids[0]
    res = await run(client.create_and_post_order, OrderArgsV2(tok, 0.45, 10, "BUY"))
    assert res["success"]
    assert res["status"] == "live"
    assert set(res) == {"success", "errorMsg", "orderID", "status", "makingAmount", "takingAmount"}
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["price"], order["original_size"]) == ("LIVE", "0.45", "10")
    assert order["maker_address"] == acct.address
    book = await run(client.get_order_book, tok)
    assert book["bids"] == [{"price": "0.45", "size": "10"}]


async def test_order_id_is_the_eip712_hash_the_sdk_computes(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    signed = await run(client.create_order, OrderArgsV2(tok, 0.45, 10, "BUY"))
    res = await run(client.post_order, signed)
    builder = client.builder
    from py_clob_client_v2.config import get_contract_config
    from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2

    ex = ExchangeOrderBuilderV2(get_contract_config(137).exchange_v2, 137, builder.signer)
    assert res["orderID"] == ex.build_order_hash(ex.build_order_typed_data(signed))


async def test_crossing_gtc_matches_moves_balances_and_settles(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    maker_oid = sim.seed_order(
        maker=MAKER, token_id=tok, side="SELL", price=D("0.60"), size=D("50")
    )
    client, acct = await run(new_trader, sim, D("100"))
    res = await run(client.create_and_post_order, OrderArgsV2(tok, 0.62, 10, "BUY"))
    assert res["status"] == "matched"
    # The BUY spends its 6.20 pUSD at the maker's 0.60: the improvement is extra shares, floored
    # to 6 decimals (taking with surplus, docs/venue-mechanics.md §6; py-clob-client-v2 #89).
    assert (res["makingAmount"], res["takingAmount"]) == ("6.1999998", "10.333333")
    assert len(res["transactionsHashes"]) == 1
    assert len(res["tradeIDs"]) == 1
    led = sim.ledger()
    bal = led["balances"][acct.address.lower()]
    assert bal["collateral"] == D("100") - D("6.1999998")
    assert bal["tokens"][tok] == D("10.333333")
    maker = next(o for o in led["orders"] if o["id"] == maker_oid)
    assert (maker["status"], maker["size_matched"]) == ("LIVE", D("10.333333"))
    await asyncio.sleep(0.1)
    trades = await run(client.get_trades)
    assert trades[0]["status"] == "CONFIRMED"
    assert trades[0]["trader_side"] == "TAKER"
    assert trades[0]["transaction_hash"] == res["transactionsHashes"][0]


async def test_gtd_order_expires_sixty_seconds_before_its_expiration(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    # 64 s ahead: the post must reach the venue more than 60 s before it (the security
    # threshold), even when signing and sending take seconds on a loaded machine.
    exp = int(time.time()) + 64
    signed = await run(client.create_order, OrderArgsV2(tok, 0.4, 10, "BUY", expiration=exp))
    res = await run(client.post_order, signed, OrderType.GTD)
    assert res["status"] == "live"
    # Canceled at `exp - 60`, not before: polled until then and for up to 10 s after.
    while (status := (await run(client.get_order, res["orderID"]))["status"]) != "CANCELED":
        assert status == "LIVE", status
        assert time.time() < exp - 60 + 10, "the GTD order was not canceled 60 s before expiry"
        await asyncio.sleep(0.1)
    assert time.time() >= exp - 60


async def test_gtd_inside_security_threshold_is_refused(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    exp = int(time.time()) + 30
    signed = await run(
        client.create_order, OrderArgsV2(market.token_ids[0], 0.4, 10, "BUY", expiration=exp)
    )
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed, OrderType.GTD)
    assert (e.value.status_code, api_error(e.value)) == (400, "invalid expiration")


async def test_fok_that_cannot_fill_entirely_is_killed(sim: Simulator, market: SimMarket) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("5"))
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed, OrderType.FOK)
    assert e.value.status_code == 400
    assert api_error(e.value) == (
        "order couldn't be fully filled. FOK orders are fully filled or killed."
    )
    assert sim.engine.books[tok].ask_levels[D("0.5")] == D("5")


async def test_market_fok_buy_fills_at_best_asks(sim: Simulator, market: SimMarket) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("10"))
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.52"), size=D("100"))
    client, _ = await run(new_trader, sim)
    res = await run(
        client.create_and_post_market_order,
        MarketOrderArgsV2(tok, amount=10, side="BUY", price=0.55),
    )
    assert res["status"] == "matched"
    # One trade for the sweep, with a maker entry per level (docs/venue-mechanics.md §6):
    # 10 at 0.5 for 5 pUSD, then the other 5 pUSD at 0.52.
    assert len(res["tradeIDs"]) == 1
    assert (res["makingAmount"], res["takingAmount"]) == ("9.99999968", "19.615384")
    trades = await run(client.get_trades)
    assert [(m["price"], m["matched_amount"]) for m in trades[0]["maker_orders"]] == [
        ("0.5", "10"),
        ("0.52", "9.615384"),
    ]
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["order_type"]) == ("MATCHED", "FOK")


async def test_fak_partial_fill_kills_the_remainder(sim: Simulator, market: SimMarket) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.47"), size=D("5"))
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(tok, 0.47, 10, "BUY"))
    res = await run(client.post_order, signed, OrderType.FAK)
    assert (res["status"], res["takingAmount"], res["makingAmount"]) == ("matched", "5", "2.35")
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["size_matched"], order["original_size"]) == (
        "MATCHED",
        "5",
        "10",
    )
    assert not await run(client.get_open_orders)


async def test_fak_with_nothing_to_match_is_refused(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.47, 10, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed, OrderType.FAK)
    assert api_error(e.value) == (
        "no orders found to match with FAK order. FAK orders are partially filled or killed "
        "if no match is found."
    )


async def test_post_only_crossing_is_refused_and_resting_is_accepted(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("50"))
    client, _ = await run(new_trader, sim)
    cross = await run(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, cross, OrderType.GTC, True)
    assert api_error(e.value) == "invalid post-only order: order crosses book"
    rest = await run(client.create_order, OrderArgsV2(tok, 0.49, 10, "BUY"))
    assert (await run(client.post_order, rest, OrderType.GTC, True))["status"] == "live"


async def test_batch_post_returns_per_order_results_in_a_200(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    good = await run(client.create_order, OrderArgsV2(tok, 0.40, 10, "BUY"))
    small = await run(client.create_order, OrderArgsV2(tok, 0.40, 2, "BUY"))
    res = await run(
        client.post_orders,
        [PostOrdersV2Args(good, OrderType.GTC), PostOrdersV2Args(small, OrderType.GTC)],
    )
    assert res[0]["success"]
    assert res[0]["status"] == "live"
    assert not res[1]["success"]
    assert "lower than the minimum: 5" in res[1]["errorMsg"]


async def test_batch_over_fifteen_orders_is_refused(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.40, 5, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_orders, [PostOrdersV2Args(signed, OrderType.GTC)] * 16)
    assert (e.value.status_code, api_error(e.value)) == (
        400,
        "Too many orders in payload: 16, max allowed: 15",
    )


async def test_cancel_one_then_cancel_all_empties_open_orders(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    ids = [
        (await run(client.create_and_post_order, OrderArgsV2(tok, p, 5, "BUY")))["orderID"]
        for p in (0.30, 0.31, 0.32)
    ]
    res = await run(client.cancel_order, OrderPayload(orderID=ids[0]))
    assert res == {"canceled": [ids[0]], "not_canceled": {}}
    again = await run(client.cancel_order, OrderPayload(orderID=ids[0]))
    assert ids[0] in again["not_canceled"]
    res = await run(client.cancel_all)
    assert sorted(res["canceled"]) == sorted(ids[1:])
    assert await run(client.get_open_orders) == []
    assert sim.engine.books[tok].bid_prices == []


async def test_cancel_market_orders_only_touches_that_market(
    sim: Simulator, market: SimMarket
) -> None:
    other = sim.add_market(question="Other?", slug="other")
    client, _ = await run(new_trader, sim)
    a = await run(client.create_and_post_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    b = await run(client.create_and_post_order, OrderArgsV2(other.token_ids[0], 0.3, 5, "BUY"))
    from py_clob_client_v2.clob_types import OrderMarketCancelParams

    res = await run(
        client.cancel_market_orders, OrderMarketCancelParams(market=market.condition_id)
    )
    assert res["canceled"] == [a["orderID"]]
    assert [o["id"] for o in await run(client.get_open_orders)] == [b["orderID"]]


async def test_listing_orders_walks_several_pages_until_lte(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    for i in range(7):
        await run(client.create_and_post_order, OrderArgsV2(tok, 0.20 + i / 100, 5, "BUY"))
    orders = await run(client.get_open_orders)
    assert len(orders) == 7
    assert len({o["id"] for o in orders}) == 7
    pages = [r for r in sim.request_log if r.path == "/data/orders"]
    assert len(pages) == 3
    assert "next_cursor=MA%3D%3D" in pages[0].query
    first = await run(client.get_open_orders, OpenOrderParams(asset_id=tok), True)
    assert len(first) == 3


async def test_listing_trades_walks_pages_and_filters_by_id(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("100"))
    client, _ = await run(new_trader, sim)
    ids = []
    for _ in range(5):
        res = await run(client.create_and_post_order, OrderArgsV2(tok, 0.5, 5, "BUY"))
        ids += res["tradeIDs"]
    trades = await run(client.get_trades)
    assert sorted(t["id"] for t in trades) == sorted(ids)
    one = await run(client.get_trades, TradeParams(id=ids[2]))
    assert [t["id"] for t in one] == [ids[2]]
    assert await run(client.get_trades, TradeParams(market="0x" + "0" * 64)) == []


async def test_book_lists_best_level_last_with_client_hash(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    for p in ("0.40", "0.42", "0.41"):
        sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D(p), size=D("10"))
    for p in ("0.60", "0.58", "0.59"):
        sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D(p), size=D("10"))
    client, _ = await run(new_trader, sim)
    book = await run(client.get_order_book, tok)
    assert [b["price"] for b in book["bids"]] == ["0.4", "0.41", "0.42"]
    assert [a["price"] for a in book["asks"]] == ["0.6", "0.59", "0.58"]
    expected = book["hash"]
    assert generate_orderbook_summary_hash(parse_raw_orderbook_summary(book)) == expected
    books = await run(client.get_order_books, [{"token_id": tok}])
    assert books[0]["asset_id"] == tok
    assert (await run(client.get_midpoint, tok)) == {"mid": "0.5"}


async def test_unknown_token_gets_production_404s(sim: Simulator) -> None:
    client, _ = await run(new_trader, sim)
    with pytest.raises(PolyApiException) as e:
        await run(client.get_order_book, "123")
    assert (e.value.status_code, api_error(e.value)) == (
        404,
        "No orderbook exists for the requested token id",
    )
    with pytest.raises(PolyApiException) as e:
        await run(client.get_tick_size, "123")
    assert (e.value.status_code, api_error(e.value)) == (404, "market not found")


async def test_tick_size_change_is_enforced_on_the_next_order(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    tok = market.token_ids[0]
    assert await run(client.get_tick_size, tok) == "0.01"  # the SDK caches it with no TTL
    sim.set_tick_size(tok, D("0.1"))
    signed = await run(client.create_order, OrderArgsV2(tok, 0.45, 10, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed)
    assert api_error(e.value) == (
        f"order {_hash_of(client, signed)} is invalid. "
        "Price (0.45) breaks minimum tick size rule: 0.1"
    )


def _hash_of(client, signed) -> str:  # type: ignore[no-untyped-def]
    from py_clob_client_v2.config import get_contract_config
    from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2

    ex = ExchangeOrderBuilderV2(get_contract_config(137).exchange_v2, 137, client.builder.signer)
    return str(ex.build_order_hash(ex.build_order_typed_data(signed)))


async def test_size_below_minimum_is_refused(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.5, 1.08, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed)
    assert api_error(e.value) == (
        f"order {_hash_of(client, signed)} is invalid. Size (1.08) lower than the minimum: 5"
    )


async def test_market_order_amount_precision_is_enforced(sim: Simulator, market: SimMarket) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.47"), size=D("100"))
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(tok, 0.47, 12.5, "BUY"))  # maker 5.875
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed, OrderType.FOK)
    assert api_error(e.value) == (
        "invalid amounts, the market buy orders maker amount supports a max accuracy of 2 "
        "decimals, taker amount a max of 4 decimals"
    )


async def test_balance_minus_reservations_is_enforced(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim, D("10"))
    tok = market.token_ids[0]
    await run(client.create_and_post_order, OrderArgsV2(tok, 0.5, 15, "BUY"))  # reserves 7.5
    with pytest.raises(PolyApiException) as e:
        await run(client.create_and_post_order, OrderArgsV2(tok, 0.5, 6, "BUY"))  # needs 3
    assert (e.value.status_code, api_error(e.value)) == (400, "not enough balance / allowance")
    with pytest.raises(PolyApiException):
        await run(client.create_and_post_order, OrderArgsV2(tok, 0.5, 5, "SELL"))  # no shares
    bal = await run(
        client.get_balance_allowance,
        __import__(
            "py_clob_client_v2.clob_types", fromlist=["BalanceAllowanceParams"]
        ).BalanceAllowanceParams(asset_type="COLLATERAL"),
    )
    assert bal["balance"] == "10000000"


async def test_same_signed_order_twice_is_a_duplicate(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    first = await run(client.post_order, signed)
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed)
    assert api_error(e.value) == f"order {first['orderID']} is invalid. Duplicated."


async def test_market_not_accepting_orders_refuses(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    sim.set_accepting_orders(market.condition_id, False)
    with pytest.raises(PolyApiException) as e:
        await run(client.create_and_post_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    assert api_error(e.value) == "the market is not yet ready to process new orders"


async def _raw_post(client: ClobClient, sim: Simulator, body: object) -> httpx.Response:
    raw = json.dumps(body, separators=(",", ":"))
    headers = l2_headers(client, "POST", "/order", raw)
    return await run(httpx.post, sim.clob_url + "/order", content=raw.encode(), headers=headers)


async def test_v1_shaped_body_is_refused_with_version_mismatch(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    body = order_to_json_v2(signed, client.creds.api_key, "GTC")
    body["order"].update(nonce="0", feeRateBps="0", taker="0x" + "0" * 40)
    r = await _raw_post(client, sim, body)
    assert (r.status_code, r.json()) == (400, {"error": "order_version_mismatch"})


async def test_tampered_amount_fails_signature_check(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    body = order_to_json_v2(signed, client.creds.api_key, "GTC")
    body["order"]["takerAmount"] = "6000000"
    body["order"]["makerAmount"] = "1800000"
    r = await _raw_post(client, sim, body)
    assert (r.status_code, r.json()) == (400, {"error": "invalid signature"})


async def test_order_for_another_api_key_owner_is_refused(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await run(new_trader, sim)
    signed = await run(client.create_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY"))
    body = order_to_json_v2(signed, "00000000-0000-4000-8000-000000000000", "GTC")
    r = await _raw_post(client, sim, body)
    assert r.json() == {"error": "the order owner has to be the owner of the API KEY"}


async def test_bad_hmac_is_refused_401(sim: Simulator, market: SimMarket) -> None:
    client, _ = await run(new_trader, sim)
    raw = '{"orderID":"0x01"}'
    headers = l2_headers(client, "DELETE", "/order", raw)
    r = await run(
        httpx.request,
        "DELETE",
        sim.clob_url + "/order",
        content=b'{"orderID":"0x02"}',
        headers=headers,
    )
    assert (r.status_code, r.json()) == (401, {"error": "Unauthorized/Invalid api key"})


async def test_proxy_and_deposit_wallet_signature_types_are_accepted(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    for sig_type in (1, 2, 3):
        funder = "0x" + f"{sig_type:02x}" * 20
        client, _ = await run(new_trader, sim, signature_type=sig_type, funder=funder)
        res = await run(client.create_and_post_order, OrderArgsV2(tok, 0.3, 5, "BUY"))
        order = await run(client.get_order, res["orderID"])
        assert order["maker_address"].lower() == funder


async def test_heartbeat_lapse_cancels_open_orders(market: SimMarket) -> None:
    async with Simulator(seed=3, heartbeat_timeout_s=0.3) as sim:
        m = sim.add_market(question="HB?", slug="hb")
        client, _ = await run(new_trader, sim)
        res = await run(client.create_and_post_order, OrderArgsV2(m.token_ids[0], 0.3, 5, "BUY"))
        hb = await run(client.post_heartbeat, "")
        hb = await run(client.post_heartbeat, hb["heartbeat_id"])
        with pytest.raises(PolyApiException) as e:
            await run(client.post_heartbeat, "stale-id")
        assert e.value.status_code == 400
        assert e.value.error_msg["heartbeat_id"] == hb["heartbeat_id"]
        assert (await run(client.get_order, res["orderID"]))["status"] == "LIVE"
        await asyncio.sleep(0.5)
        assert (await run(client.get_order, res["orderID"]))["status"] == "CANCELED"
