"""The executor's service side (`executor.py`) against the simulator's CLOB over loopback: the
service loop `run()` (periodic reconcile when due and only then, a failed write halting, any
other failure counted and the loop kept), the shutdown drain's answer and log lines, operator
controls and who asked, tick sizes from the feed, a batch's bookkeeping when its caller is
cancelled, the strategy state that commits with a PENDING row, and the fill log lines.

`test_executor_core.py` covers what each venue answer becomes; these are the paths around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from execution.risk import TradingState
from models import Fill, OrderStatus, Side, TradeStatus
from resilience import BreakerState, FakeClock
from simulator import Simulator
from storage.strategy_state import SniperStateRepository
from tests.integration.test_executor_live import Live, close_live, make_live
from tests.unit.test_executor_core import journaled, sample

D = Decimal


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=17, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path, sim, retry_attempts=2, kill_switch_path=str(tmp_path / "KILL")
        )
        try:
            yield lv
        finally:
            await close_live(lv)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def ticks(live: Live, n: int) -> None:
    """Wait for `n` more turns of the service loop: each one republishes the trading state
    gauge, which is set to a value no state has before each turn is awaited."""
    for _ in range(n):
        live.metrics.trading_state.set(-1)
        while sample(live, "polyd_trading_state") == -1:  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def running(live: Live, **kw: Any) -> asyncio.Task[None]:
    task = asyncio.create_task(live.ex.run(tick_s=0.001, **kw))
    await ticks(live, 1)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# the service loop ---------------------------------------------------------------------------
async def test_run_reconciles_by_default_once_the_interval_is_over(live: Live) -> None:
    live.ex.config = replace(live.ex.config, reconcile_interval_s=0.0)
    before = live.ex.reconciler.last_run
    task = asyncio.create_task(live.ex.run(tick_s=0.001))  # periodic_reconcile by default
    await ticks(live, 2)
    await stop(task)
    assert live.ex.reconciler.last_run > before


async def test_run_does_not_reconcile_before_the_interval_or_when_told_not_to(
    live: Live,
) -> None:
    await live.ex.reconcile()
    last = live.ex.reconciler.last_run
    live.ex.config = replace(live.ex.config, reconcile_interval_s=3600.0)
    real = live.ex.clock
    # a clock far from zero: "due" is the time since the last pass, not a sum with it
    live.ex.reconciler.last_run = 1_000_000.0
    live.ex.clock = FakeClock(start=1_003_599.0)
    try:
        task = await running(live)
        await ticks(live, 3)
        await stop(task)
    finally:
        live.ex.clock = real
    assert live.ex.reconciler.last_run == 1_000_000.0  # an hour has not passed
    live.ex.reconciler.last_run = last
    live.ex.config = replace(live.ex.config, reconcile_interval_s=0.0)
    task = await running(live, periodic_reconcile=False)
    await ticks(live, 3)
    await stop(task)
    assert live.ex.reconciler.last_run == last


async def test_run_reconciles_when_exactly_the_interval_has_passed(live: Live) -> None:
    """Due at `last_run + interval`, not one clock reading later."""
    live.ex.reconciler.last_run = 1000.0  # the last pass ended at 1000 s (monotonic) ...
    frozen = FakeClock(start=1030.0)  # ... and it is 30 s later (time stands still)
    live.ex.config = replace(live.ex.config, reconcile_interval_s=30.0)
    real = live.ex.clock
    live.ex.clock = frozen
    try:
        task = await running(live)
        await ticks(live, 2)
        await stop(task)
    finally:
        live.ex.clock = real
    assert live.ex.reconciler.last_run != 1000.0  # a pass ran


async def test_a_failed_write_in_the_loop_halts_and_the_loop_goes_on(
    live: Live, tmp_path: Path
) -> None:
    (tmp_path / "KILL").write_text("stop")  # the guard must write HALTED ...
    await live.db.close()  # ... and cannot
    with capture_logs() as logs:
        task = await running(live, periodic_reconcile=False)
        await ticks(live, 2)
        await stop(task)
    assert (live.ex.state, live.ex.state_reason) == (TradingState.HALTED, "storage error")
    failures = sample(
        live, "polyd_venue_errors_total", endpoint="executor_loop", kind="StorageError"
    )
    assert failures is not None and failures >= 2  # counted every turn: the loop kept going
    first = events(logs, "executor_loop_storage_failed")[0]
    assert first["error"] == "database is closed"
    assert first["log_level"] == "error"


async def test_any_other_failure_in_the_loop_is_counted_logged_and_survived(
    live: Live,
) -> None:
    live.ex.config = replace(live.ex.config, reconcile_interval_s=0.0)
    live.sim.faults.add(kind="status", route="GET /data/orders", status=500, count=10**6)
    with capture_logs() as logs:
        task = asyncio.create_task(live.ex.run(tick_s=0.001))
        while len(events(logs, "executor_loop_failed")) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        await stop(task)
    failures = sample(live, "polyd_venue_errors_total", endpoint="executor_loop", kind="error")
    assert failures is not None and failures >= 2
    assert events(logs, "executor_loop_failed")[0]["log_level"] == "error"
    assert live.ex.state is TradingState.ACTIVE  # a venue failure is not a storage failure


# drain ----------------------------------------------------------------------------------------
async def test_a_drain_that_times_out_answers_false_and_says_what_it_waited_for(
    live: Live,
) -> None:
    live.sim.faults.add(kind="latency", route="POST /order", seconds=0.3, count=1)
    task = asyncio.create_task(live.ex.submit(live.req()))
    while live.ex.health().detail["in_flight"] == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    with capture_logs() as logs:
        drained = await live.ex.drain(0.01)
    assert drained is False
    (line,) = events(logs, "drain_timed_out")
    assert (line["in_flight"], line["waited_s"], line["log_level"]) == (1, 0.01, "warning")
    await task


async def test_a_drain_that_cancels_says_how_many(live: Live) -> None:
    await live.ex.submit(live.req())
    await live.ex.submit(live.req(price=D("0.30")))
    live.ex.config = replace(live.ex.config, cancel_on_shutdown=True)
    with capture_logs() as logs:
        assert await live.ex.drain(1.0) is True
    (line,) = events(logs, "canceled_on_shutdown")
    assert line["canceled"] == 2
    (entry,) = await live.repos.audit.tail(event="cancel_all")
    assert entry.detail == {"canceled": 2, "actor": "daemon"}  # the daemon's own cancel


# operator controls --------------------------------------------------------------------------
async def test_operator_controls_persist_and_audit_who_asked_and_why(live: Live) -> None:
    await live.ex.reduce_only("thin book", actor="http")
    await live.ex.halt("news", actor="telegram:42")
    await live.ex.resume(actor="alice")
    await live.ex.reduce_only("by the daemon")
    await live.ex.halt("also by the daemon")
    await live.ex.resume()
    moves = [e.detail for e in reversed(await live.repos.audit.tail(event="trading_state"))]
    assert [(m["to"], m["reason"], m.get("actor")) for m in moves] == [
        ("REDUCING", "thin book", "http"),
        ("HALTED", "news", "telegram:42"),
        ("ACTIVE", "manual resume", "alice"),
        ("REDUCING", "by the daemon", None),
        ("HALTED", "also by the daemon", None),
        ("ACTIVE", "manual resume", None),
    ]
    await live.ex.reduce_only("thin book")
    assert (live.ex.state, live.ex.state_reason) == (TradingState.REDUCING, "thin book")


async def test_health_fails_while_resting_orders_are_held(live: Live) -> None:
    live.ex.guard.hold_resting("exchange heartbeats lapsed")
    check = live.ex.health()
    assert not check.ok
    assert check.detail["resting_orders_held"] == "exchange heartbeats lapsed"
    live.ex.guard.release_resting()
    assert live.ex.health().ok


# tick sizes from the feed ---------------------------------------------------------------------
async def test_a_tick_size_change_from_the_feed_applies_to_that_token_only(live: Live) -> None:
    other = live.sim.add_market("Will it snow?", "snow").token_ids[0]
    for token in (live.token, other):
        assert await live.ex.rules.ensure(token) is not None
    live.sim.set_tick_size(live.token, D("0.1"))  # the venue coarsens the grid ...
    live.ex.set_tick_size(live.token, D("0.1"))  # ... and the market feed says so
    res = await live.ex.submit(live.req(price=D("0.45")))
    # refused here, not sent for the venue to refuse (0.45 is on the old grid)
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("rules: ")
    assert live.posts() == 0
    res = await live.ex.submit(live.req(token_id=other, price=D("0.45")))
    assert res.status is OrderStatus.LIVE  # the other market still trades on 0.01


# submissions ----------------------------------------------------------------------------------
async def test_the_strategy_state_commits_with_the_pending_row(live: Live) -> None:
    slots = SniperStateRepository(db=live.db)
    req = live.req()
    write = slots.fired("dip", live.token, req.client_order_id, 1_000.0)
    res = await live.ex.submit(req, also=write)
    assert res.status is OrderStatus.LIVE
    stored = (await slots.load({("dip", live.token)}))[("dip", live.token)]
    assert (stored.entries, stored.armed, stored.last_fire_at) == (1, False, 1_000.0)


async def test_a_batch_cancelled_while_admitting_leaves_nothing_reserved(live: Live) -> None:
    """The first order was admitted (reserved) when the caller went away during the second's
    admission: nothing was journaled or sent, so nothing may stay reserved or taken."""
    other = live.sim.add_market("Will it snow?", "snow").token_ids[0]
    assert await live.ex.rules.ensure(live.token) is not None
    live.sim.faults.add(
        kind="latency", route=f"GET /markets-by-token/{other}", seconds=0.4, count=1
    )
    first, second = live.req(), live.req(token_id=other)
    task = asyncio.create_task(live.ex.submit_many([first, second]))
    while first.client_order_id not in live.ex.tracker:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live.ex.positions.open_buy_notional() == 0
    assert await live.ex.wait_idle(1)
    again = await live.ex.submit(first)  # not "duplicate client order id"
    assert again.status is OrderStatus.LIVE
    assert live.posts("/orders") == 0


async def test_orders_of_a_batch_take_order_events_once_it_is_done(live: Live) -> None:
    a, b = live.req(), live.req(price=D("0.30"))
    results = await live.ex.submit_many([a, b])
    assert [r.status for r in results] == [OrderStatus.LIVE, OrderStatus.LIVE]
    from execution.ports import VenueOrder, VenueStatus

    for r in results:
        assert r.venue_order_id is not None
        vo = VenueOrder(r.venue_order_id, VenueStatus.MATCHED, D("10"), D("4"), D("0.40"))
        await live.ex.on_order_event(vo)
    for r in results:
        row = await live.repos.orders.get(r.client_order_id)
        assert row is not None
        assert (row.status, row.size_matched) == (OrderStatus.PARTIALLY_FILLED, D("4"))


async def test_orders_of_a_batch_are_reconciled_once_it_is_done(live: Live) -> None:
    """A batch's orders are no longer "being sent" once it answered: a reconcile pass settles
    one the venue canceled while the user feed missed it."""
    results = await live.ex.submit_many([live.req(), live.req(price=D("0.30"))])
    for r in results:
        assert r.venue_order_id is not None
        assert live.sim.engine.cancel(r.venue_order_id) is not None
    await live.ex.reconcile(grace_s=0.0)
    for r in results:
        row = await live.repos.orders.get(r.client_order_id)
        assert row is not None and row.status is OrderStatus.CANCELED
    assert live.ex.positions.open_count == 0


async def test_a_reconcile_pass_leaves_a_batch_in_flight_to_its_send(live: Live) -> None:
    """The venue has taken both orders of a batch and not answered yet: a reconcile pass then
    must neither settle them from a lookup nor re-send them; the batch's answer settles them."""
    live.sim.faults.add(kind="late_response", route="POST /orders", seconds=0.5, count=1)
    a, b = live.req(), live.req(price=D("0.30"))
    task = asyncio.create_task(live.ex.submit_many([a, b]))
    while len(list(live.sim.engine.open_orders())) < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    counts = await live.ex.reconcile(grace_s=0.0)
    assert (counts["settled"], counts["resent"], counts["pending"]) == (0, 0, 0)
    for coid in (a.client_order_id, b.client_order_id):
        row = await live.repos.orders.get(coid)
        assert row is not None and row.status is OrderStatus.PENDING
    assert [r.status for r in await task] == [OrderStatus.LIVE, OrderStatus.LIVE]
    assert (live.posts("/orders"), live.posts("/order")) == (1, 0)


