"""CLOB REST answers with out-of-bound numbers, through the real SDK client and transport
against the simulator (a status-200 fault with our own body): nothing hostile comes back to the
executor, and each refusal is counted as malformed `rest` input."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import orjson
import pytest

from errors import TransientError
from observability.metrics import Metrics
from simulator import Simulator
from simulator.testing import new_trader
from tests.helpers import identity_of
from venue.clob import ClobBroker
from venue.parse import MalformedLog

HOSTILE = [("size", "1e308"), ("size", "-5"), ("price", "1.5"), ("price", "NaN")]


def _page(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(
        {"data": rows, "next_cursor": "LTE=", "limit": 100, "count": len(rows)}
    ).decode()


def malformed(metrics: Metrics) -> float:
    v = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "rest"})
    return v or 0.0


async def test_hostile_open_orders_trades_and_balance_never_reach_the_executor() -> None:
    async with Simulator(seed=43, settle_delay_s=0.01) as sim:
        market = sim.add_market("Will it snow?", "snow")
        token = market.token_ids[0]
        client, _ = await asyncio.to_thread(new_trader, sim)
        metrics = Metrics()
        broker = ClobBroker(
            identity=identity_of(client),
            host=sim.clob_url,
            malformed=MalformedLog("rest", metrics=metrics),
        )
        owner = broker.owner
        try:
            sound_order: dict[str, Any] = {
                "id": "0x" + "ab" * 32,
                "status": "LIVE",
                "price": "0.5",
                "original_size": "10",
                "size_matched": "0",
                "asset_id": token,
                "side": "BUY",
            }
            sound_trade: dict[str, Any] = {
                "id": "t-1",
                "status": "MATCHED",
                "asset_id": token,
                "side": "BUY",
                "trader_side": "TAKER",
                "owner": owner,
                "taker_order_id": "0x" + "cd" * 32,
                "price": "0.5",
                "size": "10",
                "match_time": "1700000000",
                "maker_orders": [],
            }
            orders, trades = [], []
            for field, value in HOSTILE:
                orders.append(
                    sound_order | {"original_size" if field == "size" else "price": value}
                )
                trades.append(sound_trade | {field: value})
            for route, body in (
                ("GET /data/orders", _page([*orders, sound_order])),
                ("GET /data/trades", _page([*trades, sound_trade])),
            ):
                sim.faults.add(kind="status", route=route, status=200, body=body)
            got = await broker.open_orders()
            assert [o.venue_order_id for o in got] == [sound_order["id"]]  # the control only
            fills = await broker.fills_since(0)
            assert [(f.price, f.size) for f in fills] == [(D("0.5"), D(10))]
            assert malformed(metrics) == 2 * len(HOSTILE)
            for balance in ("1e308", "-1", "NaN", "1" * 200):
                sim.faults.add(
                    kind="status",
                    route="GET /balance-allowance",
                    status=200,
                    body=orjson.dumps({"balance": balance, "allowances": {}}).decode(),
                )
                with pytest.raises(TransientError, match="balance unreadable"):
                    await broker.collateral_balance()
            assert malformed(metrics) == 2 * len(HOSTILE) + 4
            assert await broker.collateral_balance() >= 0  # the real answer is read again
        finally:
            await broker.close()
