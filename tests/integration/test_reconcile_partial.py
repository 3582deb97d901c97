"""A resting order that goes on matching between reconcile passes, with the user feed down.

The venue keeps listing it LIVE while its matched size grows (3, then 7 of 10), so the journal
status stays PARTIALLY_FILLED: each pass must still record the new matched size (the row, the
audit trail, the open commitment risk reads) and fetch the new fills into the position. Real
simulator over loopback, real SDK, real executor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from errors import PolydError
from models import OrderStatus
from simulator import Simulator
from tests.integration.test_executor_live import MAKER, Live, close_live, make_live

D = Decimal
PRICE = D("0.40")


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=41, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim)
        try:
            yield lv
        finally:
            await close_live(lv)


async def resting_buy(live: Live) -> str:
    """Our GTC BUY 10 @ 0.40, resting; returns its client order id."""
    res = await live.ex.submit(live.req(price=PRICE, size=D("10")))
    assert res.status is OrderStatus.LIVE, res.reason
    return res.client_order_id


def match(live: Live, size: str) -> None:
    """Another wallet sells `size` into our resting bid (no user feed runs: we hear nothing)."""
    live.sim.seed_order(maker=MAKER, token_id=live.token, side="SELL", price=PRICE, size=D(size))


def venue_matched(live: Live) -> tuple[str, Decimal]:
    (order,) = live.our_orders()
    return order["status"], D(order["size_matched"])


async def reconciled_sizes(live: Live, coid: str) -> list[str]:
    """The `size_matched` of every `order_reconciled` audit entry of our order, oldest first."""
    row = await live.repos.orders.get(coid)
    assert row is not None and row.venue_order_id is not None
    entries = await live.repos.audit.tail(event="order_reconciled", limit=100)
    return [
        str(e.detail["size_matched"])
        for e in reversed(entries)
        if e.client_order_id == coid or e.detail.get("venue_order_id") == row.venue_order_id
    ]


async def assert_recorded(live: Live, coid: str, matched: str) -> None:
    row = await live.repos.orders.get(coid)
    assert row is not None
    assert (row.status, row.size_matched) == (OrderStatus.PARTIALLY_FILLED, D(matched))
    fills = await live.repos.fills.for_order(coid)
    assert sum((f.size for f in fills), D(0)) == D(matched)
    assert live.ex.position(live.token, strategy="test").size == D(matched)
    # What is still resting is what risk counts as committed: the remainder at the limit price.
    remaining = D("10") - D(matched)
    assert live.ex.positions.open_buy_notional(token_id=live.token) == PRICE * remaining
    await live.assert_journal_matches_ledger()


async def test_matched_size_growing_under_an_unchanged_status_is_recorded(live: Live) -> None:
    coid = await resting_buy(live)
    match(live, "3")
    assert venue_matched(live) == ("LIVE", D("3"))
    first = await live.ex.reconcile()
    assert (first["settled"], first["unchanged"]) == (1, 0), first
    await assert_recorded(live, coid, "3")

    match(live, "4")
    assert venue_matched(live) == ("LIVE", D("7"))  # the venue's status has not moved
    second = await live.ex.reconcile()
    assert (second["settled"], second["unchanged"]) == (1, 0), second
    await assert_recorded(live, coid, "7")
    assert await reconciled_sizes(live, coid) == ["3", "7"]

    third = await live.ex.reconcile()  # nothing moved since: nothing is written
    assert (third["settled"], third["unchanged"]) == (0, 1), third
    assert await reconciled_sizes(live, coid) == ["3", "7"]
    await assert_recorded(live, coid, "7")


async def test_growth_is_recorded_from_the_order_listing_when_trades_are_unavailable(
    live: Live,
) -> None:
    coid = await resting_buy(live)
    match(live, "3")
    await live.ex.reconcile()
    await assert_recorded(live, coid, "3")

    match(live, "4")
    # The trades listing fails for the whole pass; the order listing still says 7 matched.
    live.sim.faults.add(kind="status", route="GET /data/trades", status=500, count=1000)
    with pytest.raises(PolydError):
        await live.ex.reconcile()
    row = await live.repos.orders.get(coid)
    assert row is not None
    assert (row.status, row.size_matched) == (OrderStatus.PARTIALLY_FILLED, D("7"))
    assert live.ex.positions.open_buy_notional(token_id=live.token) == PRICE * D("3")
    assert live.ex.position(live.token, strategy="test").size == D(
        "3"
    )  # the new trades are not fetched yet

    live.sim.faults.clear()
    again = await live.ex.reconcile()
    assert (again["settled"], again["unchanged"]) == (0, 1), again
    await assert_recorded(live, coid, "7")
