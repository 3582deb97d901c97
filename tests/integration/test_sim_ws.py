"""Market and user websocket channels, read with a plain `websockets` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import websockets
from py_clob_client_v2.clob_types import OrderArgsV2

from simulator import SimMarket, Simulator
from simulator.testing import new_trader
from tests.helpers import open_user_feed

D = Decimal
MAKER = "0x" + "ab" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(
        seed=5, settle_delay_s=0.02, ws_idle_timeout_s=0.5, ws_subscribe_timeout_s=0.5
    ) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(question="Will X?", slug="will-x")


async def events(ws: Any, until: str, within: float = 2.0) -> list[dict[str, Any]]:
    """Read frames (objects or arrays) until an event of type `until` arrives."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            raw = await ws.recv()
            if raw == "PONG":
                continue
            data = json.loads(raw)
            items = data if isinstance(data, list) else [data]
            got += items
            if any(e.get("event_type") == until for e in items):
                return got


async def test_subscribe_sends_book_dump_as_array_best_last(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    for p in ("0.40", "0.41"):
        sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D(p), size=D("10"))
    for p in ("0.60", "0.59"):
        sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D(p), size=D("10"))
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send(json.dumps({"assets_ids": [tok], "type": "market"}))
        raw = await ws.recv()
        frame = json.loads(raw)
        assert isinstance(frame, list)
        assert frame[0]["event_type"] == "book"
        book = frame[0]
        assert [b["price"] for b in book["bids"]] == ["0.4", "0.41"]
        assert [a["price"] for a in book["asks"]] == ["0.6", "0.59"]
        assert len(book["hash"]) == 40
        assert book["tick_size"] == "0.01"
        assert book["last_trade_price"] == ""


async def test_new_order_emits_price_change_with_aggregate_size(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D("0.4"), size=D("10"))
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send(json.dumps({"assets_ids": [tok], "type": "market"}))
        await events(ws, "book")
        sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D("0.4"), size=D("5"))
        pc = next(e for e in await events(ws, "price_change") if e["event_type"] == "price_change")
        ch = pc["price_changes"][0]
        assert (ch["price"], ch["size"], ch["side"], ch["best_bid"]) == ("0.4", "15", "BUY", "0.4")
        assert pc["timestamp"].isdigit()
        assert pc["market"] == market.condition_id
        oid = sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D("0.3"), size=D("5"))
        await events(ws, "price_change")
        sim.cancel_seeded(oid)
        pc = next(e for e in await events(ws, "price_change") if e["event_type"] == "price_change")
        assert pc["price_changes"][0]["size"] == "0"


async def test_text_ping_gets_text_pong(sim: Simulator, market: SimMarket) -> None:
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send(json.dumps({"assets_ids": [market.token_ids[0]], "type": "market"}))
        await ws.recv()
        await ws.send("PING")
        assert await asyncio.wait_for(ws.recv(), 1) == "PONG"


async def test_dynamic_subscribe_and_unsubscribe_change_the_stream(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send(json.dumps({"assets_ids": [yes], "type": "market"}))
        await events(ws, "book")
        await ws.send(json.dumps({"operation": "subscribe", "assets_ids": [no]}))
        dump = await events(ws, "book")
        assert dump[-1]["asset_id"] == no
        await ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": [yes]}))
        await ws.send("PING")
        assert await ws.recv() == "PONG"  # the unsubscribe was processed before the PING
        sim.seed_order(maker=MAKER, token_id=yes, side="BUY", price=D("0.4"), size=D("5"))
        sim.seed_order(maker=MAKER, token_id=no, side="BUY", price=D("0.4"), size=D("5"))
        got = await events(ws, "price_change")
        assert {c["asset_id"] for e in got for c in e.get("price_changes", [])} == {no}


async def test_best_bid_ask_only_with_custom_feature(sim: Simulator, market: SimMarket) -> None:
    tok = market.token_ids[0]
    async with (
        websockets.connect(sim.market_ws_url) as plain,
        websockets.connect(sim.market_ws_url) as custom,
    ):
        await plain.send(json.dumps({"assets_ids": [tok], "type": "market"}))
        await custom.send(
            json.dumps({"assets_ids": [tok], "type": "market", "custom_feature_enabled": True})
        )
        await events(plain, "book")
        await events(custom, "book")
        sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D("0.4"), size=D("5"))
        got = await events(custom, "best_bid_ask")
        bba = next(e for e in got if e["event_type"] == "best_bid_ask")
        assert (bba["best_bid"], bba["best_ask"], bba["spread"]) == ("0.4", "1", "1")
        plain_got = await events(plain, "price_change")
        assert all(e["event_type"] != "best_bid_ask" for e in plain_got)


