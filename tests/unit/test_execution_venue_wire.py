"""Wire translation against real captures: order shapes, trades, acks, errors, market rules."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest

from errors import (
    DuplicateOrder,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    TransientError,
    VenueUnavailable,
)
from execution.market_rules import MarketRules
from execution.ports import MarketMeta, VenueStatus, journal_status
from models import LiquidityRole, OrderStatus, OrderType, Side
from resilience.clock import FakeClock
from resilience.rate_limit import RateLimiter
from simulator import Simulator
from simulator.testing import new_trader
from tests.helpers import FIXTURES as SHARED_FIXTURES
from tests.helpers import TOKEN, identity_of, make_order
from venue.clob import (
    ClobBroker,
    fills_from_trade,
    meta_from_market,
    order_amounts,
    translate,
    venue_order,
)
from venue.clob.translate import VenueHttpError

F = SHARED_FIXTURES


def load(rel: str) -> Any:
    return json.loads((F / rel).read_text())


def test_rest_order_fak_partial_maps_to_canceled_with_size_matched() -> None:
    vo = venue_order(load("clob_rest/get_order_fak_partial_size_matched_2026_01.json"))
    assert vo is not None and vo.status is VenueStatus.MATCHED
    assert (vo.original_size, vo.size_matched) == (Decimal("10"), Decimal("5"))
    st = journal_status(
        vo.status, size=Decimal(10), matched=vo.size_matched, order_type=OrderType.FAK
    )
    assert st is OrderStatus.CANCELED


def test_order_status_long_names_and_micro_sizes_tolerated() -> None:
    d = {
        "id": "0xab",
        "status": "ORDER_STATUS_LIVE",
        "original_size": "100000000",
        "size_matched": "25000000",
        "price": "0.5",
        "side": "BUY",
    }
    vo = venue_order(d, expected_size=Decimal("100"))
    assert vo is not None and vo.status is VenueStatus.LIVE
    assert (vo.original_size, vo.size_matched) == (Decimal("100"), Decimal("25"))


def test_fok_killed_status_suffix_is_canceled() -> None:
    vo = venue_order(load("ws_user/order_fok_killed_status_suffix_2026_05_SANITIZED.json"))
    assert vo is not None and vo.status is VenueStatus.CANCELED


def test_ws_trade_taker_fill_and_maker_fill() -> None:
    t = load("ws_user/trade_matched_taker_2024_09.json")
    fills = fills_from_trade(t, owner=t["owner"], address="0x0")
    assert len(fills) == 1 and fills[0].role is LiquidityRole.TAKER
    assert fills[0].venue_order_id == t["taker_order_id"] and fills[0].size == Decimal("5")
    m = t["maker_orders"][0]
    maker = fills_from_trade(t | {"trader_side": "MAKER"}, owner=m["owner"], address="0x0")
    assert len(maker) == 1 and maker[0].side is Side.SELL and maker[0].role is LiquidityRole.MAKER


def test_post_order_partial_ack_reads_shares_from_taking_amount() -> None:
    res = load("clob_rest/post_order_fak_matched_partial_2026_01.json")
    req = make_order(price="0.47", order_type=OrderType.FAK)
    ack = ClobBroker._ack(res, req, "0x")
    assert ack.size_matched == Decimal("5") and ack.avg_price == Decimal("0.47")


def _api_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> VenueHttpError:
    return VenueHttpError(status, body, headers=headers)


def _lost(cause: BaseException, *, connect_failed: bool = False) -> VenueHttpError:
    try:
        raise VenueHttpError(None, "no answer", connect_failed=connect_failed) from cause
    except VenueHttpError as e:
        return e


def test_error_translation_by_status() -> None:
    err = load("clob_rest/post_order_error_400_not_enough_balance_allowance.json")
    assert isinstance(translate(_api_error(400, err)), OrderRejected)
    assert isinstance(translate(_api_error(429, {"error": "Too Many Requests"})), RateLimited)
    assert isinstance(translate(_api_error(425, {"error": "x"})), VenueUnavailable)
    assert isinstance(translate(_api_error(503, {"error": "x"})), VenueUnavailable)
    five = translate(
        _api_error(500, load("clob_rest/post_order_error_500_could_not_run_execution.json"))
    )
    assert type(five) is TransientError
    assert isinstance(translate(_lost(httpx.ReadTimeout("slow"))), OutcomeUnknown)
    assert isinstance(translate(_lost(aiohttp.ServerDisconnectedError())), OutcomeUnknown)
    refused = _lost(httpx.ConnectError("refused"), connect_failed=True)
    assert type(translate(refused)) is TransientError
    limited = translate(_api_error(429, {"error": "slow down"}, {"Retry-After": "3"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0


@pytest.mark.parametrize(
    ("side", "otype", "price", "size", "maker", "taker"),
    [
        (Side.BUY, OrderType.GTC, "0.47", "12.5", "5.875", "12.5"),
        (Side.SELL, OrderType.GTC, "0.57", "10", "10", "5.70"),
        (Side.BUY, OrderType.FOK, "0.47", "12.5", "5.87", "12.4893"),
        (Side.SELL, OrderType.FAK, "0.47", "12.34", "12.34", "5.7998"),
    ],
)
def test_order_amounts_match_venue_rounding(
    side: Side, otype: OrderType, price: str, size: str, maker: str, taker: str
) -> None:
    req = make_order(side=side, price=price, size=size, order_type=otype)
    assert order_amounts(req) == (Decimal(maker), Decimal(taker))


def test_market_rules_tick_size_change_applies_to_next_order() -> None:
    rules = MarketRules()
    rules.put(MarketMeta(TOKEN, "0x" + "1" * 64, Decimal("0.01"), Decimal("5"), False))
    r = make_order(price="0.971", size="5")
    assert "tick" in (rules.check(r, rules.get(TOKEN)) or "")
    change = load("ws_market/tick_size_change_2025_02.json")
    rules.set_tick_size(TOKEN, Decimal(change["new_tick_size"]))
    assert rules.check(r, rules.get(TOKEN)) is None


@pytest.mark.parametrize("neg_risk", [False, True])
def test_fast_digest_signature_is_byte_identical_to_the_sdks(neg_risk: bool) -> None:
    from eth_account import Account
    from py_clob_client_v2.config import get_contract_config
    from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ExchangeOrderBuilderV2
    from py_clob_client_v2.order_utils.model.order_data_v2 import OrderDataV2
    from py_clob_client_v2.order_utils.model.side import Side as SdkSide
    from py_clob_client_v2.signer import Signer

    from venue.clob import DigestSigner, domain_separator, order_digest, order_hash

    acct = Account.from_key("0x" + "5a" * 32)
    cfg = get_contract_config(137)
    exchange = cfg.neg_risk_exchange_v2 if neg_risk else cfg.exchange_v2
    builder = ExchangeOrderBuilderV2(exchange, 137, Signer(acct.key.hex(), 137))
    order = builder.build_order(
        OrderDataV2(
            maker=acct.address,
            signer=acct.address,
            tokenId=TOKEN,
            makerAmount="5000000",
            takerAmount="10000000",
            side=SdkSide.BUY,
            signatureType=0,
        )
    )
    sdk_sig = builder.build_order_signature(builder.build_order_typed_data(order))
    digest = order_digest(order, domain_separator(137, exchange))
    assert DigestSigner(acct.key.hex()).sign(digest) == sdk_sig
    assert order_hash(order, domain_separator(137, exchange)) == "0x" + digest.hex()
    recovered = Account._recover_hash(digest, signature=bytes.fromhex(sdk_sig[2:]))
    assert recovered == acct.address


# --- garbage in the answers (fuzzing): never a crash, never a wrong number ------------------

GTC_BUY = make_order()


@pytest.mark.parametrize(
    "res",
    [
        {"status": "MATCHED", "orderID": "0x1", "makingAmount": "NaN", "takingAmount": "5"},
        {"status": "MATCHED", "orderID": "0x1", "makingAmount": "9", "takingAmount": "5"},
        {"orderID": "0x1", "tradeIDs": 5},
        {"orderID": 5},
        {"orderID": "0x1", "status": "EXPLODED"},
        {"orderID": "0x1", "success": None},
        "<html>ok</html>",
        ["0x1"],
    ],
)
def test_unreadable_order_answer_is_outcome_unknown_never_rejected(res: Any) -> None:
    # The order was sent and may have matched: it must be looked up by hash, not refused.
    with pytest.raises(OutcomeUnknown, match="unreadable answer") as e:
        ClobBroker._ack(res, GTC_BUY, "0x" + "11" * 32)
    assert e.value.order_id == "0x" + "11" * 32


def test_clear_refusal_in_a_200_answer_is_still_rejected() -> None:
    with pytest.raises(OrderRejected, match="not enough balance"):
        ClobBroker._ack({"success": False, "errorMsg": "not enough balance"}, GTC_BUY, "0x")


def test_ack_trade_ids_list_is_kept() -> None:
    ack = ClobBroker._ack({"orderID": "0x1", "tradeIDs": ["a", 7]}, GTC_BUY, "0x")
    assert ack.trade_ids == ("a", "7") and ack.status is VenueStatus.LIVE


@pytest.mark.parametrize(
    "field",
    [("price", "NaN"), ("price", "1.5"), ("original_size", "1e999999"), ("size_matched", "-1")],
)
def test_order_row_with_an_unreadable_number_is_not_an_order(field: tuple[str, str]) -> None:
    row = {"id": "0xab", "status": "LIVE", "price": "0.5", "original_size": "10"}
    assert venue_order(row | dict([field])) is None


def test_trade_with_unusable_fields_skips_those_fills_only() -> None:
    t = load("ws_user/trade_mined_maker_multi_maker_orders_2024_09.json")
    owner = t["maker_orders"][0]["owner"]
    good = fills_from_trade(t | {"trader_side": "MAKER"}, owner=owner, address="0x0")
    assert good
    bad_first = [t["maker_orders"][0] | {"price": "NaN"}, *t["maker_orders"][1:]]
    skipped = fills_from_trade(
        t | {"trader_side": "MAKER", "maker_orders": [5, *bad_first], "match_time": "9" * 30},
        owner=owner,
        address="0x0",
    )
    assert len(skipped) == len(good) - 1
    assert fills_from_trade(t | {"maker_orders": {"a": 1}}, owner=owner, address="0x0") == []


def test_market_row_with_a_nan_tick_or_junk_tokens_gives_no_rules() -> None:
    m = load("clob_rest/market_2024_trump_negrisk.json")
    assert len(meta_from_market("0xc", m)) == 2
    assert meta_from_market("0xc", m | {"minimum_tick_size": "NaN"}) == []
    assert meta_from_market("0xc", m | {"tokens": 5}) == []
    assert ClobBroker._cancel_result({"canceled": 5}).canceled == ()


def test_cloudflare_403_page_is_reduced_to_its_title() -> None:
    page = (
        "<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title></head>"
        "<body><h1>Sorry, you have been blocked</h1></body></html>"
    )
    err = translate(VenueHttpError.answer(403, page.encode(), {}))
    assert isinstance(err, VenueUnavailable)
    assert str(err) == "HTML error page (Attention Required! | Cloudflare)"
    assert translate(_api_error(400, {"error": "bad tick"})).args == ("bad tick",)


DUPLICATED = "order 0x{} is invalid. Duplicated."


def test_the_venues_duplicate_refusal_is_a_duplicate_order_and_nothing_else_is() -> None:
    oid = "0x" + "ab" * 32
    text = DUPLICATED.format("ab" * 32)
    err = translate(_api_error(400, {"error": text}), order_id=oid)
    assert isinstance(err, DuplicateOrder) and isinstance(err, OrderRejected)
    assert (err.order_id, err.status, err.reason) == (oid, 400, text)
    legacy = translate(_api_error(400, {"error": "INVALID_ORDER_DUPLICATED"}), order_id=oid)
    assert isinstance(legacy, DuplicateOrder)
    with pytest.raises(DuplicateOrder) as batch_item:
        ClobBroker._ack({"success": False, "errorMsg": text, "orderID": ""}, GTC_BUY, oid)
    assert batch_item.value.order_id == oid and batch_item.value.reason == text
    for other in ("not enough balance / allowance", "invalid post-only order: order crosses book"):
        assert type(translate(_api_error(400, {"error": other}))) is OrderRejected
        with pytest.raises(OrderRejected) as refused:
            ClobBroker._ack({"success": False, "errorMsg": other}, GTC_BUY, oid)
        assert type(refused.value) is OrderRejected
    # A 5xx naming a duplicate is still the venue failing, not a refusal of this order.
    assert type(translate(_api_error(500, {"error": text}))) is TransientError


_BUCKETS = (
    "post_order",
    "post_orders",
    "cancel_order",
    "cancel_orders",
    "cancel_all",
    "data_orders",
    "data_trades",
    "clob_general",
)


async def test_broker_takes_its_own_rate_limit_buckets_and_names_a_re_sent_duplicate() -> None:
    async with Simulator(seed=41, settle_delay_s=0.01) as sim:
        market = sim.add_market("Will it rain?", "rain")
        token = market.token_ids[0]
        client, _ = await asyncio.to_thread(new_trader, sim)
        # No refill (a fake clock that never moves): what each bucket lost is what was taken.
        limiter = RateLimiter.from_limits(
            dict.fromkeys(_BUCKETS, (1e-09, 100.0)), clock=FakeClock()
        )
        broker = ClobBroker(identity=identity_of(client), host=sim.clob_url, limiter=limiter)

        def taken() -> dict[str, float]:
            return {k: 100.0 - limiter.buckets(k)[0].available() for k in _BUCKETS}

        try:
            (meta,) = [m for m in await broker.market_meta(token) if m.token_id == token]
            prepared = await broker.prepare(make_order(token_id=token, price="0.4"), meta)
            ack = await broker.send(prepared)
            assert ack.venue_order_id == prepared.venue_order_id
            with pytest.raises(DuplicateOrder) as dup:
                await broker.send(prepared)  # the same signed bytes again
            assert dup.value.order_id == prepared.venue_order_id
            assert "duplicated" in dup.value.reason.lower()
            found = await broker.lookup(prepared.venue_order_id)
            assert found is not None and found.status.name == "LIVE"
            assert [o.venue_order_id for o in await broker.open_orders()] == [ack.venue_order_id]
            assert await broker.fills_since(0) == []
            assert await broker.heartbeat() != ""
            assert (await broker.cancel([ack.venue_order_id])).canceled == (ack.venue_order_id,)
            await broker.cancel_all()
            assert taken() == {
                "post_order": 2,
                "post_orders": 0,
                "cancel_order": 1,
                "cancel_orders": 0,
                "cancel_all": 1,
                "data_orders": 2,  # one lookup, one page of open orders
                "data_trades": 1,
                "clob_general": 4,  # three market-rules reads (fee: /clob-markets), one heartbeat
            }
        finally:
            await broker.close()


async def test_public_routes_take_their_own_rate_limit_buckets() -> None:
    from venue.clob import PublicMarketMeta, RestBookSource

    async with Simulator(seed=43) as sim:
        token = sim.add_market("Will it snow?", "snow").token_ids[0]
        sim.seed_order("0x" + "5" * 40, token, "SELL", Decimal("0.6"), Decimal("20"))
        limiter = RateLimiter.from_limits(
            dict.fromkeys(("book", "clob_general"), (1e-9, 100.0)), clock=FakeClock()
        )
        meta = PublicMarketMeta(host=sim.clob_url, limiter=limiter)
        books = RestBookSource(host=sim.clob_url, limiter=limiter)
        try:
            assert [m.token_id for m in await meta.market_meta(token)].count(token) == 1
            await books.refresh(token)
            assert books.best_ask(token) == (Decimal("0.6"), Decimal("20"))
        finally:
            await meta.close()
            await books.close()
        left = {k: limiter.buckets(k)[0].available() for k in ("book", "clob_general")}
        assert left == {"book": 99.0, "clob_general": 97.0}  # /clob-markets holds the fee


async def test_build_client_derives_the_same_credentials_as_the_sdk() -> None:
    from eth_account import Account
    from py_clob_client_v2.client import ClobClient

    from venue.clob import build_client

    async with Simulator(seed=42) as sim:
        key = Account.create().key.hex()

        def both() -> tuple[Any, Any]:
            ours = build_client(
                host=sim.clob_url,
                chain_id=sim.chain_id,
                private_key=key,
                creds=None,
                signature_type=0,
                funder=None,
                http_timeout_s=2.0,
            ).creds
            sdk = ClobClient(sim.clob_url, sim.chain_id, key=key).create_or_derive_api_key()
            return ours, sdk

        ours, sdk = await asyncio.to_thread(both)
        assert ours is not None and ours.api_key
        assert (ours.api_key, ours.api_secret, ours.api_passphrase) == (
            sdk.api_key,
            sdk.api_secret,
            sdk.api_passphrase,
        )


class _Capture:
    """A loopback HTTP/1.1 server that keeps each raw request and answers 200 `{}`."""

    def __init__(self) -> None:
        import socket
        import threading

        self.requests: list[bytes] = []
        self.connections = 0
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._srv.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        conn.settimeout(10)
        with conn:
            buf = b""
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) >= length:
                        self.requests.append(head + sep + rest[:length])
                        buf = rest[length:]
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 2\r\n\r\n{}"
                        )
                        continue
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk

    def close(self) -> None:
        self._srv.close()


def _split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    start, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return start, headers, body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/order", '{"order":{"salt":1},"owner":"k","orderType":"GTC","x":"it\'s"}'),
        ("DELETE", "/orders", '["0xa","0xb"]'),
        ("GET", "/data/order/0xabc", None),
        ("DELETE", "/cancel-all", None),
    ],
)
async def test_both_transports_send_the_body_bytes_and_auth_headers_unchanged(
    method: str, path: str, body: str | None
) -> None:
    """The L2 HMAC covers the exact body text: the daemon's aiohttp transport and the CLI's
    httpx transport put exactly those bytes on the wire, with the auth headers as given, as
    the deprecated SDK's own HTTP helper did (its request line and body are the same)."""
    from py_clob_client_v2.http_helpers import helpers as sdk_http

    from venue.clob.transport import AsyncClobHttp, ClobHttp

    cap = _Capture()
    headers = {"POLY_ADDRESS": "0x1", "POLY_SIGNATURE": "sig=", "POLY_TIMESTAMP": "1"}
    ours = AsyncClobHttp(cap.url, timeout_s=5.0)
    cli = ClobHttp(cap.url, timeout_s=5.0)
    try:
        assert await ours.request(method, path, headers=dict(headers), body=body) == {}
        assert await asyncio.to_thread(cli.request, method, path, headers=headers, body=body) == {}
        assert (
            await asyncio.to_thread(
                sdk_http.request, f"{cap.url}{path}", method, dict(headers), body
            )
            == {}
        )
    finally:
        await ours.close()
        cli.close()
        cap.close()
    sent = [_split(r) for r in cap.requests]
    assert len(sent) == 3
    for start, got, raw_body in sent:
        assert start == f"{method} {path} HTTP/1.1"
        assert raw_body == (body.encode() if body is not None else b"")
        assert {k: got[k.lower()] for k in headers} == headers
    assert sent[0][1]["content-type"] == "application/json"


