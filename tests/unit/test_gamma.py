"""Gamma adapter: captured rows parse, filters apply, bad rows are skipped and counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from errors import FeedError
from observability.metrics import Metrics
from simulator import Simulator
from tests.helpers import FIXTURES as SHARED_FIXTURES
from venue.gamma import Discovery, GammaClient, MarketQuery, keep, parse_market

FIXTURES = SHARED_FIXTURES / "gamma"
NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)


def fixture_rows() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if not FIXTURES.is_dir():
        return out
    for p in sorted(FIXTURES.glob("*.json")):
        data = json.loads(p.read_text())
        for row in data if isinstance(data, list) else [data]:
            for i, m in enumerate(row.get("markets", [row])):
                out.append((f"{p.name}[{i}]", m))
    return out


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
@pytest.mark.parametrize(("name", "row"), fixture_rows())
def test_captured_gamma_row_parses_to_market(name: str, row: dict[str, Any]) -> None:
    parsed = parse_market(row)
    m = parsed.market
    assert m.condition_id == row["conditionId"].lower()
    assert len(m.token_ids) == len(m.outcomes) == 2
    assert all(t.isdigit() for t in m.token_ids)
    if "orderPriceMinTickSize" in row and row["orderPriceMinTickSize"] is not None:
        assert m.tick_size == D(str(row["orderPriceMinTickSize"]))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
def test_btc_updown_row_fields_are_translated() -> None:
    row = json.loads((FIXTURES / "market_btc_updown_5m_2026_03.json").read_text())
    r = parse_market(row)
    assert r.market.outcomes == ("Up", "Down")
    assert r.market.token_ids == tuple(json.loads(row["clobTokenIds"]))
    assert r.market.end_date == datetime(2026, 3, 12, 9, 25, tzinfo=UTC)
    assert r.market.tick_size == D("0.01") and r.market.min_size == D("5")
    assert r.enable_order_book and r.market.tradable
    assert keep(r, MarketQuery(ends_within_s=30 * 60), NOW)
    assert not keep(r, MarketQuery(ends_within_s=10 * 60), NOW)


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
def test_closed_and_orderbook_disabled_rows_are_filtered_out() -> None:
    q = MarketQuery()
    for name in (
        "market_closed_binary_accepting_true_2026.json",
        "market_closed_scalar_legacy_2020.json",
    ):
        r = parse_market(json.loads((FIXTURES / name).read_text()))
        assert not keep(r, q, NOW), name


def test_real_arrays_are_accepted_like_json_strings() -> None:
    row = {
        "conditionId": "0x" + "ab" * 32,
        "clobTokenIds": ["1" * 70, "2" * 70],
        "outcomes": ["Yes", "No"],
        "orderPriceMinTickSize": 0.001,
        "orderMinSize": 5,
        "enableOrderBook": True,
        "acceptingOrders": True,
        "active": True,
        "closed": False,
    }
    r = parse_market(row)
    assert r.market.token_ids == ("1" * 70, "2" * 70)
    assert r.market.tick_size == D("0.001")


@pytest.mark.parametrize(
    "row",
    [
        {},
        {"conditionId": "0x" + "ab" * 32},
        {"conditionId": "0x" + "ab" * 32, "clobTokenIds": "[not json"},
        {"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["0xabc", "0xdef"]'},
        {"conditionId": "nothex", "clobTokenIds": '["1", "2"]'},
        {"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1", "2"]', "outcomes": '["Yes"]'},
        {"conditionId": "0x" + "ab" * 32, "clobTokenIds": '["1"]', "orderPriceMinTickSize": 2},
    ],
)
def test_bad_rows_raise_feed_error_with_reason(row: dict[str, Any]) -> None:
    with pytest.raises(FeedError):
        parse_market(row)


def good_row(i: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": str(i),
        "conditionId": "0x" + f"{i:064x}",
        "clobTokenIds": json.dumps([str(10**70 + 2 * i), str(10**70 + 2 * i + 1)]),
        "outcomes": '["Yes", "No"]',
        "orderPriceMinTickSize": 0.01,
        "orderMinSize": 5,
        "enableOrderBook": True,
        "acceptingOrders": True,
        "active": True,
        "closed": False,
        "endDate": "2026-03-12T09:10:00Z",
        "liquidityNum": 100.0,
    }
    row.update(kw)
    return row


@pytest.fixture
async def gamma_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    rows = [good_row(i) for i in range(7)] + [{"id": "bad"}, good_row(99, acceptingOrders=False)]
    seen: list[dict[str, str]] = []

    async def markets(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        off, lim = int(request.query["offset"]), int(request.query["limit"])
        return web.json_response(rows[off : off + lim])

    app = web.Application()
    app.router.add_get("/markets", markets)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_pagination_and_bad_rows_skipped_and_counted(
    gamma_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = gamma_server
    metrics = Metrics()
    async with aiohttp.ClientSession() as s:
        g = GammaClient(base_url=url, session=s, metrics=metrics, page_size=3, now=lambda: NOW)
        got = await g.markets(MarketQuery(ends_within_s=3600))
    assert len(got) == 7
    assert [q["offset"] for q in seen] == ["0", "3", "6", "9"]  # 9 rows: the 4th page is empty
    assert seen[0]["closed"] == "false" and seen[0]["active"] == "true"
    assert seen[0]["end_date_min"] == "2026-03-12T09:00:00Z"
    assert seen[0]["end_date_max"] == "2026-03-12T10:00:00Z"
    assert g.skipped == 1
    assert metrics.registry.get_sample_value("polyd_gamma_rows_skipped_total") == 1


async def test_discovery_against_simulator_applies_tag_window_and_floors() -> None:
    async with Simulator(seed=2) as sim, aiohttp.ClientSession() as s:
        now = datetime.now(UTC)
        hit = sim.add_market(
            question="a", slug="a", tags=("crypto",), end_date=now + timedelta(minutes=5)
        )
        sim.add_market(question="b", slug="b", tags=("crypto",), end_date=now + timedelta(days=2))
        sim.add_market(
            question="c", slug="c", tags=("sports",), end_date=now + timedelta(minutes=5)
        )
        sim.add_market(
            question="d",
            slug="d",
            tags=("crypto",),
            end_date=now + timedelta(minutes=5),
            liquidity=D("10"),
        )
        sim.add_market(
            question="e",
            slug="e",
            tags=("crypto",),
            end_date=now + timedelta(minutes=5),
            accepting_orders=False,
        )
        explicit = sim.add_market(question="f", slug="f")
        seen: list[dict[str, Any]] = []
        disc = Discovery(
            gamma=GammaClient(base_url=sim.gamma_url, session=s),
            queries={
                "window": [
                    MarketQuery(tags=("crypto",), ends_within_s=600, min_liquidity=D("100"))
                ],
                "explicit": [MarketQuery(slugs=("f",)), MarketQuery(token_ids=(hit.token_ids[1],))],
            },
            on_update=lambda r: seen.append(r),
            interval_s=60,
        )
        assert await disc.refresh()
    result = seen[-1]
    assert [m.slug for m in result["window"]] == ["a"]
    assert sorted(m.condition_id for m in result["explicit"]) == sorted(
        [explicit.condition_id, hit.condition_id]
    )


async def test_discovery_keeps_last_result_when_gamma_fails() -> None:
    async with aiohttp.ClientSession() as s:
        disc = Discovery(
            gamma=GammaClient(base_url="http://127.0.0.1:9", session=s),
            queries={"r": [MarketQuery(slugs=("x",))]},
            on_update=lambda r: None,
            interval_s=60,
        )
        disc.result = {"r": []}
        assert not await disc.refresh()
        assert disc.result == {"r": []}


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orderPriceMinTickSize", "1.5"),
        ("orderPriceMinTickSize", "NaN"),
        ("orderPriceMinTickSize", -0.01),
        ("orderMinSize", 1e308),
        ("orderMinSize", "-5"),
        ("orderMinSize", "Infinity"),
        ("liquidityNum", 1e308),
        ("liquidityNum", "-1"),
        ("liquidityNum", "NaN"),
        ("volumeNum", "1e999"),
        ("feeSchedule", {"rate": "1.5", "exponent": 1, "takerOnly": True}),
        ("feeSchedule", {"rate": "NaN", "exponent": 1, "takerOnly": True}),
    ],
)
def test_a_row_with_an_out_of_bound_number_is_malformed(field: str, value: Any) -> None:
    from venue.gamma import MalformedRow

    parse_market(good_row(1, feesEnabled=True))
    with pytest.raises(MalformedRow):
        parse_market(good_row(1, feesEnabled=True, **{field: value}))


async def test_out_of_bound_rows_are_skipped_and_counted_as_malformed_gamma_input() -> None:
    rows = [good_row(1), good_row(2, orderMinSize=1e308), good_row(3, liquidityNum="NaN")]

    async def markets(request: web.Request) -> web.Response:
        return web.json_response(rows if request.query["offset"] == "0" else [])

    app = web.Application()
    app.router.add_get("/markets", markets)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    metrics = Metrics()
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            g = GammaClient(base_url=url, session=s, metrics=metrics, now=lambda: NOW)
            got = await g.markets(MarketQuery(active=None, closed=None, accepting_orders=None))
    finally:
        await runner.cleanup()
    assert [m.condition_id for m in got] == [rows[0]["conditionId"]]
    value = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "gamma"})
    assert value == 2


@pytest.mark.parametrize(
    "prices", ['["NaN", "1"]', '["1.5", "0"]', '["1e999", "0"]', '["-1", "1"]']
)
def test_resolution_payouts_with_hostile_prices_are_not_a_resolution(prices: str) -> None:
    from venue.gamma import resolution_payouts

    row = {
        "closed": True,
        "umaResolutionStatus": "resolved",
        "clobTokenIds": '["1", "2"]',
        "outcomePrices": prices,
    }
    assert resolution_payouts(row) is None
    assert resolution_payouts(row | {"outcomePrices": '["1", "0"]'}) == {"1": D(1), "2": D(0)}
