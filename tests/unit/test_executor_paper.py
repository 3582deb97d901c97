"""The executor with the paper broker: fills, trading states, guards, journal-before-send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from execution.market_rules import MarketRules
from execution.paper import PaperBroker
from execution.ports import Ack, MarketMeta, Prepared
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits, TradingState
from executor import Executor, ExecutorConfig
from models import Level, OrderRequest, OrderStatus, OrderType, Side
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience import CircuitBreaker, RetryPolicy, SystemClock
from storage import Database, Repositories
from tests.helpers import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
COND = "0x" + "ab" * 32


class DictBooks:
    """A BookSource whose levels the test sets (best first)."""

    def __init__(self) -> None:
        self.a: dict[str, list[Level]] = {}
        self.b: dict[str, list[Level]] = {}

    def asks(self, token_id: str) -> list[Level] | None:
        return self.a.get(token_id)

    def bids(self, token_id: str) -> list[Level] | None:
        return self.b.get(token_id)

    def best_ask(self, token_id: str) -> Level | None:
        levels = self.a.get(token_id)
        return levels[0] if levels else None

    def best_bid(self, token_id: str) -> Level | None:
        levels = self.b.get(token_id)
        return levels[0] if levels else None


def levels(side: list[dict[str, str]]) -> list[Level]:
    """Wire levels are best-LAST; a BookSource is best-first."""
    return [(Decimal(x["price"]), Decimal(x["size"])) for x in reversed(side)]


@dataclass
class Paper:
    ex: Executor
    books: DictBooks
    repos: Repositories
    metrics: Metrics


def make_executor(
    repos: Repositories,
    books: DictBooks,
    *,
    broker: Any = None,
    kill: Path | None = None,
    loss_limit: str = "100",
    tracing: Tracing | None = None,
    **limits: Any,
) -> Executor:
    rules = MarketRules()
    rules.put(MarketMeta(TOKEN, COND, Decimal("0.01"), Decimal("5"), False))
    lim: dict[str, Any] = {
        "max_order_notional": Decimal("50"),
        "max_position_notional": Decimal("200"),
        "max_total_exposure": Decimal("1000"),
        "max_open_orders": 50,
    } | limits
    clock = SystemClock()
    metrics = Metrics()
    return Executor(
        repos=repos,
        broker=broker or PaperBroker(books=books),
        rules=rules,
        risk=RiskEngine(limits=RiskLimits(**lim)),
        positions=PositionBook(books=books),
        metrics=metrics,
        breaker=CircuitBreaker("venue", failure_threshold=3, reset_timeout_s=1, clock=clock),
        retry_policy=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02),
        clock=clock,
        config=ExecutorConfig(
            kill_switch_path=kill,
            daily_loss_limit=Decimal(loss_limit),
            tracing=tracing or Tracing(),
        ),
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(tmp_path / "polyd.db")
    await d.open()
    yield d
    await d.close()


@pytest.fixture
async def paper(db: Database) -> Paper:
    repos = Repositories.over(db)
    books = DictBooks()
    book = json.loads((FIXTURES / "clob_rest/book_2024_09_asks_desc.json").read_text())
    asks, bids = levels(book["asks"]), levels(book["bids"])
    assert asks == sorted(asks) and bids == sorted(bids, reverse=True)  # best first
    # The real book, moved out of reach so that resting orders at 0.10-0.50 do not cross.
    books.a[TOKEN] = [(p + Decimal("0.5"), s) for p, s in asks if p + Decimal("0.5") < 1]
    books.b[TOKEN] = bids
    ex = make_executor(repos, books)
    await ex.start()
    return Paper(ex, books, repos, ex.metrics)


def req(**kw: Any) -> OrderRequest:
    base: dict[str, Any] = {
        "strategy": "test",
        "token_id": TOKEN,
        "side": Side.BUY,
        "price": Decimal("0.50"),
        "size": Decimal("10"),
        "order_type": OrderType.GTC,
    }
    return OrderRequest(**(base | kw))


def set_asks(p: Paper, *lv: tuple[str, str]) -> None:
    p.books.a[TOKEN] = [(Decimal(a), Decimal(b)) for a, b in lv]


async def test_paper_fok_fills_by_walking_levels(paper: Paper) -> None:
    set_asks(paper, ("0.50", "4"), ("0.51", "10"))
    res = await paper.ex.submit(req(order_type=OrderType.FOK, price=Decimal("0.51")))
    assert res.status is OrderStatus.FILLED and res.filled_size == Decimal("10")
    assert res.avg_price == (Decimal("0.50") * 4 + Decimal("0.51") * 6) / 10
    pos = paper.ex.position(TOKEN, strategy="test")
    assert pos.size == Decimal("10")
    assert await paper.repos.fills.position(TOKEN, strategy="test") == pos


async def test_paper_fok_without_enough_liquidity_rejected_nothing_filled(paper: Paper) -> None:
    set_asks(paper, ("0.50", "4"), ("0.52", "10"))
    res = await paper.ex.submit(req(order_type=OrderType.FOK, price=Decimal("0.51")))
    assert res.status is OrderStatus.REJECTED and "FOK" in res.reason
    assert paper.ex.position(TOKEN, strategy="test").size == 0


async def test_paper_fak_partial_fill_remainder_killed(paper: Paper) -> None:
    set_asks(paper, ("0.50", "4"), ("0.52", "10"))
    res = await paper.ex.submit(req(order_type=OrderType.FAK, price=Decimal("0.51")))
    assert res.status is OrderStatus.CANCELED and res.filled_size == Decimal("4")
    assert paper.ex.position(TOKEN, strategy="test").size == Decimal("4")
    assert paper.ex.positions.open_count == 0


async def test_paper_resting_gtc_fills_when_book_crosses(paper: Paper) -> None:
    set_asks(paper, ("0.55", "100"))
    res = await paper.ex.submit(req(price=Decimal("0.50")))
    assert res.status is OrderStatus.LIVE
    assert paper.ex.positions.open_count == 1
    set_asks(paper, ("0.49", "6"))
    broker = paper.ex.broker
    assert isinstance(broker, PaperBroker)
    await broker.poll()
    row = await paper.repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.PARTIALLY_FILLED
    set_asks(paper, ("0.50", "20"))
    await broker.poll()
    row = await paper.repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    assert paper.ex.position(TOKEN, strategy="test").size == Decimal("10")
    assert paper.ex.position(TOKEN, strategy="test").avg_cost == Decimal(
        "0.50"
    )  # maker fills at its price


async def test_reducing_state_allows_only_position_reducing_sells(paper: Paper) -> None:
    set_asks(paper, ("0.50", "100"))
    assert (await paper.ex.submit(req(order_type=OrderType.FOK))).status is OrderStatus.FILLED
    await paper.ex.reduce_only("test")
    buy = await paper.ex.submit(req(order_type=OrderType.FOK))
    assert buy.status is OrderStatus.REJECTED and buy.reason.startswith("halted")
    too_big = await paper.ex.submit(req(side=Side.SELL, size=Decimal("11"), price=Decimal("0.9")))
    assert too_big.status is OrderStatus.REJECTED
    sell = await paper.ex.submit(req(side=Side.SELL, size=Decimal("10"), price=Decimal("0.90")))
    assert sell.status is OrderStatus.LIVE


async def test_halt_persists_across_restart_and_resume_reopens(paper: Paper, db: Database) -> None:
    await paper.ex.halt("operator")
    again = make_executor(paper.repos, paper.books)
    await again.start()
    assert again.state is TradingState.HALTED and again.state_reason == "operator"
    res = await again.submit(req())
    assert res.status is OrderStatus.REJECTED
    await again.resume()
    assert (await again.submit(req())).status is OrderStatus.LIVE
    audit = await paper.repos.audit.tail(event="trading_state")
    assert [a.detail["to"] for a in reversed(audit)] == ["HALTED", "ACTIVE"]


async def test_kill_switch_file_halts_and_blocks_resume(paper: Paper, tmp_path: Path) -> None:
    kill = tmp_path / "KILL"
    ex = make_executor(paper.repos, paper.books, kill=kill)
    await ex.start()
    assert (await ex.submit(req())).status is OrderStatus.LIVE
    kill.touch()
    res = await ex.submit(req())
    assert res.status is OrderStatus.REJECTED and "kill-switch" in res.reason
    with pytest.raises(Exception, match="kill-switch"):
        await ex.resume()
    assert await ex.cancel_all() == 1  # cancels still go while halted


async def test_daily_loss_limit_halts(paper: Paper) -> None:
    ex = make_executor(paper.repos, paper.books, loss_limit="2")
    await ex.start()
    set_asks(paper, ("0.50", "100"))
    paper.books.b[TOKEN] = [(Decimal("0.49"), Decimal("100"))]
    ex.positions.daily_pnl()  # today's baseline, before the trade
    assert (await ex.submit(req(order_type=OrderType.FOK, size=Decimal("40")))).status is (
        OrderStatus.FILLED
    )
    paper.books.b[TOKEN] = [(Decimal("0.40"), Decimal("100"))]
    set_asks(paper, ("0.42", "100"))  # mark 0.41: 40 x -0.09 = -3.6
    await ex.check_guards()
    assert ex.state is TradingState.HALTED and "daily loss" in ex.state_reason


class JournalCheckingBroker(PaperBroker):
    """Fails the send unless the order's PENDING row, with its hash, is already durable."""

    repos: Repositories
    checked = 0

    async def send(self, prepared: Prepared) -> Ack:
        row = await self.repos.orders.get(prepared.request.client_order_id)
        assert row is not None, "order sent before it was journaled"
        assert row.status is OrderStatus.PENDING
        assert row.venue_order_id == prepared.venue_order_id
        assert row.payload_hash == prepared.payload_hash
        self.checked += 1
        return await super().send(prepared)


