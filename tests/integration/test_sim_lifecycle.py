"""The simulated venue's tick size changes and market resolution, driven with the real SDK and
real websockets (docs/venue-mechanics.md §4 and §7; sources in `simulator/lifecycle.py`).

Sources the assertions follow:
* tick rule and `tick_size_change`: https://docs.polymarket.com/market-data/websocket/market-channel
  and NT's real capture (fixtures `ws_market/tick_size_change_2025_02.json`);
* refusal text: https://docs.polymarket.com/resources/error-codes;
* `market_resolved`: the docs' example (fixtures `ws_market/market_resolved_DOC_EXAMPLE.json`);
* `CANCELED_MARKET_RESOLVED`: https://github.com/hbr-l/polypy/issues/11;
* Gamma / CLOB after resolution: NT's real captures (fixtures `gamma/market_closed_binary_
  accepting_false_2026.json`, `clob_rest/market_closed_accepting_orders_false_2026.json`);
* Data API redeemable rows: fixtures `data_api/positions_2025_redeemable_and_open.json`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest
import websockets
from py_clob_client_v2.clob_types import OrderArgsV2, PartialCreateOrderOptions
from py_clob_client_v2.exceptions import PolyApiException

from simulator import SimMarket, Simulator
from simulator.testing import new_trader
from tests.helpers import FIXTURES, open_user_feed

D = Decimal
MAKER = "0x" + "ab" * 20
P = ParamSpec("P")
R = TypeVar("R")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(question="Will X?", slug="will-x", tags=("stocks",))


async def run(fn: Callable[P, R], /, *a: P.args, **kw: P.kwargs) -> R:
    return await asyncio.to_thread(fn, *a, **kw)


def fixture(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text())


async def read_until(ws: Any, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Events (objects or arrays) until one matches `pred`; the last one is that event."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            raw = await ws.recv()
            if raw == "PONG":
                continue
            data = json.loads(raw)
            for e in data if isinstance(data, list) else [data]:
                got.append(e)
                if pred(e):
                    return got


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event_type") == kind


async def market_ws(sim: Simulator, assets: list[str], custom: bool) -> Any:
    ws = await websockets.connect(sim.market_ws_url)
    await ws.send(
        json.dumps({"assets_ids": assets, "type": "market", "custom_feature_enabled": custom})
    )
    await read_until(ws, of_type("book"))
    return ws


# --- tick size ---------------------------------------------------------------------------
async def test_tick_turns_finer_above_096_and_back_for_every_subscriber(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    async with httpx.AsyncClient(base_url=sim.clob_url) as http:
        ws_yes, ws_no = await market_ws(sim, [yes], False), await market_ws(sim, [no], False)
        try:
            bid = sim.seed_order(MAKER, yes, "BUY", D("0.97"), D("10"))
            for ws, tok in ((ws_yes, yes), (ws_no, no)):
                ev = (await read_until(ws, of_type("tick_size_change")))[-1]
                real = fixture("ws_market/tick_size_change_2025_02.json")
                assert set(ev) == set(real)
                assert (ev["asset_id"], ev["market"]) == (tok, market.condition_id)
                assert (ev["old_tick_size"], ev["new_tick_size"]) == ("0.01", "0.001")
            assert (await http.get("/tick-size", params={"token_id": no})).json() == {
                "minimum_tick_size": 0.001
            }
            cm = (await http.get(f"/clob-markets/{market.condition_id}")).json()
            assert cm["mts"] == 0.001
            assert (await http.get("/book", params={"token_id": yes})).json()["tick_size"] == (
                "0.001"
            )
            assert (await http.get(f"/markets/{market.condition_id}")).json()[
                "minimum_tick_size"
            ] == 0.001
            sim.cancel_seeded(bid)  # the book is back inside [0.04, 0.96]: coarser again
            ev = (await read_until(ws_no, of_type("tick_size_change")))[-1]
            assert (ev["old_tick_size"], ev["new_tick_size"]) == ("0.001", "0.01")
            assert (await http.get("/tick-size", params={"token_id": yes})).json() == {
                "minimum_tick_size": 0.01
            }
        finally:
            await ws_yes.close()
            await ws_no.close()


async def test_tick_turns_finer_below_004_and_a_mid_book_keeps_it_coarse(
    sim: Simulator, market: SimMarket
) -> None:
    yes = market.token_ids[0]
    sim.seed_order(MAKER, yes, "BUY", D("0.50"), D("10"))
    # mid 0.74: coarse. (An ask at 0.97 or below would be taken by the No ask at 0.03 below:
    # two SELLs with prices summing to at most 1 merge.)
    sim.seed_order(MAKER, yes, "SELL", D("0.98"), D("10"))
    assert market.tick_size == D("0.01")
    sim.seed_order(MAKER, market.token_ids[1], "SELL", D("0.03"), D("10"))
    assert market.tick_size == D("0.001")


async def test_an_order_signed_on_a_stale_fine_tick_is_refused_with_the_venue_text(
    sim: Simulator, market: SimMarket
) -> None:
    """The SDK caches the tick for ever: after the tick went back to 0.01 its 0.001 rounding
    gives a price the venue refuses, naming the new tick (the price implied by the amounts)."""
    yes = market.token_ids[0]
    client, _ = await run(new_trader, sim)
    bid = sim.seed_order(MAKER, yes, "BUY", D("0.97"), D("10"))
    assert await run(client.get_tick_size, yes) == "0.001"  # cached by the SDK from here on
    sim.cancel_seeded(bid)
    assert market.tick_size == D("0.01")
    signed = await run(client.create_order, OrderArgsV2(yes, 0.555, 10, "BUY"))
    with pytest.raises(PolyApiException) as e:
        await run(client.post_order, signed)
    err = e.value.error_msg
    assert isinstance(err, dict)
    assert err["error"].endswith("is invalid. Price (0.555) breaks minimum tick size rule: 0.01")
    assert err["error"].startswith("order 0x")


async def test_a_resting_order_off_the_new_grid_keeps_resting_and_matches(
    sim: Simulator,
) -> None:
    """Decided behaviour (undocumented at the venue; NT handles such levels): a 0.505 bid rests
    on after the market is relisted at 0.01, and a SELL on the new grid still fills it."""
    m = sim.add_market(question="Fine?", slug="fine", tick_size=D("0.001"))
    yes = m.token_ids[0]
    client, acct = await run(new_trader, sim)
    res = await run(
        client.create_and_post_order,
        OrderArgsV2(yes, 0.505, 10, "BUY"),
        PartialCreateOrderOptions(tick_size="0.001"),
    )
    sim.set_tick_size(yes, D("0.01"))
    assert (await run(client.get_order, res["orderID"]))["status"] == "LIVE"
    sim.seed_order(MAKER, yes, "SELL", D("0.50"), D("10"))
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["size_matched"]) == ("MATCHED", "10")
    assert sim.ledger()["balances"][acct.address.lower()]["tokens"][yes] == D("10")


# --- resolution --------------------------------------------------------------------------
async def user_ws(sim: Simulator, client: Any, market: SimMarket) -> Any:
    return await open_user_feed(sim.user_ws_url, client.creds, market.condition_id)


async def test_resolution_cancels_resting_orders_and_every_surface_says_resolved(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    client, acct = await run(new_trader, sim)
    sim.seed_order(MAKER, yes, "SELL", D("0.60"), D("20"))
    await run(client.create_and_post_order, OrderArgsV2(yes, 0.60, 10, "BUY"))  # a position
    resting = await run(client.create_and_post_order, OrderArgsV2(yes, 0.40, 10, "BUY"))
    uws = await user_ws(sim, client, market)
    custom, plain = await market_ws(sim, [yes], True), await market_ws(sim, [no], False)
    try:
        sim.resolve_market(market.condition_id, yes)
        ev = (
            await read_until(uws, lambda e: e.get("id") == resting["orderID"])  # CANCELLATION
        )[-1]
        assert (ev["type"], ev["status"]) == ("CANCELLATION", "CANCELED_MARKET_RESOLVED")
        got = (await read_until(custom, of_type("market_resolved")))[-1]
        real = fixture("ws_market/market_resolved_DOC_EXAMPLE.json")
        assert set(got) == set(real)
        assert (got["market"], got["winning_asset_id"], got["winning_outcome"]) == (
            market.condition_id,
            yes,
            "Yes",
        )
        assert got["assets_ids"] == [yes, no]
        # A subscriber without custom_feature_enabled gets no market_resolved: what it reads
        # up to a later event holds none.
        sim.set_tick_size(no, D("0.1"))
        seen = await read_until(plain, of_type("tick_size_change"))
        assert [e for e in seen if e.get("event_type") == "market_resolved"] == []
    finally:
        await uws.close()
        await custom.close()
        await plain.close()
    assert (await run(client.get_order, resting["orderID"]))["status"] == (
        "CANCELED_MARKET_RESOLVED"
    )
    assert await run(client.get_open_orders) == []
    cm = await run(client.get_market, market.condition_id)
    real_clob = fixture("clob_rest/market_closed_accepting_orders_false_2026.json")
    assert set(cm) >= set(real_clob)
    assert (cm["closed"], cm["accepting_orders"], cm["is_50_50_outcome"]) == (True, False, False)
    assert [(t["token_id"], t["price"], t["winner"]) for t in cm["tokens"]] == [
        (yes, 1, True),
        (no, 0, False),
    ]
    with pytest.raises(PolyApiException) as e:
        await run(client.create_and_post_order, OrderArgsV2(yes, 0.40, 10, "BUY"))
    assert e.value.error_msg == {"error": "the market is not yet ready to process new orders"}
    with pytest.raises(ValueError, match="not accepting orders"):
        sim.seed_order(MAKER, yes, "BUY", D("0.5"), D("5"))
    async with httpx.AsyncClient() as http:
        g = (
            await http.get(
                f"{sim.gamma_url}/markets",
                params={"condition_ids": market.condition_id, "closed": "true"},
            )
        ).json()[0]
        real_g = fixture("gamma/market_closed_binary_accepting_false_2026.json")
        for k in ("closed", "umaResolutionStatus", "acceptingOrders"):
            assert g[k] == real_g[k], k
        assert json.loads(g["outcomePrices"]) == ["1", "0"]
        assert g["closedTime"].endswith("+00")
        pos = (
            await http.get(
                f"{sim.data_url}/positions", params={"user": acct.address, "redeemable": "true"}
            )
        ).json()
        real_pos = fixture("data_api/positions_2025_redeemable_and_open.json")[1]
        assert set(pos[0]) == set(real_pos)
        assert (pos[0]["asset"], pos[0]["redeemable"], pos[0]["curPrice"]) == (yes, True, 1.0)
        assert (pos[0]["size"], pos[0]["currentValue"]) == (10.0, 10.0)


async def test_market_resolved_can_be_withheld_and_a_50_50_pays_half(
    sim: Simulator, market: SimMarket
) -> None:
    other = sim.add_market(question="Other?", slug="other")
    yes = market.token_ids[0]
    ws = await market_ws(sim, [yes, other.token_ids[0]], True)
    try:
        sim.resolve_market(market.condition_id, None, announce=False)
        sim.resolve_market(other.condition_id, other.token_ids[1])
        got = await read_until(ws, of_type("market_resolved"))
        resolved = [e for e in got if e.get("event_type") == "market_resolved"]
        assert [e["market"] for e in resolved] == [other.condition_id]  # the first is withheld
    finally:
        await ws.close()
    assert market.resolved and market.is_50_50
    async with httpx.AsyncClient() as http:
        cm = (await http.get(f"{sim.clob_url}/markets/{market.condition_id}")).json()
        g = (
            await http.get(f"{sim.gamma_url}/markets", params={"slug": "will-x", "closed": "true"})
        ).json()[0]
    assert cm["is_50_50_outcome"] is True
    assert [t["price"] for t in cm["tokens"]] == [0.5, 0.5]
    assert json.loads(g["outcomePrices"]) == ["0.5", "0.5"]


async def test_a_scheduled_resolution_happens_at_its_time_and_the_admin_route_drives_it(
    sim: Simulator, market: SimMarket
) -> None:
    ws = await market_ws(sim, [market.token_ids[0]], True)
    try:
        sim.schedule_resolution(
            market.condition_id, market.token_ids[1], datetime.now(UTC) + timedelta(seconds=0.2)
        )
        assert not market.resolved
        await read_until(ws, of_type("market_resolved"))
    finally:
        await ws.close()
    assert market.payouts == {market.token_ids[0]: D(0), market.token_ids[1]: D(1)}
    other = sim.add_market(question="Z?", slug="z")
    async with httpx.AsyncClient(base_url=sim.clob_url) as http:
        r = await http.post(
            "/_sim/resolve", json={"condition_id": other.condition_id, "winner": "nope"}
        )
        assert r.status_code == 400
        assert "is not a token of market" in r.json()["error"]
        r = await http.post(
            "/_sim/resolve",
            json={"condition_id": other.condition_id, "winner": other.token_ids[0]},
        )
        assert r.status_code == 200
        assert other.payouts[other.token_ids[0]] == 1
        r = await http.post("/_sim/resolve", json={"condition_id": other.condition_id})
        assert "already resolved" in r.json()["error"]
