"""PositionBook's running open-order totals agree with a recount after any sequence of changes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.positions import OpenOrder, PositionBook
from models import ZERO, Position, Side

TOKENS = ("1", "2", "3")
STRATEGIES = ("sniper", "copy")


def recount(book: PositionBook) -> dict[str, Decimal]:
    """What the totals must be, summed from the open orders themselves."""
    opens = book.open_orders()
    out: dict[str, Decimal] = {"all": sum((o.notional for o in opens if o.side is Side.BUY), ZERO)}
    for t in TOKENS:
        out[f"buy:{t}"] = sum(
            (o.notional for o in opens if o.side is Side.BUY and o.token_id == t), ZERO
        )
        out[f"sell:{t}"] = sum(
            (o.remaining for o in opens if o.side is Side.SELL and o.token_id == t), ZERO
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
        out[f"sell:{t}"] = book.open_sell_size(t)
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
    assert book.open_sell_size("1") == Decimal("2")
    book.update_open("a", Decimal("0"))
    assert book.open_buy_notional() == ZERO


def test_asking_for_a_token_and_a_strategy_at_once_is_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        PositionBook().open_buy_notional(token_id="1", strategy="sniper")


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
