"""A marketable BUY filled as far as the venue's rounding allows is FILLED, not "rest killed".

A FAK/FOK BUY spends price x size rounded down to the cent: 20.61 shares at 0.97 is 19.9917
pUSD, sent as 19.99 pUSD for 20.6082 shares (the SDK's order builder rounds a market BUY's pUSD
amount down to the cent and buys amount / price shares: `get_market_order_amounts` in
https://github.com/Polymarket/py-clob-client-v2). When those 20.6082 match, nothing
was killed; the journal, the result and the paper broker must all say FILLED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from execution.market_rules import fillable_size
from models import OrderStatus, OrderType, Side
from simulator import Simulator
from storage import Database, Repositories
from tests.helpers import make_order
from tests.integration.test_executor_live import Live, close_live, make_live, seed_asks
from tests.unit.test_executor_paper import TOKEN as PAPER_TOKEN
from tests.unit.test_executor_paper import DictBooks, make_executor


@pytest.mark.parametrize(
    ("side", "order_type", "price", "size", "fillable"),
    [
        ("BUY", "FAK", "0.97", "20.61", "20.6082"),  # 19.99 pUSD / 0.97, down to 4 decimals
        ("BUY", "FOK", "0.68", "21.85", "21.8382"),  # 14.85 / 0.68
        ("BUY", "FAK", "0.50", "10", "10"),  # exact in cents: nothing lost
        ("SELL", "FAK", "0.97", "20.61", "20.61"),  # a SELL sends its shares as they are
        ("BUY", "GTC", "0.97", "20.61", "20.61"),  # a limit BUY pays 19.9917 exactly
        ("SELL", "GTC", "0.33", "7.5", "7.5"),
    ],
)
def test_fillable_size_follows_the_venue_amounts(
    side: str, order_type: str, price: str, size: str, fillable: str
) -> None:
    req = make_order(side=side, order_type=order_type, price=price, size=size)
    assert fillable_size(req) == Decimal(fillable)


# --- live broker, real SDK, simulator ---------------------------------------------------------


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=17, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim)
        try:
            yield lv
        finally:
            await close_live(lv)


@pytest.mark.parametrize("order_type", [OrderType.FAK, OrderType.FOK])
async def test_live_marketable_buy_filled_to_its_rounded_size_is_filled(
    live: Live, order_type: OrderType
) -> None:
    seed_asks(live, price="0.97", size="100")
    req = live.req(price=Decimal("0.97"), size=Decimal("20.61"), order_type=order_type)
    res = await live.ex.submit(req)
    assert res.status is OrderStatus.FILLED, res
    # The venue spends the whole 19.99 pUSD at the ask and pays every share it buys, floored to
    # 6 decimals: 20.608247, above the 20.6082 signed (taking with surplus, py-clob-client-v2
    # issue #89; docs/venue-mechanics.md §6).
    assert res.filled_size == Decimal("20.608247")
    row = await live.repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    assert row.size_matched == Decimal("20.608247")
    (venue,) = live.our_orders()
    assert Decimal(venue["size_matched"]) == Decimal("20.608247")
    await live.assert_journal_matches_ledger()


async def test_live_fak_buy_short_of_liquidity_is_still_rest_killed(live: Live) -> None:
    seed_asks(live, price="0.97", size="12")
    req = live.req(price=Decimal("0.97"), size=Decimal("20.61"), order_type=OrderType.FAK)
    res = await live.ex.submit(req)
    assert res.status is OrderStatus.CANCELED and res.filled_size == Decimal("12")
    assert "remainder killed" in res.reason


# --- paper broker ------------------------------------------------------------------------------


async def test_paper_marketable_buy_fills_what_the_venue_would(tmp_path: Path) -> None:
    async with Database(tmp_path / "paper.db") as db:
        books = DictBooks()
        books.a[PAPER_TOKEN] = [(Decimal("0.97"), Decimal("100"))]
        ex = make_executor(Repositories.over(db), books, max_order_notional=Decimal("100"))
        await ex.start()
        buy = make_order(
            token_id=PAPER_TOKEN, price="0.97", size="20.61", order_type="FAK", side=Side.BUY
        )
        res = await ex.submit(buy)
        assert res.status is OrderStatus.FILLED
        # As on the venue: 19.99 pUSD of shares, not 20.61 shares for 19.9917.
        assert res.filled_size == Decimal("20.6082")
        assert ex.position(PAPER_TOKEN, strategy="sniper").size == Decimal("20.6082")
        fok = make_order(token_id=PAPER_TOKEN, price="0.97", size="80", order_type="FOK")
        # 80 at 0.97 is 77.60 pUSD for 80 shares, but only 79.3918 are left: killed whole.
        res = await ex.submit(fok)
        assert res.status is OrderStatus.REJECTED and "FOK" in res.reason
