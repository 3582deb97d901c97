"""Delayed matching in the simulator, driven by the real SDK and a plain websocket client.

Sources: the compact market record's `itode` (taker order delay enabled, a flag) and `sd`
(seconds delay), TS client `MarketDetails` in
https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts; `seconds_delay` on
`/markets` in NautilusTrader's capture `clob_market_closed_binary_accepting_false.json`; the
`delayed` post-order status (https://docs.polymarket.com/trading/orders/create, NautilusTrader
`PolymarketOrderStatus`); the outcome arriving later as user-feed trades and order events with
FOK/FAK remainders canceled (docs/venue-mechanics.md §5). The delay is short here; every wait is on
a condition with a bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2, OrderPayload, OrderType

from simulator import SimMarket, Simulator
from simulator.testing import new_trader
from tests.helpers import open_user_feed, until

D = Decimal
MAKER = "0x" + "cd" * 20
DELAY = 0.3


async def run(fn: Callable[..., Any], /, *a: Any) -> Any:
    return await asyncio.to_thread(fn, *a)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=71, settle_delay_s=0.01) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    m = sim.add_market("Will the home team win?", "home-win", tags=("sports",))
    m.taker_delay_s = DELAY
    return m


async def test_delayed_market_serves_itode_sd_and_seconds_delay(
    sim: Simulator, market: SimMarket
) -> None:
    plain = sim.add_market("No delay?", "no-delay")
    async with httpx.AsyncClient(base_url=sim.clob_url) as h:
        cm = (await h.get(f"/clob-markets/{market.condition_id}")).json()
        assert (cm["itode"], cm["sd"]) == (True, DELAY)
        row = (await h.get(f"/markets/{market.condition_id}")).json()
        assert row["seconds_delay"] == DELAY
        cm = (await h.get(f"/clob-markets/{plain.condition_id}")).json()
        assert cm["itode"] is False and "sd" not in cm
        assert (await h.get(f"/markets/{plain.condition_id}")).json()["seconds_delay"] == 0


async def feed(sim: Simulator, client: Any, market: SimMarket) -> Any:
    return await open_user_feed(sim.user_ws_url, client.creds, market.condition_id)


async def read_until(ws: Any, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while not done(got):
            data = json.loads(await ws.recv())
            got += data if isinstance(data, list) else [data]
    return got


async def test_fak_is_answered_delayed_then_matches_the_book_as_it_is_then(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(MAKER, tok, "SELL", D("0.5"), D("5"))
    client, acct = await run(new_trader, sim)
    ws = await feed(sim, client, market)
    try:
        order = await run(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
        res = await run(client.post_order, order, OrderType.FAK)
        assert res["status"] == "delayed"
        assert (res["makingAmount"], res["takingAmount"]) == ("", "")
        oid = res["orderID"]
        rest = await run(client.get_order, oid)
        assert (rest["status"], rest["size_matched"]) == ("DELAYED", "0")
        assert sim.engine.available_collateral(acct.address) == D("995")  # funds held
        canceled = await run(client.cancel_order, OrderPayload(orderID=oid))
        assert canceled["canceled"] == [] and oid in canceled["not_canceled"]
        # More liquidity arrives during the delay: the match sees the book as it is then.
        sim.seed_order(MAKER, tok, "SELL", D("0.5"), D("3"))
        got = await read_until(
            ws,
            lambda g: any(e.get("type") == "CANCELLATION" and e.get("id") == oid for e in g),
        )
        trades = [e for e in got if e["event_type"] == "trade" and e["status"] == "MATCHED"]
        assert sum(D(t["size"]) for t in trades) == D("8")
        assert {t["taker_order_id"] for t in trades} == {oid}
        cancel = next(e for e in got if e.get("type") == "CANCELLATION")
        assert cancel["size_matched"] == "8"  # the FAK remainder (2) is canceled
        rest = await run(client.get_order, oid)
        assert (rest["status"], rest["size_matched"]) == ("MATCHED", "8")
        rows = await run(client.get_trades)
        assert sum(D(r["size"]) for r in rows) == D("8")
        await until(lambda: sim.engine.available_collateral(acct.address) == D("996"))
    finally:
        await ws.close()


async def test_fok_that_cannot_fill_after_the_delay_is_killed(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    seeded = sim.seed_order(MAKER, tok, "SELL", D("0.5"), D("10"))
    client, acct = await run(new_trader, sim)
    ws = await feed(sim, client, market)
    try:
        order = await run(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
        res = await run(client.post_order, order, OrderType.FOK)
        assert res["status"] == "delayed"  # fillable now, but only matched after the delay
        assert sim.cancel_seeded(seeded)  # the liquidity is gone by then
        got = await read_until(ws, lambda g: any(e.get("type") == "CANCELLATION" for e in g))
        killed = next(e for e in got if e.get("type") == "CANCELLATION")
        assert killed["id"] == res["orderID"]
        assert killed["status"].startswith("CANCELED_")
        assert not [e for e in got if e["event_type"] == "trade"]
        assert (await run(client.get_order, res["orderID"]))["status"] == "CANCELED"
        assert sim.engine.available_collateral(acct.address) == D("1000")  # funds released
    finally:
        await ws.close()


async def test_marketable_gtc_on_a_delayed_market_matches_then_rests_its_remainder(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(MAKER, tok, "SELL", D("0.5"), D("4"))
    client, _ = await run(new_trader, sim)
    res = await run(client.create_and_post_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
    assert res["status"] == "delayed"
    oid = res["orderID"]
    await until(lambda: sim.engine.orders[oid].status == "LIVE")
    rest = await run(client.get_order, oid)
    assert rest["size_matched"] == "4"
    resting = await run(client.create_and_post_order, OrderArgsV2(tok, 0.4, 5, "BUY"))
    assert resting["status"] == "live"  # a non-marketable order is not delayed
