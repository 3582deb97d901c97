"""The position book's per-strategy figures and its edges: each strategy reads (and publishes)
its own exposure, PnL and redeemable value, never the account's; lookups of what the book has
never seen answer zero; a position held again after going flat is never let go of; another
daemon's strategy is skipped without losing the moves after it; positions adopted on a
takeover do not move today's PnL, whatever the day's baseline."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from execution.positions import PositionBook
from models import Position, Side
from observability.metrics import Metrics
from tests.helpers import make_order

D = Decimal
NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)
T1, T2, T3 = (f"{9 * 10**70 + i}" for i in (1, 2, 3))


def held(strategy: str, token: str, size: str, cost: str, realized: str = "0") -> Position:
    return Position(
        token_id=token, strategy=strategy, size=D(size), avg_cost=D(cost), realized_pnl=D(realized)
    )


def two_strategies() -> PositionBook:
    """`a` holds 10 of T1 at 0.40 (resolved: pays 1) and made 2; `b` holds 20 of T2 at 0.30
    (no mark) and lost 0.5; each has an open BUY: `a` 10 x 0.20, `b` 5 x 0.50."""
    book = PositionBook()
    book.load([held("a", T1, "10", "0.40", "2"), held("b", T2, "20", "0.30", "-0.5")])
    book.set_payout(T1, D(1))
    book.add_open(make_order(strategy="a", token_id=T1, side=Side.BUY, price=D("0.20"), size=D(10)))
    book.add_open(make_order(strategy="b", token_id=T2, side=Side.BUY, price=D("0.50"), size=D(5)))
    return book


def test_each_strategy_reads_its_own_figures_not_the_accounts() -> None:
    book = two_strategies()
    assert book.exposure(strategy="a") == D("10") * 1 + D("2")  # marked at the payout + its BUY
    assert book.exposure(strategy="b") == D("20") * D("0.30") + D("2.5")  # at cost + its BUY
    assert book.exposure() == D("12") + D("8.5")
    assert book.unrealized(strategy="a") == D("6") and book.unrealized(strategy="b") == 0
    assert book.realized(strategy="a") == D("2") and book.realized(strategy="b") == D("-0.5")
    assert book.redeemable(strategy="a") == D("10") and book.redeemable(strategy="b") == 0
    assert book.cost_exposure(T1, strategy="a") == D("4")
    assert book.cost_exposure(T2, strategy="a") == 0  # `a` holds none of T2: zero, not an error


def test_the_per_strategy_gauges_show_each_strategys_own_figures() -> None:
    book, m = two_strategies(), Metrics()
    book.publish(m)

    def gauge(name: str, strategy: str) -> float | None:
        return m.registry.get_sample_value(f"polyd_strategy_{name}_usd", {"strategy": strategy})

    assert gauge("exposure", "a") == 12.0 and gauge("exposure", "b") == 8.5
    assert gauge("pnl_realized", "a") == 2.0 and gauge("pnl_realized", "b") == -0.5
    assert gauge("pnl_unrealized", "a") == 6.0 and gauge("pnl_unrealized", "b") == 0.0
    assert gauge("exposure", "None") is None  # no series under a label nobody trades


def test_what_the_book_never_saw_reads_zero() -> None:
    book = two_strategies()
    assert book.holding(T3) == 0
    assert book.realized(strategy="never-traded") == 0
    assert book.cost_exposure(T3, strategy="a") == 0
    book.forget_payout(T3)  # not resolved here: nothing to forget, and no error
    book.forget_payout(T1)
    assert book.payout(T1) is None and book.redeemable() == 0


def test_a_position_held_again_after_going_flat_is_never_let_go_of() -> None:
    book = PositionBook(max_flat=1)
    book.set_position(held("a", T1, "0", "0", "1"))  # a round trip: flat, realized 1
    book.set_position(held("a", T1, "5", "0.40", "1"))  # bought again: held
    book.set_position(held("b", T2, "0", "0", "0.2"))  # two more go flat: past max_flat,
    book.set_position(held("b", T3, "0", "0", "0.3"))  # the oldest flat ones are let go of
    assert book.position(T1, strategy="a").size == 5
    assert book.holding(T1) == 5 and book.cost_exposure(T1) == D("2")
    assert {(p.strategy, p.token_id) for p in book.positions(strategy="a")} == {("a", T1)}
    assert book.realized() == D("1.5")  # every realized PnL counted once, let go of or not


def test_a_move_of_another_daemons_strategy_is_skipped_and_the_rest_applied() -> None:
    book = PositionBook()
    book.load([held("a", T1, "10", "0.40")], left_out=["b"])
    moves = [
        (held("b", T1, "4", "0.30"), held("b", T1, "0", "0", "0.4")),  # another daemon's
        (held("a", T1, "10", "0.40"), held("a", T1, "6", "0.40", "0.8")),  # this daemon's
    ]
    book.move(moves)
    assert book.positions(strategy="b") == []
    assert book.position(T1, strategy="a").size == 6 and book.realized() == D("0.8")


def test_adopted_positions_leave_todays_pnl_where_it_was() -> None:
    book = PositionBook()
    book.load([held("a", T1, "0", "0", "2")], left_out=["b"])
    assert book.daily_pnl(NOW) == 0  # today's baseline taken at 2, not 0
    book.set_position(held("a", T1, "0", "0", "2.5"))
    assert book.daily_pnl(NOW) == D("0.5")
    book.adopt(["b"], [held("b", T2, "0", "0", "3")])  # what `b` made was another daemon's day
    assert book.daily_pnl(NOW) == D("0.5") and book.realized() == D("5.5")
    assert "b" not in book.left_out
