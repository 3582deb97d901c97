"""The reconciler (`execution.reconciler`, which decides what to ask the venue and when) against
the simulator's CLOB over loopback, with the live executor's own tracker, settlement, guard and
breaker, and a fake clock for its lookup schedule.

Each pass is checked by what it leaves: the journal rows and their audit entries, the counts it
reports, the lookups it schedules, the orders the venue holds. The mistakes these catch are
money mistakes: an order the venue holds written off as rejected (its reservation freed while it
can still fill), a young order re-sent twice or never, an order that is gone kept reserving
buying power, fills read from the wrong point and missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from execution.ports import Prepared
from execution.reconciler import FILLS_CURSOR, Reconciler, age_s
from execution.risk import TradingState
from execution.tracker import Lookup
from models import OrderStatus, OrderType, Side
from resilience import Backoff
from resilience.clock import FakeClock
from simulator import Simulator
from storage.keys import daemon_key
from tests.integration.test_executor_live import MAKER, Live, close_live, make_live, seed_asks

GRACE_S = 10.0
WINDOW_S = 5.0
NO_ORDERS = {
    "settled": 0,
    "unchanged": 0,
    "pending": 0,
    "resent": 0,
    "unknown_at_venue": 0,
    "other_daemons": 0,  # another daemon's orders on a shared account: none here
}


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=11, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path, sim, order_lookup_grace_s=GRACE_S, order_resend_window_s=WINDOW_S
        )
        try:
            yield lv
        finally:
            await close_live(lv)


def reconciler(live: Live, clock: FakeClock) -> Reconciler:
    """The executor's reconciler as wired, on a fake clock."""
    ex = live.ex
    r = Reconciler(
        sender=ex,
        settle=ex.settle,
        repos=live.repos,
        broker=live.broker,
        tracker=ex.tracker,
        guard=ex.guard,
        breaker=ex.breaker,
        metrics=live.metrics,
        clock=clock,
        unknown_grace_s=GRACE_S,
        resend_window_s=WINDOW_S,
        rules=ex.rules,
    )
    ex.settle.on_delayed = r.watch_delayed
    return r


async def journaled(live: Live, **kw: Any) -> Prepared:
    """An order signed and journaled PENDING, never sent (a crash before the POST)."""
    req = live.req(**kw)
    meta = await live.ex.rules.ensure(req.token_id)
    assert meta is not None
    prepared = await live.broker.prepare(req, meta)
    live.ex.tracker.admit(prepared)
    await live.ex.tracker.journal_pending(prepared)
    return prepared


async def backdate(live: Live, coid: str, seconds: float) -> None:
    row = await live.repos.orders.get(coid)
    assert row is not None
    then = datetime.fromisoformat(row.created_at) - timedelta(seconds=seconds)
    await live.db.write(
        lambda c: c.execute(
            "UPDATE orders SET created_at = ? WHERE client_order_id = ?",
            (then.isoformat(timespec="microseconds"), coid),
        )
    )


async def row_of(live: Live, coid: str) -> tuple[OrderStatus, str, Decimal]:
    row = await live.repos.orders.get(coid)
    assert row is not None
    return row.status, row.detail, row.size_matched


def rejected_count(live: Live) -> float:
    v = live.metrics.registry.get_sample_value("polyd_reconciled_total", {"status": "REJECTED"})
    return v or 0.0


def orders_only(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k != "fills"}


# one pass -------------------------------------------------------------------------------------
async def test_rows_never_given_an_order_hash_are_rejected(live: Live) -> None:
    reqs = [live.req(), live.req()]
    for req in reqs:
        await live.repos.orders.record(req)  # journaled, then the process died before signing
    r = reconciler(live, FakeClock(100))
    counts = await r.reconcile()
    assert orders_only(counts) == NO_ORDERS | {"settled": 2}
    for req in reqs:
        assert await row_of(live, req.client_order_id) == (
            OrderStatus.REJECTED,
            "venue: never sent (no order hash)",
            Decimal(0),
        )
    assert r.reconciled.is_set() and r.last_run == 100
    (entry,) = await live.repos.audit.tail(event="reconciled")
    assert entry.detail == {"counts": counts}


