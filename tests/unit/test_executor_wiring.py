"""What the executor wires between its parts, as the trader sees it: what a restart restores
(positions, realised PnL, the start-up line), a failed journal write halting trading, a
`delayed` answer watched until the venue settles it, and the broker's order events settling
orders without a reconcile pass.

Each part has tests of its own; these fail when the executor builds a part without the hook or
setting that makes it do so.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from execution.paper import PaperBroker
from execution.risk import TradingState
from models import OrderStatus, OrderType, Side
from resilience import FakeClock
from simulator import Simulator
from storage import Repositories
from tests.helpers import until
from tests.integration.test_executor_live import close_live, make_live, seed_asks
from tests.unit.test_executor_lifecycle import (  # noqa: F401  (fixtures)
    DiskFullDatabase,
    GatedBroker,
    books,
    build,
    db,
)
from tests.unit.test_executor_paper import TOKEN, DictBooks, req

D = Decimal


async def status_of(repos: Repositories, coid: str) -> OrderStatus:
    row = await repos.orders.get(coid)
    assert row is not None
    return row.status


# --- a restart restores what the journal says -----------------------------------------------


async def test_a_restart_restores_realised_pnl_and_every_flat_position_exactly(
    db: DiskFullDatabase,  # noqa: F811
    books: DictBooks,  # noqa: F811
) -> None:
    """One strategy sells flat at a profit, another at break-even: after a restart the new
    executor's realised PnL (in all, per strategy) and positions equal the first one's, and the
    break-even strategy still has its PnL gauge (at 0)."""
    repos = Repositories.over(db)
    first = build(repos, books)
    await first.start()
    books.a[TOKEN] = [(D("0.50"), D("100"))]
    for strategy in ("alpha", "even"):
        res = await first.submit(
            req(strategy=strategy, order_type=OrderType.FOK, price=D("0.50"), size=D("10"))
        )
        assert res.status is OrderStatus.FILLED
    for strategy, price in (("alpha", "0.60"), ("even", "0.50")):
        books.b[TOKEN] = [(D(price), D("100"))]
        res = await first.submit(
            req(strategy=strategy, side=Side.SELL, order_type=OrderType.FOK, price=D(price))
        )
        assert res.status is OrderStatus.FILLED
    assert first.positions.realized(strategy="alpha") == D("1.00")
    assert first.positions.realized(strategy="even") == 0
    assert all(p.size == 0 for p in first.positions.positions())

    second = build(repos, books)
    await second.start()
    assert second.positions.realized() == first.positions.realized() == D("1.00")
    for strategy in ("alpha", "even"):
        assert second.positions.realized(strategy=strategy) == first.positions.realized(
            strategy=strategy
        )
    assert second.positions.daily_pnl() == first.positions.daily_pnl()
    key = {p.strategy: p for p in first.positions.positions()}
    assert {p.strategy: p for p in second.positions.positions()} == key
    assert second.positions.strategies() == ["alpha", "even"]
    second._publish()
    gauge = second.metrics.registry.get_sample_value
    assert gauge("polyd_strategy_pnl_realized_usd", {"strategy": "alpha"}) == 1.0
    assert gauge("polyd_strategy_pnl_realized_usd", {"strategy": "even"}) == 0.0


async def test_the_start_up_line_names_the_restored_state_and_open_orders(
    db: DiskFullDatabase,  # noqa: F811
    books: DictBooks,  # noqa: F811
) -> None:
    """The operator's record of what a restart restored: a HALTED state with two orders
    resting at the venue."""
    repos = Repositories.over(db)
    first = build(repos, books)
    await first.start()
    for price in ("0.40", "0.30"):
        assert (await first.submit(req(price=D(price)))).status is OrderStatus.LIVE
    await first.halt("operator")

    second = build(repos, books)
    with capture_logs() as logs:
        await second.start()
    started = [e for e in logs if e.get("event") == "executor_started"]
    assert len(started) == 1
    assert started[0]["state"] is TradingState.HALTED
    assert started[0]["open_orders"] == 2


# --- a failed journal write halts trading -----------------------------------------------------


async def test_an_outcome_that_cannot_be_journaled_halts_and_the_next_order_is_refused(
    db: DiskFullDatabase,  # noqa: F811
    books: DictBooks,  # noqa: F811
) -> None:
    """The venue took the order, but its LIVE row cannot be written: the strategy has its
    answer (given at the ack), trading halts for the failed write, the failure is logged, and
    once the disk is back the next order is refused (nothing trades until an operator
    resumes)."""
    repos = Repositories.over(db)
    broker = GatedBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    first = req()
    sending = asyncio.create_task(ex.submit(first))
    await broker.sending.wait()  # the PENDING row is written; the venue is answering
    db.full = True
    broker.gate.set()
    with capture_logs() as logs:
        assert (await sending).status is OrderStatus.LIVE
        assert await ex.wait_idle(5)
    assert (ex.state, ex.state_reason) == (TradingState.HALTED, "storage error")
    failed = [e for e in logs if e["event"] == "order_submission_failed"]
    assert [(e["error"], e["detail"]) for e in failed] == [
        ("StorageError", "commit failed: database or disk is full")
    ]
    assert not ex.health().ok
    db.full = False
    res = await ex.submit(req(price=D("0.30")))
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("halted: ")
    row = await repos.orders.get(first.client_order_id)
    assert row is not None and row.status is OrderStatus.PENDING  # reconciliation settles it
    assert [o.venue_order_id for o in await broker.open_orders()] == [row.venue_order_id]


# --- order events and delayed orders ----------------------------------------------------------


async def test_an_order_the_venue_expires_is_settled_by_its_order_event(
    db: DiskFullDatabase,  # noqa: F811
    books: DictBooks,  # noqa: F811
) -> None:
    """A GTD order resting at the paper venue expires there: the venue's order event (no
    reconcile pass, no lookup) moves its row to EXPIRED and frees its reservation."""
    repos = Repositories.over(db)
    broker = PaperBroker(books=books)
    ex = build(repos, books, broker=broker)
    await ex.start()
    # The closest expiration the rules take (more than 60 s ahead): the venue expires a GTD
    # order 60 s before its expiration, so this one within two seconds.
    gtd = req(price=D("0.40"), order_type=OrderType.GTD, expiration=int(time.time()) + 62)
    assert (await ex.submit(gtd)).status is OrderStatus.LIVE
    assert ex.positions.open_count == 1
    expired: list[OrderStatus] = []

    async def venue_turn() -> None:
        await broker.poll()  # what the paper venue's own loop does
        expired.append(await status_of(repos, gtd.client_order_id))

    async with asyncio.timeout(10):
        while not expired or expired[-1] is OrderStatus.LIVE:
            await venue_turn()
            await asyncio.sleep(0.05)
    assert expired[-1] is OrderStatus.EXPIRED
    assert ex.positions.open_count == 0
    assert [o.venue_order_id for o in await broker.open_orders()] == []


async def test_a_delayed_order_is_looked_up_after_the_markets_delay_and_the_margin(
    tmp_path: Path,
) -> None:
    """A marketable order on a market with a taker delay is answered `delayed`. With no user
    feed to tell, the executor looks it up once the market's delay plus the configured margin
    (not the default) has passed, and books its fills."""
    clock = FakeClock(1000.0)
    async with Simulator(seed=29, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path, sim, clock=clock, delayed_order_margin_s=2.0, reconcile_interval_s=3600
        )
        lv.market.taker_delay_s = 0.3
        try:
            seed_asks(lv, price="0.50", size="10")
            order = lv.req(price=D("0.50"), size=D("10"), order_type=OrderType.FAK)
            res = await lv.ex.submit(order)
            assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"
            coid = order.client_order_id
            # The venue matches it once its delay is over (the simulator's own time).
            await until(lambda: [o["status"] for o in lv.our_orders()] == ["MATCHED"])
            clock.advance(2.2)  # past the market's delay (0.3 s), inside the margin (2 s)
            await lv.ex.settle_unknowns()
            assert await status_of(lv.repos, coid) is OrderStatus.LIVE
            assert lv.ex.position(lv.token, strategy="test").size == 0
            clock.advance(0.2)
            await lv.ex.settle_unknowns()
            assert await status_of(lv.repos, coid) is OrderStatus.FILLED
            assert lv.ex.position(lv.token, strategy="test").size == D("10")
            assert lv.ex.positions.open_count == 0
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)
