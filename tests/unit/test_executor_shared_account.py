"""Two executors on one venue account (the same key) and one PostgreSQL database, as two daemons
with `ACCOUNT_SHARED=true` run (`executor.py`): cancel-all cancels only the asking daemon's
orders (without the flag it cancels every order of the account), an order event of the
other daemon's order leaves its row alone (that daemon settles it), and a halt by either daemon
refuses the other's next order before it is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from execution.ports import VenueOrder, VenueStatus
from execution.risk import TradingState
from models import OrderStatus
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live
from tests.pg import PgServer

D = Decimal


@dataclass
class Pair:
    west: Live
    east: Live


async def pair(tmp_path: Path, sim: Simulator, url: str, *, shared: bool, **kw: Any) -> Pair:
    (tmp_path / "west").mkdir()
    (tmp_path / "east").mkdir()
    west = await make_live(tmp_path / "west", sim, database_url=url, account_shared=shared, **kw)
    east = await make_live(
        tmp_path / "east",
        sim,
        key=west.key,
        database_url=url,
        account_shared=shared,
        daemon_id="east",
        **kw,
    )
    return Pair(west, east)


@pytest.fixture
async def shared(tmp_path: Path, pg_server: PgServer) -> AsyncIterator[Pair]:
    async with Simulator(seed=29, settle_delay_s=0.01) as sim:
        p = await pair(tmp_path, sim, pg_server.fresh_url(), shared=True)
        try:
            yield p
        finally:
            await close_live(p.east)
            await close_live(p.west)


async def venue_status(live: Live, venue_order_id: str | None) -> str:
    (order,) = [o for o in live.sim.ledger()["orders"] if o["id"] == venue_order_id]
    return str(order["status"])


async def test_cancel_all_on_a_shared_account_cancels_only_this_daemons_orders(
    shared: Pair,
) -> None:
    mine = await shared.west.ex.submit(shared.west.req())
    theirs = await shared.east.ex.submit(shared.east.req(price=D("0.30")))
    assert mine.status is theirs.status is OrderStatus.LIVE
    assert await shared.west.ex.cancel_all(actor="http") == 1
    assert await venue_status(shared.west, mine.venue_order_id) == "CANCELED"
    assert await venue_status(shared.west, theirs.venue_order_id) == "LIVE"
    row = await shared.east.repos.orders.get(theirs.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE


async def test_the_other_daemons_order_event_leaves_its_row_alone(shared: Pair) -> None:
    theirs = await shared.east.ex.submit(shared.east.req())
    assert theirs.venue_order_id is not None
    event = VenueOrder(theirs.venue_order_id, VenueStatus.MATCHED, D("10"), D("4"), D("0.40"))
    await shared.west.ex.on_order_event(event)
    row = await shared.east.repos.orders.get(theirs.client_order_id)
    assert row is not None
    assert (row.status, row.size_matched) == (OrderStatus.LIVE, D("0"))


async def test_cancel_all_on_an_account_of_its_own_cancels_everything_there(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Without ACCOUNT_SHARED the account is this daemon's: an order it has no row of (placed
    by a run whose journal is gone, or by hand) is canceled too."""
    async with Simulator(seed=31, settle_delay_s=0.01) as sim:
        p = await pair(tmp_path, sim, pg_server.fresh_url(), shared=False)
        try:
            mine = await p.west.ex.submit(p.west.req())
            stray = await p.east.ex.submit(p.east.req(price=D("0.30")))
            assert await p.west.ex.cancel_all() == 2
            for res in (mine, stray):
                assert await venue_status(p.west, res.venue_order_id) == "CANCELED"
        finally:
            await close_live(p.east)
            await close_live(p.west)


