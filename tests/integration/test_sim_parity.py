"""Every payload captured from the real venue (`FIXTURES`) has a same-shaped simulator twin.

Shapes are compared as key sets and JSON value types, recursively (first element of lists).
Keys a fixture has but the simulator does not emit must be listed in OPTIONAL with a reason;
keys the simulator adds must be listed in EXTRA. Fixtures that are docs examples of events the
simulator does not emit, or legacy schemas, are skipped with the reason stated.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from py_clob_client_v2.clob_types import OrderArgsV2, OrderType
from py_clob_client_v2.exceptions import PolyApiException

from simulator import SimMarket, Simulator
from simulator.testing import new_trader
from tests.helpers import FIXTURES as SHARED_FIXTURES

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_sim_parity")

FIXTURES = SHARED_FIXTURES
D = Decimal
MAKER = "0x" + "ab" * 20
WALLET = "0x" + "cd" * 20

SKIP = {
    "best_bid_ask_DOC_EXAMPLE.json": None,  # emitted; compared below (docs example, no capture)
    "market_resolved_DOC_EXAMPLE.json": "compared in test_sim_lifecycle.py: a resolution ends "
    "the market this test's world keeps reading",
    "new_market_DOC_EXAMPLE.json": "docs example; the simulator does not emit new_market",
    "price_change_legacy_changes_array_2024_10_DOCDERIVED.json": "legacy schema, not emitted",
    "price_change_legacy_flat_schema_2024_08.json": "legacy pre-2025-09-15 schema, not emitted",
    "v2_activity_snake_case_2026_09.json": "Data API v2 (/v2/...) is not served; v1 only",
    "v2_trades_snake_case_2026_09.json": "Data API v2 (/v2/...) is not served; v1 only",
    "v2_positions_snake_case_2026.json": "Data API v2 (/v2/...) is not served; v1 only",
    "market_closed_scalar_legacy_2020.json": "2020 scalar AMM market; not a CLOB market shape",
    "market_closed_outcome_prices_zero_zero_2020.json": "2020 AMM market; not a CLOB shape",
    "market_channel_session_excerpt_2026_05.jsonl": "raw frame log; its frames are covered by "
    "the book-array and price_change fixtures and by the PONG/array tests",
}
# Keys present in some captures that the simulator leaves out, with why.
OPTIONAL = {
    # Gamma: resolution, sports, series, rewards and UMA metadata of real listings
    "closedTime",
    "submitted_by",
    "resolvedBy",
    "groupItemTitle",
    "umaEndDate",
    "umaResolutionStatus",
    "umaBond",
    "umaReward",
    "customLiveness",
    "negRiskRequestID",
    "automaticallyResolved",
    "seriesColor",
    "deployingTimestamp",
    "feeType",
    "gameStartTime",
    "clobRewards",
    "oneDayPriceChange",
    "oneHourPriceChange",
    "oneWeekPriceChange",
    "oneMonthPriceChange",
    "oneYearPriceChange",
    "eventStartTime",
    "holdingRewardsEnabled",
    "feeSchedule",
    "sportsMarketType",
    "gameId",
    "secondsDelay",
    "series",
    "startTime",
    "seriesSlug",
    "negRiskMarketID",
    "sortBy",
    "subcategory",
    "tags",
    "line",
    "image",
    "resolutionSource",
    "negRiskFeeBips",
    "creationDate",
    "closed_time",
    "eventDate",
    "liquidityAmm",
    "volumeAmm",
    "category",
    "marketType",
    "twitterCardImage",
    "mailchimpTag",
    "updatedBy",
    "readyForCron",
    "fpmmLive",
    "creator",
    "volume1wkAmm",
    "volume1moAmm",
    "volume1yrAmm",
    "volume24hrAmm",
    "events",
    "ticker",
    "feesEnabled",
    "markets",
    "enableNegRisk",
    "negRiskAugmented",
    "cyom",
    "showAllOutcomes",
    "showMarketImages",
    "automaticallyActive",
    "pendingDeployment",
    "deploying",
    "requiresTranslation",
    "icon",
    "commentCount",
    "competitive",
    "openInterest",
    "liquidity",
    "liquidityClob",
    "archived",
    "enableOrderBook",
    "new",
    "featured",
    "restricted",
    "volume",
    "volume1mo",
    "volume1wk",
    "volume1yr",
    "volume24hr",
    "createdAt",
    "updatedAt",
    "active",
    "closed",
    "id",
    "slug",
    "title",
    "description",
    "startDate",
    "endDate",
    "negRisk",
    "countryName",
    "electionType",
    "featuredImage",
    "gmpChartMode",
    "estimateValue",
    "cantEstimate",
    "estimatedValue",
    "templateVariables",
    "sportsMarketTypeV2",
    "lowerBound",
    "upperBound",
    "spread",
    "lastTradePrice",
    "bestBid",
    "bestAsk",
    "volumeNum",
    "liquidityNum",
    "volumeClob",
    "endDateIso",
    "startDateIso",
    "questionID",
    "outcomePrices",
    # Data API: fields of real wallets' profiles and event ids
    "eventId",
    "isCombo",
    # CLOB /book and WS: older captures predate timestamp/tick_size/min_order_size
    "timestamp",
    "min_order_size",
    "tick_size",
    "neg_risk",
    "last_trade_price",
    # trade rows: `match_time` (REST, 2024 WS) vs `matchtime` (asyncapi; what we emit on WS)
    "match_time",
    "matchtime",
    # CLOB market: rewards and notification metadata
    "accepting_order_timestamp",
    "rewards",
    "notifications_enabled",
    # WS user maker_orders entries: `side` is newer than the 2024 captures
    "side",
    "tradeIDs",
    "transaction_hash",
    "fee_rate_bps",
    "maker_address",
    "bucket_index",
    "trader_side",
    "created_at",
    "expiration",
    "order_type",
    "status",
}


def shape(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return "null" if v is None else type(v).__name__


def compare(fixture: Any, ours: Any, path: str = "$") -> list[str]:
    """Differences in keys/types that are not documented as optional."""
    problems: list[str] = []
    fs, os_ = shape(fixture), shape(ours)
    if isinstance(fs, dict) and isinstance(os_, dict):
        for k in fs:
            if k not in os_:
                if k not in OPTIONAL:
                    problems.append(f"{path}.{k} missing")
                continue
            problems += compare(fixture[k], ours[k], f"{path}.{k}")
        return problems
    if isinstance(fs, list) and isinstance(os_, list):
        if fs and os_:
            problems += compare(fixture[0], ours[0], f"{path}[0]")
        return problems
    if fs != os_ and "null" not in (fs, os_):  # null is documented for associate_trades etc.
        problems.append(f"{path}: fixture {fs} vs simulator {os_}")
    return problems


def load(rel: str) -> Any:
    data = json.loads((FIXTURES / rel).read_text())
    return data


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """Build once per module (plain data): the test itself needs no event loop."""
    return asyncio.run(_build_world())


async def _build_world() -> dict[str, Any]:
    """One simulator with a market, a resting book, a fill, user/market WS captures."""
    async with Simulator(seed=4, settle_delay_s=0.02) as sim:
        m: SimMarket = sim.add_market(question="Will X?", slug="will-x", tags=("crypto",))
        tok = m.token_ids[0]
        sim.seed_order(maker=MAKER, token_id=tok, side="BUY", price=D("0.40"), size=D("10"))
        sim.seed_order(maker=MAKER, token_id=tok, side="SELL", price=D("0.50"), size=D("5"))
        client, _ = await asyncio.to_thread(new_trader, sim)
        c = client.creds
        out: dict[str, Any] = {"market_ws": [], "user_ws": []}
        async with (
            websockets.connect(sim.market_ws_url) as mws,
            websockets.connect(sim.user_ws_url) as uws,
        ):
            await mws.send(
                json.dumps({"assets_ids": [tok], "type": "market", "custom_feature_enabled": True})
            )
            await uws.send(
                json.dumps(
                    {
                        "auth": {
                            "apiKey": c.api_key,
                            "secret": c.api_secret,
                            "passphrase": c.api_passphrase,
                        },
                        "type": "user",
                    }
                )
            )
            await uws.send("PING")
            assert await uws.recv() == "PONG"
            live = await asyncio.to_thread(
                client.create_and_post_order, OrderArgsV2(tok, 0.30, 5, "BUY")
            )
            signed = await asyncio.to_thread(client.create_order, OrderArgsV2(tok, 0.5, 10, "BUY"))
            out["post_matched"] = await asyncio.to_thread(client.post_order, signed, OrderType.FAK)
            big = await asyncio.to_thread(client.create_order, OrderArgsV2(tok, 0.5, 9000, "BUY"))
            try:
                await asyncio.to_thread(client.post_order, big)
            except PolyApiException as e:
                out["post_error"] = e.error_msg
            await asyncio.to_thread(client.cancel_all)
            sim.trade_as(wallet=WALLET, token_id=tok, side="BUY", price=D("0.55"), size=D("20"))
            sim.set_tick_size(tok, D("0.001"))
            await asyncio.sleep(0.2)
            for ws, key in ((mws, "market_ws"), (uws, "user_ws")):
                try:
                    while True:
                        raw = await asyncio.wait_for(ws.recv(), 0.2)
                        if raw == "PONG":
                            continue
                        d = json.loads(raw)
                        out[key] += d if isinstance(d, list) else [d]
                except TimeoutError:
                    pass
            out["order_live"] = await asyncio.to_thread(client.get_order, live["orderID"])
            out["order_fak"] = await asyncio.to_thread(
                client.get_order, out["post_matched"]["orderID"]
            )
            out["trades"] = await asyncio.to_thread(client.get_trades)
        async with httpx.AsyncClient() as h:
            out["book"] = (await h.get(sim.clob_url + "/book", params={"token_id": tok})).json()
            out["market"] = (await h.get(sim.clob_url + f"/markets/{m.condition_id}")).json()
            out["tick"] = (
                await h.get(sim.clob_url + "/tick-size", params={"token_id": tok})
            ).json()
            out["tick_err"] = (
                await h.get(sim.clob_url + "/tick-size", params={"token_id": "x"})
            ).json()
            out["gamma_markets"] = (await h.get(sim.gamma_url + "/markets")).json()
            out["gamma_events"] = (await h.get(sim.gamma_url + "/events")).json()
            out["data_trades"] = (
                await h.get(sim.data_url + "/trades", params={"user": WALLET})
            ).json()
            out["data_activity"] = (
                await h.get(sim.data_url + "/activity", params={"user": WALLET})
            ).json()
            out["data_positions"] = (
                await h.get(sim.data_url + "/positions", params={"user": WALLET})
            ).json()
        return out


def ws_event(out: dict[str, Any], channel: str, pred: Any) -> dict[str, Any]:
    return next(e for e in out[channel] if pred(e))


def counterpart(name: str, out: dict[str, Any]) -> Any:
    mw, uw = "market_ws", "user_ws"
    table: dict[str, Any] = {
        "book_2024_09_asks_desc.json": lambda: out["book"],
        "book_2026_01_near_resolved_last_trade_price.json": lambda: out["book"],
        "book_2026_01_tick_negrisk_keys_sorted.json": lambda: out["book"],
        "data_trades_row_taker_confirmed_2024_09.json": lambda: out["trades"][0],
        "get_order_fak_matched_full_2026_01.json": lambda: out["order_fak"],
        "get_order_fak_partial_size_matched_2026_01.json": lambda: out["order_fak"],
        "market_2024_trump_negrisk.json": lambda: out["market"],
        "market_closed_accepting_orders_false_2026.json": lambda: out["market"],
        "market_closed_but_accepting_orders_true_2026.json": lambda: out["market"],
        "post_order_fak_matched_full_2026_01.json": lambda: out["post_matched"],
        "post_order_fak_matched_partial_2026_01.json": lambda: out["post_matched"],
        "tick_size_DOC_EXAMPLE.json": lambda: out["tick"],
        "tick_size_error_invalid_token_DOC_EXAMPLE.json": lambda: out["tick_err"],
        "best_bid_ask_DOC_EXAMPLE.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "best_bid_ask"
        ),
        "book_2024_09_trump_yes.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "book"
        ),
        "book_2026_01_keys_sorted.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "book"
        ),
        "book_array_frame_with_tick_size_last_trade_2026_05.json": lambda: [
            ws_event(out, mw, lambda e: e["event_type"] == "book")
        ],
        "last_trade_price_2024_08.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "last_trade_price"
        ),
        "price_change_ask_level_removed_size_zero_2026_05.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "price_change"
        ),
        "price_change_current_schema_DOC_EXAMPLE.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "price_change"
        ),
        "price_change_level_removed_size_zero_2026_05.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "price_change"
        ),
        "tick_size_change_2025_02.json": lambda: ws_event(
            out, mw, lambda e: e["event_type"] == "tick_size_change"
        ),
        "order_cancellation_2024_09.json": lambda: ws_event(
            out, uw, lambda e: e.get("type") == "CANCELLATION"
        ),
        "order_fok_killed_status_suffix_2026_05_SANITIZED.json": lambda: ws_event(
            out, uw, lambda e: e.get("type") == "CANCELLATION"
        ),
        "order_placement_DOC_EXAMPLE.json": lambda: ws_event(
            out, uw, lambda e: e.get("type") == "PLACEMENT"
        ),
        "order_placement_live_2024_09.json": lambda: ws_event(
            out, uw, lambda e: e.get("type") == "PLACEMENT"
        ),
        "trade_matched_DOC_EXAMPLE.json": lambda: ws_event(
            out, uw, lambda e: e["event_type"] == "trade"
        ),
        "trade_matched_taker_2024_09.json": lambda: ws_event(
            out, uw, lambda e: e["event_type"] == "trade"
        ),
        "trade_mined_maker_multi_maker_orders_2024_09.json": lambda: ws_event(
            out, uw, lambda e: e["event_type"] == "trade"
        ),
        "activity_mixed_types_rewards_rebates_redeem_2026_07.json": lambda: out["data_activity"],
        "activity_trades_float_noise_prices_2026_04.json": lambda: out["data_activity"],
        "positions_2025_redeemable_and_open.json": lambda: out["data_positions"],
        "positions_open_2026_04.json": lambda: out["data_positions"],
        "positions_redeemable_zero_value_2026_07.json": lambda: out["data_positions"],
        "trades_2026_07.json": lambda: out["data_trades"],
    }
    if name.startswith("post_order_error_"):
        return out["post_error"]
    if name.startswith(("market_", "markets_list")) and name not in table:
        return out["gamma_markets"] if name.startswith("markets_list") else out["gamma_markets"][0]
    if name.startswith("event"):
        return out["gamma_events"] if name.startswith("events_") else out["gamma_events"][0]
    return table[name]()


ALL = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "PROVENANCE.md")


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_fixture_has_same_shaped_counterpart(path: Path, world: dict[str, Any]) -> None:
    reason = SKIP.get(path.name)
    if reason:
        pytest.skip(reason)
    fixture = json.loads(path.read_text())
    if path.parent.name == "data_api":
        fixture = [r for r in fixture if r.get("type", "TRADE") == "TRADE"] or fixture
    ours = counterpart(path.name, world)
    problems = compare(fixture, ours)
    assert problems == [], problems