async def test_order_journaled_pending_before_it_is_sent(paper: Paper) -> None:
    broker = JournalCheckingBroker(books=paper.books)
    broker.repos = paper.repos
    ex = make_executor(paper.repos, paper.books, broker=broker)
    await ex.start()
    assert (await ex.submit(req())).status is OrderStatus.LIVE
    results = await ex.submit_many([req(price=Decimal("0.40")) for _ in range(3)])
    assert all(r.status is OrderStatus.LIVE for r in results)
    assert broker.checked == 4


async def test_risk_caps_refuse_with_reasons(paper: Paper) -> None:
    ex = make_executor(
        paper.repos, paper.books, max_open_orders=2, strategy_budgets={"test": Decimal("9")}
    )
    await ex.start()
    over_budget = await ex.submit(req(size=Decimal("20")))
    assert over_budget.status is OrderStatus.REJECTED and "budget" in over_budget.reason
    assert (await ex.submit(req(size=Decimal("5"), price=Decimal("0.2")))).accepted
    assert (await ex.submit(req(size=Decimal("5"), price=Decimal("0.2")))).accepted
    third = await ex.submit(req(size=Decimal("5"), price=Decimal("0.2")))
    assert "open orders" in third.reason
    assert ex.metrics.order_rejections_total.labels("test", "risk")._value.get() == 2


