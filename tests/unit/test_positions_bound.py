"""PositionBook keeps at most `max_flat` flat positions in memory, and every figure it reports
is the same as that of a book that keeps them all, run side by side on the same trades.

The trades come as the database writes them (`move`: the row before and the row after), from a
stand-in table or from the real `FillRepository` on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from execution.positions import MAX_FLAT, PositionBook
from models import UNATTRIBUTED, ZERO, Fill, Position, Side, TradeStatus
from storage import Repositories
from tests.helpers import make_order

D = Decimal
BOUND = 50
STRATEGIES = ("sniper", "copy", UNATTRIBUTED)
NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)


def tok(i: int) -> str:
    return f"{7 * 10**69 + i}"


class Table:
    """The `positions` table as `FillRepository.record_moves` keeps it: a fill moves one row,
    and the books hear of it with the row it replaced."""

    def __init__(self, *books: PositionBook) -> None:
        self.rows: dict[tuple[str, str], Position] = {}
        self.books = books

    def fill(self, strategy: str, token: str, side: Side, price: str, size: str) -> Position:
        before = self.rows.get((strategy, token)) or Position(token_id=token, strategy=strategy)
        after = before.apply(side, D(price), D(size), D("0.013"))  # a fee: realized moves on
        self.rows[(strategy, token)] = after  # a sale of nothing too
        for b in self.books:
            b.move([(before, after)])
        return after

    def realized(self, strategy: str | None = None) -> Decimal:
        return sum(
            (p.realized_pnl for p in self.rows.values() if strategy in (None, p.strategy)), ZERO
        )


def figures(book: PositionBook) -> dict[str, object]:
    """Everything the book reports that sums over positions."""
    out: dict[str, object] = {
        "realized": book.realized(),
        "unrealized": book.unrealized(),
        "exposure": book.exposure(),
        "cost": book.cost_exposure(),
        "redeemable": book.redeemable(),
        "daily": book.daily_pnl(NOW),
        "strategies": book.strategies(),
        "held": sorted((p.strategy, p.token_id, p.size) for p in book.positions() if p.size),
    }
    for s in STRATEGIES:
        out[f"realized:{s}"] = book.realized(strategy=s)
        out[f"exposure:{s}"] = book.exposure(strategy=s)
        out[f"unrealized:{s}"] = book.unrealized(strategy=s)
    return out


def test_the_bound_is_a_module_constant_and_the_default() -> None:
    assert PositionBook().max_flat == MAX_FLAT == 10_000


def test_25000_tokens_traded_flat_keep_the_book_bounded_and_every_figure_exact() -> None:
    """Each token is bought and sold flat by one of the strategies; some stay held, some go
    flat with an order still open, and tokens let go of long ago are traded again."""
    bounded, full = PositionBook(max_flat=BOUND), PositionBook(max_flat=10**9)
    table = Table(bounded, full)
    held = 0
    order = None
    for i in range(25_000):
        s, t = STRATEGIES[i % 3], tok(i)
        if order is not None and i % 1000 == 4:  # the order left: its position may go now
            for b in (bounded, full):
                b.update_open(order.client_order_id, None)
            order = None
        table.fill(s, t, Side.BUY, "0.40", "10")
        if i % 997 == 0:
            held += 1  # held: never let go of
            for b in (bounded, full):
                b.set_payout(t, D(1))  # resolved, waiting to be redeemed
            continue
        if i % 1000 == 1:  # flat with an order still open: kept until the order leaves
            order = make_order(strategy=s, token_id=t, side="SELL", price="0.6", size="5")
            for b in (bounded, full):
                b.add_open(order)
        table.fill(s, t, Side.SELL, f"0.{30 + i % 40}", "10")
        j = i - 4_998
        if i % 250 == 0 and j > 0 and j % 997:  # a token let go of long ago, traded again
            old, s_old = tok(j), STRATEGIES[j % 3]
            assert bounded.position(old, strategy=s_old).size == 0
            table.fill(s_old, old, Side.SELL, "0.50", "1")  # sells nothing, pays the fee
            table.fill(s_old, old, Side.BUY, "0.20", "3")
            table.fill(s_old, old, Side.SELL, "0.70", "3")
        assert bounded.realized() == full.realized()
        assert len(bounded.positions()) <= BOUND + held + 1
        if i % 2_500 == 0:
            assert figures(bounded) == figures(full)
            assert bounded.realized() == table.realized()
    assert figures(bounded) == figures(full)
    for s in STRATEGIES:
        assert bounded.realized(strategy=s) == table.realized(s) != ZERO
    assert len(full.positions()) == 25_000 and len(bounded.positions()) == BOUND + held


def test_a_token_traded_again_after_it_was_let_go_of_counts_its_pnl_once() -> None:
    book = PositionBook(max_flat=1)
    table = Table(book)
    table.fill("sniper", tok(1), Side.BUY, "0.40", "10")
    table.fill("sniper", tok(1), Side.SELL, "0.50", "10")  # realized 0.974: 1, less fees
    table.fill("sniper", tok(2), Side.BUY, "0.40", "10")
    table.fill("sniper", tok(2), Side.SELL, "0.30", "10")  # tok(1) let go of
    assert [p.token_id for p in book.positions()] == [tok(2)]
    assert book.position(tok(1), strategy="sniper") == Position(token_id=tok(1), strategy="sniper")
    table.fill("sniper", tok(1), Side.BUY, "0.10", "10")  # a fresh entry, its row's PnL
    assert book.position(tok(1), strategy="sniper") == table.rows[("sniper", tok(1))]
    assert book.realized() == book.realized(strategy="sniper") == table.realized()
    table.fill("sniper", tok(1), Side.SELL, "0.90", "10")
    assert book.realized() == table.realized() == D("0.974") + D("-1.026") + D("7.974")
    assert book.strategies() == ["sniper"]


def test_a_strategy_whose_positions_were_all_let_go_of_still_reports_its_pnl() -> None:
    book = PositionBook(max_flat=1)
    table = Table(book)
    table.fill("copy", tok(1), Side.BUY, "0.40", "10")
    table.fill("copy", tok(1), Side.SELL, "0.50", "10")
    table.fill("sniper", tok(2), Side.BUY, "0.40", "10")
    table.fill("sniper", tok(2), Side.SELL, "0.50", "10")
    assert book.positions(strategy="copy") == []
    assert book.strategies() == ["copy", "sniper"]
    assert book.realized(strategy="copy") == table.realized("copy") == D("0.974")


def test_a_held_position_or_one_with_an_open_order_is_never_let_go_of() -> None:
    book = PositionBook(max_flat=0)
    table = Table(book)
    table.fill("sniper", tok(1), Side.BUY, "0.40", "10")
    buy = make_order(strategy="sniper", token_id=tok(2), side="BUY", price="0.3", size="5")
    book.add_open(buy)
    table.fill("sniper", tok(2), Side.BUY, "0.30", "5")
    table.fill("sniper", tok(2), Side.SELL, "0.30", "5")  # flat, its BUY still resting
    assert {p.token_id for p in book.positions()} == {tok(1), tok(2)}
    book.update_open(buy.client_order_id, None)
    table.fill("sniper", tok(3), Side.SELL, "0.30", "1")  # any write looks again
    assert [p.token_id for p in book.positions()] == [tok(1)]
    assert book.realized() == table.realized()


# --- through the real repository ------------------------------------------------------------


class Trader:
    """Journaled orders of two strategies, whose fills `record_moves` writes and both books
    take as the executor does."""

    def __init__(self, repos: Repositories, *books: PositionBook) -> None:
        self.repos, self.books, self.n = repos, books, 0

    async def order(self, strategy: str, token: str) -> str:
        self.n += 1
        venue = f"0x{self.n:x}"
        req = make_order(strategy=strategy, token_id=token)
        await self.repos.orders.record(req, venue_order_id=venue, payload_hash=f"h{self.n}")
        return venue

    async def fill(
        self,
        venue: str,
        token: str,
        side: str,
        price: str,
        size: str,
        *,
        trade: str | None = None,
        status: TradeStatus = TradeStatus.MATCHED,
    ) -> None:
        self.n += 1
        f = Fill(
            trade_id=trade or f"t{self.n}",
            venue_order_id=venue,
            token_id=token,
            side=Side(side),
            price=D(price),
            size=D(size),
            fee=D("0.01"),
            status=status,
        )
        recorded = await self.repos.fills.record_moves(f)
        assert recorded is not None
        for b in self.books:
            b.move(recorded.moves)

    async def round_trip(self, strategy: str, token: str, sell: str) -> str:
        venue = await self.order(strategy, token)
        await self.fill(venue, token, "BUY", "0.40", "10")
        await self.fill(venue, token, "SELL", sell, "10", trade=f"sell-{token}-{strategy}")
        return venue


async def stored(repos: Repositories, strategy: str | None = None) -> Decimal:
    rows = await repos.fills.positions(include_flat=True)
    return sum((p.realized_pnl for p in rows if strategy in (None, p.strategy)), ZERO)


async def agree(repos: Repositories, bounded: PositionBook, full: PositionBook) -> None:
    assert figures(bounded) == figures(full)
    assert bounded.realized() == await stored(repos)
    for s in STRATEGIES:
        assert bounded.realized(strategy=s) == await stored(repos, s)


async def test_fills_written_to_sqlite_and_a_restart_keep_every_total_exact(
    repos: Repositories,
) -> None:
    bounded, full = PositionBook(max_flat=3), PositionBook(max_flat=10**9)
    trader = Trader(repos, bounded, full)
    venues = [await trader.round_trip(STRATEGIES[i % 2], tok(i), f"0.{41 + i}") for i in range(12)]
    # Held by the sniper, then sold from the account by hand: the sniper's shares go with it.
    held = await trader.order("sniper", tok(20))
    await trader.fill(held, tok(20), "BUY", "0.40", "10")
    await trader.fill("0xmanual", tok(20), "SELL", "0.55", "10", trade="manual")
    await agree(repos, bounded, full)
    assert len(bounded.positions()) <= 3
    # Let go of, then written again: a trade again, a failed sale given back, a failed sale
    # outside the daemon giving the sniper its shares back.
    venue = await trader.order("sniper", tok(0))
    await trader.fill(venue, tok(0), "BUY", "0.20", "5")  # copy's SELL of tok(1) failed:
    await trader.fill(
        venues[1],
        tok(1),
        "SELL",
        "0.42",
        "10",
        trade=f"sell-{tok(1)}-copy",
        status=TradeStatus.FAILED,
    )
    await trader.fill(
        "0xmanual", tok(20), "SELL", "0.55", "10", trade="manual", status=TradeStatus.FAILED
    )
    await agree(repos, bounded, full)
    assert bounded.position(tok(20), strategy="sniper").size == 10
    assert bounded.position(tok(1), strategy="copy").size == 10
    # A restart loads the table under the same bound: the same totals.
    again = PositionBook(max_flat=3)
    again.load(await repos.fills.positions(include_flat=True))
    day, baseline = full.day
    assert day is not None
    again.set_day_baseline(day, baseline)  # as the executor restores it
    assert len(again.positions()) <= 3 + 3
    await agree(repos, again, full)
    # A token let go of at load, traded again.
    trader.books = (again, full)
    await trader.round_trip("copy", tok(3), "0.90")
    await agree(repos, again, full)
