"""The paper broker over a long run: finished orders leave the working set, polls stay cheap."""

from __future__ import annotations

from decimal import Decimal

import pytest

from errors import OrderRejected
from execution.paper import PaperBroker
from execution.ports import MarketMeta, VenueStatus
from models import Level
from tests.helpers import TOKEN, make_order

META = MarketMeta(TOKEN, "0x" + "ab" * 32, Decimal("0.01"), Decimal("5"), False)


class Books:
    """Levels set by the test; whole-book reads are counted (best-level peeks are not)."""

    def __init__(self) -> None:
        self.a: list[Level] = []
        self.b: list[Level] = []
        self.full_reads = 0

    def asks(self, token_id: str) -> list[Level] | None:
        self.full_reads += 1
        return list(self.a)

    def bids(self, token_id: str) -> list[Level] | None:
        self.full_reads += 1
        return list(self.b)

    def best_ask(self, token_id: str) -> Level | None:
        return self.a[0] if self.a else None

    def best_bid(self, token_id: str) -> Level | None:
        return self.b[0] if self.b else None


async def test_finished_orders_leave_the_working_set_and_are_kept_bounded() -> None:
    books = Books()
    books.a = [(Decimal("0.50"), Decimal("1000000"))]
    broker = PaperBroker(books=books, finished_kept=5)
    sent = []
    for _ in range(12):
        p = await broker.prepare(make_order(order_type="FAK", price="0.50", size="10"), META)
        ack = await broker.send(p)
        assert ack.status is VenueStatus.MATCHED
        sent.append(p)
    assert await broker.open_orders() == []
    assert len(broker._orders) == 0 and len(broker._finished) == 5
    # The newest finished orders still answer lookups and refuse a duplicate send.
    last = await broker.lookup(sent[-1].venue_order_id)
    assert last is not None and last.status is VenueStatus.MATCHED
    assert last.size_matched == Decimal("10")
    with pytest.raises(OrderRejected, match="Duplicated"):
        await broker.send(sent[-1])
    assert await broker.lookup(sent[0].venue_order_id) is None  # aged out


async def test_cancel_and_fill_move_resting_orders_out_of_the_working_set() -> None:
    books = Books()
    broker = PaperBroker(books=books)
    a = await broker.prepare(make_order(price="0.40"), META)
    b = await broker.prepare(make_order(price="0.45"), META)
    await broker.send(a)
    await broker.send(b)
    assert len(await broker.open_orders()) == 2
    result = await broker.cancel([a.venue_order_id])
    assert result.canceled == (a.venue_order_id,)
    again = await broker.cancel([a.venue_order_id])
    assert a.venue_order_id in again.not_canceled
    books.a = [(Decimal("0.45"), Decimal("100"))]
    await broker.poll()
    filled = await broker.lookup(b.venue_order_id)
    assert filled is not None and filled.status is VenueStatus.MATCHED
    assert await broker.open_orders() == []


async def test_poll_reads_whole_books_only_for_orders_the_book_crosses() -> None:
    books = Books()
    books.a = [(Decimal("0.60"), Decimal("100"))]
    books.b = [(Decimal("0.30"), Decimal("100"))]
    broker = PaperBroker(books=books)
    for i in range(200):  # resting BUYs under the ask: none can fill
        price = Decimal("0.10") + Decimal(i % 40) / 100
        await broker.send(await broker.prepare(make_order(price=str(price)), META))
    books.full_reads = 0
    await broker.poll()
    assert books.full_reads == 0
    books.a = [(Decimal("0.49"), Decimal("5"))]  # now crosses the BUYs at 0.49 (5 of them)
    await broker.poll()
    assert 0 < books.full_reads <= 3 * 5  # a few reads per crossed order, none for the rest