async def test_paper_fills_consume_liquidity_until_the_book_changes(paper: Paper) -> None:
    set_asks(paper, ("0.50", "10"), ("0.55", "100"))
    first = await paper.ex.submit(req(order_type=OrderType.FOK, size=Decimal("8")))
    assert first.status is OrderStatus.FILLED and first.avg_price == Decimal("0.50")
    # Only 2 of the 10 at 0.50 are left: a FOK for 8 at 0.50 cannot fill again.
    again = await paper.ex.submit(req(order_type=OrderType.FOK, size=Decimal("8")))
    assert again.status is OrderStatus.REJECTED and "FOK" in again.reason
    # A FAK takes the 2 left and nothing more at its limit.
    fak = await paper.ex.submit(req(order_type=OrderType.FAK, size=Decimal("8")))
    assert fak.status is OrderStatus.CANCELED and fak.filled_size == Decimal("2")
    # Marketable up to 0.55: the 0.50 level is used up, so everything fills at 0.55.
    deeper = await paper.ex.submit(
        req(order_type=OrderType.FOK, size=Decimal("6"), price=Decimal("0.55"))
    )
    assert deeper.status is OrderStatus.FILLED and deeper.avg_price == Decimal("0.55")
    assert paper.ex.position(TOKEN, strategy="test").size == Decimal("16")
    # A new delta for the token (the level re-quoted): the venue's book is the truth again.
    set_asks(paper, ("0.50", "9"), ("0.55", "94"))
    fresh = await paper.ex.submit(req(order_type=OrderType.FOK, size=Decimal("8")))
    assert fresh.status is OrderStatus.FILLED and fresh.avg_price == Decimal("0.50")


