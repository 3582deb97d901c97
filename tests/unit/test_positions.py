"""PositionBook's running open-order totals agree with a recount after any sequence of changes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.positions import OpenOrder, PositionBook
from models import ZERO, Side

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
