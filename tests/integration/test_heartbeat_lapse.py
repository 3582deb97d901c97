"""The daemon's exchange heartbeats against the simulator's dead-man switch, over real sockets.

Venue facts (docs/venue-mechanics.md §3): a heartbeat's id chains (`post_heartbeat` in
py-clob-client-v2 `client.py`); a wrong id is answered 400 `{"error_msg", "heartbeat_id"}`
(Polymarket/py-sdk `order_heartbeats.py`) or, in older examples, `{"error", "heartbeat_id"}`
(Polymarket/py-clob-client `examples/post_heartbeat.py`); missing the deadline cancels every
resting order of the API key (Polymarket/ts-sdk `actions/order-heartbeats.ts`). Windows are short
here (both sides are configurable); every wait is on a condition with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from execution.heartbeat import HeartbeatMonitor
from models import OrderStatus, OrderType
from simulator import Simulator
from tests.helpers import until
from tests.integration.test_executor_live import Live, close_live, make_live


@contextlib.asynccontextmanager
async def beating(lv: Live) -> AsyncIterator[HeartbeatMonitor]:
    monitor = lv.built.heartbeat
    assert monitor is not None
    task = asyncio.create_task(monitor.run(), name="heartbeats")
    try:
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def gauge(lv: Live, name: str) -> float | None:
    return lv.metrics.registry.get_sample_value(name)


async def test_lapse_holds_resting_orders_then_recovery_reconciles_before_resuming(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=91, settle_delay_s=0.01, heartbeat_timeout_s=0.6) as sim:
        lv = await make_live(
            tmp_path,
            sim,
            heartbeat_interval_s=0.1,
            heartbeat_max_failures=2,
            heartbeat_lapse_s=0.4,
        )
        try:
            async with beating(lv) as monitor:
                first = await lv.ex.submit(lv.req(price=Decimal("0.30")))
                assert first.status is OrderStatus.LIVE
                await until(lambda: monitor.armed)
                assert gauge(lv, "polyd_heartbeat_ok") == 1.0

                # Heartbeats start failing: the daemon declares the lapse itself...
                sim.faults.add(kind="status", route="POST /v1/heartbeats", status=500, count=10**6)
                await until(lambda: monitor.lapsed)
                assert gauge(lv, "polyd_heartbeat_ok") == 0.0
                assert gauge(lv, "polyd_heartbeat_lapses_total") == 1.0
                assert monitor.unconfirmed == 1  # our resting order: canceled-unknown
                assert not lv.ex.health().ok
                # the audit entry is written just after the flag is raised
                for _ in range(100):
                    if await lv.repos.audit.tail(event="heartbeat_lapsed"):
                        break
                    await asyncio.sleep(0.05)
                assert await lv.repos.audit.tail(event="heartbeat_lapsed")
                # ...holds new resting orders; marketable orders and cancels still go.
                held = await lv.ex.submit(lv.req(price=Decimal("0.31")))
                assert held.status is OrderStatus.REJECTED
                assert "heartbeat lapsed" in held.reason
                fak = await lv.ex.submit(lv.req(price=Decimal("0.5"), order_type=OrderType.FAK))
                assert "no orders found to match" in fak.reason  # the venue's refusal, not ours

                # ...and the venue, which saw no heartbeat for its window, cancels what rested.
                vid = first.venue_order_id
                assert vid is not None
                await until(lambda: sim.engine.orders[vid].status == "CANCELED")
                row = await lv.repos.orders.get(first.client_order_id)
                assert row is not None and row.status is OrderStatus.LIVE  # not yet reconciled

                # Heartbeats come back but the reconcile cannot run: the hold stays.
                sim.faults.clear()
                sim.faults.add(kind="status", route="GET /data/orders", status=500, count=10**6)
                await until(lambda: monitor.failures == 0 and monitor.armed)
                ok_beats = sum(
                    1 for r in sim.request_log if r.path == "/v1/heartbeats" and r.status == 200
                )
                await until(
                    lambda: (
                        sum(
                            1
                            for r in sim.request_log
                            if r.path == "/v1/heartbeats" and r.status == 200
                        )
                        >= ok_beats + 2
                    )
                )
                assert monitor.lapsed and lv.ex.guard.resting_hold is not None
                still_held = await lv.ex.submit(lv.req(price=Decimal("0.32")))
                assert still_held.status is OrderStatus.REJECTED

                # The reconcile runs: the journal learns the cancel, then the hold is lifted.
                sim.faults.clear()
                await until(lambda: not monitor.lapsed)
                row = await lv.repos.orders.get(first.client_order_id)
                assert row is not None and row.status is OrderStatus.CANCELED
                events = [a.event for a in await lv.repos.audit.tail(limit=200)]
                assert "heartbeat_recovered" in events and "reconciled" in events
                assert gauge(lv, "polyd_heartbeat_ok") == 1.0
                assert lv.ex.health().ok
                again = await lv.ex.submit(lv.req(price=Decimal("0.33")))
                assert again.status is OrderStatus.LIVE
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_one_failure_is_not_a_lapse(tmp_path: Path) -> None:
    async with Simulator(seed=92, settle_delay_s=0.01, heartbeat_timeout_s=5.0) as sim:
        lv = await make_live(tmp_path, sim, heartbeat_interval_s=0.05, heartbeat_max_failures=2)
        try:
            async with beating(lv) as monitor:
                assert (await lv.ex.submit(lv.req())).status is OrderStatus.LIVE
                await until(lambda: monitor.armed)
                sim.faults.add(kind="status", route="POST /v1/heartbeats", status=503, count=1)
                beats = len(sim.request_log)
                await until(
                    lambda: (
                        sum(
                            1
                            for r in sim.request_log[beats:]
                            if r.path == "/v1/heartbeats" and r.status == 200
                        )
                        >= 2
                    )
                )
                assert not monitor.lapsed and lv.ex.guard.resting_hold is None
                assert gauge(lv, "polyd_heartbeat_failures_total") == 1.0
        finally:
            await close_live(lv)


@pytest.mark.parametrize("legacy", [False, True])
async def test_wrong_heartbeat_id_is_adopted_and_resent_at_once(
    tmp_path: Path, legacy: bool
) -> None:
    async with Simulator(seed=93, settle_delay_s=0.01) as sim:
        sim.heartbeat_legacy_error = legacy
        lv = await make_live(tmp_path, sim)
        try:
            first = await lv.broker.heartbeat()
            lv.broker.heartbeat_id = "an-id-the-venue-never-gave"
            before = len(sim.request_log)
            nxt = await lv.broker.heartbeat()
            hb = [r.status for r in sim.request_log[before:] if r.path == "/v1/heartbeats"]
            assert hb == [400, 200]  # the refusal named the id; it was sent straight away
            assert nxt and nxt != first and lv.broker.heartbeat_id == nxt
            assert sim.heartbeats[lv.broker.owner][0] == nxt  # the venue's chain continues
        finally:
            await close_live(lv)


async def test_heartbeat_hanging_past_the_lapse_time_is_a_lapse_however_few_failures(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=94, settle_delay_s=0.01, heartbeat_timeout_s=5.0) as sim:
        lv = await make_live(
            tmp_path,
            sim,
            heartbeat_interval_s=0.05,
            heartbeat_max_failures=100,
            heartbeat_lapse_s=0.3,
            http_timeout_s=3.0,
        )
        try:
            async with beating(lv) as monitor:
                assert (await lv.ex.submit(lv.req())).status is OrderStatus.LIVE
                await until(lambda: monitor.armed)
                # One heartbeat hangs far past the lapse time (not past the HTTP timeout).
                sim.faults.add(kind="latency", route="POST /v1/heartbeats", seconds=2.0)
                await until(lambda: monitor.lapsed)
                assert monitor.failures < 100  # the time since the last success decided it
                assert lv.ex.guard.resting_hold is not None
                await until(lambda: not monitor.lapsed)  # the next heartbeats succeed
                assert lv.ex.guard.resting_hold is None
        finally:
            await close_live(lv)