async def test_two_concurrent_paper_orders_do_not_fill_against_the_same_level(
    paper: Paper,
) -> None:
    import asyncio

    set_asks(paper, ("0.50", "10"))
    a, b = await asyncio.gather(
        paper.ex.submit(req(order_type=OrderType.FAK, size=Decimal("8"))),
        paper.ex.submit(req(order_type=OrderType.FAK, size=Decimal("8"))),
    )
    assert sorted([a.filled_size, b.filled_size]) == [Decimal("2"), Decimal("8")]
    assert paper.ex.position(TOKEN, strategy="test").size == Decimal("10")


async def test_resting_paper_orders_share_a_crossing_level_not_double_fill(paper: Paper) -> None:
    set_asks(paper, ("0.55", "100"))
    one = await paper.ex.submit(req(price=Decimal("0.50")))
    two = await paper.ex.submit(req(price=Decimal("0.50")))
    assert one.status is two.status is OrderStatus.LIVE
    set_asks(paper, ("0.49", "12"))  # crosses both; only 12 to share between 20 wanted
    broker = paper.ex.broker
    assert isinstance(broker, PaperBroker)
    await broker.poll()
    await broker.poll()  # the book did not change: nothing more to take
    rows = [await paper.repos.orders.get(r.client_order_id) for r in (one, two)]
    assert sum(r.size_matched for r in rows if r is not None) == Decimal("12")
    assert paper.ex.position(TOKEN, strategy="test").size == Decimal("12")


async def test_failed_trade_reverses_its_position_effect_and_is_audited(paper: Paper) -> None:
    from models import Fill, LiquidityRole, TradeStatus

    def fill(trade: str, side: Side, price: str, size: str, status: TradeStatus) -> Fill:
        return Fill(
            trade_id=trade,
            venue_order_id="0x" + trade * 8,
            token_id=TOKEN,
            side=side,
            price=Decimal(price),
            size=Decimal(size),
            role=LiquidityRole.TAKER,
            status=status,
        )

    ex = paper.ex
    await ex.on_fill(fill("a", Side.BUY, "0.40", "10", TradeStatus.MATCHED))
    await ex.on_fill(fill("b", Side.SELL, "0.60", "4", TradeStatus.MATCHED))
    assert ex.position(TOKEN, strategy="unattributed").size == Decimal("6")
    assert ex.position(TOKEN, strategy="unattributed").realized_pnl == Decimal("0.80")
    # The SELL's settlement failed on chain: we still hold the 10 and realized nothing.
    await ex.on_fill(fill("b", Side.SELL, "0.60", "4", TradeStatus.FAILED))
    pos = ex.position(TOKEN, strategy="unattributed")
    assert (pos.size, pos.avg_cost, pos.realized_pnl) == (Decimal(10), Decimal("0.40"), Decimal(0))
    assert (
        await paper.repos.fills.position(TOKEN, strategy="unattributed") == pos
    )  # durable, same transaction
    # Reported FAILED again (WS then REST): reversed once only.
    await ex.on_fill(fill("b", Side.SELL, "0.60", "4", TradeStatus.FAILED))
    assert ex.position(TOKEN, strategy="unattributed") == pos
    await ex.on_fill(fill("a", Side.BUY, "0.40", "10", TradeStatus.FAILED))
    assert ex.position(TOKEN, strategy="unattributed").size == 0
    # A trade first seen as FAILED moves nothing.
    await ex.on_fill(fill("c", Side.BUY, "0.30", "5", TradeStatus.FAILED))
    assert ex.position(TOKEN, strategy="unattributed").size == 0
    audit = await paper.repos.audit.tail(event="fill_failed")
    assert [a.detail["trade_id"] for a in reversed(audit)] == ["b", "a", "c"]
    assert audit[-1].detail["position_before"] == "6" and audit[-1].detail["position_after"] == "10"
    statuses = {f.trade_id: f.status for f in await paper.repos.fills.all()}
    assert statuses == {"a": TradeStatus.FAILED, "b": TradeStatus.FAILED, "c": TradeStatus.FAILED}