async def test_the_async_transport_keeps_one_connection_alive() -> None:
    from venue.clob.transport import AsyncClobHttp

    cap = _Capture()
    http = AsyncClobHttp(cap.url, timeout_s=5.0)
    try:
        for _ in range(5):
            assert await http.request("GET", "/time") == {}
    finally:
        await http.close()
        cap.close()
    assert len(cap.requests) == 5 and cap.connections == 1


async def test_the_async_transport_says_when_nothing_left_the_process() -> None:
    import socket

    from venue.clob.transport import AsyncClobHttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    http = AsyncClobHttp(f"http://127.0.0.1:{port}", timeout_s=2.0)
    try:
        with pytest.raises(VenueHttpError) as e:
            await http.request("POST", "/order", body="{}")
    finally:
        await http.close()
    assert e.value.connect_failed and type(translate(e.value)) is TransientError


@pytest.mark.parametrize(
    "body",
    [
        "<html><title>Just a moment...</title></html>",
        '{"bids": [{"price": "0.4"}], "asks": []}',
        '{"bids": [{"price": "zero", "size": "1"}], "asks": []}',
        '{"bids": "nope", "asks": []}',
        '["not", "a", "book"]',
    ],
)
async def test_rest_book_that_is_not_a_book_is_no_book(body: str) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from venue.clob import RestBookSource

    answers = [body, '{"bids": [{"price": "0.4", "size": "3"}], "asks": []}']

    async def book(_: web.Request) -> web.Response:
        return web.Response(text=answers.pop(0), content_type="application/json")

    app = web.Application()
    app.router.add_get("/book", book)
    async with TestServer(app) as server:
        books = RestBookSource(host=str(server.make_url("")))
        try:
            await books.refresh(TOKEN)
            assert books.bids(TOKEN) is None and books.best_bid(TOKEN) is None
            await books.refresh(TOKEN)  # the next good answer is used
            assert books.best_bid(TOKEN) == (Decimal("0.4"), Decimal("3"))
        finally:
            await books.close()


@pytest.mark.parametrize(
    "over",
    [
        {"minimum_tick_size": "1.5"},
        {"minimum_tick_size": "NaN"},
        {"minimum_order_size": "1e308"},
        {"minimum_order_size": "-5"},
    ],
)
def test_market_rules_with_an_out_of_bound_number_are_none_and_counted(
    over: dict[str, str],
) -> None:
    from observability.metrics import Metrics
    from venue.parse import MalformedLog

    metrics = Metrics()
    m = {
        "condition_id": "0xc",
        "minimum_tick_size": "0.01",
        "minimum_order_size": "5",
        "tokens": [{"token_id": "1"}, {"token_id": "2"}],
    }
    rest = MalformedLog("rest", metrics=metrics)
    assert len(meta_from_market("0xc", m, malformed=rest)) == 2  # the control
    assert meta_from_market("0xc", m | over, malformed=rest) == []
    sample = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "rest"})
    assert sample == 1
