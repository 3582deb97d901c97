"""Settlement (`execution.settlement`, the one place an order's outcome is written down) on its
own, over a real SQLite journal: local refusals, the venue's refusals, acknowledgements of every
kind (a fill, a killed remainder, a delayed order, a marketable BUY filled after the venue's
rounding), what a lookup finds, fills moving a resting order, and cancels.

Each test reads what the operator and the rest of the daemon read: the journal row and its
audit entries, the reservation left in the position book, the counters, the `OrderResult`.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from errors import AccountHalted, AccountLimitReached, RefusalSource
from execution.ports import Ack, Prepared, VenueOrder, VenueStatus
from execution.settlement import Settlement, log_abandoned_failure, status_of
from models import Fill, OrderRequest, OrderResult, OrderStatus, Side
from storage import Repositories
from tests.helpers import make_order
from tests.unit.test_executor_lifecycle import DiskFullDatabase
from tests.unit.test_tracker import Failures, make_tracker


def make_settlement(repos: Repositories) -> tuple[Settlement, Failures]:
    tracker, failures = make_tracker(repos)
    return (
        Settlement(
            repos=repos,
            tracker=tracker,
            metrics=tracker.metrics,
            on_storage_failure=lambda event, **fields: failures.append((event, fields)),
        ),
        failures,
    )


def sample(s: Settlement, name: str, **labels: str) -> float | None:
    return s.metrics.registry.get_sample_value(name, labels)


async def journaled(s: Settlement, req: OrderRequest, venue_order_id: str = "0xv") -> None:
    p = Prepared(req, venue_order_id, "hash", b"{}")
    s.tracker.admit(p)
    await s.tracker.journal_pending(p)


async def assert_rejected(
    repos: Repositories, req: OrderRequest, res: OrderResult, why: str
) -> None:
    """`res` refuses `req` with `why`, and its journal row is REJECTED with the same text."""
    assert (res.client_order_id, res.status, res.reason) == (
        req.client_order_id,
        OrderStatus.REJECTED,
        why,
    )
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.detail) == (OrderStatus.REJECTED, why)


async def audit(repos: Repositories, event: str) -> list[dict[str, object]]:
    return [e.detail for e in reversed(await repos.audit.tail(event=event))]


# local refusals ----------------------------------------------------------------------------------
async def test_a_local_refusal_is_journaled_rejected_audited_and_counted(
    repos: Repositories,
) -> None:
    s, failures = make_settlement(repos)
    req = make_order(strategy="copy")
    with capture_logs() as logs:
        res = await s.refused(req, RefusalSource.RISK, "max open orders")
    assert logs == [
        {
            "event": "order_refused",
            "log_level": "info",
            "client_order_id": req.client_order_id,
            "token_id": req.token_id,
            "source": RefusalSource.RISK,
            "reason": "max open orders",
        }
    ]
    await assert_rejected(repos, req, res, "risk: max open orders")
    entries = await repos.audit.tail(event="order_refused")
    assert [(e.client_order_id, e.strategy, e.detail) for e in entries] == [
        (req.client_order_id, "copy", {"source": "risk", "reason": "max open orders"})
    ]
    assert sample(s, "polyd_order_rejections_total", strategy="copy", source="risk") == 1
    outcome = {"strategy": "copy", "side": "BUY", "outcome": "rejected"}
    assert sample(s, "polyd_orders_total", **outcome) == 1
    assert failures == [] and s.tracker.positions.open_count == 0


async def test_a_refusal_that_is_not_journaled_is_only_audited(repos: Repositories) -> None:
    """A duplicate client order id: its row is the first order's, so only the audit says."""
    s, _ = make_settlement(repos)
    req = make_order()
    res = await s.refused(req, RefusalSource.RULES, "duplicate", journal=False)
    assert res.reason == "rules: duplicate" and res.status is OrderStatus.REJECTED
    assert await repos.orders.get(req.client_order_id) is None
    entries = await repos.audit.tail(event="order_refused")
    assert [(e.client_order_id, e.strategy, e.detail) for e in entries] == [
        (req.client_order_id, "sniper", {"source": "rules", "reason": "duplicate"})
    ]
    assert sample(s, "polyd_order_rejections_total", strategy="sniper", source="rules") == 1