async def test_reconcile_hands_its_grace_to_the_reconciler(live: Live) -> None:
    """With no grace a PENDING order the venue never saw is refused at once; with the default
    grace (30 s) the same young order would be re-sent instead."""
    req, _ = await journaled(live)
    counts = await live.ex.reconcile(grace_s=0.0)
    assert (counts["settled"], counts["resent"]) == (1, 0)
    row = await live.repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.REJECTED
    assert row.detail == "venue: not found at the venue"
    assert live.posts("/order") == 0


async def test_a_batch_whose_caller_is_cancelled_is_still_sent_and_settled(live: Live) -> None:
    live.sim.faults.add(kind="latency", route="POST /orders", seconds=0.2, count=1)
    a, b = live.req(), live.req(price=D("0.30"))
    with capture_logs() as logs:
        task = asyncio.create_task(live.ex.submit_many([a, b]))
        while live.posts("/orders") == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await live.ex.drain(5.0)
    (line,) = events(logs, "order_submission_continues")
    assert line["client_order_id"] == a.client_order_id
    for coid in (a.client_order_id, b.client_order_id):
        row = await live.repos.orders.get(coid)
        assert row is not None and row.status is OrderStatus.LIVE


# fills -----------------------------------------------------------------------------------------
async def test_fill_log_lines_name_the_trade_and_a_reversal_the_position_left(
    live: Live,
) -> None:
    res = await live.ex.submit(live.req())
    assert res.venue_order_id is not None
    fill: dict[str, Any] = {
        "trade_id": "t-9",
        "venue_order_id": res.venue_order_id,
        "client_order_id": res.client_order_id,
        "token_id": live.token,
        "side": Side.BUY,
        "price": D("0.40"),
        "size": D("4"),
        "role": "MAKER",
    }
    with capture_logs() as logs:
        await live.ex.on_fill(Fill(**fill))
        await live.ex.on_fill(Fill(**fill, status=TradeStatus.FAILED))
    (booked,) = events(logs, "fill_recorded")
    assert (booked["trade_id"], booked["size"], booked["client_order_id"]) == (
        "t-9",
        "4",
        res.client_order_id,
    )
    (reversed_,) = events(logs, "fill_failed_reversed")
    assert (reversed_["trade_id"], reversed_["position"], reversed_["log_level"]) == (
        "t-9",
        "0",
        "warning",
    )