async def test_a_resting_order_is_left_alone_until_the_venue_has_news(live: Live) -> None:
    res = await live.ex.submit(live.req(price=Decimal("0.40"), size=Decimal("10")))
    other = await live.ex.submit(live.req(price=Decimal("0.30"), size=Decimal("10")))
    assert res.status is other.status is OrderStatus.LIVE
    r = reconciler(live, FakeClock(0))
    counts = await r.reconcile()
    assert orders_only(counts) == NO_ORDERS | {"unchanged": 2}
    assert await live.repos.audit.tail(event="order_reconciled") == []

    # another wallet sells 4 into our bid; the user feed is down, so only a pass hears of it
    live.sim.seed_order(
        maker=MAKER, token_id=live.token, side="SELL", price=Decimal("0.40"), size=Decimal("4")
    )
    counts = await r.reconcile()
    assert orders_only(counts) == NO_ORDERS | {"settled": 1, "unchanged": 1}
    assert counts["fills"] == 1
    status, _, matched = await row_of(live, res.client_order_id)
    assert (status, matched) == (OrderStatus.PARTIALLY_FILLED, Decimal("4"))
    (entry,) = await live.repos.audit.tail(event="order_reconciled")
    assert (entry.detail["size_matched"], entry.detail["why"]) == ("4", "reconciled")
    assert live.ex.position(live.token, strategy="test").size == Decimal("4")
    assert live.ex.positions.open_buy_notional() == Decimal("5.40")  # 6 at 0.40, 10 at 0.30
    await live.assert_journal_matches_ledger()


async def test_an_order_being_sent_here_is_left_to_its_send(live: Live) -> None:
    res = await live.ex.submit(live.req())
    assert await live.ex.wait_idle(5)  # its own send is over (the outcome row durable)
    live.ex.tracker.set_sending(res.client_order_id, True)
    unsigned = live.req()
    await live.repos.orders.record(unsigned)  # journaled after it: still settled
    counts = await reconciler(live, FakeClock(0)).reconcile()
    # not settled, not counted, and its venue order is not a stranger
    assert orders_only(counts) == NO_ORDERS | {"settled": 1}
    assert (await row_of(live, unsigned.client_order_id))[0] is OrderStatus.REJECTED
    assert await live.repos.audit.tail(event="venue_order_not_in_journal") == []


async def test_a_venue_order_the_journal_never_saw_is_reported(live: Live) -> None:
    """An order placed with our key by something else (another process, a manual order)."""
    req = live.req()
    meta = await live.ex.rules.ensure(req.token_id)
    assert meta is not None
    strangers = [await live.broker.prepare(live.req(price=x), meta) for x in ("0.40", "0.20")]
    for stranger in strangers:
        await live.broker.send(stranger)
    # one of ours the journal calls canceled while the venue still lists it: not a stranger
    known = await live.ex.submit(live.req(price=Decimal("0.30")))
    await live.repos.orders.transition(known.client_order_id, OrderStatus.CANCELED)

    with capture_logs() as logs:
        counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["unknown_at_venue"] == 2
    entries = await live.repos.audit.tail(event="venue_order_not_in_journal")
    ids = sorted(x.venue_order_id for x in strangers)
    assert sorted(str(e.detail["venue_order_id"]) for e in entries) == ids
    lines = [e for e in logs if e["event"] == "venue_order_not_in_journal"]
    assert sorted(e["venue_order_id"] for e in lines) == ids
    (summary,) = [e for e in logs if e["event"] == "reconciled"]
    assert {k: summary[k] for k in counts} == counts


async def test_an_old_order_the_venue_never_saw_is_rejected_and_released(live: Live) -> None:
    p = await journaled(live, price=Decimal("0.40"), size=Decimal("10"))
    q = await journaled(live, price=Decimal("0.20"), size=Decimal("10"))
    coid = p.request.client_order_id
    await backdate(live, coid, GRACE_S + 1)
    await backdate(live, q.request.client_order_id, GRACE_S + 1)
    assert live.ex.positions.open_buy_notional() == Decimal("6.00")
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert orders_only(counts) == NO_ORDERS | {"settled": 2}
    assert await row_of(live, coid) == (
        OrderStatus.REJECTED,
        "venue: not found at the venue",
        Decimal(0),
    )
    assert rejected_count(live) == 2
    assert live.ex.positions.open_count == 0
    assert live.posts() == 0  # too old to re-send