@pytest.mark.parametrize("journal", [True, False])
async def test_a_refusal_whose_write_fails_still_stands_and_halts(
    tmp_path: Path, journal: bool
) -> None:
    db = DiskFullDatabase(tmp_path / "polyd.db")
    async with db:
        s, failures = make_settlement(Repositories.over(db))
        req = make_order()
        db.full = True
        res = await s.refused(req, RefusalSource.HALTED, "trading halted", journal=journal)
        assert res.status is OrderStatus.REJECTED
        assert res.reason == "storage error: halted: trading halted"
        assert failures == [
            ("order_refusal_not_journaled", {"client_order_id": req.client_order_id})
        ]


# the venue's refusals ---------------------------------------------------------------------------
async def test_a_venue_refusal_moves_the_journaled_order_and_frees_its_reservation(
    repos: Repositories,
) -> None:
    s, _ = make_settlement(repos)
    req = make_order(price="0.5", size="10")
    await journaled(s, req)
    assert s.tracker.positions.open_buy_notional() == Decimal("5.0")
    with capture_logs() as logs:
        res = await s.rejected(req, RefusalSource.VENUE, "not enough balance")
    assert logs == [
        {
            "event": "order_rejected",
            "log_level": "info",
            "client_order_id": req.client_order_id,
            "token_id": req.token_id,
            "source": RefusalSource.VENUE,
            "reason": "not enough balance",
        }
    ]
    await assert_rejected(repos, req, res, "venue: not enough balance")
    assert await audit(repos, "order_rejected") == [
        {"source": "venue", "reason": "not enough balance"}
    ]
    assert sample(s, "polyd_order_rejections_total", strategy="sniper", source="venue") == 1
    assert s.tracker.positions.open_count == 0 and req.client_order_id not in s.tracker


# acknowledgements ---------------------------------------------------------------------------------
async def test_a_resting_order_acknowledged_in_part(repos: Repositories) -> None:
    s, _ = make_settlement(repos)
    req = make_order(price="0.5", size="10")
    await journaled(s, req, "0xa")
    ack = Ack("0xa", VenueStatus.MATCHED, Decimal("4"), Decimal("0.48"), ("t1", "t2"))
    res = await s.acknowledged(req, ack)
    assert (res.status, res.venue_order_id, res.filled_size, res.avg_price, res.reason) == (
        OrderStatus.PARTIALLY_FILLED,
        "0xa",
        Decimal("4"),
        Decimal("0.48"),
        "",
    )
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.size_matched, row.avg_price, row.detail) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("4"),
        Decimal("0.48"),
        "MATCHED",
    )
    assert await audit(repos, "order_acknowledged") == [
        {"venue_status": "MATCHED", "size_matched": "4", "trade_ids": ["t1", "t2"]}
    ]
    assert s.tracker.positions.open_buy_notional() == Decimal("3.0")  # 6 left at 0.5


@pytest.mark.parametrize("matched", ["3", "1", "0.01"])
async def test_a_fak_matched_in_part_has_its_remainder_killed(
    repos: Repositories, matched: str
) -> None:
    s, _ = make_settlement(repos)
    req = make_order(order_type="FAK", size="10")
    await journaled(s, req, "0xk")
    ack = Ack("0xk", VenueStatus.MATCHED, Decimal(matched), Decimal("0.5"))
    res = await s.acknowledged(req, ack)
    assert res.status is OrderStatus.CANCELED and res.reason == "remainder killed (FAK)"
    assert res.filled_size == Decimal(matched)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.detail, row.size_matched) == (
        OrderStatus.CANCELED,
        "remainder killed (FAK)",
        Decimal(matched),
    )
    assert s.tracker.positions.open_count == 0