async def test_an_order_past_the_accounts_cap_is_refused_and_can_be_sent_once_there_is_room(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Each daemon's own book would admit it; the account (both daemons' orders) is full: the
    PENDING row is refused, nothing is sent or left reserved, and an order goes once the other
    daemon's order ends."""
    async with Simulator(seed=37, settle_delay_s=0.01) as sim:
        p = await pair(tmp_path, sim, pg_server.fresh_url(), shared=True, risk_max_open_orders=2)
        try:
            theirs = [await p.east.ex.submit(p.east.req(price=D("0.20"))) for _ in range(2)]
            req = p.west.req()
            over = await p.west.ex.submit(req)
            assert over.status is OrderStatus.REJECTED and over.reason.startswith("risk: ")
            assert "every daemon counted" in over.reason
            assert p.west.ex.positions.open_count == 0
            assert p.west.ex.positions.open_buy_notional() == 0  # the admission was let go
            row = await p.west.repos.orders.get(req.client_order_id)
            assert row is not None and row.status is OrderStatus.REJECTED
            assert await p.east.ex.cancel(theirs[0].client_order_id)
            again = await p.west.ex.submit(p.west.req())
            assert again.status is OrderStatus.LIVE
        finally:
            await close_live(p.east)
            await close_live(p.west)


async def test_a_halt_by_one_daemon_refuses_the_others_next_order_before_it_is_sent(
    shared: Pair,
) -> None:
    """West halts; east has not synced the halt yet (its guard still reads ACTIVE): its next
    order is refused as its PENDING row is written under the account's lock, and never reaches
    the venue. Once east syncs, its trading state and `/health` show the halt; a resume on east
    lets both trade again."""
    await shared.west.ex.halt("operator", actor="http")
    assert shared.east.ex.state is TradingState.ACTIVE
    sent = len(shared.east.sim.ledger()["orders"])
    req = shared.east.req()
    res = await shared.east.ex.submit(req)
    why = "halted: trading is halted: account halted by daemon default: operator"
    assert (res.status, res.reason) == (OrderStatus.REJECTED, why)
    assert len(shared.east.sim.ledger()["orders"]) == sent  # never sent
    row = await shared.east.repos.orders.get(req.client_order_id)
    assert row is not None and (row.status, row.detail) == (OrderStatus.REJECTED, why)
    assert shared.east.ex.positions.open_count == 0
    await shared.east.ex.guard.sync_account()
    (account_check,) = [check for name, check in shared.east.built.checks if name == "account"]
    assert not account_check().ok  # /health's `account` check: halted
    health = shared.east.ex.health()
    assert not health.ok
    assert health.detail["trading_state"] == "HALTED"
    assert health.detail["reason"] == "account halted by daemon default: operator"
    await shared.east.ex.resume("checked", actor="http")
    await shared.west.ex.guard.sync_account()
    assert shared.west.ex.state is TradingState.ACTIVE
    assert (await shared.east.ex.submit(shared.east.req())).status is OrderStatus.LIVE
    assert (await shared.west.ex.submit(shared.west.req())).status is OrderStatus.LIVE


async def test_a_reconcile_counts_the_other_daemons_open_orders_and_raises_no_alarm(
    shared: Pair,
) -> None:
    """The account's open orders include the other daemon's: the pass counts them under
    `other_daemons` (its log line and audit entry say so) and settles only its own; an order no
    daemon journaled would be `unknown_at_venue` and alarmed."""
    theirs = [await shared.east.ex.submit(shared.east.req(price=D(p))) for p in ("0.30", "0.31")]
    mine = await shared.west.ex.submit(shared.west.req())
    assert {r.status for r in (*theirs, mine)} == {OrderStatus.LIVE}
    with capture_logs() as logs:
        counts = await shared.west.ex.reconcile()
    assert (counts["other_daemons"], counts["unknown_at_venue"], counts["unchanged"]) == (2, 0, 1)
    assert [e for e in logs if e["event"] == "venue_order_not_in_journal"] == []
    for res in theirs:
        row = await shared.east.repos.orders.get(res.client_order_id)
        assert row is not None and row.status is OrderStatus.LIVE