async def test_a_resting_order_the_venue_no_longer_knows_is_canceled(live: Live) -> None:
    req = live.req()
    await live.repos.orders.record(req, venue_order_id="0x" + "cd" * 32, payload_hash="h")
    await live.repos.orders.transition(req.client_order_id, OrderStatus.LIVE)
    await backdate(live, req.client_order_id, GRACE_S + 1)
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert orders_only(counts) == NO_ORDERS | {"settled": 1}
    assert await row_of(live, req.client_order_id) == (
        OrderStatus.CANCELED,
        "no longer known to the venue",
        Decimal(0),
    )
    assert rejected_count(live) == 1
    assert live.ex.positions.open_count == 0


async def test_a_young_order_the_venue_never_saw_is_resent_once(live: Live) -> None:
    seed_asks(live)
    p = await journaled(live, order_type=OrderType.FOK)
    resting_one = await journaled(live, price=Decimal("0.30"))
    r = reconciler(live, FakeClock(0))
    with capture_logs() as logs:
        counts = await r.reconcile()
    assert orders_only(counts) == NO_ORDERS | {"settled": 2, "resent": 2}
    assert live.posts() == 2
    status, _, matched = await row_of(live, p.request.client_order_id)
    assert (status, matched) == (OrderStatus.FILLED, Decimal("10"))
    assert (await row_of(live, resting_one.request.client_order_id))[0] is OrderStatus.LIVE
    assert live.ex.tracker.unknown_count == 0
    resent = list(reversed(await live.repos.audit.tail(event="order_resent")))
    lines = [e for e in logs if e["event"] == "order_resent"]
    for sent, entry, line in zip((p, resting_one), resent, lines, strict=True):
        coid = sent.request.client_order_id
        assert (entry.client_order_id, entry.strategy) == (coid, "test")
        age = entry.detail["age_s"]
        assert isinstance(age, float) and 0 <= age < WINDOW_S
        assert entry.detail == {
            "venue_order_id": sent.venue_order_id,
            "payload_hash": sent.payload_hash,
            "age_s": age,
        }
        fields = ("client_order_id", "venue_order_id", "payload_hash", "age_s")
        assert tuple(line[k] for k in fields) == (
            coid,
            sent.venue_order_id,
            sent.payload_hash,
            age,
        )
    sample = live.metrics.registry.get_sample_value(
        "polyd_venue_retries_total", {"endpoint": "post_order", "reason": "resend"}
    )
    assert sample == 2
    assert not live.ex.tracker.is_sending(p.request.client_order_id)
    await live.assert_journal_matches_ledger()
    assert (await r.reconcile())["resent"] == 0 and live.posts() == 2


async def test_a_resend_in_flight_is_known_as_a_send(live: Live) -> None:
    """While the re-sent POST is out, the order's own feed events are left to it."""
    p = await journaled(live)
    coid = p.request.client_order_id
    live.sim.faults.add(kind="latency", route="POST /order", seconds=0.3, count=1)
    task = asyncio.create_task(reconciler(live, FakeClock(0)).reconcile())
    async with asyncio.timeout(5):
        while not live.ex.tracker.is_sending(coid):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    assert (await task)["resent"] == 1
    assert not live.ex.tracker.is_sending(coid)


async def test_a_pass_can_be_given_a_shorter_grace(live: Live) -> None:
    p = await journaled(live)
    await backdate(live, p.request.client_order_id, 1)
    counts = await reconciler(live, FakeClock(0)).reconcile(grace_s=0.5)
    assert orders_only(counts) == NO_ORDERS | {"settled": 1}
    assert (await row_of(live, p.request.client_order_id))[0] is OrderStatus.REJECTED
    assert live.posts() == 0  # the window is within the grace too


async def test_a_resend_ends_the_lookups_of_its_order(live: Live) -> None:
    p = await journaled(live)
    coid = p.request.client_order_id
    await live.ex.tracker.transition(p.request, OrderStatus.UNKNOWN)
    live.ex.tracker.look_up_later(Lookup(coid, p.venue_order_id, 0, 0, Backoff(1, 2)))
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1
    assert live.ex.tracker.unknown_count == 0
    assert (await row_of(live, coid))[0] is OrderStatus.LIVE