async def test_a_cancel_with_nothing_matched_is_not_a_killed_remainder(
    repos: Repositories,
) -> None:
    s, _ = make_settlement(repos)
    req = make_order(order_type="FAK")
    await journaled(s, req, "0xu")
    res = await s.acknowledged(req, Ack("0xu", VenueStatus.UNMATCHED))
    assert res.status is OrderStatus.CANCELED and res.reason == ""
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.detail == "UNMATCHED"


async def test_a_delayed_order_stays_open_with_its_reservation_and_is_watched(
    repos: Repositories,
) -> None:
    s, _ = make_settlement(repos)
    watched: list[tuple[OrderRequest, Ack]] = []
    s.on_delayed = lambda req, ack: watched.append((req, ack))
    req = make_order(price="0.5", size="10")
    await journaled(s, req, "0xd")
    ack = Ack("0xd", VenueStatus.DELAYED)
    res = await s.acknowledged(req, ack)
    assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"
    assert watched == [(req, ack)]
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.detail) == (OrderStatus.LIVE, "DELAYED")
    assert s.tracker.positions.open_buy_notional() == Decimal("5.0")  # all of it reserved

    live = make_order()
    await journaled(s, live, "0xl")
    res = await s.acknowledged(live, Ack("0xl", VenueStatus.LIVE))
    assert res.status is OrderStatus.LIVE and res.reason == ""
    assert len(watched) == 1  # only delayed orders are watched


async def test_a_delayed_order_without_a_watcher_is_still_recorded(repos: Repositories) -> None:
    s, _ = make_settlement(repos)
    req = make_order()
    await journaled(s, req, "0xd")
    res = await s.acknowledged(req, Ack("0xd", VenueStatus.DELAYED))
    assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"


async def test_a_marketable_buy_is_filled_once_its_rounded_size_matched(
    repos: Repositories,
) -> None:
    """20.61 shares at 0.97 spend 19.99 pUSD for 20.6082 shares (`fillable_size`): matched in
    full, not "partially filled with the rest killed"."""
    s, _ = make_settlement(repos)
    req = make_order(order_type="FAK", price="0.97", size="20.61")
    await journaled(s, req, "0xm")
    matched = Decimal("20.6082")
    assert status_of(req, VenueStatus.MATCHED, matched) is OrderStatus.FILLED
    assert status_of(req, VenueStatus.MATCHED, matched - Decimal("0.0001")) is (
        OrderStatus.CANCELED
    )
    res = await s.acknowledged(req, Ack("0xm", VenueStatus.MATCHED, matched, Decimal("0.97")))
    assert res.status is OrderStatus.FILLED and res.reason == ""
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED


# what the venue says of an order ------------------------------------------------------------
async def test_what_a_lookup_finds_is_journaled_audited_and_counted(repos: Repositories) -> None:
    s, _ = make_settlement(repos)
    req = make_order(price="0.5", size="10")
    await journaled(s, req, "0xf")
    vo = VenueOrder("0xf", VenueStatus.LIVE, Decimal("10"), Decimal("2.5"), Decimal("0.5"))
    res = await s.from_venue(req, vo, "lookup")
    assert (res.client_order_id, res.status, res.venue_order_id, res.filled_size, res.reason) == (
        req.client_order_id,
        OrderStatus.PARTIALLY_FILLED,
        "0xf",
        Decimal("2.5"),
        "lookup",
    )
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.size_matched, row.detail, row.avg_price) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("2.5"),
        "lookup",
        None,
    )
    assert await audit(repos, "order_reconciled") == [
        {"venue_status": "LIVE", "size_matched": "2.5", "why": "lookup"}
    ]
    assert sample(s, "polyd_reconciled_total", status="PARTIALLY_FILLED") == 1
    assert s.tracker.positions.open_buy_notional() == Decimal("3.75")  # 7.5 left at 0.5


