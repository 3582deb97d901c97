"""The reconciler's lookups, against the simulator over loopback with a fake clock: an order
whose answer was lost (looked up at once, then on its back-off until the grace), one whose
retries ran out on venue errors (looked up unless the error says the venue took nothing), and
orders the venue answered `delayed` (held back for its market's taker delay): looked up once
the delay plus the margin has passed, their fills read by market, given up after 20 checks,
one order's state never holding up the next in a sweep. Passes and re-sends are in
`test_reconciler.py`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from errors import RateLimited, TransientError, VenueUnavailable
from execution.ports import Ack, VenueStatus
from execution.reconciler import Reconciler
from execution.tracker import Lookup
from models import OrderRequest, OrderStatus, OrderType
from resilience import Backoff
from resilience.clock import FakeClock
from tests.integration.test_executor_live import MAKER, Live
from tests.unit.test_reconciler import (
    GRACE_S,
    WINDOW_S,
    journaled,
    live,
    reconciler,
    row_of,
)

__all__ = ["live"]  # the fixture


# outcomes the send could not learn ---------------------------------------------------------
async def test_an_unknown_outcome_is_looked_up_at_once(live: Live) -> None:
    p = await journaled(live)
    await live.broker.send(p)  # the venue took it; the answer was lost
    res = await reconciler(live, FakeClock(0)).outcome_unknown(p, "timeout")
    assert res.status is OrderStatus.LIVE and res.reason == "looked up by order hash"
    assert live.ex.tracker.unknown_count == 0
    events = [e.to_status for e in await live.repos.orders.events(p.request.client_order_id)]
    assert events == [OrderStatus.PENDING, OrderStatus.UNKNOWN, OrderStatus.LIVE]
    (entry,) = await live.repos.audit.tail(event="order_outcome_unknown")
    assert entry.detail == {"why": "timeout"}
    assert live.metrics.registry.get_sample_value("polyd_outcome_unknown_total") == 1


async def test_an_unknown_outcome_not_found_yet_stays_unknown(live: Live) -> None:
    p = await journaled(live)
    with capture_logs() as logs:
        res = await reconciler(live, FakeClock(7)).outcome_unknown(p, "timeout")
    (line,) = [e for e in logs if e["event"] == "order_outcome_unknown"]
    assert (line["client_order_id"], line["venue_order_id"], line["why"]) == (
        p.request.client_order_id,
        p.venue_order_id,
        "timeout",
    )
    (u,) = live.ex.tracker.lookups_due(60)  # looked up once, then again on its back-off
    assert u.since == 7 and 7 < u.due < 8
    assert (res.status, res.venue_order_id, res.reason) == (
        OrderStatus.UNKNOWN,
        p.venue_order_id,
        "outcome unknown; reconciling by order hash",
    )
    assert live.ex.tracker.unknown_count == 1
    assert live.ex.positions.open_count == 1


async def test_a_failed_lookup_is_tried_again_on_its_back_off(live: Live) -> None:
    p = await journaled(live)
    clock = FakeClock(50)
    r = reconciler(live, clock)
    await r.outcome_unknown(p, "timeout")
    (u,) = live.ex.tracker.lookups_due(60)
    route = f"GET /data/order/{p.venue_order_id}"
    live.sim.faults.add(kind="status", route=route, status=500, count=1)
    with capture_logs() as logs:
        assert await r.try_settle(u) is None
    (line,) = [e for e in logs if e["event"] == "order_lookup_failed"]
    assert (line["client_order_id"], line["error"]) == (
        p.request.client_order_id,
        "TransientError",
    )
    assert 50 < u.due < 51 and live.ex.tracker.unknown_count == 1


async def test_a_lookup_of_an_order_nobody_journaled_is_dropped(live: Live) -> None:
    r = reconciler(live, FakeClock(0))
    live.ex.tracker.look_up_later(Lookup("ghost-order", "0x" + "12" * 32, 0, 0, Backoff(1, 2)))
    await r.settle_unknowns()
    assert live.ex.tracker.unknown_count == 0 and "ghost-order" not in live.ex.tracker
    assert not [q for q in live.sim.request_log if q.path.startswith("/data/order/")]


@pytest.mark.parametrize("error", [RateLimited("429"), VenueUnavailable("503")])
async def test_errors_that_say_the_venue_took_nothing_reject_without_a_lookup(
    live: Live, error: TransientError
) -> None:
    p = await journaled(live)
    res = await reconciler(live, FakeClock(0)).after_errors(p, error)
    assert res.status is OrderStatus.REJECTED
    assert res.reason == f"venue: {type(error).__name__}: {error}"
    lookups = [r for r in live.sim.request_log if r.path.startswith("/data/order/")]
    assert lookups == []


async def test_other_venue_errors_look_before_calling_it_rejected(live: Live) -> None:
    taken, lost = await journaled(live), await journaled(live, price=Decimal("0.30"))
    await live.broker.send(taken)  # the venue did take this one despite the 5xx
    r = reconciler(live, FakeClock(0))
    res = await r.after_errors(taken, TransientError("500"))
    assert res.status is OrderStatus.LIVE and res.reason == "found after venue errors"
    res = await r.after_errors(lost, TransientError("500"))
    assert res.status is OrderStatus.REJECTED and res.reason == "venue: TransientError: 500"


async def test_a_failed_lookup_after_venue_errors_leaves_the_outcome_unknown(live: Live) -> None:
    p = await journaled(live)
    route = f"GET /data/order/{p.venue_order_id}"
    live.sim.faults.add(kind="status", route=route, status=500, count=100)
    res = await reconciler(live, FakeClock(0)).after_errors(p, TransientError("500"))
    assert res.status is OrderStatus.UNKNOWN
    row = await live.repos.orders.get(p.request.client_order_id)
    assert row is not None and row.detail == "lookup failed after 500"


# orders the venue holds back --------------------------------------------------------------------
async def delayed_order(live: Live, clock: FakeClock, delay_s: float) -> tuple[Reconciler, str]:
    """A FAK BUY of 10 at 0.50 against an ask of 10, on a market with a taker delay."""
    live.market.taker_delay_s = delay_s
    r = reconciler(live, clock)
    live.sim.seed_order(MAKER, live.token, "SELL", Decimal("0.50"), Decimal("10"))
    res = await live.ex.submit(
        live.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FAK)
    )
    assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"
    return r, res.client_order_id


def lookups(live: Live) -> int:
    return sum(1 for q in live.sim.request_log if q.path.startswith("/data/order/"))


async def test_a_delayed_order_is_looked_up_once_its_delay_and_margin_passed(live: Live) -> None:
    clock = FakeClock(0)
    r, coid = await delayed_order(live, clock, 0.3)
    assert r.delayed_count == 1
    await until_venue_matched(live)
    clock.advance(5.0)  # the margin, but not the market's delay on top
    await r.settle_unknowns()
    assert lookups(live) == 0 and r.delayed_count == 1
    assert (await row_of(live, coid))[0] is OrderStatus.LIVE

    clock.advance(0.3)
    await r.settle_unknowns()
    status, _, matched = await row_of(live, coid)
    assert (status, matched) == (OrderStatus.FILLED, Decimal("10"))
    assert r.delayed_count == 0 and lookups(live) == 1
    # its fills were read by market on the way (they settled it): the position is booked
    assert live.ex.position(live.token, strategy="test").size == Decimal("10")


async def test_a_delayed_order_settled_meanwhile_is_dropped_without_a_lookup(live: Live) -> None:
    clock = FakeClock(0)
    r, coid = await delayed_order(live, clock, 0.3)
    await until_venue_matched(live)
    await r.reconcile()  # a pass settles it first
    assert (await row_of(live, coid))[0] is OrderStatus.FILLED
    before = lookups(live)
    clock.advance(60)
    await r.settle_delayed()
    assert r.delayed_count == 0 and lookups(live) == before


async def test_a_delayed_order_still_held_is_checked_every_margin_then_left(live: Live) -> None:
    clock = FakeClock(0)
    r, coid = await delayed_order(live, clock, 3600)  # the venue holds it all test long
    clock.advance(3605)
    await r.settle_delayed()
    assert lookups(live) == 1 and r.delayed_count == 1
    await r.settle_delayed()  # not due again until another margin
    assert lookups(live) == 1
    for n in range(2, 21):
        clock.advance(5)
        await r.settle_delayed()
        assert lookups(live) == n
    clock.advance(5)
    await r.settle_delayed()  # the 21st check: left to the periodic reconcile
    assert lookups(live) == 20 and r.delayed_count == 0
    assert (await row_of(live, coid))[0] is OrderStatus.LIVE  # reserved until it settles
    assert live.ex.positions.open_count == 1


async def until_venue_matched(live: Live) -> None:
    """Wait (real time: the simulator's own delay) until the venue matched our order."""
    async with asyncio.timeout(10):
        while not any(o["status"] == "MATCHED" for o in live.our_orders()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_delayed_order_the_venue_killed_unfilled_is_settled_by_its_lookup(
    live: Live,
) -> None:
    clock = FakeClock(0)
    live.market.taker_delay_s = 0.3
    r = reconciler(live, clock)
    ask = live.sim.seed_order(MAKER, live.token, "SELL", Decimal("0.50"), Decimal("10"))
    res = await live.ex.submit(
        live.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FAK)
    )
    assert res.reason == "delayed by the venue"
    assert live.sim.cancel_seeded(ask)  # the liquidity is gone before the delay ends
    async with asyncio.timeout(10):
        while not any(o["status"] != "DELAYED" for o in live.our_orders()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    clock.advance(5.3)
    await r.settle_unknowns()
    assert await row_of(live, res.client_order_id) == (
        OrderStatus.CANCELED,
        "delayed order looked up",
        Decimal(0),
    )
    assert r.delayed_count == 0 and live.ex.positions.open_count == 0


async def delayed_pair(
    live: Live, clock: FakeClock, first: str
) -> tuple[Reconciler, OrderRequest, str]:
    """Two delayed orders, A then B, with B due now and A skipped by this sweep for `first`
    ("settled", "not_due", "given_up" or "lookup_failed"); returns A's request, and B's venue
    order id."""
    live.market.taker_delay_s = 3600  # the venue holds both all test long
    r = reconciler(live, clock)

    async def delayed(delay_s: float) -> OrderRequest:
        meta = await live.ex.rules.ensure(live.token)
        assert meta is not None
        live.ex.rules.put(replace(meta, taker_delay_s=delay_s))  # the delay the daemon read
        live.sim.seed_order(MAKER, live.token, "SELL", Decimal("0.50"), Decimal("10"))
        req = live.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FAK)
        res = await live.ex.submit(req)
        assert res.reason == "delayed by the venue"
        return req

    a = await delayed(3600 if first == "not_due" else 0.0)
    if first == "given_up":
        for _ in range(20):
            clock.advance(5)
            await r.settle_delayed()
    b = await delayed(0.0)
    row_a = await live.repos.orders.get(a.client_order_id)
    row_b = await live.repos.orders.get(b.client_order_id)
    assert row_a is not None and row_a.venue_order_id is not None
    assert row_b is not None and row_b.venue_order_id is not None
    if first == "settled":
        await live.ex.tracker.transition(a, OrderStatus.CANCELED, detail="order event")
    if first == "lookup_failed":
        route = f"GET /data/order/{row_a.venue_order_id}"
        live.sim.faults.add(kind="status", route=route, status=500, count=100)
    clock.advance(5)
    return r, a, row_b.venue_order_id


@pytest.mark.parametrize("first", ["settled", "not_due", "given_up", "lookup_failed"])
async def test_one_delayed_order_does_not_hold_up_the_next_in_a_sweep(
    live: Live, first: str
) -> None:
    clock = FakeClock(0)
    r, a, b_venue_id = await delayed_pair(live, clock, first)
    with capture_logs() as logs:
        await r.settle_delayed()
    looked_up_b = [q for q in live.sim.request_log if q.path == f"/data/order/{b_venue_id}"]
    assert len(looked_up_b) == 1
    events = [(e["event"], e.get("client_order_id")) for e in logs]
    if first == "given_up":
        assert ("order_delayed_unsettled", a.client_order_id) in events
        assert r.delayed_count == 1  # only B is still watched
    if first == "lookup_failed":
        failed = [e for e in logs if e["event"] == "order_delayed_lookup_failed"]
        assert [(e["client_order_id"], e["error"]) for e in failed] == [
            (a.client_order_id, "TransientError")
        ]
        assert r.delayed_count == 2  # A is tried again after another margin
    if first in ("settled", "not_due"):
        assert r.delayed_count == (1 if first == "settled" else 2)


async def test_a_delayed_order_of_a_market_the_rules_do_not_know_waits_the_margin(
    live: Live,
) -> None:
    clock = FakeClock(0)
    _, coid = await delayed_order(live, clock, 3600)
    row = await live.repos.orders.get(coid)
    assert row is not None and row.venue_order_id is not None
    # watched again as if its market were unknown: no delay, just the margin
    bare = Reconciler(
        sender=live.ex,
        settle=live.ex.settle,
        repos=live.repos,
        broker=live.broker,
        tracker=live.ex.tracker,
        guard=live.ex.guard,
        breaker=live.ex.breaker,
        metrics=live.metrics,
        clock=clock,
        unknown_grace_s=GRACE_S,
        resend_window_s=WINDOW_S,
    )
    req = await live.ex.tracker.request_for(coid)
    assert req is not None
    with capture_logs() as logs:
        bare.watch_delayed(req, Ack(row.venue_order_id, VenueStatus.DELAYED))
    assert [(e["event"], e["client_order_id"], e["venue_order_id"]) for e in logs] == [
        ("order_delayed", coid, row.venue_order_id)
    ]
    clock.advance(5)
    await bare.settle_delayed()
    assert lookups(live) == 1  # due at the margin
    assert live.sim.request_log and not [
        q for q in live.sim.request_log if q.path.startswith("/data/trades")
    ]  # no market to read fills in