async def test_an_order_past_the_resend_window_is_looked_up_not_resent(live: Live) -> None:
    p, other = await journaled(live), await journaled(live, price=Decimal("0.30"))
    coid = p.request.client_order_id
    await backdate(live, coid, WINDOW_S + 1)
    await backdate(live, other.request.client_order_id, WINDOW_S + 1)
    clock = FakeClock(1000)
    counts = await reconciler(live, clock).reconcile()
    assert orders_only(counts) == NO_ORDERS | {"pending": 2}
    assert live.posts() == 0
    assert await row_of(live, coid) == (OrderStatus.UNKNOWN, "reconciling", Decimal(0))
    due, _ = live.ex.tracker.lookups_due(1000)
    assert due.client_order_id == coid and due.venue_order_id == p.venue_order_id
    # looked up since the row was journaled (about WINDOW_S + 1 ago), starting now
    assert 1000 - GRACE_S < due.since < 1000 - WINDOW_S and due.due == 1000
    assert live.ex.positions.open_count == 2  # the venue may still hold them


async def test_a_lookup_past_the_grace_rejects_and_one_within_waits(live: Live) -> None:
    p = await journaled(live)
    coid = p.request.client_order_id
    await backdate(live, coid, WINDOW_S + 1)
    clock = FakeClock(1000)
    r = reconciler(live, clock)
    await r.reconcile()
    (u,) = live.ex.tracker.lookups_due(1000)
    assert await r.try_settle(u) is None  # within the grace: tried again later
    assert u.due > 1000 and live.ex.tracker.unknown_count == 1
    assert await row_of(live, coid) == (OrderStatus.UNKNOWN, "reconciling", Decimal(0))

    clock.advance(u.since + GRACE_S - clock.monotonic())  # exactly the grace
    await r.settle_unknowns()
    assert await row_of(live, coid) == (
        OrderStatus.REJECTED,
        f"venue: not found at the venue after {GRACE_S:g}s",
        Decimal(0),
    )
    assert live.ex.tracker.unknown_count == 0 and rejected_count(live) == 1
    assert live.ex.positions.open_count == 0


async def test_an_unknown_row_within_the_window_is_not_moved_back(live: Live) -> None:
    """An UNKNOWN row with nothing to re-send (no signed order kept) stays UNKNOWN."""
    req = live.req()
    await live.repos.orders.record(req, venue_order_id="0x" + "ef" * 32, payload_hash="h")
    await live.repos.orders.transition(req.client_order_id, OrderStatus.UNKNOWN, detail="lost")
    counts = await reconciler(live, FakeClock(5)).reconcile()
    assert orders_only(counts) == NO_ORDERS | {"pending": 1}
    assert await row_of(live, req.client_order_id) == (OrderStatus.UNKNOWN, "lost", Decimal(0))
    assert await live.repos.audit.tail(event="order_resend_refused") == []  # nothing to try
    assert [u.client_order_id for u in live.ex.tracker.lookups_due(5)] == [req.client_order_id]


# resends held back --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "side", "resent"),
    [
        (TradingState.HALTED, Side.SELL, False),
        (TradingState.REDUCING, Side.BUY, False),
        (TradingState.REDUCING, Side.SELL, True),
    ],
)
async def test_a_resend_follows_the_trading_state(
    live: Live, state: TradingState, side: Side, resent: bool
) -> None:
    if side is Side.SELL:  # something to sell: buy it first
        seed_asks(live)
        bought = await live.ex.submit(live.req(order_type=OrderType.FOK))
        assert bought.status is OrderStatus.FILLED
    p = await journaled(live, side=side, price=Decimal("0.60"))
    posts = live.posts()
    await live.ex.guard.set_state(state, "test")
    with capture_logs() as logs:
        counts = await reconciler(live, FakeClock(0)).reconcile()
    held = [e for e in logs if e["event"] == "order_resend_held"]
    want = [] if resent else [(p.request.client_order_id, state.value)]
    assert [(e["client_order_id"], e["trading_state"]) for e in held] == want
    assert counts["resent"] == int(resent)
    assert live.posts() == posts + int(resent)
    status = (await row_of(live, p.request.client_order_id))[0]
    assert status is (OrderStatus.LIVE if resent else OrderStatus.UNKNOWN)


