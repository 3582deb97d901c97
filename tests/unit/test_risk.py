"""The risk engine's limits, each at, just under and just over its boundary, and as the executor
applies them (refusal source and reason, journal, audit, metric; trading state on daily loss).

Limits (docs/executor.md): per-order notional; per token, cost basis of the holding plus open BUY
notional; in all, marked holdings plus open BUY notional; open-order count; open BUY notional per
strategy; daily loss (realized + marked PnL since 00:00 UTC) halts trading. A SELL may not exceed
the holding not already offered for sale; limits other than the open-order count apply to BUYs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from execution.fees import FeeSchedule, FeeSource
from execution.ports import MarketMeta
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits, TradingState
from executor import Executor
from models import UNATTRIBUTED, OrderRequest, OrderStatus, OrderType, Position, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from storage import Database, Repositories
from storage.accounts import AccountCommitments
from tests.helpers import TOKEN, make_settings
from tests.unit.test_executor_paper import DictBooks, make_executor
from wiring.execution import assemble

D = Decimal
A = TOKEN
B = "1" * 77
C = "2" * 77
BIG = D("1000000")


def limits(**kw: Any) -> RiskLimits:
    """Every limit out of reach except the ones a case sets."""
    base: dict[str, Any] = {
        "max_order_notional": BIG,
        "max_position_notional": BIG,
        "max_total_exposure": BIG,
        "max_open_orders": 1000,
    }
    return RiskLimits(**(base | kw))


@dataclass(frozen=True)
class Held:
    token: str
    size: str
    avg_cost: str
    strategy: str = "sniper"


@dataclass(frozen=True)
class Open:
    """An open order; `remaining` set: it has since matched down to that (0: it is gone)."""

    token: str
    side: Side
    price: str
    size: str
    strategy: str = "other"
    remaining: str | None = None


@dataclass(frozen=True)
class Mark:
    token: str
    bid: str
    ask: str | None


@dataclass(frozen=True)
class Case:
    limits: RiskLimits
    order: tuple[str, str, Side, str, str]  # strategy, token, side, price, size
    refusal: str | None
    held: tuple[Held, ...] = ()
    open: tuple[Open, ...] = ()
    marks: tuple[Mark, ...] = ()
    state: TradingState = TradingState.ACTIVE


def buy(size: str, *, price: str = "0.50", token: str = A, strategy: str = "sniper") -> Any:
    return (strategy, token, Side.BUY, price, size)


def sell(size: str, *, price: str = "0.50", token: str = A, strategy: str = "sniper") -> Any:
    return (strategy, token, Side.SELL, price, size)


def request(strategy: str, token: str, side: Side, price: str, size: str) -> OrderRequest:
    return OrderRequest(
        strategy=strategy,
        token_id=token,
        side=side,
        price=D(price),
        size=D(size),
        order_type=OrderType.GTC,
    )


def build_book(case: Case) -> PositionBook:
    books = DictBooks()
    for m in case.marks:
        books.b[m.token] = [(D(m.bid), D("100"))]
        if m.ask is not None:
            books.a[m.token] = [(D(m.ask), D("100"))]
    book = PositionBook(books=books)
    for h in case.held:
        book.set_position(
            Position(token_id=h.token, strategy=h.strategy, size=D(h.size), avg_cost=D(h.avg_cost))
        )
    for o in case.open:
        r = request(o.strategy, o.token, o.side, o.price, o.size)
        book.add_open(r)
        if o.remaining is not None:
            book.update_open(r.client_order_id, D(o.remaining))
    return book


PER_ORDER = limits(max_order_notional=D("100.00"))
PER_TOKEN = limits(max_position_notional=D("150.00"))
TOTAL = limits(max_total_exposure=D("300.00"))
OPEN3 = limits(max_open_orders=3)
BUDGET = limits(strategy_budgets={"sniper": D("120.00")})

TOKEN_OVER = "position in token would reach 150.0100, over the per-token cap 150.00"
TOTAL_OVER = "total exposure would reach 300.0100, over the cap 300.00"
HELD_A_50 = (Held(A, "100", "0.50"),)  # cost basis 50.00
OPEN_BUY_A_50 = (Open(A, Side.BUY, "0.50", "100"),)  # 50.00 committed
# Total exposure 202.00 before the order: 200 B marked at mid 0.61 (cost 0.50) + 80.00 open on C.
TOTAL_SETUP: dict[str, Any] = {
    "held": (Held(B, "200", "0.50"),),
    "marks": (Mark(B, "0.60", "0.62"),),
    "open": (Open(C, Side.BUY, "0.40", "200"),),
}
THREE_OPEN = tuple(Open(B, Side.BUY, "0.10", "10") for _ in range(3))

CASES = [
    # -- per-order notional: 100.00 ---------------------------------------------------------
    pytest.param(Case(PER_ORDER, buy("199.98"), None), id="order-under"),
    pytest.param(Case(PER_ORDER, buy("200"), None), id="order-at"),
    pytest.param(
        Case(
            PER_ORDER,
            buy("200.02"),
            "order notional 100.0100 exceeds the per-order cap 100.00",
        ),
        id="order-over",
    ),
    # -- per token: cost basis of the holding + open BUYs of the token: 150.00 ----------------
    pytest.param(Case(PER_TOKEN, buy("199.98"), None, held=HELD_A_50), id="token-held-under"),
    pytest.param(Case(PER_TOKEN, buy("200"), None, held=HELD_A_50), id="token-held-at"),
    pytest.param(Case(PER_TOKEN, buy("200.02"), TOKEN_OVER, held=HELD_A_50), id="token-held-over"),
    pytest.param(
        Case(PER_TOKEN, buy("199.98"), None, open=OPEN_BUY_A_50), id="token-open-buy-under"
    ),
    pytest.param(Case(PER_TOKEN, buy("200"), None, open=OPEN_BUY_A_50), id="token-open-buy-at"),
    pytest.param(
        Case(PER_TOKEN, buy("200.02"), TOKEN_OVER, open=OPEN_BUY_A_50), id="token-open-buy-over"
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200.02"),
            TOKEN_OVER,
            held=(Held(A, "40", "0.50"),),  # 20.00
            open=(Open(A, Side.BUY, "0.60", "50"),),  # 30.00
        ),
        id="token-held-and-open-buy-over",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200"),
            None,
            held=(Held(A, "40", "0.50"),),
            open=(Open(A, Side.BUY, "0.60", "50"),),
        ),
        id="token-held-and-open-buy-at",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200.02"),
            TOKEN_OVER,
            # 100 at 0.50, matched down to 40 left: 20.00; plus 30.00 from another strategy.
            open=(
                Open(A, Side.BUY, "0.50", "100", remaining="40"),
                Open(A, Side.BUY, "0.60", "50", strategy="copy"),
            ),
        ),
        id="token-open-buy-remaining-over",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200"),
            None,
            open=(
                Open(A, Side.BUY, "0.50", "100", remaining="40"),
                Open(A, Side.BUY, "0.60", "50", strategy="copy"),
            ),
        ),
        id="token-open-buy-remaining-at",
    ),
    pytest.param(
        Case(PER_TOKEN, buy("300"), None, open=(Open(A, Side.BUY, "0.50", "100", remaining="0"),)),
        id="token-finished-open-buy-releases",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("300"),  # 150.00 on A alone
            None,
            held=(Held(B, "100", "0.50"),),
            open=(Open(B, Side.BUY, "0.50", "100"), Open(C, Side.BUY, "0.50", "100")),
        ),
        id="token-other-tokens-do-not-count",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200"),
            None,
            held=HELD_A_50,
            marks=(Mark(A, "0.89", "0.91"),),  # marked at 90.00; the cap reads the cost, 50.00
            open=(Open(A, Side.SELL, "0.95", "50"),),  # an open SELL commits no BUY notional
        ),
        id="token-at-cost-not-mark-open-sell-ignored-at",
    ),
    pytest.param(
        Case(
            PER_TOKEN,
            buy("200.02"),
            TOKEN_OVER,
            held=HELD_A_50,
            marks=(Mark(A, "0.09", "0.11"),),  # marked at 10.00; the cap still reads 50.00
        ),
        id="token-at-cost-not-mark-over",
    ),
    # -- total: marked holdings + every open BUY: 300.00 ------------------------------------
    pytest.param(Case(TOTAL, buy("195.98"), None, **TOTAL_SETUP), id="total-under"),
    pytest.param(Case(TOTAL, buy("196"), None, **TOTAL_SETUP), id="total-at"),
    pytest.param(Case(TOTAL, buy("196.02"), TOTAL_OVER, **TOTAL_SETUP), id="total-over"),
    pytest.param(
        Case(
            TOTAL,
            buy("196.02"),
            TOTAL_OVER,
            held=(Held(B, "200", "0.61"),),  # no book: valued at cost, 122.00
            open=(Open(C, Side.BUY, "0.40", "200"),),
        ),
        id="total-unmarked-at-cost-over",
    ),
    pytest.param(
        Case(
            TOTAL,
            buy("196.02"),
            TOTAL_OVER,
            held=(Held(B, "200", "0.50"),),
            marks=(Mark(B, "0.61", None),),  # bids only: marked at the best bid
            open=(Open(C, Side.BUY, "0.40", "200"),),
        ),
        id="total-marked-at-best-bid-over",
    ),
    pytest.param(
        Case(
            TOTAL,
            buy("196"),
            None,
            held=(Held(B, "200", "0.90"),),  # cost 180.00, marked 122.00
            marks=(Mark(B, "0.60", "0.62"),),
            open=(Open(C, Side.BUY, "0.40", "200"),),
        ),
        id="total-marked-below-cost-at",
    ),
    # -- open-order count: 3 (every side) --------------------------------------------------
    pytest.param(Case(OPEN3, buy("10"), None, open=THREE_OPEN[:2]), id="open-count-under"),
    pytest.param(
        Case(OPEN3, buy("10"), "open orders at the limit (3)", open=THREE_OPEN),
        id="open-count-at",
    ),
    pytest.param(
        Case(OPEN3, buy("10"), "open orders at the limit (3)", open=(*THREE_OPEN, THREE_OPEN[0])),
        id="open-count-over",
    ),
    pytest.param(
        Case(
            OPEN3,
            sell("5"),
            "open orders at the limit (3)",
            held=(Held(A, "10", "0.50"),),
            open=THREE_OPEN,
        ),
        id="open-count-applies-to-sells",
    ),
    pytest.param(
        Case(
            OPEN3,
            buy("10"),
            None,
            open=(*THREE_OPEN[:2], Open(B, Side.BUY, "0.10", "10", remaining="0")),
        ),
        id="open-count-finished-order-leaves",
    ),
    # -- per-strategy budget: the strategy's holdings at cost + open BUY notional, 120.00 -----
    pytest.param(
        Case(BUDGET, buy("199.98"), None, open=(Open(B, Side.BUY, "0.50", "40", "sniper"),)),
        id="budget-under",
    ),
    pytest.param(
        Case(BUDGET, buy("200"), None, open=(Open(B, Side.BUY, "0.50", "40", "sniper"),)),
        id="budget-at",
    ),
    pytest.param(
        Case(
            BUDGET,
            buy("200.02"),
            "strategy sniper would commit 120.0100, over its budget 120.00",
            open=(Open(B, Side.BUY, "0.50", "40", "sniper"),),
        ),
        id="budget-over",
    ),
    pytest.param(
        Case(
            BUDGET,
            buy("240"),  # 120.00 alone: at the budget
            None,
            open=(Open(A, Side.BUY, "0.50", "1000", "copy"),),
        ),
        id="budget-other-strategies-do-not-count",
    ),
    pytest.param(
        Case(
            BUDGET, buy("240.02"), "strategy sniper would commit 120.0100, over its budget 120.00"
        ),
        id="budget-alone-over",
    ),
    pytest.param(
        Case(BUDGET, buy("10000", strategy="copy"), None), id="budget-unbudgeted-strategy-free"
    ),
    # -- SELLs: at most the holding not already offered; no BUY caps -------------------------
    pytest.param(
        Case(
            limits(),
            sell("5.99"),
            None,
            held=(Held(A, "10", "0.50"),),
            open=(Open(A, Side.SELL, "0.60", "4", "sniper"),),
        ),
        id="sell-under",
    ),
    pytest.param(
        Case(
            limits(),
            sell("6"),
            None,
            held=(Held(A, "10", "0.50"),),
            open=(Open(A, Side.SELL, "0.60", "4", "sniper"),),
        ),
        id="sell-at",
    ),
    pytest.param(
        Case(
            limits(),
            sell("6.01"),
            "SELL of 6.01 exceeds what strategy sniper holds and has not already offered for"
            " sale (6)",
            held=(Held(A, "10", "0.50"),),
            open=(Open(A, Side.SELL, "0.60", "4", "sniper"),),
        ),
        id="sell-over",
    ),
    pytest.param(
        Case(
            limits(),
            sell("10"),
            None,
            held=(Held(A, "10", "0.50"),),
            open=(
                Open(A, Side.SELL, "0.60", "4", "sniper", remaining="0"),
                Open(B, Side.SELL, "0.6", "9", "sniper"),
            ),
        ),
        id="sell-finished-and-other-token-sells-free-nothing-held",
    ),
    pytest.param(
        Case(
            limits(),
            sell("0.01"),
            "SELL of 0.01 exceeds what strategy sniper holds and has not already offered for"
            " sale (0)",
        ),
        id="sell-nothing-held",
    ),
    # -- attribution: a strategy sells only its own holding ---------------------------------
    pytest.param(
        Case(
            limits(),
            sell("0.01", strategy="copy"),
            "SELL of 0.01 exceeds what strategy copy holds and has not already offered for"
            " sale (0)",
            held=(Held(A, "10", "0.50", "sniper"),),
        ),
        id="sell-of-another-strategys-holding",
    ),
    pytest.param(
        Case(
            limits(),
            sell("3.01", strategy="copy"),
            "SELL of 3.01 exceeds what strategy copy holds and has not already offered for"
            " sale (3)",
            held=(Held(A, "10", "0.50", "sniper"), Held(A, "3", "0.40", "copy")),
        ),
        id="sell-over-own-part-of-a-shared-token",
    ),
    pytest.param(
        Case(
            limits(),
            sell("3", strategy="copy"),
            None,
            held=(Held(A, "10", "0.50", "sniper"), Held(A, "3", "0.40", "copy")),
            open=(Open(A, Side.SELL, "0.60", "10", "sniper"),),
        ),
        id="sell-own-part-others-open-sells-do-not-count",
    ),
    pytest.param(
        Case(
            limits(),
            sell("1"),
            "SELL of 1 exceeds what strategy sniper holds and has not already offered for sale (0)",
            held=(Held(A, "10", "0.50", UNATTRIBUTED),),
        ),
        id="sell-of-unattributed-holding",
    ),
    pytest.param(
        Case(
            limits(),
            sell("1", strategy=UNATTRIBUTED),
            f"strategy name {UNATTRIBUTED!r} is reserved for holdings no order explains",
            held=(Held(A, "10", "0.50", UNATTRIBUTED),),
        ),
        id="unattributed-name-is-reserved",
    ),
    pytest.param(
        Case(
            BUDGET,
            buy("80.02"),
            "strategy sniper would commit 120.0100, over its budget 120.00",
            held=(Held(B, "160", "0.50"),),
        ),
        id="budget-counts-the-strategys-holdings-at-cost",
    ),
    pytest.param(
        Case(BUDGET, buy("240"), None, held=(Held(B, "160", "0.50", "copy"),)),
        id="budget-ignores-other-strategies-holdings",
    ),
    pytest.param(
        Case(
            limits(
                max_order_notional=D("1"),
                max_position_notional=D("1"),
                max_total_exposure=D("1"),
                strategy_budgets={"sniper": D("1")},
            ),
            sell("100", price="0.90"),
            None,
            held=(Held(A, "100", "0.50"),),
        ),
        id="sell-not-held-to-buy-caps",
    ),
    # -- trading state --------------------------------------------------------------------
    pytest.param(
        Case(
            limits(),
            sell("5"),
            "trading is halted",
            held=(Held(A, "10", "0.50"),),
            state=TradingState.HALTED,
        ),
        id="halted-refuses-even-reducing-sell",
    ),
    pytest.param(
        Case(
            limits(),
            buy("10"),
            "trading is reducing-only: only SELLs of held positions are allowed",
            state=TradingState.REDUCING,
        ),
        id="reducing-refuses-buy",
    ),
    pytest.param(
        Case(
            limits(),
            sell("10"),
            None,
            held=(Held(A, "10", "0.50"),),
            state=TradingState.REDUCING,
        ),
        id="reducing-allows-sell-of-holding-at",
    ),
    pytest.param(
        Case(
            limits(),
            sell("10.01"),
            "trading is reducing-only: only SELLs of held positions are allowed",
            held=(Held(A, "10", "0.50"),),
            state=TradingState.REDUCING,
        ),
        id="reducing-refuses-sell-over-holding",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_each_limit_at_under_and_over_its_boundary(case: Case) -> None:
    book = build_book(case)
    assert RiskEngine(limits=case.limits).check(request(*case.order), book, case.state) == (
        case.refusal
    )


def test_limits_are_read_from_every_risk_setting(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path,
        risk_max_order_notional="11.11",
        risk_max_position_notional="22.22",
        risk_max_total_exposure="33.33",
        risk_max_open_orders=44,
        risk_strategy_budgets={"sniper": "55.55", "copy": "66.66"},
        risk_daily_loss_limit="77.77",
        risk_daily_loss_warn_fraction=0.5,
    )
    assert RiskLimits.from_settings(s) == RiskLimits(
        max_order_notional=D("11.11"),
        max_position_notional=D("22.22"),
        max_total_exposure=D("33.33"),
        max_open_orders=44,
        strategy_budgets={"sniper": D("55.55"), "copy": D("66.66")},
        daily_loss_limit=D("77.77"),
        daily_loss_warn_fraction=0.5,
    )


# --------------------------------------------------------------------------------------------
# As the executor applies them (paper broker; no book, so GTC orders rest)
# --------------------------------------------------------------------------------------------


@dataclass
class Rig:
    repos: Repositories
    books: DictBooks

    async def executor(self, **kw: Any) -> Executor:
        ex = make_executor(self.repos, self.books, **kw)
        await ex.start()
        return ex


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(tmp_path / "polyd.db")
    await db.open()
    try:
        yield Rig(Repositories.over(db), DictBooks())
    finally:
        await db.close()


def gtc(size: str, price: str = "0.40", side: Side = Side.BUY) -> OrderRequest:
    return request("test", A, side, price, size)


async def test_executor_refusal_names_source_and_reason_and_is_journaled(rig: Rig) -> None:
    ex = await rig.executor(max_order_notional=D("40.00"))
    assert (await ex.submit(gtc("100"))).status is OrderStatus.LIVE  # 40.00: at the cap
    over = gtc("100.03")  # 40.0120
    res = await ex.submit(over)
    why = "order notional 40.0120 exceeds the per-order cap 40.00"
    assert (res.status, res.reason) == (OrderStatus.REJECTED, f"risk: {why}")
    row = await rig.repos.orders.get(over.client_order_id)
    assert row is not None and row.status is OrderStatus.REJECTED and row.venue_order_id is None
    (audit,) = await rig.repos.audit.tail(event="order_refused")
    assert audit.detail["source"] == "risk" and audit.detail["reason"] == why
    assert ex.metrics.order_rejections_total.labels("test", "risk")._value.get() == 1
    assert ex.positions.open_count == 1  # the refused order commits nothing


async def test_executor_counts_its_own_resting_buys_against_the_token_cap(rig: Rig) -> None:
    ex = await rig.executor(max_position_notional=D("100.00"))
    first = await ex.submit(gtc("125"))  # 50.00 resting
    assert first.status is OrderStatus.LIVE
    assert (await ex.submit(gtc("125"))).status is OrderStatus.LIVE  # 100.00: at the cap
    over = await ex.submit(gtc("5", price="0.01"))  # 0.05 more
    assert over.reason == (
        "risk: position in token would reach 100.05, over the per-token cap 100.00"
    )
    assert await ex.cancel(first.client_order_id)  # its 50.00 is released
    again = await ex.submit(gtc("125"))
    assert again.status is OrderStatus.LIVE, again.reason


async def test_executor_counts_filled_holdings_at_cost_against_the_token_cap(
    rig: Rig,
) -> None:
    ex = await rig.executor(max_position_notional=D("30.00"))
    rig.books.a[A] = [(D("0.50"), D("100"))]
    filled = await ex.submit(
        request("test", A, Side.BUY, "0.50", "40").model_copy(update={"order_type": OrderType.FOK})
    )
    assert filled.status is OrderStatus.FILLED  # 20.00 held
    assert (await ex.submit(gtc("25"))).status is OrderStatus.LIVE  # 10.00: at the cap
    over = await ex.submit(gtc("5", price="0.01"))
    assert (
        over.reason == "risk: position in token would reach 30.050000, over the per-token cap 30.00"
    )


async def test_executor_reducing_state_refuses_buys_as_halted(rig: Rig) -> None:
    ex = await rig.executor()
    await ex.reduce_only("operator")
    res = await ex.submit(gtc("10"))
    assert res.reason == (
        "halted: trading is reducing-only: only SELLs of held positions are allowed"
    )
    assert ex.metrics.order_rejections_total.labels("test", "halted")._value.get() == 1


@dataclass(frozen=True)
class Loss:
    """Realized PnL today; the state after the guards; whether a warning was audited (a loss
    that reaches the limit halts instead)."""

    realized: str
    state: TradingState
    warned: bool


@pytest.mark.parametrize(
    "loss",
    [
        pytest.param(Loss("-1.59", TradingState.ACTIVE, False), id="under-warning"),
        pytest.param(Loss("-1.60", TradingState.ACTIVE, True), id="at-warning"),
        pytest.param(Loss("-1.99", TradingState.ACTIVE, True), id="under-limit"),
        pytest.param(Loss("-2.00", TradingState.HALTED, False), id="at-limit"),
        pytest.param(Loss("-2.01", TradingState.HALTED, False), id="over-limit"),
        pytest.param(Loss("5.00", TradingState.ACTIVE, False), id="profit"),
    ],
)
async def test_daily_loss_halts_at_the_limit_and_warns_at_the_fraction(
    rig: Rig, loss: Loss
) -> None:
    ex = await rig.executor(loss_limit="2.00")
    ex.positions.daily_pnl()  # today's baseline: nothing yet
    ex.positions.set_position(Position(token_id=B, realized_pnl=D(loss.realized)))
    await ex.check_guards()
    assert ex.state is loss.state
    warnings = await rig.repos.audit.tail(event="daily_loss_warning")
    assert bool(warnings) is loss.warned
    res = await ex.submit(gtc("10"))
    if loss.state is TradingState.HALTED:
        why = f"daily loss limit reached ({D(loss.realized)} <= -2.00)"
        assert ex.state_reason == why
        assert res.reason == f"halted: trading is halted: {why}"
    else:
        assert res.status is OrderStatus.LIVE, res.reason


async def test_daily_loss_counts_marked_pnl_of_holdings(rig: Rig) -> None:
    ex = await rig.executor(loss_limit="2.00")
    rig.books.b[A], rig.books.a[A] = [(D("0.49"), D("10"))], [(D("0.51"), D("10"))]
    ex.positions.set_position(Position(token_id=A, size=D("40"), avg_cost=D("0.50")))
    ex.positions.daily_pnl()  # baseline at mark 0.50
    rig.books.b[A], rig.books.a[A] = [(D("0.4501"), D("10"))], [(D("0.4501"), D("10"))]
    await ex.check_guards()  # 40 x -0.0499 = -1.996
    before = ex.state
    rig.books.b[A], rig.books.a[A] = [(D("0.45"), D("10"))], [(D("0.45"), D("10"))]
    await ex.check_guards()  # 40 x -0.05 = -2.00
    assert (before, ex.state) == (TradingState.ACTIVE, TradingState.HALTED)
    assert ex.state_reason == "daily loss limit reached (-2.00 <= -2.00)"


async def test_executor_built_from_settings_applies_every_risk_setting(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path,
        clob_host="http://127.0.0.1:9",  # nothing listens: no order may get that far
        risk_max_order_notional="11.11",
        risk_max_position_notional="22.22",
        risk_max_total_exposure="33.33",
        risk_max_open_orders=44,
        risk_strategy_budgets={"test": "5.55"},
        sniper_name="test",  # the strategy of the orders below
        risk_daily_loss_limit="3.00",
        risk_daily_loss_warn_fraction=0.5,
    )
    db = Database(s.db_path)
    await db.open()
    repos = Repositories.over(db)
    built = await assemble(s, repos=repos, metrics=Metrics(), redactor=Redactor())
    try:
        ex = built.executor
        assert ex.risk.limits == RiskLimits.from_settings(s)
        ex.rules.put(MarketMeta(A, "0x" + "ab" * 32, D("0.01"), D("5"), False))
        over = await ex.submit(gtc("27.78"))  # 11.1120
        assert over.reason == "risk: order notional 11.1120 exceeds the per-order cap 11.11"
        budget = await ex.submit(gtc("13.88"))  # 5.5520
        assert budget.reason == "risk: strategy test would commit 5.5520, over its budget 5.55"
        ex.positions.daily_pnl()
        ex.positions.set_position(Position(token_id=B, realized_pnl=D("-1.50")))
        await ex.check_guards()
        assert len(await repos.audit.tail(event="daily_loss_warning")) == 1
        ex.positions.set_position(Position(token_id=B, realized_pnl=D("-3.00")))
        await ex.check_guards()
        assert ex.state_reason == "daily loss limit reached (-3.00 <= -3.00)"
    finally:
        for _, close in reversed(built.closers):
            await close()
        await db.close()


# --- the per-order cap counts the taker fee a BUY may pay ----------------------------------
# A BUY commits its notional plus the most its fee can be (the venue takes the fee in pUSD on
# top of the notional: docs/venue-mechanics.md). Fee at 0.50 with rate 0.02, exponent 1:
# 0.02 x (0.50 x 0.50) per share, so 98 shares pay at most 0.49 on a notional of 49.00.

FEE_2PCT = FeeSchedule(rate=D("0.02"), source=FeeSource.CLOB)


@pytest.mark.parametrize(
    ("cap", "refusal"),
    [
        ("49.49", None),  # notional + fee exactly at the cap
        ("49.48", "order notional 49.49 (fee 0.49 included) exceeds the per-order cap 49.48"),
    ],
)
def test_per_order_cap_counts_the_fee_at_its_boundary(cap: str, refusal: str | None) -> None:
    engine = RiskEngine(limits=limits(max_order_notional=D(cap)))
    req = request("sniper", A, Side.BUY, "0.50", "98")
    assert engine.check(
        req, PositionBook(books=DictBooks()), TradingState.ACTIVE, fee=D("0.49")
    ) == (refusal)


async def test_admit_checks_a_buy_with_the_fee_its_market_charges() -> None:
    """The fee budget comes from the market's schedule (`MarketMeta.fee`), not from the caller:
    under a 49.20 cap the 49.00 notional alone would pass; with its 0.49 fee it must not."""
    engine = RiskEngine(limits=limits(max_order_notional=D("49.20")))
    meta = MarketMeta(
        token_id=A, condition_id="0x" + "ab" * 32, tick_size=D("0.01"), min_size=D("5"),
        neg_risk=False, fee=FEE_2PCT,
    )  # fmt: skip
    req = request("sniper", A, Side.BUY, "0.50", "98")
    sent, why = await engine.admit(req, meta, PositionBook(books=DictBooks()), TradingState.ACTIVE)
    assert sent == req
    # The fee budget carries the venue's fee precision (5 decimals).
    assert why == "order notional 49.49000 (fee 0.49000 included) exceeds the per-order cap 49.20"
    free = RiskEngine(limits=limits(max_order_notional=D("49.49")))
    assert await free.admit(req, meta, PositionBook(books=DictBooks()), TradingState.ACTIVE) == (
        req,
        None,
    )


# The account's caps over every daemon on it (`account_refusal`, applied by the journal under the
# account's lock; `tests/unit/test_accounts.py` runs them on PostgreSQL). Here each cap at and
# just past its boundary: the commitments already include the order's own row.


def committed(
    *, orders: int = 1, buys: str = "0", token_buys: str = "0", cost: str = "0",
    token_cost: str = "0", pnl: str = "0",
) -> AccountCommitments:  # fmt: skip
    return AccountCommitments(
        open_orders=orders,
        open_buy_notional=D(buys),
        token_open_buy_notional=D(token_buys),
        positions_cost=D(cost),
        token_positions_cost=D(token_cost),
        daily_pnl=D(pnl),
    )


ACCOUNT_LIMITS = limits(
    max_open_orders=3,
    max_position_notional=D("25"),
    max_total_exposure=D("30"),
    daily_loss_limit=D("100"),
)
LOSS = "daily loss limit of the account reached, every daemon counted"
ORDERS = "open orders on the account, every daemon counted, at the limit (3)"
TOKEN_CAP = "position in token on the account, every daemon counted, would reach"
TOTAL_CAP = "total exposure of the account, every daemon counted, would reach"


@pytest.mark.parametrize(
    ("side", "account", "refusal"),
    [
        (Side.BUY, committed(pnl="-99.99"), None),
        (Side.BUY, committed(pnl="-100"), f"{LOSS} (-100 <= -100)"),
        (Side.SELL, committed(pnl="-100.01"), f"{LOSS} (-100.01 <= -100)"),
        (Side.BUY, committed(pnl="100"), None),  # a gain is no loss
        (Side.BUY, committed(orders=3), None),  # the order's own row makes 3: at the limit
        (Side.SELL, committed(orders=4), ORDERS),
        (Side.BUY, committed(token_buys="15", token_cost="10", buys="15", cost="10"), None),
        (
            Side.BUY,
            committed(token_buys="15.01", token_cost="10", buys="15.01", cost="10"),
            f"{TOKEN_CAP} 25.01, over the per-token cap 25",
        ),
        (Side.BUY, committed(token_buys="5", buys="20", cost="10"), None),
        (
            Side.BUY,
            committed(token_buys="5", buys="20.01", cost="10"),
            f"{TOTAL_CAP} 30.01, over the cap 30",
        ),
        # A SELL commits no money: the exposure caps do not apply to it.
        (Side.SELL, committed(token_buys="40", buys="50", cost="10"), None),
    ],
)
def test_account_caps_at_and_just_past_their_boundaries(
    side: Side, account: AccountCommitments, refusal: str | None
) -> None:
    req = request("sniper", A, side, "0.50", "10")
    assert RiskEngine(limits=ACCOUNT_LIMITS).account_refusal(req, account) == refusal