@pytest.mark.parametrize(
    ("venue", "journal"),
    [(VenueStatus.CANCELED, OrderStatus.CANCELED), (VenueStatus.EXPIRED, OrderStatus.EXPIRED)],
)
async def test_a_lookup_that_finds_the_order_ended_releases_it(
    repos: Repositories, venue: VenueStatus, journal: OrderStatus
) -> None:
    """Canceled or expired after matching 3 of 10: finished, not still partly working."""
    s, _ = make_settlement(repos)
    req = make_order(price="0.5", size="10")
    await journaled(s, req, "0xe")
    vo = VenueOrder("0xe", venue, Decimal("10"), Decimal("3"), Decimal("0.5"))
    res = await s.from_venue(req, vo, "order event")
    assert (res.status, res.filled_size) == (journal, Decimal("3"))
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.size_matched) == (journal, Decimal("3"))
    assert s.tracker.positions.open_count == 0


# fills of resting orders ------------------------------------------------------------------------
def fill(req: OrderRequest, trade_id: str, size: str) -> Fill:
    return Fill(
        trade_id=trade_id,
        venue_order_id="0xr",
        client_order_id=req.client_order_id,
        token_id=req.token_id,
        side=req.side,
        price=req.price,
        size=Decimal(size),
    )


async def resting(s: Settlement, req: OrderRequest) -> None:
    await journaled(s, req, "0xr")
    await s.acknowledged(req, Ack("0xr", VenueStatus.LIVE))


async def test_fills_move_a_resting_order_by_the_size_they_add_up_to(
    repos: Repositories,
) -> None:
    s, _ = make_settlement(repos)
    req = make_order(price="0.5", size="10")
    await resting(s, req)
    await repos.fills.record(fill(req, "t1", "3"))
    await repos.fills.record(fill(req, "t2", "4"))
    await s.filled(req.client_order_id)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None
    assert (row.status, row.size_matched, row.detail) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("7"),
        "fill",
    )
    assert s.tracker.positions.open_buy_notional() == Decimal("1.5")  # 3 left at 0.5

    await repos.fills.record(fill(req, "t3", "3"))
    await s.filled(req.client_order_id)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.size_matched) == (OrderStatus.FILLED, Decimal(10))
    assert s.tracker.positions.open_count == 0


async def test_fills_beyond_the_order_size_record_it_filled_at_its_size(
    repos: Repositories,
) -> None:
    s, _ = make_settlement(repos)
    req = make_order(side="SELL", size="5")
    await resting(s, req)
    await repos.fills.record(fill(req, "t1", "5"))
    await repos.fills.record(fill(req, "t2", "0.5"))  # a duplicate report under another id
    await s.filled(req.client_order_id)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.size_matched) == (OrderStatus.FILLED, Decimal(5))


async def test_a_fill_of_an_order_partly_filled_before_completes_it(repos: Repositories) -> None:
    s, _ = make_settlement(repos)
    req = make_order(size="4")
    await resting(s, req)
    await repos.fills.record(fill(req, "t1", "1"))
    await s.filled(req.client_order_id)
    assert s.tracker.status(req.client_order_id) is OrderStatus.PARTIALLY_FILLED
    await repos.fills.record(fill(req, "t2", "3"))
    await s.filled(req.client_order_id)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED


@pytest.mark.parametrize("state", ["pending", "unknown", "untracked"])
async def test_a_fill_of_an_order_not_resting_here_moves_nothing(
    repos: Repositories, state: str
) -> None:
    """A PENDING or UNKNOWN order is settled by its send or its lookup, which know its venue
    status; an order this process does not track is not its to move."""
    s, _ = make_settlement(repos)
    req = make_order(size="4")
    if state == "untracked":
        await repos.orders.record(req, venue_order_id="0xr")
        await repos.orders.transition(req.client_order_id, OrderStatus.LIVE)
    else:
        await journaled(s, req, "0xr")
        if state == "unknown":
            await s.tracker.transition(req, OrderStatus.UNKNOWN)
    await repos.fills.record(fill(req, "t1", "4"))
    await s.filled(req.client_order_id)
    row = await repos.orders.get(req.client_order_id)
    assert row is not None and row.status is not OrderStatus.FILLED
    assert row.size_matched == 0


