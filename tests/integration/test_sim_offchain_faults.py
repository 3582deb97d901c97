"""Gamma, Data API, admin routes, every fault kind, the demo scenario and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from py_clob_client_v2.clob_types import OrderArgsV2
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2

from simulator import SimMarket, Simulator
from simulator.testing import l2_headers, new_trader
from tests.harness import SimProcess

D = Decimal
MAKER = "0x" + "ab" * 20
WALLET = "0x" + "cd" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(
        question="Will X?",
        slug="will-x",
        tags=("crypto",),
        volume=D("5000"),
        liquidity=D("800"),
        end_date=datetime.now(UTC) + timedelta(hours=2),
    )


async def get(url: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.get(url, params=params)


async def test_gamma_markets_filter_and_encode_like_production(
    sim: Simulator, market: SimMarket
) -> None:
    sim.add_market(
        question="Later?",
        slug="later",
        tags=("politics",),
        volume=D("10"),
        end_date=datetime.now(UTC) + timedelta(days=60),
    )
    sim.add_market(question="Done?", slug="done", closed=True)
    rows = (await get(sim.gamma_url + "/markets")).json()
    assert [r["slug"] for r in rows] == ["will-x", "later"]  # closed defaults to false
    row = rows[0]
    assert json.loads(row["clobTokenIds"]) == list(market.token_ids)
    assert json.loads(row["outcomes"]) == ["Yes", "No"]
    assert isinstance(row["outcomePrices"], str)
    assert isinstance(row["orderPriceMinTickSize"], float)
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert [
        r["slug"] for r in (await get(sim.gamma_url + "/markets", end_date_max=soon)).json()
    ] == ["will-x"]
    assert [r["slug"] for r in (await get(sim.gamma_url + "/markets", tag="politics")).json()] == [
        "later"
    ]
    assert [
        r["slug"] for r in (await get(sim.gamma_url + "/markets", volume_num_min="100")).json()
    ] == ["will-x"]
    assert (
        len((await get(sim.gamma_url + "/markets", clob_token_ids=market.token_ids[1])).json()) == 1
    )
    assert [r["slug"] for r in (await get(sim.gamma_url + "/markets", closed="true")).json()] == [
        "done"
    ]
    assert len((await get(sim.gamma_url + "/markets", limit="1", offset="1")).json()) == 1
    ev = (await get(sim.gamma_url + "/events", slug="will-x")).json()
    assert ev[0]["markets"][0]["conditionId"] == market.condition_id


async def test_data_api_records_scripted_and_engine_trades(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    tx = sim.trade_as(wallet=WALLET, token_id=tok, side="BUY", price=D("0.55"), size=D("20"))
    sim.trade_as(wallet=WALLET, token_id=tok, side="SELL", price=D("0.60"), size=D("5"))
    trades = (await get(sim.data_url + "/trades", user=WALLET)).json()
    assert [t["side"] for t in trades] == ["SELL", "BUY"]  # newest first
    assert trades[1]["transactionHash"] == tx
    assert trades[1]["size"] == 20.0
    assert isinstance(trades[1]["timestamp"], int)
    asc = (
        await get(sim.data_url + "/activity", user=WALLET, type="TRADE", sortDirection="ASC")
    ).json()
    assert [a["side"] for a in asc] == ["BUY", "SELL"]
    assert asc[0]["usdcSize"] == 11.0
    assert (await get(sim.data_url + "/activity", user=WALLET, type="REWARD")).json() == []
    assert len((await get(sim.data_url + "/trades", user=WALLET, limit="1")).json()) == 1
    pos = (await get(sim.data_url + "/positions", user=WALLET)).json()
    assert (pos[0]["size"], pos[0]["avgPrice"], pos[0]["asset"]) == (15.0, 0.55, tok)
    # an engine fill shows up for the maker only with takerOnly=false
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("5"))
    sim.seed_order(maker=WALLET, token_id=tok, side="BUY", price=D("0.5"), size=D("5"))
    assert len((await get(sim.data_url + "/trades", user=MAKER)).json()) == 0
    assert len((await get(sim.data_url + "/trades", user=MAKER, takerOnly="false")).json()) == 1
    assert (await get(sim.data_url + "/trades")).status_code == 400


async def test_admin_routes_fund_ledger_and_fault(sim: Simulator, market: SimMarket) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(
            sim.clob_url + "/_sim/fund", json={"address": WALLET, "collateral": "1000"}
        )
        assert r.status_code == 200
        await c.post(
            sim.clob_url + "/_sim/fund",
            json={"address": WALLET, "token_id": market.token_ids[0], "shares": "7"},
        )
        led = (await c.get(sim.clob_url + "/_sim/ledger")).json()
        assert led["balances"][WALLET]["collateral"] == "1000"
        assert led["balances"][WALLET]["tokens"][market.token_ids[0]] == "7"
        r = await c.post(
            sim.clob_url + "/_sim/fault",
            json={"kind": "status", "route": "GET /time", "status": 500},
        )
        assert r.status_code == 200
        assert (await c.get(sim.clob_url + "/time")).status_code == 500
        assert (await c.get(sim.clob_url + "/time")).status_code == 200
        await c.post(
            sim.clob_url + "/_sim/fault", json={"kind": "status", "route": "*", "count": 9}
        )
        await c.post(sim.clob_url + "/_sim/fault", json={"kind": "clear"})
        assert (await c.get(sim.clob_url + "/time")).status_code == 200
        assert (
            await c.post(sim.clob_url + "/_sim/fault", json={"kind": "nope"})
        ).status_code == 400


@pytest.mark.parametrize(
    ("status", "check"),
    [
        (
            429,
            lambda r: (
                r.json() == {"error": "Too Many Requests"} and r.headers["Retry-After"] == "2"
            ),
        ),
        (425, lambda r: r.text == "service not ready"),
        (500, lambda r: r.json() == {"error": "could not run the execution"}),
        (503, lambda r: "cancel-only" in r.json()["error"]),
        (403, lambda r: "Attention Required! | Cloudflare" in r.text),
    ],
)
async def test_status_fault_hits_the_next_n_calls_then_clears(
    sim: Simulator, market: SimMarket, status: int, check: Any
) -> None:
    sim.faults.add(kind="status", route="GET /book", status=status, count=2, retry_after=2)
    for _ in range(2):
        r = await get(sim.clob_url + "/book", token_id=market.token_ids[0])
        assert r.status_code == status
        assert check(r)
    assert (await get(sim.clob_url + "/book", token_id=market.token_ids[0])).status_code == 200


async def test_status_fault_reaches_the_sdk_as_poly_api_exception(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await asyncio.to_thread(new_trader, sim)
    sim.faults.add(kind="status", route="POST /order", status=429, count=1, retry_after=1)
    with pytest.raises(PolyApiException) as e:
        await asyncio.to_thread(
            client.create_and_post_order, OrderArgsV2(market.token_ids[0], 0.3, 5, "BUY")
        )
    assert e.value.status_code == 429
    assert sim.engine.orders == {}  # refused before reaching the engine


async def test_latency_fault_delays_the_response(sim: Simulator) -> None:
    sim.faults.add(kind="latency", route="GET /time", seconds=0.3, count=1)
    t0 = time.monotonic()
    assert (await get(sim.clob_url + "/time")).status_code == 200
    assert time.monotonic() - t0 >= 0.3


async def test_late_response_matches_the_order_before_the_client_times_out(
    sim: Simulator, market: SimMarket
) -> None:
    tok = market.token_ids[0]
    sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.5"), size=D("50"))
    client, _ = await asyncio.to_thread(new_trader, sim)
    signed = await asyncio.to_thread(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
    raw = json.dumps(order_to_json_v2(signed, client.creds.api_key, "GTC"), separators=(",", ":"))
    headers = l2_headers(client, "POST", "/order", raw)
    sim.faults.add(kind="late_response", route="POST /order", seconds=1.0)
    async with httpx.AsyncClient(timeout=0.3) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post(sim.clob_url + "/order", content=raw.encode(), headers=headers)
    orders = sim.ledger()["orders"]
    taker = next(o for o in orders if o["owner"] == client.creds.api_key)
    assert taker["status"] == "MATCHED"  # outcome unknown to the client, matched at the venue


async def test_engine_restart_gives_425_then_post_only_window(
    sim: Simulator, market: SimMarket
) -> None:
    client, _ = await asyncio.to_thread(new_trader, sim)
    tok = market.token_ids[0]
    sim.faults.add(kind="engine_restart", seconds=0.3, post_only_s=0.4)
    with pytest.raises(PolyApiException) as e:
        await asyncio.to_thread(client.create_and_post_order, OrderArgsV2(tok, 0.3, 5, "BUY"))
    assert (e.value.status_code, e.value.error_msg) == (425, "service not ready")
    await asyncio.sleep(0.35)
    signed = await asyncio.to_thread(client.create_order, OrderArgsV2(tok, 0.3, 5, "BUY"))
    raw = json.dumps(order_to_json_v2(signed, client.creds.api_key, "GTC"), separators=(",", ":"))
    async with httpx.AsyncClient() as c:
        r = await c.post(
            sim.clob_url + "/order",
            content=raw.encode(),
            headers=l2_headers(client, "POST", "/order", raw),
        )
    assert r.status_code == 503
    assert r.json()["code"] == "post_only_mode"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["retry_after_seconds"] >= 1
    ok = await asyncio.to_thread(client.post_order, signed, "GTC", True)  # post-only goes through
    assert ok["status"] == "live"
    await asyncio.sleep(0.45)
    other = await asyncio.to_thread(client.create_and_post_order, OrderArgsV2(tok, 0.31, 5, "BUY"))
    assert other["status"] == "live"


async def _subscribed(sim: Simulator, market: SimMarket) -> Any:
    ws = await websockets.connect(sim.market_ws_url)
    await ws.send(json.dumps({"assets_ids": [market.token_ids[0]], "type": "market"}))
    await ws.recv()
    return ws


async def test_ws_drop_fault_closes_without_close_frame(sim: Simulator, market: SimMarket) -> None:
    ws = await _subscribed(sim, market)
    async with httpx.AsyncClient() as c:
        await c.post(sim.clob_url + "/_sim/fault", json={"kind": "ws_drop", "channel": "market"})
    with pytest.raises(websockets.ConnectionClosedError):
        await asyncio.wait_for(ws.recv(), 2)
    assert await sim.drop_websockets("all") == 0


async def test_ws_stall_fault_leaves_pings_unanswered(sim: Simulator, market: SimMarket) -> None:
    ws = await _subscribed(sim, market)
    sim.faults.add(kind="ws_stall", channel="market", seconds=0.5)
    await ws.send("PING")
    sim.seed_order(
        maker=MAKER, token_id=market.token_ids[0], side="BUY", price=D("0.4"), size=D("5")
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.4)
    await asyncio.sleep(0.2)
    await ws.send("PING")
    assert await asyncio.wait_for(ws.recv(), 1) == "PONG"
    await ws.close()


async def test_ws_malformed_fault_interleaves_garbage(sim: Simulator, market: SimMarket) -> None:
    ws = await _subscribed(sim, market)
    sim.faults.add(kind="ws_malformed", channel="market", count=3)
    sim.seed_order(
        maker=MAKER, token_id=market.token_ids[0], side="BUY", price=D("0.4"), size=D("5")
    )
    bad = good = 0
    async with asyncio.timeout(2):
        while good == 0 or bad < 3:
            raw = await ws.recv()
            try:
                data = json.loads(raw)
                ok = isinstance(data, dict) and data.get("event_type") == "price_change"
            except (ValueError, TypeError):
                ok = False
            good, bad = (good + 1, bad) if ok else (good, bad + 1)
    assert bad == 3
    await ws.close()


async def test_data_api_faults_fail_then_garble_rows(sim: Simulator, market: SimMarket) -> None:
    sim.trade_as(
        wallet=WALLET, token_id=market.token_ids[0], side="BUY", price=D("0.5"), size=D("5")
    )
    sim.faults.add(kind="data_api", status=503, count=1)
    assert (await get(sim.data_url + "/trades", user=WALLET)).status_code == 503
    sim.faults.add(kind="data_api_garbage", count=1)
    rows = (await get(sim.data_url + "/trades", user=WALLET)).json()
    assert len(rows) > 1
    assert any(r.get("transactionHash") is None or "size" not in r for r in rows)
    assert len((await get(sim.data_url + "/trades", user=WALLET)).json()) == 1


async def test_demo_scenario_lives_and_whale_trades() -> None:
    async with Simulator(seed=2, scenario="demo") as sim:
        assert sim.scenario is not None
        assert len(sim.scenario.ending_markets) == 2
        ending = sim.scenario.ending_markets[0]
        assert ending.end_date - datetime.now(UTC) < timedelta(minutes=21)
        book = sim.engine.books[ending.token_ids[0]]
        assert D("0.95") <= (book.best_ask() or D(0)) <= D("0.99")
        n0 = len(sim.engine.orders)
        async with asyncio.timeout(8):
            while not any(r.wallet == sim.scenario.whale_address for r in sim.data_rows):  # noqa: ASYNC110  # no event to wait on
                await asyncio.sleep(0.1)
        assert len(sim.engine.orders) > n0
        assert sim.engine.trades


async def test_demo_scenario_is_reproducible_for_a_seed() -> None:
    async with Simulator(seed=9, scenario="demo") as a:
        ids_a = [m.token_ids for m in a.markets]
    async with Simulator(seed=9, scenario="demo") as b:
        ids_b = [m.token_ids for m in b.markets]
    assert ids_a == ids_b


def test_cli_prints_urls_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    # `python -m simulator --seed 3`: the URLs are its first stdout line (SimProcess reads it).
    names = {"clob_url", "gamma_url", "data_url", "market_ws_url", "user_ws_url", "geoblock_url"}
    names |= {"rpc_url", "relayer_url"}  # the chain (simulator.rpc, simulator.relayer)
    cli = SimProcess(workdir=tmp_path, seed=3, scenario=None, settle_delay_s=None).start()
    try:
        assert set(cli.urls) == names
        assert httpx.get(cli.clob_url + "/version", timeout=5).json() == {"version": 2}
    finally:
        code = cli.stop()  # SIGTERM; SIGKILL (a non-zero code) after 10 s
    assert code == 0