# why a send went UNKNOWN, and a venue's Retry-After ----------------------------------------------
async def test_an_unknown_outcome_is_audited_with_why(live: Live) -> None:
    """The venue's 400 "Duplicated." (it holds an order with this hash, the answer to an earlier
    attempt was lost) and a lost answer each go UNKNOWN, audited with why (`translate.is_duplicate`
    reads the venue's text)."""
    body = '{"error": "order 0xabc is invalid. Duplicated."}'
    live.sim.faults.add(kind="status", route="POST /order", status=400, body=body, count=1)
    await live.ex.submit(live.req())
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=2, count=1)
    await live.ex.submit(live.req(price=D("0.30")))
    whys = [e.detail for e in reversed(await live.repos.audit.tail(event="order_outcome_unknown"))]
    assert whys == [{"why": "duplicate on re-send"}, {"why": "no answer (SocketTimeoutError)"}]


async def test_a_venue_unavailable_after_retries_holds_orders_for_its_retry_after(
    live: Live,
) -> None:
    # the retry is not held up: only the last answer says how long the venue is away
    live.sim.faults.add(kind="status", route="POST /order", status=500, count=1)
    live.sim.faults.add(kind="status", route="POST /order", status=503, count=1, retry_after=60)
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.REJECTED
    failed = sample(
        live, "polyd_venue_errors_total", endpoint="post_order", kind="VenueUnavailable"
    )
    assert failed == 1
    assert live.ex.breaker_state() is BreakerState.OPEN  # held for the venue's 60 s
    held = await live.ex.submit(live.req(price=D("0.30")))
    assert held.reason.startswith("breaker: ")


