"""The executor's own decisions (`executor.py`) against the simulator's CLOB over loopback: what
each answer of `POST /order` becomes, which order events and fills move which order, cancels,
the shutdown drain, `/health` and the gauges operators alert on.

Its parts (tracker, settlement, reconciler, guard, batches) have tests of their own; these check
the executor's choices between them, by the journal, the audit log, the venue's ledger and the
metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from execution.ports import Prepared, VenueOrder, VenueStatus
from execution.risk import TradingState
from execution.tracker import Lookup
from models import Fill, OrderRequest, OrderStatus, OrderType, Side, TradeStatus
from resilience import Backoff, BreakerState
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live, seed_asks

D = Decimal


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=13, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, retry_attempts=2, order_lookup_grace_s=10.0)
        try:
            yield lv
        finally:
            await close_live(lv)


def sample(live: Live, name: str, **labels: str) -> float | None:
    return live.metrics.registry.get_sample_value(name, labels)


async def journaled(live: Live) -> tuple[OrderRequest, Prepared]:
    """A default order signed and journaled PENDING, as the executor does before its send."""
    req = live.req()
    meta = await live.ex.rules.ensure(req.token_id)
    assert meta is not None
    p = await live.broker.prepare(req, meta)
    live.ex.tracker.admit(p)
    await live.ex.tracker.journal_pending(p)
    return req, p


async def resting(live: Live, **kw: Any) -> tuple[str, str]:
    """A GTC BUY of 10 at 0.40 resting at the venue; its client and venue order ids."""
    res = await live.ex.submit(live.req(**kw))
    assert res.status is OrderStatus.LIVE and res.venue_order_id is not None
    return res.client_order_id, res.venue_order_id


async def status_of(live: Live, coid: str) -> tuple[OrderStatus, str, Decimal]:
    row = await live.repos.orders.get(coid)
    assert row is not None
    return row.status, row.detail, row.size_matched


def event(vid: str, status: VenueStatus, matched: str = "0") -> VenueOrder:
    return VenueOrder(vid, status, D("10"), D(matched), D("0.40"))


# what each answer of POST /order becomes ------------------------------------------------------
async def test_an_acknowledged_order_is_timed_and_the_breaker_told(live: Live) -> None:
    live.ex.breaker.record_failure()
    await resting(live)
    assert sample(live, "polyd_submit_seconds_count", broker="clob") == 1
    assert live.ex.breaker.state is BreakerState.CLOSED
    assert live.ex.breaker.consecutive_failures == 0  # a success resets the count


async def test_a_refusal_by_the_venue_is_rejected_with_its_reason(live: Live) -> None:
    live.ex.breaker.record_failure()
    live.sim.faults.add(
        kind="status", route="POST /order", status=400, body='{"error": "invalid tick size"}'
    )
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("venue: ")
    assert "invalid tick size" in res.reason
    assert live.ex.breaker.consecutive_failures == 0  # the venue answered: it is up
    assert live.ex.positions.open_count == 0


async def test_an_open_breaker_refuses_after_journaling(live: Live) -> None:
    for _ in range(5):
        live.ex.breaker.record_failure()
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.REJECTED
    assert res.reason == "breaker: circuit breaker open: venue failing"
    assert (await status_of(live, res.client_order_id))[0] is OrderStatus.REJECTED
    assert live.posts() == 0


async def test_a_lost_answer_is_unknown_and_counts_against_the_breaker(live: Live) -> None:
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=2, count=1)
    res = await live.ex.submit(live.req())
    # looked up at once: the venue did take it
    assert res.status in (OrderStatus.LIVE, OrderStatus.UNKNOWN)
    assert live.ex.breaker.consecutive_failures == 1
    assert sample(live, "polyd_outcome_unknown_total") == 1


async def test_venue_errors_after_every_retry_are_looked_up_then_rejected(live: Live) -> None:
    live.sim.faults.add(kind="status", route="POST /order", status=503, count=2)
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("venue: ")
    assert sample(live, "polyd_venue_retries_total", endpoint="post_order", reason="transient") == 1
    assert live.posts() == 2


async def test_a_duplicate_on_send_is_looked_up_as_ours(live: Live) -> None:
    """The venue already holds the order (an earlier attempt took it): it is ours."""
    live.sim.faults.add(kind="accept_then_status", route="POST /order", status=500, count=1)
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.LIVE
    assert [o["status"] for o in live.our_orders()] == ["LIVE"]
    await live.assert_journal_matches_ledger()


# admission ----------------------------------------------------------------------------------------
async def test_a_client_order_id_in_flight_is_refused_without_touching_its_row(
    live: Live,
) -> None:
    coid, _ = await resting(live)
    again = live.req(client_order_id=coid)
    res = await live.ex.submit(again)
    assert res.status is OrderStatus.REJECTED
    assert res.reason == "rules: duplicate client order id"
    assert (await status_of(live, coid))[0] is OrderStatus.LIVE
    assert live.posts() == 1


async def test_a_risk_refusal_while_reducing_is_labelled_halted(live: Live) -> None:
    await live.ex.reduce_only("test")
    res = await live.ex.submit(live.req(side=Side.SELL))  # nothing held to sell
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("halted: ")
    assert sample(live, "polyd_order_rejections_total", strategy="test", source="halted") == 1


async def test_a_risk_refusal_while_active_is_labelled_risk(live: Live) -> None:
    res = await live.ex.submit(live.req(side=Side.SELL))  # nothing held to sell
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("risk: ")


async def test_halted_refuses_before_the_rules_are_read(live: Live) -> None:
    await live.ex.halt("operator", actor="alice")
    assert (live.ex.state, live.ex.state_reason) == (TradingState.HALTED, "operator")
    res = await live.ex.submit(live.req(price=D("0.401")))  # off the tick grid too
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("halted: ")
    await live.ex.resume()
    assert live.ex.health().detail["trading_state"] == "ACTIVE"
    res = await live.ex.submit(live.req(price=D("0.401")))
    assert res.reason.startswith("rules: ")


async def test_submit_many_answers_in_request_order(live: Live) -> None:
    good, bad, other = live.req(), live.req(price=D("0.401")), live.req(price=D("0.30"))
    results = await live.ex.submit_many([good, bad, other])
    assert [r.client_order_id for r in results] == [
        good.client_order_id,
        bad.client_order_id,
        other.client_order_id,
    ]
    assert [r.status for r in results] == [
        OrderStatus.LIVE,
        OrderStatus.REJECTED,
        OrderStatus.LIVE,
    ]
    only_refused = await live.ex.submit_many([live.req(price=D("0.402"))])
    assert [r.status for r in only_refused] == [OrderStatus.REJECTED]
    assert live.posts("/orders") == 1
    assert await live.ex.wait_idle(1)


# venue events -------------------------------------------------------------------------------------
async def test_an_order_event_moves_a_resting_order(live: Live) -> None:
    coid, vid = await resting(live)
    await live.ex.on_order_event(event(vid, VenueStatus.MATCHED, "4"))
    assert await status_of(live, coid) == (OrderStatus.PARTIALLY_FILLED, "order event", D("4"))
    assert live.ex.positions.open_buy_notional() == D("2.40")


async def test_an_order_event_settles_an_unknown_order_and_ends_its_lookups(live: Live) -> None:
    req, p = await journaled(live)
    await live.ex.tracker.transition(req, OrderStatus.UNKNOWN)
    live.ex.tracker.look_up_later(
        Lookup(req.client_order_id, p.venue_order_id, 0.0, 0.0, Backoff(1, 2))
    )
    assert live.ex.tracker.unknown_count == 1
    await live.ex.on_order_event(event(p.venue_order_id, VenueStatus.CANCELED))
    assert (await status_of(live, req.client_order_id))[0] is OrderStatus.CANCELED
    assert live.ex.tracker.unknown_count == 0


async def test_an_order_event_finding_an_unknown_order_live_ends_its_lookups(live: Live) -> None:
    """Still open, so its record stays: the lookups of an order now known must end too."""
    req, p = await journaled(live)
    await live.ex.tracker.transition(req, OrderStatus.UNKNOWN)
    live.ex.tracker.look_up_later(
        Lookup(req.client_order_id, p.venue_order_id, 0.0, 0.0, Backoff(1, 2))
    )
    await live.ex.on_order_event(event(p.venue_order_id, VenueStatus.LIVE))
    assert (await status_of(live, req.client_order_id))[0] is OrderStatus.LIVE
    assert live.ex.tracker.unknown_count == 0
    assert live.ex.tracker.lookups_due(float("inf")) == []


async def test_order_events_for_orders_not_settled_here_are_ignored(live: Live) -> None:
    # a PENDING row (its send, or start-up reconciliation, settles it)
    req, p = await journaled(live)
    await live.ex.on_order_event(event(p.venue_order_id, VenueStatus.LIVE))
    assert (await status_of(live, req.client_order_id))[0] is OrderStatus.PENDING
    # a finished order
    seed_asks(live)
    done = await live.ex.submit(live.req(order_type=OrderType.FOK))
    assert done.status is OrderStatus.FILLED and done.venue_order_id is not None
    await live.ex.on_order_event(event(done.venue_order_id, VenueStatus.CANCELED))
    assert (await status_of(live, done.client_order_id))[0] is OrderStatus.FILLED
    # an order the journal does not know
    await live.ex.on_order_event(event("0x" + "77" * 32, VenueStatus.LIVE))
    assert await live.repos.audit.tail(event="order_reconciled") == []


async def test_an_order_event_during_its_own_send_is_left_to_the_send(live: Live) -> None:
    req, p = await journaled(live)
    live.ex.tracker.set_sending(req.client_order_id, True)
    await live.ex.tracker.transition(req, OrderStatus.UNKNOWN)  # not PENDING any more
    await live.ex.on_order_event(event(p.venue_order_id, VenueStatus.LIVE))
    assert (await status_of(live, req.client_order_id))[0] is OrderStatus.LIVE


async def test_a_fill_named_only_by_venue_order_id_is_attributed_and_moves_its_order(
    live: Live,
) -> None:
    coid, vid = await resting(live)
    fill = Fill(
        trade_id="t-1",
        venue_order_id=vid,
        token_id=live.token,
        side=Side.BUY,
        price=D("0.40"),
        size=D("4"),
        role="MAKER",
    )
    await live.ex.on_fill(fill)
    (stored,) = await live.repos.fills.for_order(coid)
    assert stored.trade_id == "t-1"
    assert await status_of(live, coid) == (OrderStatus.PARTIALLY_FILLED, "fill", D("4"))
    assert live.ex.position(live.token, strategy="test").size == D("4")
    assert sample(live, "polyd_fills_total", side="BUY", role="maker") == 1
    await live.ex.on_fill(fill)  # the same trade again: booked once, counted once
    assert sample(live, "polyd_fills_total", side="BUY", role="maker") == 1
    assert live.ex.position(live.token, strategy="test").size == D("4")


async def test_a_failed_trade_is_reversed_not_counted(live: Live) -> None:
    coid, vid = await resting(live)
    base: dict[str, Any] = {
        "trade_id": "t-2",
        "venue_order_id": vid,
        "client_order_id": coid,
        "token_id": live.token,
        "side": Side.BUY,
        "price": D("0.40"),
        "size": D("4"),
        "role": "MAKER",
    }
    await live.ex.on_fill(Fill(**base))
    await live.ex.on_fill(Fill(**base, status=TradeStatus.FAILED))
    assert live.ex.position(live.token, strategy="test").size == 0
    assert sample(live, "polyd_fills_total", side="BUY", role="maker") == 1


# cancels, drain, health, gauges -----------------------------------------------------------------
async def test_cancel_answers_whether_the_venue_canceled_it(live: Live) -> None:
    coid, _ = await resting(live)
    assert await live.ex.cancel(coid)
    assert await status_of(live, coid) == (OrderStatus.CANCELED, "canceled", D(0))
    assert not await live.ex.cancel(coid)  # finished
    assert not await live.ex.cancel("no-such-order")
    unsent = live.req()
    await live.repos.orders.record(unsent)  # no venue order id: nothing to cancel
    assert not await live.ex.cancel(unsent.client_order_id)
    assert live.ex.positions.open_count == 0


async def test_cancel_all_cancels_every_resting_order_and_audits_it(live: Live) -> None:
    a, _ = await resting(live)
    b, _ = await resting(live, price=D("0.30"))
    assert await live.ex.cancel_all(actor="alice") == 2
    for coid in (a, b):
        assert (await status_of(live, coid))[0] is OrderStatus.CANCELED
    (entry,) = await live.repos.audit.tail(event="cancel_all")
    assert entry.detail == {"canceled": 2, "actor": "alice"}
    assert live.ex.positions.open_count == 0


async def test_drain_cancels_on_shutdown_only_when_configured(live: Live) -> None:
    coid, _ = await resting(live)
    assert await live.ex.drain(1.0)
    assert (await status_of(live, coid))[0] is OrderStatus.LIVE
    live.ex.config = replace(live.ex.config, cancel_on_shutdown=True)
    assert await live.ex.drain()
    assert (await status_of(live, coid))[0] is OrderStatus.CANCELED


async def test_drain_keeps_resting_orders_another_process_now_manages(live: Live) -> None:
    """CANCEL_ON_SHUTDOWN is not applied once the writer lock went to another process under
    the same DAEMON_ID (`guard.keep_orders`): the orders are that process's, maybe just placed."""
    coid, vid = await resting(live)
    live.ex.config = replace(live.ex.config, cancel_on_shutdown=True)
    live.ex.guard.keep_orders = "writer lock taken by another process"
    assert await live.ex.drain()
    assert (await status_of(live, coid))[0] is OrderStatus.LIVE
    assert live.sim.engine.orders[vid].status == "LIVE"  # nothing was sent to cancel it


