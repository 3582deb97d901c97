"""A reconcile pass costs one open-orders read, not one lookup and one write per resting order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from models import OrderStatus
from simulator import Simulator
from tests.integration.test_executor_live import MAKER, close_live, make_live


async def test_resting_orders_are_settled_from_one_read_and_not_rewritten(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=31, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim, risk_max_open_orders=100)
        reqs = [first.req(price=Decimal("0.20") + Decimal(i) / 100) for i in range(12)]
        for r in reqs:
            assert (await first.ex.submit(r)).status is OrderStatus.LIVE
        key = first.key
        await close_live(first)
        # While the daemon is down, one of them fills.
        sim.seed_order(
            maker=MAKER,
            token_id=first.token,
            side="SELL",
            price=Decimal("0.31"),
            size=Decimal("10"),
        )

        second = await make_live(tmp_path, sim, key=key, risk_max_open_orders=100)
        try:
            before = len(sim.request_log)
            events_before = len(await second.repos.audit.tail(event="order_reconciled", limit=500))
            counts = await second.ex.reconcile()
            requests = sim.request_log[before:]
            lookups = [r for r in requests if r.path.startswith("/data/order/")]
            # Only the order that left the open list unseen is looked up, and only it is written.
            assert len(lookups) == 1, [r.path for r in requests]
            assert counts["unchanged"] == 11 and counts["settled"] == 1, counts
            events = await second.repos.audit.tail(event="order_reconciled", limit=500)
            assert len(events) - events_before == 1
            filled = await second.repos.orders.get(reqs[-1].client_order_id)
            assert filled is not None and filled.status is OrderStatus.FILLED
            assert filled.size_matched == Decimal("10")
            for r in reqs[:-1]:
                row = await second.repos.orders.get(r.client_order_id)
                assert row is not None and row.status is OrderStatus.LIVE
            await second.assert_journal_matches_ledger()
            # A second pass right after finds nothing to do.
            again = await second.ex.reconcile()
            assert again["unchanged"] == 11 and again["settled"] == 0, again
        finally:
            await close_live(second)