async def test_failed_trade_of_a_paper_order_lowers_exposure_and_restart_agrees(
    paper: Paper,
) -> None:
    from models import TradeStatus

    set_asks(paper, ("0.50", "100"))
    res = await paper.ex.submit(req(order_type=OrderType.FOK))
    assert res.status is OrderStatus.FILLED
    [f] = await paper.repos.fills.for_order(res.client_order_id)
    await paper.ex.on_fill(f.model_copy(update={"status": TradeStatus.FAILED}))
    assert paper.ex.position(TOKEN, strategy="test").size == 0
    again = make_executor(paper.repos, paper.books)
    await again.start()
    assert again.position(TOKEN, strategy="test").size == 0


async def test_the_order_tracker_holds_only_orders_still_working(paper: Paper) -> None:
    """One record per working order; each leaves when its order reaches a terminal status, so
    a daemon that trades all day holds its open orders, not its history."""
    set_asks(paper, ("0.50", "4"), ("0.52", "10"))
    filled = await paper.ex.submit(
        req(order_type=OrderType.FOK, price=Decimal("0.50"), size=Decimal("4"))
    )
    killed = await paper.ex.submit(req(order_type=OrderType.FOK, price=Decimal("0.51")))
    partly = await paper.ex.submit(
        req(order_type=OrderType.FAK, price=Decimal("0.52"), size=Decimal("20"))
    )
    resting = await paper.ex.submit(req(price=Decimal("0.30")))
    refused = await paper.ex.submit(req(price=Decimal("0.30"), size=Decimal("1")))  # under min
    statuses = [r.status for r in (filled, killed, partly, resting, refused)]
    assert statuses == [
        OrderStatus.FILLED,
        OrderStatus.REJECTED,
        OrderStatus.CANCELED,
        OrderStatus.LIVE,
        OrderStatus.REJECTED,
    ]
    tracker = paper.ex.tracker
    assert len(tracker) == 1 and resting.client_order_id in tracker
    assert tracker.status(resting.client_order_id) is OrderStatus.LIVE
    again = await paper.ex.submit(
        req(price=Decimal("0.31"), client_order_id=resting.client_order_id)
    )
    assert again.status is OrderStatus.REJECTED and "duplicate client order id" in again.reason
    assert await paper.ex.cancel(resting.client_order_id)
    assert len(tracker) == 0 and tracker.unknown_count == 0
    assert paper.ex.positions.open_count == 0


async def test_a_sale_outside_the_daemon_lowers_the_holding_strategies_sell_from(
    paper: Paper,
) -> None:
    from models import UNATTRIBUTED, Fill

    ours = req(strategy="sniper", size=Decimal("10"))
    await paper.repos.orders.record(ours, venue_order_id="0xours", payload_hash="h")

    def fill(trade: str, venue_order_id: str, side: Side, size: str) -> Fill:
        return Fill(
            trade_id=trade,
            venue_order_id=venue_order_id,
            token_id=TOKEN,
            side=side,
            price=Decimal("0.50"),
            size=Decimal(size),
        )

    await paper.ex.on_fill(fill("a", "0xours", Side.BUY, "10"))
    assert paper.ex.position(TOKEN, strategy="sniper").size == Decimal("10")
    await paper.ex.on_fill(fill("b", "0xmanual", Side.SELL, "4"))  # sold by hand
    assert paper.ex.position(TOKEN, strategy="sniper").size == Decimal("6")
    assert paper.ex.position(TOKEN, strategy=UNATTRIBUTED).size == 0
    refused = await paper.ex.submit(req(strategy="sniper", side=Side.SELL, size=Decimal("7")))
    assert refused.status is OrderStatus.REJECTED
    assert "exceeds what strategy sniper holds" in (refused.reason or "")