# cancels -------------------------------------------------------------------------------------
async def test_canceled_orders_are_journaled_and_released(repos: Repositories) -> None:
    s, _ = make_settlement(repos)
    a, b, done = make_order(price="0.5"), make_order(price="0.2", side=Side.SELL), make_order()
    await resting(s, a)
    await journaled(s, b, "0xb")
    await journaled(s, done, "0xdone")
    await s.acknowledged(done, Ack("0xdone", VenueStatus.MATCHED, done.size, done.price))
    # a row nobody tracks now (a restart): the cancel answer still settles it
    other = make_order()
    await repos.orders.record(other, venue_order_id="0xother")

    await s.canceled(["0xr", "0xb", "0xdone", "0xnever", "0xother"])

    for req in (a, b, other):
        row = await repos.orders.get(req.client_order_id)
        assert row is not None and (row.status, row.detail) == (OrderStatus.CANCELED, "canceled")
    row = await repos.orders.get(done.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    entries = await repos.audit.tail(event="order_canceled")
    assert sorted(e.client_order_id or "" for e in entries) == sorted(
        [a.client_order_id, b.client_order_id, other.client_order_id]
    )
    assert s.tracker.positions.open_count == 0 and len(s.tracker) == 0


async def test_a_cancel_answer_leaves_another_daemons_order_alone(repos: Repositories) -> None:
    """Two daemons on one database and one venue account: a venue id in this daemon's cancel
    answer whose row is the other daemon's is that daemon's to settle (its own order events)."""
    s, _ = make_settlement(repos)
    theirs = make_order()
    other = Repositories.over(repos.db, daemon_id="other")
    await other.orders.record(theirs, venue_order_id="0xtheirs")
    await other.orders.transition(theirs.client_order_id, OrderStatus.LIVE)

    await s.canceled(["0xtheirs"])

    row = await repos.orders.get(theirs.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE
    assert await repos.audit.tail(event="order_canceled") == []


# a PENDING row the shared account refused ------------------------------------------------------
@pytest.mark.parametrize(
    ("refusal", "source"),
    [
        (AccountLimitReached("open orders on the account at the limit"), RefusalSource.RISK),
        (AccountHalted("trading is halted: account halted by daemon b"), RefusalSource.HALTED),
    ],
)
async def test_an_order_the_account_refused_is_forgotten_and_refused(
    repos: Repositories, refusal: AccountLimitReached, source: RefusalSource
) -> None:
    """The journal rolled the PENDING row back (another daemon on the account took the room, or
    halted it): the admitted order leaves the tracker and is refused with the account's text,
    a REJECTED row, and its source (risk, or halted for the account's halt)."""
    s, _ = make_settlement(repos)
    req = make_order(strategy="copy")
    s.tracker.admit(Prepared(req, "0xv", "hash", b"{}"))
    res = await s.over_account_cap(req, refusal)
    await assert_rejected(repos, req, res, f"{source}: {refusal}")
    assert sample(s, "polyd_order_rejections_total", strategy="copy", source=source) == 1
    assert len(s.tracker) == 0 and s.tracker.positions.open_count == 0


# a submission whose caller was cancelled -------------------------------------------------------
async def test_an_abandoned_submissions_failure_is_logged_and_nothing_else_is() -> None:
    """Nobody awaits a submission whose caller was cancelled: its error is logged (type and the
    first 200 characters), its success or its own cancellation is not."""
    loop = asyncio.get_running_loop()
    failed, done, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    failed.set_exception(RuntimeError("x" * 300))
    done.set_result(None)
    cancelled.cancel()
    with capture_logs() as logs:
        for task in (failed, done, cancelled):
            log_abandoned_failure(task)
    assert logs == [
        {
            "event": "order_submission_failed",
            "log_level": "error",
            "error": "RuntimeError",
            "detail": "x" * 200,
        }
    ]