async def test_no_resend_while_the_breaker_is_open(live: Live) -> None:
    p = await journaled(live)
    for _ in range(5):
        live.ex.breaker.record_failure()
    assert not live.ex.breaker.allow()
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 0 and live.posts() == 0
    assert (await row_of(live, p.request.client_order_id))[0] is OrderStatus.UNKNOWN


async def test_an_expired_gtd_order_is_not_resent(live: Live) -> None:
    p = await journaled(live, order_type=OrderType.GTD, expiration=int(time.time()) + 3600)
    await live.db.write(
        lambda c: c.execute(
            "UPDATE orders SET expiration = ? WHERE client_order_id = ?",
            (int(time.time()) - 1, p.request.client_order_id),
        )
    )
    live.ex.tracker.forget(p.request.client_order_id)  # as after a restart: read from the row
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 0 and live.posts() == 0


async def test_a_young_gtd_order_is_resent(live: Live) -> None:
    p = await journaled(live, order_type=OrderType.GTD, expiration=int(time.time()) + 3600)
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1 and live.posts() == 1
    assert (await row_of(live, p.request.client_order_id))[0] is OrderStatus.LIVE


async def test_a_hold_on_resting_orders_holds_their_resends_only(live: Live) -> None:
    """Exchange heartbeats lapsed: a resting order is not re-sent, a marketable one is."""
    seed_asks(live)
    gtc, fok = await journaled(live), await journaled(live, order_type=OrderType.FOK)
    live.ex.guard.hold_resting("heartbeats lapsed")
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1 and live.posts() == 1
    assert (await row_of(live, gtc.request.client_order_id))[0] is OrderStatus.UNKNOWN
    assert (await row_of(live, fok.request.client_order_id))[0] is OrderStatus.FILLED


async def test_a_resend_the_venue_already_holds_is_settled_from_it(live: Live) -> None:
    """The venue took the first send, but neither its listing nor a lookup showed it (a FOK
    is never listed; the lookup missed): the re-send is refused as a duplicate, and ours."""
    seed_asks(live)
    p = await journaled(live, order_type=OrderType.FOK)
    await live.broker.send(p)
    route = f"GET /data/order/{p.venue_order_id}"
    live.sim.faults.add(kind="status", route=route, status=404, count=1)
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1
    assert await row_of(live, p.request.client_order_id) == (
        OrderStatus.FILLED,
        "re-sent: venue already had it",
        Decimal("10"),
    )
    assert len(live.our_orders()) == 1


async def test_a_resend_the_venue_refuses_is_rejected(live: Live) -> None:
    p = await journaled(live)
    live.sim.faults.add(
        kind="status", route="POST /order", status=400, count=1, body='{"error": "invalid order"}'
    )
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1
    status, detail, _ = await row_of(live, p.request.client_order_id)
    assert status is OrderStatus.REJECTED and detail.endswith("(re-sent)")
    assert live.ex.positions.open_count == 0


async def test_a_stored_order_that_does_not_match_its_row_is_not_resent(live: Live) -> None:
    p = await journaled(live)
    coid = p.request.client_order_id
    await live.db.write(
        lambda c: c.execute(
            "UPDATE orders SET payload_hash = 'tampered' WHERE client_order_id = ?", (coid,)
        )
    )
    with capture_logs() as logs:
        counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 0 and counts["pending"] == 1 and live.posts() == 0
    (entry,) = await live.repos.audit.tail(event="order_resend_refused")
    assert entry.client_order_id == coid and entry.strategy == "test"
    assert "payload hash" in str(entry.detail["why"])
    (line,) = [e for e in logs if e["event"] == "order_resend_refused"]
    assert (line["client_order_id"], line["why"]) == (coid, entry.detail["why"])


async def test_a_resend_whose_answer_is_lost_is_looked_up(live: Live) -> None:
    p = await journaled(live)
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=2, count=1)
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1 and [o["status"] for o in live.our_orders()] == ["LIVE"]
    assert await row_of(live, p.request.client_order_id) == (
        OrderStatus.LIVE,
        "re-sent, then looked up",
        Decimal(0),
    )
    assert live.ex.breaker.consecutive_failures == 1


