"""Shutdown drain (deadline, CANCEL_ON_SHUTDOWN) and exchange heartbeats, against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path

from models import OrderStatus
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live


def statuses(live: Live) -> list[str]:
    return sorted(o["status"] for o in live.our_orders())


async def test_drain_waits_for_in_flight_submission_then_cancels_every_resting_order(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=21, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, cancel_on_shutdown=True, http_timeout_s=3.0)
        try:
            for p in ("0.30", "0.31", "0.32"):
                assert (await lv.ex.submit(lv.req(price=Decimal(p)))).status is OrderStatus.LIVE
            sim.faults.add(kind="latency", route="POST /order", seconds=0.3)
            late = asyncio.create_task(lv.ex.submit(lv.req(price=Decimal("0.33"))))
            await asyncio.sleep(0.05)
            assert lv.ex.health().detail["in_flight"] == 1
            assert await lv.ex.drain(wait_s=2.0)  # finished inside the deadline
            assert late.done() and late.result().status is OrderStatus.LIVE
            assert statuses(lv) == ["CANCELED"] * 4  # the venue's ledger
            rows = await lv.repos.orders.recent()
            assert [r.status for r in rows] == [OrderStatus.CANCELED] * 4  # the journal agrees
            assert lv.ex.positions.open_count == 0
            audit = await lv.repos.audit.tail(event="cancel_all")
            assert [a.detail["canceled"] for a in audit] == [4]
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_drain_deadline_passes_cancels_anyway_and_is_audited(tmp_path: Path) -> None:
    async with Simulator(seed=22, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, cancel_on_shutdown=True, http_timeout_s=3.0)
        try:
            for p in ("0.30", "0.31"):
                assert (await lv.ex.submit(lv.req(price=Decimal(p)))).status is OrderStatus.LIVE
            sim.faults.add(kind="latency", route="POST /order", seconds=2.5)
            stuck = asyncio.create_task(lv.ex.submit(lv.req(price=Decimal("0.33"))))
            await asyncio.sleep(0.05)
            assert not await lv.ex.drain(wait_s=0.2)
            assert not stuck.done()  # the drain gave up on it rather than wait for it
            rows = {r.client_order_id: r for r in await lv.repos.orders.recent()}
            canceled = [r for r in rows.values() if r.status is OrderStatus.CANCELED]
            assert len(canceled) == 2  # the resting orders were canceled despite the timeout
            assert await lv.repos.audit.tail(event="drain_timed_out")
            await stuck  # it lands after the cancel: the venue's heartbeat lapse covers it
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_heartbeats_keep_resting_orders_and_their_lapse_cancels_them(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=23, settle_delay_s=0.01, heartbeat_timeout_s=0.6) as sim:
        lv = await make_live(tmp_path, sim, heartbeat_interval_s=0.15)

        def beats() -> int:
            return sum(1 for r in sim.request_log if r.path == "/v1/heartbeats")

        loop = dict(lv.built.services)["heartbeats"]
        task = asyncio.create_task(loop(), name="heartbeats")
        try:
            await asyncio.sleep(0.4)
            assert beats() == 0  # nothing rests: the venue is not asked to watch us yet
            res = await lv.ex.submit(lv.req())
            assert res.status is OrderStatus.LIVE
            await asyncio.sleep(1.5)  # more than twice the venue's heartbeat timeout
            assert beats() >= 5
            assert statuses(lv) == ["LIVE"]
            assert lv.broker.heartbeat_id  # the id the venue handed back is chained
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            # The daemon "died": no more heartbeats, and the venue cancels what rests.
            await asyncio.sleep(1.0)
            assert statuses(lv) == ["CANCELED"]
            await lv.ex.reconcile()
            row = await lv.repos.orders.get(res.client_order_id)
            assert row is not None and row.status is OrderStatus.CANCELED
        finally:
            await close_live(lv)
