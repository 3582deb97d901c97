"""The daemon's handling of `delayed` orders, against the simulator's taker delay, end to end.

Venue facts (docs/venue-mechanics.md §5): on a market with a taker delay (`itode`, `sd` on
`/clob-markets`, `seconds_delay` on `/markets`: TS client `MarketDetails`, NautilusTrader's
captures) a marketable order is answered `status: "delayed"` (docs.polymarket.com
trading/orders/create; NautilusTrader `PolymarketOrderStatus::Delayed`), then matched after the
delay, its outcome arriving as user-feed trades and order events; FOK/FAK remainders canceled.
The daemon must treat `delayed` as accepted and pending, keep the reservation, never re-send,
and settle from the feed or, failing that, a lookup after `sd` plus a margin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

from models import OrderStatus, OrderType
from simulator import Simulator
from tests.helpers import until
from tests.integration.test_executor_live import MAKER, Live, close_live, make_live

DELAY = 0.3


@contextlib.asynccontextmanager
async def service(fn: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    task = asyncio.create_task(fn())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def delayed_live(tmp_path: Path, sim: Simulator) -> Live:
    lv = await make_live(tmp_path, sim, delayed_order_margin_s=0.2, reconcile_interval_s=3600)
    lv.market.taker_delay_s = DELAY
    return lv


def ask(lv: Live, size: str, price: str = "0.50") -> str:
    return lv.sim.seed_order(MAKER, lv.token, "SELL", Decimal(price), Decimal(size))


async def status_of(lv: Live, coid: str) -> OrderStatus | None:
    row = await lv.repos.orders.get(coid)
    return row.status if row is not None else None


async def test_delayed_fak_is_pending_then_settled_by_the_user_feed(tmp_path: Path) -> None:
    async with Simulator(seed=101, settle_delay_s=0.01) as sim:
        lv = await delayed_live(tmp_path, sim)
        feed = lv.built.user_feed
        assert feed is not None
        try:
            async with service(feed.run):
                await until(lambda: feed.connected)
                ask(lv, "5")
                meta = await lv.ex.rules.ensure(lv.token)
                assert meta is not None and meta.taker_delay_s == DELAY  # read off /markets
                req = lv.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FAK)
                res = await lv.ex.submit(req)
                # Accepted and pending: not filled, not refused, reservation kept.
                assert res.status is OrderStatus.LIVE and res.filled_size == 0
                assert res.reason == "delayed by the venue"
                assert lv.ex.positions.open_count == 1
                ask(lv, "3")  # more liquidity before the delay ends
                async with asyncio.timeout(5):
                    while await status_of(lv, req.client_order_id) in (  # noqa: ASYNC110  # a journal row has no event
                        OrderStatus.LIVE,
                        OrderStatus.PARTIALLY_FILLED,
                    ):
                        await asyncio.sleep(0.02)
                row = await lv.repos.orders.get(req.client_order_id)
                assert row is not None
                assert (row.status, row.size_matched) == (OrderStatus.CANCELED, Decimal("8"))
                await until(lambda: lv.ex.position(lv.token, strategy="test").size == Decimal("8"))
                assert lv.ex.positions.open_count == 0
                assert lv.posts() == 1  # never re-sent
                events = [a.detail.get("why") for a in await lv.repos.audit.tail(limit=100)]
                assert "delayed order looked up" not in events  # the feed did it
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_delayed_order_without_feed_events_is_looked_up_after_the_delay(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=102, settle_delay_s=0.01) as sim:
        lv = await delayed_live(tmp_path, sim)
        try:
            async with service(lambda: lv.ex.run(tick_s=0.02, periodic_reconcile=False)):
                ask(lv, "10")
                req = lv.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FAK)
                res = await lv.ex.submit(req)
                assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"
                assert lv.ex.reconciler.delayed_count == 1
                await until(
                    lambda: (
                        lv.ex.reconciler.delayed_count == 0
                        and lv.ex.position(lv.token, strategy="test").size == Decimal("10")
                    )
                )
                row = await lv.repos.orders.get(req.client_order_id)
                assert row is not None
                assert (row.status, row.size_matched) == (OrderStatus.FILLED, Decimal("10"))
                fills = await lv.repos.fills.for_order(req.client_order_id)
                assert sum(f.size for f in fills) == Decimal("10")
                # No feed ran: the trades were read by market, never by asset.
                reads = [r.query for r in sim.request_log if r.path == "/data/trades"]
                assert any(f"market={lv.market.condition_id}" in q for q in reads)
                assert not any("asset_id=" in q for q in reads)
                assert lv.posts() == 1
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_delayed_fok_unfillable_after_the_delay_is_killed_and_frees_its_reservation(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=103, settle_delay_s=0.01) as sim:
        lv = await delayed_live(tmp_path, sim)
        feed = lv.built.user_feed
        assert feed is not None
        try:
            async with service(feed.run):
                await until(lambda: feed.connected)
                seeded = ask(lv, "10")
                req = lv.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FOK)
                res = await lv.ex.submit(req)
                assert res.status is OrderStatus.LIVE and res.reason == "delayed by the venue"
                assert sim.cancel_seeded(seeded)  # the liquidity leaves during the delay
                async with asyncio.timeout(5):
                    while await status_of(lv, req.client_order_id) is OrderStatus.LIVE:  # noqa: ASYNC110  # a journal row has no event
                        await asyncio.sleep(0.02)
                row = await lv.repos.orders.get(req.client_order_id)
                assert row is not None
                assert (row.status, row.size_matched) == (OrderStatus.CANCELED, Decimal("0"))
                assert lv.ex.positions.open_count == 0
                assert lv.ex.position(lv.token, strategy="test").size == 0
                assert lv.posts() == 1
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


async def test_delayed_fok_killed_without_feed_events_is_settled_by_its_lookup(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=104, settle_delay_s=0.01) as sim:
        lv = await delayed_live(tmp_path, sim)
        try:
            async with service(lambda: lv.ex.run(tick_s=0.02, periodic_reconcile=False)):
                seeded = ask(lv, "10")
                req = lv.req(price=Decimal("0.50"), size=Decimal("10"), order_type=OrderType.FOK)
                res = await lv.ex.submit(req)
                assert res.reason == "delayed by the venue"
                assert sim.cancel_seeded(seeded)
                await until(lambda: lv.ex.reconciler.delayed_count == 0)
                row = await lv.repos.orders.get(req.client_order_id)
                assert row is not None
                assert (row.status, row.size_matched) == (OrderStatus.CANCELED, Decimal("0"))
                audit = await lv.repos.audit.tail(event="order_reconciled")
                assert [a.detail.get("why") for a in audit] == ["delayed order looked up"]
                assert lv.ex.positions.open_count == 0
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)