async def test_socket_without_ping_is_closed_after_idle_timeout(
    sim: Simulator, market: SimMarket
) -> None:
    async with websockets.connect(sim.market_ws_url, ping_interval=None) as ws:
        await ws.send(json.dumps({"assets_ids": [market.token_ids[0]], "type": "market"}))
        await ws.recv()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(drain(ws), 2)


async def drain(ws: Any) -> None:
    while True:
        await ws.recv()


async def test_socket_that_never_subscribes_is_closed(sim: Simulator) -> None:
    async with websockets.connect(sim.market_ws_url, ping_interval=None) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(2):
                await ws.recv()


async def test_trade_emits_last_trade_price_and_tick_change_event(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    async with websockets.connect(sim.market_ws_url) as ws:
        await ws.send(json.dumps({"assets_ids": [tok], "type": "market"}))
        await events(ws, "book")
        tx = sim.trade_as(
            wallet="0x" + "cd" * 20, token_id=tok, side="BUY", price=D("0.55"), size=D("20")
        )
        ltp = [
            e for e in await events(ws, "last_trade_price") if e["event_type"] == "last_trade_price"
        ]
        assert (ltp[0]["price"], ltp[0]["size"], ltp[0]["transaction_hash"]) == ("0.55", "20", tx)
        sim.set_tick_size(tok, D("0.001"))
        tc = [
            e for e in await events(ws, "tick_size_change") if e["event_type"] == "tick_size_change"
        ]
        assert (tc[0]["old_tick_size"], tc[0]["new_tick_size"]) == ("0.01", "0.001")


async def test_user_channel_with_bad_auth_is_closed(sim: Simulator) -> None:
    async with websockets.connect(sim.user_ws_url) as ws:
        await ws.send(
            json.dumps(
                {
                    "auth": {"apiKey": "x", "secret": "y", "passphrase": "z"},
                    "markets": [],
                    "type": "user",
                }
            )
        )
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)


async def test_user_channel_reports_orders_and_trade_lifecycle(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("5"))
    client, _ = await asyncio.to_thread(new_trader, sim)
    async with await open_user_feed(sim.user_ws_url, client.creds, market.condition_id) as ws:
        res = await asyncio.to_thread(
            client.create_and_post_order, OrderArgsV2(tok, 0.5, 10, "BUY")
        )
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(3):
            while sum(1 for e in got if e["event_type"] == "trade") < 3:
                raw = await ws.recv()
                data = json.loads(raw)
                got += data if isinstance(data, list) else [data]
        orders = [e for e in got if e["event_type"] == "order"]
        assert orders[0]["type"] == "PLACEMENT"
        assert orders[0]["id"] == res["orderID"]
        assert (orders[0]["status"], orders[0]["size_matched"]) == ("LIVE", "5")
        trades = [e for e in got if e["event_type"] == "trade"]
        assert [t["status"] for t in trades] == ["MATCHED", "MINED", "CONFIRMED"]
        assert trades[0]["trader_side"] == "TAKER"
        assert trades[0]["matchtime"].isdigit()
        assert trades[0]["owner"] == client.creds.api_key
