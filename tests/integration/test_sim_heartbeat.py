"""The simulator's order dead-man switch (`POST /v1/heartbeats`), driven by the real SDK.

Sources: `post_heartbeat` in py-clob-client-v2 (`py_clob_client_v2/client.py`); the 400
`OrderHeartbeatMismatchResponse` `{"error_msg", "heartbeat_id"}` of Polymarket/py-sdk
(`src/polymarket/models/clob/order_heartbeats.py`) and the older `{"error", "heartbeat_id"}` of
Polymarket/py-clob-client `examples/post_heartbeat.py`; the 10 s deadline per API key of
Polymarket/ts-sdk `packages/client/src/actions/order-heartbeats.ts`; the legacy `POST /heartbeats`
of https://docs.polymarket.com/api-reference/trade/send-heartbeat. Windows are short here (the
venue's is configurable); every wait is on a condition with a bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2
from py_clob_client_v2.exceptions import PolyApiException

from simulator import Simulator
from simulator.testing import l2_headers, new_trader
from tests.helpers import open_user_feed, until


async def run(fn: Callable[..., Any], /, *a: Any) -> Any:
    return await asyncio.to_thread(fn, *a)


def status(sim: Simulator, order_id: str) -> str:
    return sim.engine.orders[order_id].status


async def test_default_window_is_the_venues_ten_seconds() -> None:
    async with Simulator(seed=1) as sim:
        assert sim.heartbeat_timeout_s == 10.0


async def test_lapse_cancels_every_resting_order_of_that_key_only_with_feed_and_rest() -> None:
    async with Simulator(seed=81, heartbeat_timeout_s=0.4) as sim:
        m = sim.add_market("HB?", "hb")
        tok = m.token_ids[0]
        client, _ = await run(new_trader, sim)
        other, _ = await run(new_trader, sim)
        mine = [
            (await run(client.create_and_post_order, OrderArgsV2(tok, p, 5, "BUY")))["orderID"]
            for p in (0.30, 0.31, 0.32)
        ]
        theirs = (await run(other.create_and_post_order, OrderArgsV2(tok, 0.2, 5, "BUY")))[
            "orderID"
        ]
        await run(other.post_heartbeat, "")  # the other key arms too, and keeps beating
        async with await open_user_feed(sim.user_ws_url, client.creds, m.condition_id) as ws:
            hb = await run(client.post_heartbeat, "")  # arms the switch for our key
            assert hb["heartbeat_id"]
            canceled: list[dict[str, Any]] = []

            async def keep_other_alive() -> None:
                hid = ""
                while True:
                    hid = (await run(other.post_heartbeat, hid))["heartbeat_id"]
                    await asyncio.sleep(0.1)

            beating = asyncio.create_task(keep_other_alive())
            try:
                async with asyncio.timeout(5):
                    while len(canceled) < 3:
                        data = json.loads(await ws.recv())
                        for e in data if isinstance(data, list) else [data]:
                            if e.get("event_type") == "order" and e["type"] == "CANCELLATION":
                                canceled.append(e)
            finally:
                beating.cancel()
        assert sorted(e["id"] for e in canceled) == sorted(mine)
        assert {e["status"] for e in canceled} == {"CANCELED"}
        for oid in mine:  # REST agrees with the feed
            assert (await run(client.get_order, oid))["status"] == "CANCELED"
        assert await run(client.get_open_orders) == []
        assert status(sim, theirs) == "LIVE"  # another key's orders are not touched
        assert sim.heartbeat_lapses == 1


async def test_switch_arms_only_on_the_first_heartbeat() -> None:
    async with Simulator(seed=82, heartbeat_timeout_s=0.2) as sim:
        tok = sim.add_market("HB?", "hb").token_ids[0]
        client, _ = await run(new_trader, sim)
        oid = (await run(client.create_and_post_order, OrderArgsV2(tok, 0.3, 5, "BUY")))["orderID"]
        # Well past the window with no heartbeat ever sent: nothing is armed, nothing canceled.
        await asyncio.sleep(0.6)
        assert status(sim, oid) == "LIVE" and sim.heartbeat_lapses == 0
        await run(client.post_heartbeat, "")
        await until(lambda: status(sim, oid) == "CANCELED")


@pytest.mark.parametrize("legacy", [False, True])
async def test_wrong_id_is_400_with_the_expected_id_in_the_sdk_typed_body(legacy: bool) -> None:
    async with Simulator(seed=83) as sim:
        sim.heartbeat_legacy_error = legacy
        client, _ = await run(new_trader, sim)
        hb = await run(client.post_heartbeat, "")
        with pytest.raises(PolyApiException) as e:
            await run(client.post_heartbeat, "stale-id")
        assert e.value.status_code == 400
        text_key = "error" if legacy else "error_msg"
        assert e.value.error_msg == {
            text_key: "Invalid Heartbeat ID",
            "heartbeat_id": hb["heartbeat_id"],
        }
        # Adopting the id the venue named continues the chain.
        assert (await run(client.post_heartbeat, hb["heartbeat_id"]))["heartbeat_id"]


async def test_legacy_heartbeat_is_ok_and_resets_the_expected_id() -> None:
    async with Simulator(seed=84) as sim:
        client, _ = await run(new_trader, sim)
        hb = await run(client.post_heartbeat, "")
        headers = l2_headers(client, "POST", "/heartbeats")
        r = await run(lambda: httpx.post(sim.clob_url + "/heartbeats", headers=headers))
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        with pytest.raises(PolyApiException) as e:
            await run(client.post_heartbeat, hb["heartbeat_id"])
        assert e.value.error_msg["heartbeat_id"] == ""
        assert (await run(client.post_heartbeat, ""))["heartbeat_id"]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 500, "count": 50},
        {"kind": "drop", "count": 50},
    ],
)
async def test_heartbeats_lost_to_5xx_or_dropped_let_the_switch_fire(fault: dict[str, Any]) -> None:
    async with Simulator(seed=85, heartbeat_timeout_s=0.4) as sim:
        tok = sim.add_market("HB?", "hb").token_ids[0]
        client, _ = await run(new_trader, sim)
        oid = (await run(client.create_and_post_order, OrderArgsV2(tok, 0.3, 5, "BUY")))["orderID"]
        hid = (await run(client.post_heartbeat, ""))["heartbeat_id"]
        sim.faults.add(route="POST /v1/heartbeats", **fault)
        failures = 0
        async with asyncio.timeout(5):
            while status(sim, oid) == "LIVE":
                try:
                    await run(client.post_heartbeat, hid)
                except PolyApiException:
                    failures += 1
                await asyncio.sleep(0.05)
        assert failures >= 1 and status(sim, oid) == "CANCELED"
        sim.faults.clear()
        # A later heartbeat (the chain restarted) arms the switch again.
        assert (await run(client.post_heartbeat, ""))["heartbeat_id"]


async def test_delayed_heartbeat_still_counts() -> None:
    async with Simulator(seed=86, heartbeat_timeout_s=0.6) as sim:
        client, _ = await run(new_trader, sim)
        hid = (await run(client.post_heartbeat, ""))["heartbeat_id"]
        sim.faults.add(kind="latency", route="POST /v1/heartbeats", seconds=0.2)
        nxt = (await run(client.post_heartbeat, hid))["heartbeat_id"]
        assert nxt and nxt != hid
        assert sim.heartbeats[client.creds.api_key][0] == nxt
