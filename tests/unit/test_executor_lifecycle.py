"""The executor around its edges: a cancelled caller, a failing disk, the breaker as `/health`
reports it once its open period is over, and a duplicate refusal of a retried send."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from errors import StorageError, TransientError
from execution.market_rules import MarketRules
from execution.paper import PaperBroker
from execution.ports import Ack, MarketMeta, Prepared
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits, TradingState
from executor import Executor, ExecutorConfig
from models import OrderStatus
from observability.metrics import Metrics
from resilience import BreakerState, CircuitBreaker, RetryPolicy
from resilience.clock import Clock, FakeClock, SystemClock
from storage import Database, Repositories
from tests.unit.test_executor_paper import COND, TOKEN, DictBooks, req

T = TypeVar("T")


class DiskFullDatabase(Database):
    """A database whose writes fail while `full` is set, as the group-commit writer reports a
    failed commit (every write raises StorageError and `last_write_error` is set)."""

    full = False

    async def write(self, job: Callable[[Any], T]) -> T:
        if self.full:
            self.last_write_error = "database or disk is full"
            raise StorageError("commit failed: database or disk is full")
        return await super().write(job)


class GatedBroker(PaperBroker):
    """A paper broker whose `send` waits until the test opens the gate (a slow venue)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.sending = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, prepared: Prepared) -> Ack:
        self.sending.set()
        await self.gate.wait()
        return await super().send(prepared)


