"""The executor's admission and in-flight bookkeeping (`executor.py`) against the simulator's CLOB
over loopback: a failed guard write while admitting halts and names the order, a hold on
resting orders refuses only orders that would rest, every submission in flight keeps `drain()`
waiting, an in-flight submission is a task named for its order that the executor lets go of
once it is done (and whose abandonment raises nothing in the loop), a retried send is logged
for the operator, and the submit-to-ack histogram records the time the order took.

`test_executor_core.py` covers what each venue answer becomes; these are the paths around it.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from execution.risk import TradingState
from models import OrderStatus, OrderType
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live, seed_asks
from tests.unit.test_executor_core import sample

D = Decimal


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=19, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path,
            sim,
            retry_attempts=3,
            kill_switch_path=str(tmp_path / "KILL"),
            http_timeout_s=10.0,  # the late answers below are waited for, not looked up
        )
        try:
            yield lv
        finally:
            await close_live(lv)


async def held(live: Live, n: int) -> None:
    """Until the venue holds `n` resting orders (its answer may still be on its way)."""
    while len(list(live.sim.engine.open_orders())) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.002)


def submission_tasks(coid: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"executor:submit:{coid}"]


async def test_a_failed_guard_write_while_admitting_halts_and_names_the_order(
    live: Live, tmp_path: Path
) -> None:
    (tmp_path / "KILL").write_text("stop")  # the guard must write HALTED ...
    await live.db.close()  # ... and cannot
    req = live.req()
    with capture_logs() as logs:
        res = await live.ex.submit(req)
    assert res.status is OrderStatus.REJECTED
    assert res.reason == "storage error: halted: trading is halted: storage error"
    assert (live.ex.state, live.ex.state_reason) == (TradingState.HALTED, "storage error")
    (line,) = [e for e in logs if e["event"] == "storage_failed_halting"]
    assert (line["client_order_id"], line["log_level"]) == (req.client_order_id, "error")
    assert live.posts("/order") == 0


async def test_a_hold_on_resting_orders_refuses_only_orders_that_would_rest(live: Live) -> None:
    """Exchange heartbeats lapsed: the venue would cancel a resting order, so GTC is refused;
    a FAK takes what the book has and rests nothing, so it still goes."""
    live.ex.guard.hold_resting("exchange heartbeats lapsed")
    gtc = await live.ex.submit(live.req())
    assert gtc.status is OrderStatus.REJECTED
    assert "exchange heartbeats lapsed" in gtc.reason
    seed_asks(live)
    fak = await live.ex.submit(live.req(order_type=OrderType.FAK))
    assert fak.status is OrderStatus.FILLED
    assert live.posts("/order") == 1


async def test_drain_waits_for_every_submission_in_flight(live: Live) -> None:
    """One order's answer is late; another one submitted meanwhile (refused here: off the
    tick grid) finishes first. The executor is not idle until the late one is settled too."""
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=5, count=1)
    late = live.req()
    task = asyncio.create_task(live.ex.submit(late))
    await held(live, 1)
    quick = await live.ex.submit(live.req(price=D("0.301")))
    assert quick.status is OrderStatus.REJECTED and quick.reason.startswith("rules: ")
    assert not task.done()
    assert not await live.ex.wait_idle(0.2)
    assert (await task).status is OrderStatus.LIVE
    assert await live.ex.wait_idle(5)


async def test_a_submission_is_a_task_named_for_its_order_and_let_go_of_when_done(
    live: Live,
) -> None:
    """Named so a task dump says which order it is sending; held while in flight (its caller
    may stop waiting) and released when done, so nothing accumulates over a long run."""
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=0.5, count=1)
    req = live.req()
    caller = asyncio.create_task(live.ex.submit(req))
    await held(live, 1)
    (task,) = submission_tasks(req.client_order_id)
    ref = weakref.ref(task)
    del task
    assert (await caller).status is OrderStatus.LIVE
    assert await live.ex.wait_idle(5)  # answered at the ack; the task ends with the row durable
    gc.collect()
    assert ref() is None


async def test_a_submission_whose_caller_left_ends_without_an_error_in_the_loop(
    live: Live,
) -> None:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        live.sim.faults.add(kind="late_response", route="POST /order", seconds=0.3, count=1)
        req = live.req()
        caller = asyncio.create_task(live.ex.submit(req))
        await held(live, 1)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert await live.ex.wait_idle(5)
        await asyncio.sleep(0)  # the done-callbacks run on the next turn
    finally:
        loop.set_exception_handler(previous)
    assert errors == []
    row = await live.repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE


async def test_a_retried_send_is_logged_for_the_operator(live: Live) -> None:
    live.sim.faults.add(kind="status", route="POST /order", status=503, count=1)
    with capture_logs() as logs:
        res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.LIVE
    (retry,) = [e for e in logs if e["event"] == "order_send_retry"]
    assert retry["attempt"] == 1
    assert live.posts("/order") == 2


async def test_submit_seconds_records_the_time_each_order_took_to_its_ack(live: Live) -> None:
    before = time.perf_counter()
    for price in ("0.40", "0.30"):
        assert (await live.ex.submit(live.req(price=D(price)))).status is OrderStatus.LIVE
    elapsed = time.perf_counter() - before
    count = sample(live, "polyd_submit_seconds_count", broker="clob")
    total = sample(live, "polyd_submit_seconds_sum", broker="clob")
    assert count == 2 and total is not None
    assert 0 < total <= elapsed
