"""PositionBook's running open-order totals agree with a recount after any sequence of changes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.positions import OpenOrder, PositionBook
from models import UNATTRIBUTED, ZERO, Position, Side
from tests.helpers import make_order
from venue.order_book import BookStore

TOKENS = ("1", "2", "3")
STRATEGIES = ("sniper", "copy")
D = Decimal


def recount(book: PositionBook) -> dict[str, Decimal]:
    """What the totals must be, summed from the open orders themselves."""
    opens = book.open_orders()
    out: dict[str, Decimal] = {"all": sum((o.notional for o in opens if o.side is Side.BUY), ZERO)}
    for t in TOKENS:
        out[f"buy:{t}"] = sum(
            (o.notional for o in opens if o.side is Side.BUY and o.token_id == t), ZERO
        )
        for s in STRATEGIES:
            out[f"sell:{s}:{t}"] = sum(
                (
                    o.remaining
                    for o in opens
                    if o.side is Side.SELL and o.token_id == t and o.strategy == s
                ),
                ZERO,
            )
            out[f"buy:{s}:{t}"] = sum(
                (
                    o.notional
                    for o in opens
                    if o.side is Side.BUY and o.token_id == t and o.strategy == s
                ),
                ZERO,
            )
    for s in STRATEGIES:
        out[f"strategy:{s}"] = sum(
            (o.notional for o in opens if o.side is Side.BUY and o.strategy == s), ZERO
        )
    return out


def totals(book: PositionBook) -> dict[str, Decimal]:
    out = {"all": book.open_buy_notional()}
    for t in TOKENS:
        out[f"buy:{t}"] = book.open_buy_notional(token_id=t)
        for s in STRATEGIES:
            out[f"sell:{s}:{t}"] = book.open_sell_size(t, strategy=s)
            out[f"buy:{s}:{t}"] = book.open_buy_notional(token_id=t, strategy=s)
    for s in STRATEGIES:
        out[f"strategy:{s}"] = book.open_buy_notional(strategy=s)
    return out


ids = st.sampled_from([f"c{i}" for i in range(8)])
add = st.tuples(
    st.just("add"),
    ids,
    st.sampled_from(STRATEGIES),
    st.sampled_from(TOKENS),
    st.sampled_from(list(Side)),
    st.decimals(min_value="0.001", max_value="0.999", places=3),
    st.decimals(min_value="0.01", max_value="100000", places=2),
)
update = st.tuples(
    st.just("update"),
    ids,
    st.one_of(st.none(), st.decimals(min_value="-1", max_value="100000", places=2)),
)


@settings(max_examples=300)
@given(st.lists(st.one_of(add, update), max_size=60))
def test_running_totals_equal_a_recount(ops: list[tuple[object, ...]]) -> None:
    book = PositionBook()
    for op in ops:
        if op[0] == "add":
            _, coid, strategy, token, side, price, size = op
            book.add_open_row(
                OpenOrder(str(coid), str(strategy), str(token), side, price, size)  # type: ignore[arg-type]
            )
        else:
            _, coid, remaining = op
            book.update_open(str(coid), remaining)  # type: ignore[arg-type]
        assert totals(book) == recount(book)
    for o in book.open_orders():  # every order leaves: every total is exactly zero again
        book.update_open(o.client_order_id, None)
    assert set(totals(book).values()) == {ZERO}


def test_replacing_an_order_under_the_same_id_counts_it_once() -> None:
    book = PositionBook()
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.BUY, Decimal("0.5"), Decimal("10")))
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.BUY, Decimal("0.4"), Decimal("10")))
    assert book.open_buy_notional() == Decimal("4.0")
    assert book.open_count == 1


def test_a_partial_fill_lowers_the_commitment() -> None:
    book = PositionBook()
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.BUY, Decimal("0.5"), Decimal("10")))
    book.add_open_row(OpenOrder("b", "copy", "1", Side.SELL, Decimal("0.6"), Decimal("7")))
    book.update_open("a", Decimal("4"))
    book.update_open("b", Decimal("2"))
    assert book.open_buy_notional(token_id="1") == Decimal("2.0")
    assert book.open_buy_notional(strategy="copy") == ZERO
    assert book.open_sell_size("1", strategy="copy") == Decimal("2")
    book.update_open("a", Decimal("0"))
    assert book.open_buy_notional() == ZERO


class BestOnly:
    """Best levels only: reading whole books (O(levels) per mark) fails the test."""

    def __init__(self, marks: dict[str, tuple[str, str]]) -> None:
        self.marks = {t: (Decimal(b), Decimal(a)) for t, (b, a) in marks.items()}

    def asks(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
        raise AssertionError("marks must not copy the whole book")

    def bids(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
        raise AssertionError("marks must not copy the whole book")

    def best_bid(self, token_id: str) -> tuple[Decimal, Decimal] | None:
        m = self.marks.get(token_id)
        return (m[0], Decimal("1")) if m else None

    def best_ask(self, token_id: str) -> tuple[Decimal, Decimal] | None:
        m = self.marks.get(token_id)
        return (m[1], Decimal("1")) if m else None


def test_marks_use_best_levels_and_skip_flat_positions() -> None:
    book = PositionBook(books=BestOnly({"1": ("0.40", "0.50"), "2": ("0.70", "0.80")}))
    book.load(
        [
            Position(token_id="1", size=Decimal("10"), avg_cost=Decimal("0.50")),
            Position(token_id="2", size=Decimal("0"), realized_pnl=Decimal("3")),
            Position(token_id="3", size=Decimal("4"), avg_cost=Decimal("0.25")),  # no book
        ]
    )
    assert book.mark("1") == Decimal("0.45")
    # Held: 10 x 0.45 (marked) + 4 x 0.25 (cost, unmarked); token 2 is flat.
    assert book.exposure() == Decimal("5.50")
    assert book.unrealized() == Decimal("-0.50")
    assert book.cost_exposure("1") == Decimal("5.00") and book.cost_exposure("2") == ZERO
    assert book.cost_exposure() == Decimal("6.00")


def test_realized_total_follows_every_position_update() -> None:
    book = PositionBook()
    book.set_position(Position(token_id="1", size=Decimal("5"), realized_pnl=Decimal("1.5")))
    book.set_position(Position(token_id="2", realized_pnl=Decimal("-0.25")))
    book.set_position(Position(token_id="1", size=Decimal("0"), realized_pnl=Decimal("2")))
    assert book.realized() == Decimal("1.75")
    assert book.realized() == sum((p.realized_pnl for p in book.positions()), ZERO)
    assert book.exposure() == ZERO  # nothing held any more


# --- positions, marks and PnL against a real book store ---------------------------------------


def store_with(**books: tuple[dict[str, str], dict[str, str]]) -> BookStore:
    """A `BookStore` whose books (token → (bids, asks), price → size) are fresh snapshots."""
    store = BookStore(stale_after_s=60)
    for token, (bids, asks) in books.items():
        store.ensure(token).replace(
            {Decimal(p): Decimal(s) for p, s in bids.items()},
            {Decimal(p): Decimal(s) for p, s in asks.items()},
            book_hash="",
            timestamp_ms=0,
            now=0,
        )
    return store


def test_an_unknown_token_has_an_empty_position() -> None:
    book = PositionBook()
    assert book.position("7", strategy="sniper") == Position(token_id="7", strategy="sniper")
    assert book.positions() == []
    assert book.cost_exposure("7") == ZERO


def test_cost_basis_follows_buys_and_a_partial_sell() -> None:
    book = PositionBook()
    p = Position(token_id="1", strategy="sniper")
    p = p.apply(Side.BUY, Decimal("0.40"), Decimal("10"))
    p = p.apply(Side.BUY, Decimal("0.60"), Decimal("10"))
    book.set_position(p)
    assert book.cost_exposure("1") == Decimal("10.00")  # 20 shares at 0.50
    p = p.apply(Side.SELL, Decimal("0.70"), Decimal("5"))
    book.set_position(p)
    assert book.position("1", strategy="sniper").size == Decimal("15")
    assert book.cost_exposure("1") == Decimal("7.50")  # 15 shares still at 0.50
    assert book.cost_exposure() == Decimal("7.50")
    assert book.realized() == Decimal("1.00")  # 5 x (0.70 - 0.50)
    book.set_position(p.apply(Side.SELL, Decimal("0.30"), Decimal("15")))
    assert book.cost_exposure("1") == ZERO and book.cost_exposure() == ZERO
    assert book.realized() == Decimal("-2.00")  # 1.00 + 15 x (0.30 - 0.50)


def test_mark_is_the_mid_or_the_bid_alone_and_none_without_bids() -> None:
    store = store_with(
        **{
            "1": ({"0.40": "5"}, {"0.50": "5"}),
            "2": ({"0.30": "5"}, {}),  # no asks: the bid alone
            "3": ({}, {"0.60": "5"}),  # no bids: nothing to sell into, no mark
        }
    )
    book = PositionBook(books=store)
    assert book.mark("1") == Decimal("0.45")
    assert book.mark("2") == Decimal("0.30")
    assert book.mark("3") is None
    assert book.mark("4") is None  # not watched
    assert PositionBook().mark("1") is None  # no book source at all


def test_exposure_and_unrealized_mark_what_they_can_and_add_open_buys() -> None:
    store = store_with(**{"1": ({"0.40": "5"}, {"0.50": "5"}), "3": ({}, {"0.60": "5"})})
    book = PositionBook(books=store)
    book.load(
        [
            Position(token_id="1", size=Decimal("10"), avg_cost=Decimal("0.30")),
            Position(token_id="3", size=Decimal("4"), avg_cost=Decimal("0.25")),  # no bid
        ]
    )
    assert book.unrealized() == Decimal("1.50")  # (0.45 - 0.30) x 10; token 3 unmarked
    assert book.exposure() == Decimal("5.50")  # 10 x 0.45 + 4 x 0.25 (cost)
    book.add_open(make_order(token_id="1", price="0.2", size="10"))
    book.add_open(make_order(token_id="1", side="SELL", price="0.9", size="3"))
    assert book.exposure() == Decimal("7.50")  # + 2.00 of open BUY; SELLs commit no cash
    store.mark_unusable("1")  # a stale book is no mark: back to cost
    assert book.unrealized() == ZERO
    assert book.exposure() == Decimal("3.00") + Decimal("1.00") + Decimal("2.00")


def test_add_open_commits_the_request_under_its_own_id_token_and_strategy() -> None:
    book = PositionBook()
    req = make_order(strategy="copy", token_id="2", price="0.25", size="8")
    book.add_open(req)
    (o,) = book.open_orders()
    assert o == OpenOrder(req.client_order_id, "copy", "2", Side.BUY, Decimal("0.25"), Decimal("8"))
    assert book.open_buy_notional(strategy="copy") == Decimal("2.00")
    assert book.open_buy_notional(token_id="2") == Decimal("2.00")
    assert book.open_buy_notional(strategy="sniper") == ZERO
    book.update_open(req.client_order_id, Decimal("-1"))  # nothing left: the order leaves
    assert book.open_count == 0 and book.open_orders() == []


def test_updating_an_unknown_order_changes_nothing() -> None:
    book = PositionBook()
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.SELL, Decimal("0.5"), Decimal("6")))
    book.update_open("zz", Decimal("3"))
    book.update_open("zz", None)
    assert book.open_count == 1
    assert book.open_sell_size("1", strategy="sniper") == Decimal("6")
    assert book.open_orders() == [
        OpenOrder("a", "sniper", "1", Side.SELL, Decimal("0.5"), Decimal("6"))
    ]


def test_daily_pnl_counts_from_the_first_look_of_each_utc_day() -> None:
    store = store_with(**{"1": ({"0.40": "5"}, {"0.50": "5"})})
    book = PositionBook(books=store)
    book.set_position(
        Position(
            token_id="1", size=Decimal("10"), avg_cost=Decimal("0.40"), realized_pnl=Decimal("2")
        )
    )
    day1 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    assert book.daily_pnl(day1) == ZERO  # the first look sets the baseline: 2 + 0.5
    assert book.day == ("2026-03-01", Decimal("2.500"))
    book.set_position(
        Position(
            token_id="1", size=Decimal("5"), avg_cost=Decimal("0.40"), realized_pnl=Decimal("3")
        )
    )
    assert book.daily_pnl(day1) == Decimal("0.75")  # 3 + 0.25 - 2.5
    day2 = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)
    assert book.daily_pnl(day2) == ZERO  # a new day starts from what stands at its first look
    assert book.day == ("2026-03-02", Decimal("3.250"))
    book.set_position(Position(token_id="1", realized_pnl=Decimal("1")))
    assert book.daily_pnl(day2) == Decimal("-2.250")


def test_a_restored_baseline_survives_a_restart_on_the_same_day() -> None:
    book = PositionBook()
    book.set_position(Position(token_id="1", realized_pnl=Decimal("4")))
    book.set_day_baseline("2026-03-01", Decimal("5"))
    assert book.day == ("2026-03-01", Decimal("5"))
    assert book.daily_pnl(datetime(2026, 3, 1, 12, tzinfo=UTC)) == Decimal("-1")
    # Another day: the restored figure no longer applies.
    assert book.daily_pnl(datetime(2026, 3, 2, 12, tzinfo=UTC)) == ZERO


def test_daily_pnl_without_a_time_reads_todays_utc_date(monkeypatch: pytest.MonkeyPatch) -> None:
    # Run in a local zone 12 hours away on the side where the local date is not the UTC date.
    local = "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-12"
    monkeypatch.setenv("TZ", local)
    time.tzset()
    try:
        book = PositionBook()
        book.set_position(Position(token_id="1", realized_pnl=Decimal("4")))
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        assert datetime.now().strftime("%Y-%m-%d") != today  # the zone really is a day off
        book.set_day_baseline(today, Decimal("1"))
        assert book.daily_pnl() == Decimal("3")
        assert book.day == (today, Decimal("1"))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_fresh_book_has_no_day_and_no_baseline_yet() -> None:
    assert PositionBook().day == (None, ZERO)


def test_fractional_holdings_and_remainders_count() -> None:
    store = store_with(**{"1": ({"0.40": "5"}, {"0.60": "5"})})
    book = PositionBook(books=store)
    book.set_position(Position(token_id="1", size=Decimal("0.5"), avg_cost=Decimal("0.30")))
    assert book.cost_exposure("1") == Decimal("0.150")
    assert book.exposure() == Decimal("0.250")  # 0.5 x 0.50 (mid)
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.BUY, Decimal("0.5"), Decimal("10")))
    book.update_open("a", Decimal("0.5"))  # half a share still open: still committed
    assert book.open_count == 1
    assert book.open_buy_notional(token_id="1") == Decimal("0.25")


def test_unrealized_sums_every_marked_holding() -> None:
    store = store_with(**{"1": ({"0.40": "5"}, {"0.50": "5"}), "2": ({"0.20": "5"}, {"0.30": "5"})})
    book = PositionBook(books=store)
    book.set_position(Position(token_id="1", size=Decimal("10"), avg_cost=Decimal("0.30")))
    book.set_position(Position(token_id="2", size=Decimal("4"), avg_cost=Decimal("0.50")))
    assert book.unrealized() == Decimal("1.50") + Decimal("-1.00")


class CountingBooks:
    """A `BookSource` over a `BookStore` that counts best-level reads by token."""

    def __init__(self, store: BookStore) -> None:
        self.store = store
        self.reads: list[str] = []

    def asks(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
        raise AssertionError("marks must not copy the whole book")

    def bids(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
        raise AssertionError("marks must not copy the whole book")

    def best_bid(self, token_id: str) -> tuple[Decimal, Decimal] | None:
        self.reads.append(token_id)
        return self.store.best_bid(token_id)

    def best_ask(self, token_id: str) -> tuple[Decimal, Decimal] | None:
        return self.store.best_ask(token_id)


def test_flat_positions_cost_nothing_to_value() -> None:
    books = CountingBooks(store_with(**{t: ({"0.40": "5"}, {"0.50": "5"}) for t in TOKENS}))
    book = PositionBook(books=books)
    book.set_position(Position(token_id="1", size=Decimal("10"), avg_cost=Decimal("0.5")))
    book.set_position(Position(token_id="2", realized_pnl=Decimal("1")))  # never held
    book.set_position(Position(token_id="3", size=Decimal("3"), avg_cost=Decimal("0.5")))
    book.set_position(Position(token_id="3", realized_pnl=Decimal("-0.3")))  # sold out
    book.exposure()
    book.unrealized()
    assert books.reads == ["1", "1"]  # one mark per read, for the one holding only


def test_totals_forget_tokens_and_strategies_whose_orders_all_left() -> None:
    # A long-running book sees many tokens come and go; its running totals must not keep them.
    book = PositionBook()
    for i in range(50):
        side = Side.BUY if i % 2 else Side.SELL
        book.add_open_row(
            OpenOrder(f"c{i}", f"s{i}", str(i + 1), side, Decimal("0.5"), Decimal("2"))
        )
        book.add_open_row(  # replaced once under the same id, then filled away
            OpenOrder(f"c{i}", f"s{i}", str(i + 1), side, Decimal("0.4"), Decimal("3"))
        )
        book.update_open(f"c{i}", Decimal("0"))
    sums = (book._buy_notional, book._sell_size)
    assert [(len(s._total), len(s._count)) for s in sums] == [(0, 0), (0, 0)]
    assert book.open_buy_notional() == ZERO and book.open_sell_size("2", strategy="sniper") == ZERO


def test_totals_are_decimals_even_when_nothing_is_held_or_open() -> None:
    book = PositionBook()
    for figure in (
        book.cost_exposure(),
        book.cost_exposure("1"),
        book.exposure(),
        book.realized(),
        book.unrealized(),
        book.open_buy_notional(),
        book.open_sell_size("1", strategy="sniper"),
    ):
        assert isinstance(figure, Decimal)
        assert figure.quantize(Decimal("0.01")) == ZERO


def test_both_filters_at_once_give_one_strategys_commitment_in_one_token() -> None:
    book = PositionBook()
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.BUY, Decimal("0.5"), Decimal("10")))
    book.add_open_row(OpenOrder("b", "copy", "1", Side.BUY, Decimal("0.4"), Decimal("10")))
    book.add_open_row(OpenOrder("c", "sniper", "2", Side.BUY, Decimal("0.1"), Decimal("10")))
    assert book.open_buy_notional(token_id="1", strategy="sniper") == Decimal("5.0")
    assert book.open_buy_notional(token_id="1", strategy="copy") == Decimal("4.0")
    assert book.open_buy_notional(token_id="1") == Decimal("9.0")


# --- per-strategy positions (attribution) -------------------------------------------------


def test_each_strategy_has_its_own_position_in_a_shared_token() -> None:
    book = PositionBook(books=BestOnly({"1": ("0.60", "0.62")}))
    sniper = Position(token_id="1", strategy="sniper").apply(Side.BUY, D("0.40"), D("10"))
    copy = Position(token_id="1", strategy="copy").apply(Side.BUY, D("0.50"), D("4"))
    manual = Position(token_id="1", strategy=UNATTRIBUTED).apply(Side.BUY, D("0.30"), D("2"))
    for p in (sniper, copy, manual):
        book.set_position(p)
    assert book.position("1", strategy="sniper").size == D("10")
    assert book.position("1", strategy="copy").size == D("4")
    assert book.position("1", strategy="other").size == 0
    assert book.holding("1") == D("16")  # what the account holds at the venue
    assert book.cost_exposure("1") == D("6.60")
    assert book.cost_exposure("1", strategy="copy") == D("2.00")
    assert book.cost_exposure(strategy="sniper") == D("4.00")
    assert book.unrealized(strategy="sniper") == D("2.10")  # 10 x (0.61 - 0.40)
    assert book.exposure(strategy="copy") == D("2.44")  # 4 x 0.61
    assert book.strategies() == sorted(["copy", "sniper", UNATTRIBUTED])
    # The copy trader sells its 4: its realized PnL moves, the sniper's holding does not.
    book.set_position(copy.apply(Side.SELL, D("0.70"), D("4")))
    assert book.realized(strategy="copy") == D("0.80")
    assert book.realized(strategy="sniper") == 0 and book.realized() == D("0.80")
    assert book.position("1", strategy="sniper") == sniper
    assert book.holding("1") == D("12")
    assert {p.strategy for p in book.positions(strategy="copy")} == {"copy"}


def test_open_sells_count_against_their_own_strategy_only() -> None:
    book = PositionBook()
    book.add_open_row(OpenOrder("a", "sniper", "1", Side.SELL, D("0.6"), D("7")))
    book.add_open_row(OpenOrder("b", "copy", "1", Side.SELL, D("0.6"), D("2")))
    assert book.open_sell_size("1", strategy="sniper") == D("7")
    assert book.open_sell_size("1", strategy="copy") == D("2")
    assert book.open_sell_size("1", strategy=UNATTRIBUTED) == 0