async def test_drain_that_times_out_says_so_and_audits_the_orders_in_flight(live: Live) -> None:
    live.sim.faults.add(kind="latency", route="POST /order", seconds=0.3, count=1)
    task = asyncio.create_task(live.ex.submit(live.req()))
    while live.ex.health().detail["in_flight"] == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert not await live.ex.drain(0.01)
    (entry,) = await live.repos.audit.tail(event="drain_timed_out")
    assert entry.detail == {"in_flight": 1}
    await task
    assert await live.ex.wait_idle(1) and live.ex.health().detail["in_flight"] == 0


async def test_health_reads_state_breaker_and_orders(live: Live) -> None:
    await resting(live)
    assert await live.ex.wait_idle(5)  # answered at the ack; in flight until its row is durable
    check = live.ex.health()
    assert check.ok
    assert check.detail == {
        "trading_state": "ACTIVE",
        "reason": "",
        "resting_orders_held": "",
        "breaker": "closed",
        "open_orders": 1,
        "unknown_orders": 0,
        "in_flight": 0,
    }
    await live.ex.halt("operator")
    check = live.ex.health()
    assert not check.ok and check.detail["trading_state"] == "HALTED"
    assert check.detail["reason"] == "operator"


async def test_a_reconcile_publishes_the_gauges(live: Live) -> None:
    seed_asks(live)
    await live.ex.submit(live.req(order_type=OrderType.FOK))
    await resting(live, price=D("0.30"))
    await live.ex.halt("operator")
    live.metrics.open_orders.set(0)
    await live.ex.reconcile()
    assert sample(live, "polyd_open_orders") == 1
    assert sample(live, "polyd_trading_state") == 2
    assert sample(live, "polyd_breaker_state", breaker="venue") == 0
    assert sample(live, "polyd_exposure_usd") not in (None, 0)
