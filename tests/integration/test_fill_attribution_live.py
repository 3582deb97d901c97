"""Our fills from mint, merge and sweep trades: the real executor, real SDK, real sockets.

The venue matches a BUY against the other token's resting BUYs (a mint) and a SELL against the
other token's resting SELLs (a merge); the trade message is the taker's view, each maker entry
in its own token, and `maker_orders[].side` may be missing on user-channel fills
(docs/venue-mechanics.md §2; NautilusTrader issues #3126 / #3357 booked these makers on the
wrong side). A taker that sweeps levels gets one trade and is booked at the size-weighted
average of its legs; a BUY's price improvement comes as extra shares (§6; py-clob-client-v2
issue #89). Each test checks our fills, our positions and the venue's balances, and that
collateral is conserved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from models import LiquidityRole, OrderStatus, OrderType, Side
from simulator import Simulator
from tests.integration.test_executor_live import MAKER, Live, close_live, make_live
from tests.integration.test_sim_matching import assert_conserved, supply

D = Decimal


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=23, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim)
        try:
            yield lv
        finally:
            await close_live(lv)


@contextlib.asynccontextmanager
async def user_feed(live: Live) -> AsyncIterator[None]:
    feed = live.built.user_feed
    assert feed is not None
    task = asyncio.create_task(feed.run(), name="test:feed")
    try:
        for _ in range(200):
            if feed.connected:
                break
            await asyncio.sleep(0.02)
        assert feed.connected
        await asyncio.sleep(0.1)  # the connect's reconcile pass
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool]) -> None:
    """Wait until `check()` holds (fills arrive on the feed); fail after about 5 s."""
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def venue_tokens(live: Live, token: str) -> Decimal:
    b = live.sim.ledger()["balances"][live.address.lower()]
    return D(b["tokens"].get(token, 0))


@pytest.mark.parametrize(("path", "feed_side"), [("feed", True), ("feed", False), ("rest", True)])
async def test_our_resting_buy_no_filled_by_a_buy_yes_is_booked_as_buy_no(
    live: Live, path: str, feed_side: bool
) -> None:
    yes, no = live.market.token_ids
    live.sim.engine.feed_maker_side = feed_side
    res = await live.ex.submit(live.req(token_id=no, price=D("0.40"), size=D("10")))
    assert res.status is OrderStatus.LIVE
    before = supply(live.sim, live.market)
    async with contextlib.AsyncExitStack() as stack:
        if path == "feed":
            await stack.enter_async_context(user_feed(live))
        # Another wallet buys Yes at 0.60: with our No bid at 0.40 that is a mint of 10 sets.
        live.sim.seed_order(maker=MAKER, token_id=yes, side="BUY", price=D("0.60"), size=D("10"))
        if path == "feed":
            await until(lambda: live.ex.position(no, strategy="test").size == D("10"))
        else:
            await live.ex.reconcile()
    # The Yes buyer was funded its 6 pUSD when it was seeded.
    assert_conserved(before, supply(live.sim, live.market), D("10"), funded=D("6"))
    (fill,) = await live.repos.fills.for_order(res.client_order_id)
    assert (fill.side, fill.token_id, fill.price, fill.size) == (Side.BUY, no, D("0.4"), D("10"))
    assert fill.role is LiquidityRole.MAKER and fill.fee == 0
    assert live.ex.position(no, strategy="test").size == D("10") == venue_tokens(live, no)
    assert live.ex.position(yes, strategy="test").size == 0 == venue_tokens(live, yes)
    row = await live.repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    await live.assert_journal_matches_ledger()


async def test_a_take_profit_closed_by_a_merge_leaves_us_flat(live: Live) -> None:
    yes, no = live.market.token_ids
    live.sim.engine.feed_maker_side = False  # as some live user-channel fills arrive
    live.sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.40"), size=D("10"))
    async with user_feed(live):
        entry = await live.ex.submit(live.req(token_id=yes, price=D("0.40"), size=D("10")))
        assert entry.status is OrderStatus.FILLED
        await until(lambda: live.ex.position(yes, strategy="test").size == D("10"))
        tp = await live.ex.submit(
            live.req(token_id=yes, side=Side.SELL, price=D("0.55"), size=D("10"))
        )
        assert tp.status is OrderStatus.LIVE
        before = supply(live.sim, live.market)
        # Someone sells No at 0.45 against our Yes ask at 0.55: the exchange merges 10 sets.
        # (seeding the order funds its seller with the 10 No it sells)
        live.sim.seed_order(maker=MAKER, token_id=no, side="SELL", price=D("0.45"), size=D("10"))
        await until(lambda: live.ex.position(yes, strategy="test").size == 0)
    assert_conserved(before, supply(live.sim, live.market), D("-10"), funded_no=D("10"))
    (fill,) = await live.repos.fills.for_order(tp.client_order_id)
    assert (fill.side, fill.token_id, fill.price, fill.size) == (Side.SELL, yes, D("0.55"), D("10"))
    pos = live.ex.position(yes, strategy="test")
    assert (pos.size, pos.realized_pnl) == (D(0), D("1.5"))  # (0.55 - 0.40) x 10
    assert live.ex.position(no, strategy="test").size == 0
    assert venue_tokens(live, yes) == 0 == venue_tokens(live, no)
    await live.assert_journal_matches_ledger()


async def test_a_sweep_is_booked_at_the_average_with_the_surplus_shares(live: Live) -> None:
    yes, no = live.market.token_ids
    for price, size in (("0.40", "5"), ("0.42", "5"), ("0.44", "100")):
        live.sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D(price), size=D(size))
    # A resting No bid at 0.59 ranks as a Yes ask at 0.41: the second leg is a mint.
    live.sim.seed_order(maker=MAKER, token_id=no, side="BUY", price=D("0.59"), size=D("5"))
    before = supply(live.sim, live.market)
    res = await live.ex.submit(
        live.req(token_id=yes, price=D("0.44"), size=D("10"), order_type=OrderType.FAK)
    )
    assert res.status is OrderStatus.FILLED, res
    await live.ex.reconcile()
    # 4.40 pUSD: 5 at 0.40, 5 at 0.41 (mint), then 0.35 / 0.42 = 0.833333 at 0.42: more shares
    # than the order's 10, at an average below its limit.
    spent = D("2") + D("2.05") + D("0.833333") * D("0.42")
    shares = D("10.833333")
    (fill,) = await live.repos.fills.for_order(res.client_order_id)
    assert (fill.side, fill.token_id, fill.size) == (Side.BUY, yes, shares)
    assert fill.role is LiquidityRole.TAKER
    assert (fill.price * fill.size).quantize(D("1e-12")) == spent
    assert live.ex.position(yes, strategy="test").size == shares == venue_tokens(live, yes)
    cash = D(live.sim.ledger()["balances"][live.address.lower()]["collateral"])
    assert cash == D("10000") - spent
    assert_conserved(before, supply(live.sim, live.market), D("5"))
    await live.assert_journal_matches_ledger()