async def test_a_resend_failing_on_venue_errors_is_looked_up(live: Live) -> None:
    """The venue takes the re-sent order but answers 500 to it and every retry."""
    p = await journaled(live)
    live.sim.faults.add(kind="accept_then_status", route="POST /order", status=500, count=1)
    counts = await reconciler(live, FakeClock(0)).reconcile()
    assert counts["resent"] == 1
    assert await row_of(live, p.request.client_order_id) == (
        OrderStatus.LIVE,
        "re-sent, then looked up",
        Decimal(0),
    )
    assert [o["status"] for o in live.our_orders()] == ["LIVE"]


async def test_a_resend_the_venue_never_took_stays_unknown(live: Live) -> None:
    p = await journaled(live)
    live.sim.faults.add(kind="status", route="POST /order", status=503, count=100)
    route = f"GET /data/order/{p.venue_order_id}"
    live.sim.faults.add(kind="status", route=route, status=404, count=1)  # the pass's lookup
    live.sim.faults.add(kind="status", route=route, status=500, count=1)  # after the re-send
    with capture_logs() as logs:
        counts = await reconciler(live, FakeClock(0)).reconcile()
    unsettled = [e for e in logs if e["event"] == "order_resend_unsettled"]
    assert [(e["client_order_id"], e["error"]) for e in unsettled] == [
        (p.request.client_order_id, "VenueUnavailable")
    ]
    assert counts["resent"] == 0 and counts["pending"] == 1
    assert live.our_orders() == []
    errors = live.metrics.registry.get_sample_value(
        "polyd_venue_errors_total", {"endpoint": "post_order", "kind": "VenueUnavailable"}
    )
    assert errors == 1 and live.ex.breaker.consecutive_failures == 1
    assert (await row_of(live, p.request.client_order_id))[0] is OrderStatus.UNKNOWN
    assert live.ex.tracker.unknown_count == 1


# fills ------------------------------------------------------------------------------------------
async def test_fills_are_read_from_the_checkpoint_with_an_overlap(live: Live) -> None:
    seed_asks(live)
    res = await live.ex.submit(live.req(order_type=OrderType.FOK))
    assert res.status is OrderStatus.FILLED
    live.ex.positions.load([])  # forget what the send booked: the fills read rebuild it
    r = reconciler(live, FakeClock(0))
    source = daemon_key(FILLS_CURSOR, live.repos.daemon_id)
    assert await live.repos.cursors.get(source) is None
    assert await r.sync_fills() == 1  # no checkpoint yet: the last day is read
    (fill,) = await live.repos.fills.all()
    assert await live.repos.cursors.get(source) == str(int(fill.ts.timestamp()))
    # the next read starts a minute before the checkpoint: the same fill again, booked once
    assert await r.sync_fills() == 1
    assert len(await live.repos.fills.all()) == 1


async def test_fills_older_than_the_checkpoints_overlap_are_not_read_again(live: Live) -> None:
    r = reconciler(live, FakeClock(0))
    source = daemon_key(FILLS_CURSOR, live.repos.daemon_id)
    assert await r.sync_fills() == 0
    assert await live.repos.cursors.get(source) is None  # nothing read, nothing to mark
    seed_asks(live)
    assert (await live.ex.submit(live.req(order_type=OrderType.FOK))).status is (OrderStatus.FILLED)
    (trade,) = await live.broker.fills_since(0)
    at = int(trade.ts.timestamp())
    # a checkpoint two minutes past the trade: the read starts after it
    await live.repos.cursors.advance(source, value=str(at + 120))
    assert await r.sync_fills() == 0
    assert await live.repos.fills.all() == []
    # half a minute past it: within the overlap, read (and the checkpoint does not go back)
    await live.repos.cursors.advance(source, value=str(at + 30))
    assert await r.sync_fills() == 1
    assert await live.repos.cursors.get(source) == str(at + 30)


def test_age_of_an_unreadable_timestamp_is_infinite() -> None:
    assert age_s("not a time") == float("inf")
    assert 0 <= age_s(datetime.now().astimezone().isoformat()) < 60
