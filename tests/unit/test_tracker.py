"""The order tracker (`execution.tracker`, the in-memory mirror of the order journal) on its own,
over a real SQLite journal: the PENDING row and what it commits, start-up tracking of open rows,
requests rebuilt from the journal, sends in progress as the feed asks about them, unknown
outcomes awaiting a lookup, and every transition keeping journal, record, open-order
commitments and counters in step (or leaving all of them alone when it is refused).

A bookkeeping slip here is a money bug: an order that leaves the tracker but not the position
book keeps reserving buying power forever; one that leaves the book but is still live lets risk
admit more than the limits allow.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from execution.ports import Prepared
from execution.positions import PositionBook
from execution.tracker import Lookup, OrderTracker
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience import Backoff
from storage import Repositories
from storage.audit import append_audit
from tests.helpers import make_order
from tests.unit.test_executor_lifecycle import DiskFullDatabase

Failures = list[tuple[str, dict[str, Any]]]


def make_tracker(
    repos: Repositories, *, tracing: Tracing | None = None
) -> tuple[OrderTracker, Failures]:
    failures: Failures = []
    tracker = OrderTracker(
        journal=repos.orders,
        positions=PositionBook(),
        metrics=Metrics(),
        on_storage_failure=lambda event, **fields: failures.append((event, fields)),
        tracing=tracing,
    )
    return tracker, failures


def prepared(req: OrderRequest, venue_order_id: str = "0xv1") -> Prepared:
    return Prepared(
        request=req,
        venue_order_id=venue_order_id,
        payload_hash="hash-" + venue_order_id,
        payload=b"{}",
        signed_order='{"signed": true}',
    )


async def pending(tracker: OrderTracker, req: OrderRequest, venue_order_id: str = "0xv1") -> None:
    p = prepared(req, venue_order_id)
    tracker.admit(p)
    await tracker.journal_pending(p)


def open_gauge(tracker: OrderTracker) -> float | None:
    return tracker.metrics.registry.get_sample_value("polyd_open_orders")


def outcomes(tracker: OrderTracker, outcome: str, strategy: str = "sniper") -> float | None:
    return tracker.metrics.registry.get_sample_value(
        "polyd_orders_total", {"strategy": strategy, "side": "BUY", "outcome": outcome}
    )


def lookup(coid: str, *, due: float, venue_order_id: str = "0xv1") -> Lookup:
    return Lookup(coid, venue_order_id, since=0.0, due=due, backoff=Backoff(1, 8))


# journal_pending ------------------------------------------------------------------------------
async def test_journal_pending_writes_the_signed_row_and_reserves_the_order(
    repos: Repositories,
) -> None:
    tracker, failures = make_tracker(repos)
    req = make_order(price="0.4", size="25")
    p = prepared(req, "0xabc")
    tracker.admit(p)
    await tracker.journal_pending(
        p, also=lambda c: append_audit(c, "state_consumed", {"k": 1}, client_order_id="x")
    )

    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.venue_order_id, row.payload_hash) == (
        OrderStatus.PENDING,
        "0xabc",
        "hash-0xabc",
    )
    assert await repos.orders.signed_order(req.client_order_id) == '{"signed": true}'
    journaled = await repos.audit.tail(event="order_journaled")
    assert [(e.client_order_id, e.detail) for e in journaled] == [
        (req.client_order_id, {"venue_order_id": "0xabc"})
    ]
    assert [e.detail for e in await repos.audit.tail(event="state_consumed")] == [{"k": 1}]

    assert tracker.status(req.client_order_id) is OrderStatus.PENDING
    assert req.client_order_id in tracker and len(tracker) == 1
    assert tracker.positions.open_buy_notional() == Decimal("10.0")
    assert tracker.positions.open_buy_notional(token_id=req.token_id, strategy="sniper") == 10
    assert open_gauge(tracker) == 1
    assert failures == []


async def test_journal_writes_are_traced_and_link_the_venue_order_id_to_the_order(
    repos: Repositories,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_exporter(exporter)
    tracker, _ = make_tracker(repos, tracing=tracing)
    req = make_order()
    with tracing.span("execute_order") as root:
        await pending(tracker, req, "0xtraced")
        await tracker.transition(req, OrderStatus.LIVE)
    linked = tracing.orders.get("0xtraced")
    assert root is not None and linked is not None
    assert linked.span_id == root.get_span_context().span_id  # fills join the order's trace
    spans = [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()]
    assert spans[:2] == [("journal_pending", {}), ("journal_outcome", {"status": "LIVE"})]


async def test_a_failed_pending_write_halts_raises_and_reserves_nothing(tmp_path: Path) -> None:
    db = DiskFullDatabase(tmp_path / "polyd.db")
    async with db:
        tracker, failures = make_tracker(Repositories.over(db))
        req = make_order()
        p = prepared(req)
        tracker.admit(p)
        db.full = True
        with pytest.raises(Exception, match="disk is full"):
            await tracker.journal_pending(p)
        assert failures == [("storage_failed_halting", {"client_order_id": req.client_order_id})]
        assert tracker.status(req.client_order_id) is None
        assert tracker.positions.open_count == 0
        assert tracker.positions.open_buy_notional() == 0
        # the caller forgets it: nothing of it is left
        tracker.forget(req.client_order_id)
        assert req.client_order_id not in tracker and len(tracker) == 0


# admission ------------------------------------------------------------------------------------
async def test_an_admitted_order_answers_from_memory_until_forgotten(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    tracker.admit(prepared(req, "0xadm"))
    assert req.client_order_id in tracker
    assert tracker.status(req.client_order_id) is None  # admitted, not journaled
    assert await tracker.request_for(req.client_order_id) is req  # no journal row needed
    tracker.set_sending(req.client_order_id, True)
    assert tracker.sending_unsettled("0xadm")  # its admitted venue id is known

    tracker.look_up_later(lookup(req.client_order_id, due=5))
    tracker.forget(req.client_order_id)
    assert req.client_order_id not in tracker
    assert tracker.unknown_count == 0 and tracker.lookups_due(100) == []
    assert await tracker.request_for(req.client_order_id) is None
    tracker.forget("never-seen")  # harmless


# start-up tracking ---------------------------------------------------------------------------
async def test_load_tracks_every_open_row_at_its_remaining_size_and_no_finished_one(
    repos: Repositories,
) -> None:
    live, part, done, pend = (
        make_order(price="0.5", size="10"),
        make_order(price="0.2", size="30", side="SELL"),
        make_order(price="0.3", size="7"),
        make_order(price="0.1", size="5"),
    )
    await repos.orders.record(live, venue_order_id="0xlive")
    await repos.orders.transition(live.client_order_id, OrderStatus.LIVE)
    await repos.orders.record(part, venue_order_id="0xpart")
    await repos.orders.transition(
        part.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=Decimal("12")
    )
    await repos.orders.record(done, venue_order_id="0xdone")
    await repos.orders.transition(done.client_order_id, OrderStatus.FILLED)
    await repos.orders.record(pend, venue_order_id="0xpend")

    tracker, _ = make_tracker(repos)
    await tracker.load()

    assert len(tracker) == 3 and done.client_order_id not in tracker
    assert tracker.status(live.client_order_id) is OrderStatus.LIVE
    assert tracker.status(part.client_order_id) is OrderStatus.PARTIALLY_FILLED
    assert tracker.status(pend.client_order_id) is OrderStatus.PENDING
    book = tracker.positions
    assert {o.client_order_id: o.remaining for o in book.open_orders()} == {
        live.client_order_id: Decimal("10"),
        part.client_order_id: Decimal("18"),
        pend.client_order_id: Decimal("5"),
    }
    assert book.open_buy_notional() == Decimal("5.5")  # 10 x 0.5 + 5 x 0.1
    assert book.open_sell_size(part.token_id, strategy="sniper") == Decimal("18")
    # the venue id comes from the row: a re-send of it is recognised by the feed
    tracker.set_sending(pend.client_order_id, True)
    assert tracker.sending_unsettled("0xpend")


async def test_track_row_keeps_a_known_venue_id_when_the_row_has_none(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    tracker.admit(prepared(req, "0xmem"))
    await repos.orders.record(req)  # no venue id on the row
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    tracker.track_row(row)
    tracker.set_sending(req.client_order_id, True)
    assert tracker.sending_unsettled("0xmem")

    await repos.orders.transition(req.client_order_id, OrderStatus.LIVE, venue_order_id="0xrow")
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    tracker.set_sending(req.client_order_id, False)
    tracker.track_row(row)
    tracker.set_sending(req.client_order_id, True)
    assert tracker.status(req.client_order_id) is OrderStatus.LIVE
    # registered under the row's venue id now (and LIVE is past PENDING, so not unsettled)
    assert not tracker.sending_unsettled("0xmem")
    assert tracker.is_sending(req.client_order_id)


# requests from the journal ----------------------------------------------------------------------
async def test_request_for_rebuilds_every_field_from_the_journal(repos: Repositories) -> None:
    req = make_order(
        side="SELL",
        price="0.37",
        size="12.5",
        order_type="GTD",
        expiration=4_102_444_800,
        post_only=True,
        reason="take profit",
        strategy="copy:alpha",
    )
    await repos.orders.record(req, venue_order_id="0xr")
    await repos.orders.transition(req.client_order_id, OrderStatus.LIVE)
    tracker, _ = make_tracker(repos)

    rebuilt = await tracker.request_for(req.client_order_id)
    assert rebuilt is not None
    assert rebuilt.model_dump() == req.model_dump()
    assert req.client_order_id in tracker  # an open order is tracked from now on
    assert await tracker.request_for(req.client_order_id) is rebuilt  # from memory
    assert await tracker.request_for("unknown-order") is None
    assert "unknown-order" not in tracker


async def test_request_for_a_finished_order_does_not_track_it_again(
    repos: Repositories,
) -> None:
    req = make_order()
    await repos.orders.record(req, venue_order_id="0xf")
    await repos.orders.transition(req.client_order_id, OrderStatus.CANCELED)
    tracker, _ = make_tracker(repos)
    rebuilt = await tracker.request_for(req.client_order_id)
    assert rebuilt is not None and rebuilt.client_order_id == req.client_order_id
    assert req.client_order_id not in tracker and len(tracker) == 0


# sends in progress ---------------------------------------------------------------------------
async def test_a_send_is_unsettled_until_its_row_is_past_pending_or_the_send_ends(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    p = prepared(req, "0xs")
    tracker.admit(p)
    assert not tracker.is_sending(req.client_order_id)
    tracker.set_sending(req.client_order_id, True)
    assert tracker.is_sending(req.client_order_id)
    assert tracker.sending_unsettled("0xs")  # admitted, not yet journaled
    await tracker.journal_pending(p)
    assert tracker.sending_unsettled("0xs")  # PENDING
    assert not tracker.sending_unsettled("0xother")
    await tracker.transition(req, OrderStatus.LIVE, venue_order_id="0xs")
    assert not tracker.sending_unsettled("0xs")  # the outcome is written
    assert tracker.is_sending(req.client_order_id)
    tracker.set_sending(req.client_order_id, False)
    assert not tracker.is_sending(req.client_order_id)


async def test_the_end_of_a_send_unregisters_it_even_after_its_record_left(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    await pending(tracker, req, "0xgone")
    tracker.set_sending(req.client_order_id, True)
    await tracker.transition(req, OrderStatus.FILLED, size_matched=req.size)
    assert req.client_order_id not in tracker
    # A new order now reuses the tracker's maps: the old send must not look in progress.
    tracker.set_sending(req.client_order_id, False)
    assert not tracker.sending_unsettled("0xgone")
    assert not tracker.is_sending(req.client_order_id)


async def test_the_end_of_an_older_send_leaves_a_newer_registration_of_the_venue_id(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    first, second = make_order(), make_order()
    tracker.admit(prepared(first, "0xsame"))
    tracker.admit(prepared(second, "0xsame"))
    tracker.set_sending(first.client_order_id, True)
    tracker.set_sending(second.client_order_id, True)
    tracker.set_sending(first.client_order_id, False)
    assert tracker.sending_unsettled("0xsame")  # still the second's send
    tracker.set_sending(second.client_order_id, False)
    assert not tracker.sending_unsettled("0xsame")


async def test_sending_an_unknown_order_registers_nothing(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    tracker.set_sending("nobody", True)
    assert not tracker.is_sending("nobody") and "nobody" not in tracker
    tracker.set_sending("nobody", False)
    assert not tracker.sending_unsettled("")


# unknown outcomes ------------------------------------------------------------------------------
async def test_lookups_fall_due_at_their_time_and_leave_when_done(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    a, b = make_order(), make_order()
    await pending(tracker, a, "0xa")
    await pending(tracker, b, "0xb")
    la = tracker.look_up_later(lookup(a.client_order_id, due=10, venue_order_id="0xa"))
    lb = tracker.look_up_later(lookup(b.client_order_id, due=20, venue_order_id="0xb"))
    assert la.venue_order_id == "0xa"
    assert tracker.unknown_count == 2
    assert tracker.lookups_due(9.99) == []
    assert tracker.lookups_due(10) == [la]
    assert tracker.lookups_due(20) == [la, lb]

    tracker.lookup_done(a.client_order_id)
    assert tracker.lookups_due(100) == [lb] and tracker.unknown_count == 1
    assert tracker.status(a.client_order_id) is OrderStatus.PENDING  # the order stays
    tracker.lookup_done("never-looked-up")
    assert tracker.unknown_count == 1


async def test_a_record_that_held_only_a_lookup_goes_with_it(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    tracker.look_up_later(lookup("orphan", due=1))
    assert "orphan" in tracker
    tracker.lookup_done("orphan")
    assert "orphan" not in tracker and len(tracker) == 0


@pytest.mark.parametrize("holds", ["request", "sending"])
async def test_a_record_holding_more_than_its_lookup_stays(repos: Repositories, holds: str) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    if holds == "request":
        tracker.admit(prepared(req))
    tracker.look_up_later(lookup(req.client_order_id, due=1))
    if holds == "sending":
        tracker.set_sending(req.client_order_id, True)
    tracker.lookup_done(req.client_order_id)
    assert req.client_order_id in tracker
    assert tracker.unknown_count == 0


async def test_a_journaled_record_stays_when_its_lookup_is_done(repos: Repositories) -> None:
    req = make_order()
    await repos.orders.record(req, venue_order_id="0xj")
    await repos.orders.transition(req.client_order_id, OrderStatus.UNKNOWN)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    tracker, _ = make_tracker(repos)
    tracker.track_row(row)  # a status but no request in memory
    tracker.look_up_later(lookup(req.client_order_id, due=1))
    tracker.lookup_done(req.client_order_id)
    assert tracker.status(req.client_order_id) is OrderStatus.UNKNOWN


# transitions -------------------------------------------------------------------------------------
async def test_a_fill_in_part_writes_the_row_and_shrinks_the_reservation(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order(price="0.5", size="10")
    await pending(tracker, req, "0xp")
    assert await tracker.transition(req, OrderStatus.LIVE, venue_order_id="0xp2")
    moved = await tracker.transition(
        req,
        OrderStatus.PARTIALLY_FILLED,
        size_matched=Decimal("4"),
        avg_price=Decimal("0.49"),
        detail="fill",
        audit=("order_acknowledged", {"size_matched": "4"}),
    )
    assert moved
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.size_matched, row.avg_price, row.detail, row.venue_order_id) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("4"),
        Decimal("0.49"),
        "fill",
        "0xp2",
    )
    assert [e.detail for e in await repos.audit.tail(event="order_acknowledged")] == [
        {"size_matched": "4"}
    ]
    assert tracker.status(req.client_order_id) is OrderStatus.PARTIALLY_FILLED
    assert tracker.positions.open_buy_notional() == Decimal("3.0")  # 6 left at 0.5
    assert open_gauge(tracker) == 1
    assert outcomes(tracker, "partially_filled") is None  # not an outcome yet

    # a transition that names no size leaves the reservation as it was
    assert await tracker.transition(req, OrderStatus.PARTIALLY_FILLED, detail="again")
    assert tracker.positions.open_buy_notional() == Decimal("3.0")


async def test_a_transition_without_a_venue_id_keeps_the_known_one(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    await pending(tracker, req, "0xkeep")
    assert await tracker.transition(req, OrderStatus.UNKNOWN)
    tracker.set_sending(req.client_order_id, True)
    assert tracker.sending_unsettled("0xkeep") is False  # UNKNOWN is past PENDING
    tracker.set_sending(req.client_order_id, False)
    assert await tracker.transition(req, OrderStatus.LIVE, venue_order_id="0xnew")
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.venue_order_id == "0xnew"


@pytest.mark.parametrize(
    "to", [OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED]
)
async def test_a_terminal_outcome_releases_everything_and_is_counted(
    repos: Repositories, to: OrderStatus
) -> None:
    tracker, _ = make_tracker(repos)
    req, other = make_order(price="0.5", size="10"), make_order(price="0.25", size="4")
    await pending(tracker, req, "0xt")
    await pending(tracker, other, "0xo")
    tracker.look_up_later(lookup(req.client_order_id, due=1, venue_order_id="0xt"))
    assert tracker.positions.open_buy_notional() == Decimal("6.00")
    assert open_gauge(tracker) == 2

    assert await tracker.transition(req, to, size_matched=Decimal("10"), detail="done")

    assert req.client_order_id not in tracker and len(tracker) == 1
    assert tracker.status(req.client_order_id) is None
    assert tracker.unknown_count == 0 and tracker.lookups_due(100) == []
    assert tracker.positions.open_buy_notional() == Decimal("1.00")  # only the other order
    assert [o.client_order_id for o in tracker.positions.open_orders()] == [other.client_order_id]
    assert open_gauge(tracker) == 1
    assert outcomes(tracker, to.value.lower()) == 1
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is to and row.detail == "done"


async def test_outcomes_are_counted_by_strategy_and_side(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    sell = make_order(side="SELL", strategy="copy")
    await repos.orders.record(sell, venue_order_id="0xsell")
    assert await tracker.transition(sell, OrderStatus.CANCELED)
    sample = tracker.metrics.registry.get_sample_value(
        "polyd_orders_total", {"strategy": "copy", "side": "SELL", "outcome": "canceled"}
    )
    assert sample == 1
    assert outcomes(tracker, "canceled", strategy="copy") is None  # not under BUY


async def test_a_move_the_tracked_status_forbids_is_skipped_without_a_write(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    await pending(tracker, req)
    assert await tracker.transition(req, OrderStatus.LIVE)
    events_before = await repos.orders.events(req.client_order_id)
    with capture_logs() as logs:
        assert not await tracker.transition(req, OrderStatus.UNKNOWN, detail="late")
    assert [(e["event"], e["client_order_id"], e["current"], e["to"]) for e in logs] == [
        ("order_transition_skipped", req.client_order_id, OrderStatus.LIVE, OrderStatus.UNKNOWN)
    ]
    assert await repos.orders.events(req.client_order_id) == events_before
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE and row.detail != "late"
    assert tracker.status(req.client_order_id) is OrderStatus.LIVE
    assert tracker.positions.open_count == 1


async def test_a_move_to_the_same_open_status_is_written(repos: Repositories) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order()
    await pending(tracker, req)
    assert await tracker.transition(req, OrderStatus.UNKNOWN)
    with capture_logs() as logs:
        assert await tracker.transition(req, OrderStatus.UNKNOWN, detail="lookup: not found")
    assert logs == []
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.detail == "lookup: not found"


async def test_a_move_the_journal_refuses_changes_nothing(repos: Repositories) -> None:
    """The journal is the judge when memory does not know the order (a restart, another
    path): its refusal leaves the row, the record and the reservation as they were."""
    req = make_order(price="0.5", size="10")
    await repos.orders.record(req, venue_order_id="0xj")
    await repos.orders.transition(req.client_order_id, OrderStatus.FILLED)
    tracker, failures = make_tracker(repos)
    with capture_logs() as logs:
        assert not await tracker.transition(req, OrderStatus.LIVE)
    assert [(e["event"], e["client_order_id"], e["to"]) for e in logs] == [
        ("order_transition_refused", req.client_order_id, OrderStatus.LIVE)
    ]
    assert req.client_order_id not in tracker
    assert tracker.positions.open_count == 0
    assert outcomes(tracker, "live") is None and failures == []
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED


async def test_a_failed_transition_write_halts_raises_and_keeps_the_reservation(
    tmp_path: Path,
) -> None:
    db = DiskFullDatabase(tmp_path / "polyd.db")
    async with db:
        tracker, failures = make_tracker(Repositories.over(db))
        req = make_order(price="0.5", size="10")
        await pending(tracker, req)
        db.full = True
        with pytest.raises(Exception, match="disk is full"):
            await tracker.transition(req, OrderStatus.CANCELED)
        assert failures == [
            (
                "storage_failed_halting",
                {"client_order_id": req.client_order_id, "to": OrderStatus.CANCELED},
            )
        ]
        # The venue may still hold it: it keeps its reservation until a write says otherwise.
        assert tracker.status(req.client_order_id) is OrderStatus.PENDING
        assert tracker.positions.open_buy_notional() == Decimal("5.0")
        assert outcomes(tracker, "canceled") is None


async def test_an_order_the_tracker_never_saw_is_journaled_and_mirrored(
    repos: Repositories,
) -> None:
    """A row settled by reconciliation after a restart, before anything tracked it."""
    req = make_order(order_type=OrderType.GTC, side=Side.BUY)
    await repos.orders.record(req, venue_order_id="0xr")
    tracker, _ = make_tracker(repos)
    assert await tracker.transition(req, OrderStatus.LIVE, venue_order_id="0xr")
    assert tracker.status(req.client_order_id) is OrderStatus.LIVE
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE
    assert row.detail == ""  # no detail given, none written


# mirrored as queued (an acknowledged order answered before its row is durable) ---------------


async def test_a_move_mirrored_as_it_is_queued_shows_before_the_row_is_durable(
    repos: Repositories,
) -> None:
    tracker, _ = make_tracker(repos)
    req = make_order(price="0.4", size="25")
    await pending(tracker, req)
    moving = asyncio.ensure_future(
        tracker.transition(
            req,
            OrderStatus.LIVE,
            venue_order_id="0xv1",
            size_matched=Decimal("5"),
            mirror_first=True,
        )
    )
    await asyncio.sleep(0)  # its first step ran: the row's write is queued, not yet committed
    assert not moving.done()
    assert tracker.status(req.client_order_id) is OrderStatus.LIVE
    assert tracker.positions.open_buy_notional() == Decimal("8.0")  # 20 shares left at 0.4
    assert open_gauge(tracker) == 1
    assert await moving is True
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.size_matched) == (OrderStatus.LIVE, Decimal("5"))


async def test_a_move_mirrored_early_that_the_journal_refuses_is_set_back_from_the_row(
    repos: Repositories,
) -> None:
    """The row moved meanwhile (canceled while the POST was out): the ack's LIVE is refused by
    the journal, and the record follows the row, not the early mirror."""
    tracker, failures = make_tracker(repos)
    req = make_order(price="0.4", size="25")
    await pending(tracker, req)
    await repos.orders.transition(req.client_order_id, OrderStatus.CANCELED)  # the row only
    assert tracker.status(req.client_order_id) is OrderStatus.PENDING
    moved = await tracker.transition(
        req, OrderStatus.LIVE, venue_order_id="0xv1", mirror_first=True
    )
    assert moved is False and failures == []
    assert req.client_order_id not in tracker
    assert tracker.positions.open_buy_notional() == 0 and open_gauge(tracker) == 0

    other = make_order(price="0.3", size="10")
    await pending(tracker, other, "0xv2")
    await repos.orders.transition(
        other.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=Decimal("4")
    )
    moved = await tracker.transition(other, OrderStatus.FILLED, mirror_first=True)
    assert moved is True  # PARTIALLY_FILLED -> FILLED is allowed: nothing to set back
    await pending(tracker, third := make_order(price="0.2", size="10"), "0xv3")
    await repos.orders.transition(third.client_order_id, OrderStatus.UNKNOWN)
    await repos.orders.transition(
        third.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=Decimal("6")
    )
    await repos.orders.transition(third.client_order_id, OrderStatus.CANCELED)
    assert not await tracker.transition(third, OrderStatus.LIVE, mirror_first=True)
    assert third.client_order_id not in tracker