def build(
    repos: Repositories,
    books: DictBooks,
    *,
    broker: Any = None,
    clock: Clock | None = None,
    reconcile_interval_s: float = 30.0,
) -> Executor:
    rules = MarketRules()
    rules.put(MarketMeta(TOKEN, COND, Decimal("0.01"), Decimal("5"), False))
    clock = clock or SystemClock()
    return Executor(
        repos=repos,
        broker=broker or PaperBroker(books=books),
        rules=rules,
        risk=RiskEngine(
            limits=RiskLimits(
                max_order_notional=Decimal("50"),
                max_position_notional=Decimal("200"),
                max_total_exposure=Decimal("1000"),
                max_open_orders=50,
            )
        ),
        positions=PositionBook(books=books),
        metrics=Metrics(),
        breaker=CircuitBreaker("venue", failure_threshold=3, reset_timeout_s=5, clock=clock),
        retry_policy=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        clock=clock,
        config=ExecutorConfig(reconcile_interval_s=reconcile_interval_s),
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[DiskFullDatabase]:
    d = DiskFullDatabase(tmp_path / "polyd.db")
    await d.open()
    yield d
    d.full = False
    await d.close()


@pytest.fixture
def books() -> DictBooks:
    b = DictBooks()
    b.a[TOKEN] = [(Decimal("0.90"), Decimal("100"))]  # out of reach: GTC BUYs at 0.50 rest
    b.b[TOKEN] = [(Decimal("0.10"), Decimal("100"))]
    return b


# --- a cancelled caller does not abandon the order it was submitting -----------------------


async def test_cancelled_caller_mid_send_still_settles_and_drain_waits_for_it(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    repos = Repositories.over(db)
    broker = GatedBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    r = req()
    caller = asyncio.create_task(ex.submit(r))  # the strategy's task
    await broker.sending.wait()
    caller.cancel()  # SIGTERM: strategies stop first
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ex.health().detail["in_flight"] == 1  # the send goes on, owned by the executor
    assert not await ex.drain(wait_s=0.05)  # still waiting for the venue
    drained = asyncio.create_task(ex.drain(wait_s=5))
    await asyncio.sleep(0.05)
    assert not drained.done()
    broker.gate.set()
    assert await drained
    row = await repos.orders.get(r.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE  # settled, not left PENDING
    assert ex.health().detail["in_flight"] == 0


async def test_cancelled_submit_many_caller_still_settles_the_batch(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    repos = Repositories.over(db)
    broker = GatedBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    reqs = [req(price=Decimal("0.40")) for _ in range(3)]
    caller = asyncio.create_task(ex.submit_many(reqs))
    await broker.sending.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    broker.gate.set()
    assert await ex.drain(wait_s=5)
    rows = [await repos.orders.get(r.client_order_id) for r in reqs]
    assert [row.status if row else None for row in rows] == [OrderStatus.LIVE] * 3


# --- a failing disk halts trading; the executor stays up ---------------------------------


async def test_refusal_that_cannot_be_journaled_is_returned_not_raised(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    repos = Repositories.over(db)
    ex = build(repos, books)
    await ex.start()
    await ex.halt("test")
    db.full = True
    res = await ex.submit(req())
    assert res.status is OrderStatus.REJECTED
    assert res.reason.startswith("storage error: halted: ")
    assert ex.state is TradingState.HALTED and ex.state_reason == "storage error"


async def test_failed_write_in_the_service_loop_halts_and_the_loop_keeps_running(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    repos = Repositories.over(db)
    ex = build(repos, books, reconcile_interval_s=0.01)
    await ex.start()
    db.full = True
    loop = asyncio.create_task(ex.run(tick_s=0.01))
    try:
        await asyncio.sleep(0.2)  # several periodic reconciles, each failing its audit write
        assert not loop.done()  # not ended by the StorageError (the daemon would exit 1)
        assert ex.state is TradingState.HALTED and ex.state_reason == "storage error"
        health = ex.health()
        assert health.ok is False and health.detail["trading_state"] == "HALTED"
        failures = ex.metrics.registry.get_sample_value(
            "polyd_venue_errors_total", {"endpoint": "executor_loop", "kind": "StorageError"}
        )
        assert failures is not None and failures >= 2
        db.full = False  # space is back: writes succeed, the operator resumes
        await asyncio.sleep(0.05)
        assert db.last_write_error is None
        assert ex.state is TradingState.HALTED  # no automatic resume
        await ex.resume("disk cleaned")
        assert ex.health().detail["trading_state"] == "ACTIVE"
        assert (await ex.submit(req())).status is OrderStatus.LIVE
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


# --- the breaker on /health ------------------------------------------------------------------


async def test_breaker_past_its_open_period_reports_half_open_and_ok(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    clock = FakeClock(100.0)
    ex = build(Repositories.over(db), books, clock=clock)
    await ex.start()
    for _ in range(3):
        ex.breaker.record_failure()
    health = ex.health()
    assert (health.ok, health.detail["breaker"]) == (False, "open")
    clock.advance(5)  # the reset timeout: no order has probed it yet
    assert ex.breaker.state is BreakerState.OPEN
    health = ex.health()
    assert (health.ok, health.detail["breaker"]) == (True, "half_open")
    ex._publish()  # what run() does every tick: the gauge agrees with /health
    gauge = ex.metrics.registry.get_sample_value("polyd_breaker_state", {"breaker": "venue"})
    assert gauge == 1
    assert ex.breaker.allow()  # reading the health used no probe slot: the next order probes
    ex.breaker.record_failure()  # the probe failed: open again, /health 503 again
    assert (ex.health().ok, ex.health().detail["breaker"]) == (False, "open")


async def test_breaker_forced_open_by_retry_after_stays_open_until_it_passes(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    from errors import VenueUnavailable

    clock = FakeClock(100.0)
    ex = build(Repositories.over(db), books, clock=clock)
    await ex.start()
    ex._transient_failure(VenueUnavailable("cancel-only", status=503, retry_after=30))
    clock.advance(5)  # past the breaker's own reset timeout, inside the venue's Retry-After
    assert ex.health().detail["breaker"] == "open" and not ex.health().ok
    clock.advance(25)
    assert ex.health().detail["breaker"] == "half_open" and ex.health().ok


# --- a duplicate refusal means the venue holds the order ---------------------------------------


class AcceptedThenLostBroker(PaperBroker):
    """A paper venue that takes the first send of each order and then answers it with a 500,
    as a venue that accepted an order and failed before answering does."""

    async def send(self, prepared: Prepared) -> Ack:
        first = prepared.venue_order_id not in self._orders
        ack = await super().send(prepared)
        if first:
            raise TransientError("HTTP 500 after the order was accepted", status=500)
        return ack


async def test_duplicate_refusal_of_a_retried_send_is_looked_up_not_rejected(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    repos = Repositories.over(db)
    broker = AcceptedThenLostBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    res = await ex.submit(req())
    # The retry of the same bytes is refused as a duplicate: the venue holds the order, so it is
    # looked up by its hash and journaled as the venue has it, not as a venue refusal.
    assert res.status is OrderStatus.LIVE, res
    row = await repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE
    assert row.detail == "looked up by order hash"
    assert [e.to_status for e in await repos.orders.events(res.client_order_id)] == [
        OrderStatus.PENDING,
        OrderStatus.UNKNOWN,
        OrderStatus.LIVE,
    ]
    assert [o.venue_order_id for o in await broker.open_orders()] == [res.venue_order_id]
    assert ex.breaker.state is BreakerState.CLOSED and ex.breaker_state() is BreakerState.CLOSED
    assert len(ex.tracker) == 1 and ex.tracker.unknown_count == 0


# --- the send-in-progress index is emptied at the end of every send ------------------------


async def test_send_in_progress_is_known_by_venue_id_until_settled_resting_or_filled(
    db: DiskFullDatabase, books: DictBooks
) -> None:
    from models import OrderType

    repos = Repositories.over(db)
    broker = GatedBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    resting, filled = req(), req(order_type=OrderType.FOK, price=Decimal("0.90"))
    for r, status in ((resting, OrderStatus.LIVE), (filled, OrderStatus.FILLED)):
        broker.sending.clear()
        broker.gate.clear()
        caller = asyncio.create_task(ex.submit(r))
        await broker.sending.wait()
        row = await repos.orders.get(r.client_order_id)
        assert row is not None and row.venue_order_id is not None
        assert ex.tracker.sending_unsettled(row.venue_order_id)  # its feed event waits
        broker.gate.set()
        assert (await caller).status is status
        # The caller has its answer at the ack; a read after it sees the outcome row.
        settled = await repos.orders.get(r.client_order_id)
        assert settled is not None and settled.status is status
        # The send ends once that row is durable. A terminal outcome drops the order's record
        # first; the index is emptied all the same.
        assert await ex.wait_idle(5)
        assert not ex.tracker.sending_unsettled(row.venue_order_id)
    assert ex.tracker._sending_by_venue == {} and ex.tracker._sending_venue_of == {}


# --- answered at the ack, the outcome row made durable after ------------------------------------


class HeldDatabase(Database):
    """A database whose commits wait on the database thread while `held` is set."""

    held = False
    release = threading.Event()

    def _run_batch(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        if self.held:
            self.release.wait(10)
        return super()._run_batch(batch)


class HoldingBroker(PaperBroker):
    """Holds the database's commits from the moment the order is sent (the PENDING row is
    durable by then), so the outcome row's commit waits."""

    def __init__(self, db: HeldDatabase, **kw: Any) -> None:
        super().__init__(**kw)
        self.db = db

    async def send(self, prepared: Prepared) -> Ack:
        self.db.held = True
        return await super().send(prepared)


async def test_an_acknowledged_order_is_answered_before_its_row_is_durable_and_reads_wait(
    tmp_path: Path, books: DictBooks
) -> None:
    """The strategy has the venue's answer while the outcome row is still committing: the
    tracker and open-order commitments already show it, /health counts the order in flight, a
    read of the row waits for it and sees it, and drain() waits for it."""
    db = HeldDatabase(tmp_path / "polyd.db")
    db.release = threading.Event()
    await db.open()
    try:
        repos = Repositories.over(db)
        ex = build(repos, books, broker=HoldingBroker(db, books=books))
        await ex.start()
        first = req()
        res = await asyncio.wait_for(ex.submit(first), 5)  # answered while the commit waits
        assert res.status is OrderStatus.LIVE and res.venue_order_id
        assert ex.tracker.status(first.client_order_id) is OrderStatus.LIVE
        assert ex.positions.open_count == 1
        assert ex.health().detail["in_flight"] == 1
        reading = asyncio.ensure_future(repos.orders.get(first.client_order_id))
        drained = asyncio.ensure_future(ex.drain(wait_s=5))
        await asyncio.sleep(0.1)
        assert not reading.done() and not drained.done()
        db.held = False
        db.release.set()
        row = await reading
        assert row is not None and row.status is OrderStatus.LIVE
        assert row.venue_order_id == res.venue_order_id
        assert await drained
        assert ex.health().detail["in_flight"] == 0
    finally:
        db.held = False
        db.release.set()
        await db.close()