async def test_a_strategys_failed_trade_rebuilds_every_holding_in_its_token(live: Live) -> None:
    """Two strategies bought, a sale outside the daemon took shares from them, then one
    strategy's BUY fails: the repository rebuilds every holding in the token by the attribution
    rules, and the executor's book must hold what the repository holds, for each strategy."""
    fills: dict[str, dict[str, Any]] = {}
    for strategy, trade in (("a", "t-a"), ("b", "t-b")):
        res = await live.ex.submit(live.req(strategy=strategy))
        assert res.venue_order_id is not None
        fills[strategy] = {
            "trade_id": trade,
            "venue_order_id": res.venue_order_id,
            "client_order_id": res.client_order_id,
            "token_id": live.token,
            "side": Side.BUY,
            "price": D("0.40"),
            "size": D("10"),
            "role": "MAKER",
        }
        await live.ex.on_fill(Fill(**fills[strategy]))
    outside = Fill(
        trade_id="t-outside",
        venue_order_id="0x" + "55" * 32,  # no order of ours
        token_id=live.token,
        side=Side.SELL,
        price=D("0.45"),
        size=D("10"),
        role="TAKER",
    )
    await live.ex.on_fill(outside)
    assert live.ex.position(live.token, strategy="b").size == 10  # the sale took a's shares
    for strategy in ("a", "b"):
        await live.ex.on_fill(Fill(**fills[strategy], status=TradeStatus.FAILED))
        stored = {p.strategy: p.size for p in await live.repos.fills.positions_in(live.token)}
        book = {s: live.ex.position(live.token, strategy=s).size for s in stored}
        assert book == stored
        assert stored["b"] == 0  # without a's BUY, the sale took b's shares
