"""The daemon's fee model: read from the venue per market (`/clob-markets` `fd` first, Gamma's
`feeSchedule` as the fallback, never `base_fee`), kept through tick changes, booked on taker fills
only, counted by risk, and carried into cost basis and PnL.

Sources: `MarketDetails.fd` in https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts;
Gamma `feeSchedule` in the real capture `gamma/market_sports_moneyline_closed_2026_04.json`;
https://docs.polymarket.com/trading/fees (the taker pays, makers pay nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from errors import TransientError
from execution.fees import NO_FEE, FeeSchedule, FeeSource, buy_cost, fee_budget
from execution.funds import Funds
from execution.market_rules import MarketRules
from execution.ports import MarketMeta
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits, TradingState
from models import Fill, LiquidityRole, Market, OrderRequest, OrderResult, Position, Side
from storage import Repositories
from storage.reports import Reports
from strategies.copy_trader.sizing import entry_size
from strategies.sniper import Sniper
from tests.helpers import FIXTURES, TOKEN, make_order
from venue.clob.wire import fee_from_clob_market, with_fee
from venue.gamma import parse_market
from venue.order_book import BookStore

OTHER = "2" * 70
CONDITION = "0x" + "ab" * 32
CRYPTO = FeeSchedule(rate=D("0.072"), source=FeeSource.CLOB)


def meta(token: str = TOKEN, fee: FeeSchedule = NO_FEE, condition: str = CONDITION) -> MarketMeta:
    return MarketMeta(
        token_id=token,
        condition_id=condition,
        tick_size=D("0.01"),
        min_size=D(5),
        neg_risk=False,
        fee=fee,
    )


def market(**kw: Any) -> Market:
    return Market(condition_id=CONDITION, token_ids=(TOKEN, OTHER), **kw)


# --- reading the venue ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fd", "want"),
    [
        ({"r": 0.072, "e": 1, "to": True}, CRYPTO),
        ({"r": 0.25, "e": 2}, FeeSchedule(rate=D("0.25"), exponent=D(2), source=FeeSource.CLOB)),
        ({"r": "0.03", "e": "1.5", "to": False}, FeeSchedule(D("0.03"), D("1.5"), False, "clob")),
        (None, FeeSchedule(source=FeeSource.CLOB)),  # absent: the market has no fee
        ({"r": 0, "e": 0}, FeeSchedule(source=FeeSource.CLOB)),
    ],
)
def test_fd_is_the_fee(fd: Any, want: FeeSchedule) -> None:
    d: dict[str, Any] = {"t": [{"t": TOKEN, "o": "Yes"}], "mts": 0.01, "mbf": 1000, "tbf": 1000}
    if fd is not None:
        d["fd"] = fd
    assert fee_from_clob_market(CONDITION, d) == want


@pytest.mark.parametrize(
    "bad",
    [
        {"fd": {"r": "x"}},
        {"fd": {"r": -1}},
        {"fd": {"r": 0.07, "e": 0}},
        {"fd": [1]},
        {"fd": {"r": 0.1, "to": "yes"}},
    ],
)
def test_unreadable_fd_is_none_so_gamma_is_the_fallback(bad: dict[str, Any]) -> None:
    assert fee_from_clob_market(CONDITION, {"t": [], **bad}) is None
    assert fee_from_clob_market(CONDITION, "<html>") is None


def test_with_fee_sets_both_tokens() -> None:
    both = with_fee([meta(), meta(OTHER)], CRYPTO)
    assert [m.fee for m in both] == [CRYPTO, CRYPTO]
    assert with_fee([meta()], None) == [meta()]


def test_gamma_fee_schedule_from_a_real_capture() -> None:
    raw = json.loads(
        (FIXTURES / "gamma" / "market_sports_moneyline_closed_2026_04.json").read_text()
    )
    row = raw[0] if isinstance(raw, list) else raw
    m = parse_market(row).market
    assert (m.fee_rate, m.fee_exponent, m.fee_taker_only) == (D("0.03"), D(1), True)
    no_fee = dict(row, feesEnabled=False)
    no_fee.pop("feeSchedule")
    assert parse_market(no_fee).market.fee_rate == 0
    unsaid = dict(row)
    unsaid.pop("feeSchedule")  # a fee market whose schedule Gamma does not show
    assert parse_market(unsaid).market.fee_rate is None


# --- precedence and refresh ---------------------------------------------------------------------


class Venue:
    def __init__(self, fee: FeeSchedule) -> None:
        self.fee = fee
        self.calls = 0

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        self.calls += 1
        return [meta(fee=self.fee), meta(OTHER, fee=self.fee)]


async def test_clob_fee_wins_over_gamma_and_gamma_is_the_fallback() -> None:
    venue = Venue(CRYPTO)
    rules = MarketRules(source=venue)
    rules.load_market(market(fee_rate=D("0.05")))
    assert rules.fee(TOKEN) == FeeSchedule(rate=D("0.05"), source=FeeSource.GAMMA)
    await rules.ensure(TOKEN)  # the first order reads `fd`
    assert rules.fee(TOKEN) == CRYPTO and rules.fee(OTHER) == CRYPTO
    rules.load_market(market(fee_rate=D("0.05")))  # rediscovery does not overwrite `fd`
    assert rules.fee(TOKEN) == CRYPTO
    rules.set_tick_size(TOKEN, D("0.001"))  # a tick change keeps the fee
    assert rules.fee(TOKEN) == CRYPTO
    await rules.ensure(TOKEN)
    assert venue.calls == 1


async def test_fee_not_served_by_the_clob_is_asked_again_later() -> None:
    venue = Venue(NO_FEE)  # /clob-markets could not be read
    rules = MarketRules(source=venue)
    rules.load_market(market(fee_rate=D("0.05")))
    await rules.ensure(TOKEN)
    await rules.ensure(TOKEN)
    assert venue.calls == 1  # not once per order
    assert rules.fee(TOKEN).rate == D("0.05")  # Gamma's meanwhile


def test_unknown_market_has_no_fee() -> None:
    assert MarketRules().fee(TOKEN) == NO_FEE


# --- booking ------------------------------------------------------------------------------------


def fill(role: LiquidityRole, side: Side = Side.BUY, fee: str = "0") -> Fill:
    return Fill(
        trade_id="t1",
        venue_order_id="0x1",
        token_id=TOKEN,
        side=side,
        price=D("0.97"),
        size=D(100),
        role=role,
        fee=D(fee),
    )


async def test_taker_fill_books_the_fee_and_a_maker_fill_none() -> None:
    rules = MarketRules()
    rules.put(meta(fee=CRYPTO))
    assert (await rules.with_fee(fill(LiquidityRole.TAKER))).fee == D("0.20952")
    assert (await rules.with_fee(fill(LiquidityRole.MAKER))).fee == 0
    assert (await rules.with_fee(fill(LiquidityRole.TAKER, fee="0.3"))).fee == D("0.3")


def test_cost_basis_and_pnl_carry_the_fees() -> None:
    # BUY 100 @ 0.97 as taker (fee 0.20952), SELL 100 @ 0.98 as taker (fee 0.14112).
    pos = Position(token_id=TOKEN).apply(Side.BUY, D("0.97"), D(100), D("0.20952"))
    assert pos.avg_cost * pos.size == D("97.20952")
    done = pos.apply(Side.SELL, D("0.98"), D(100), D("0.14112"))
    assert done.realized_pnl == D("1.00") - D("0.35064")
    # Sold as maker (a post-only take-profit): only the entry fee.
    maker_exit = pos.apply(Side.SELL, D("0.98"), D(100), D(0))
    assert maker_exit.realized_pnl == D("0.79048")


def test_risk_counts_the_fee_of_a_buy() -> None:
    risk = RiskEngine(
        limits=RiskLimits(
            max_order_notional=D("97.1"),
            max_position_notional=D(10**6),
            max_total_exposure=D(10**6),
            max_open_orders=10,
        )
    )
    req = make_order(price="0.97", size="100")  # 97.00 notional
    book = PositionBook()
    assert risk.check(req, book, TradingState.ACTIVE) is None
    why = risk.check(req, book, TradingState.ACTIVE, fee=D("0.20952"))
    assert why == "order notional 97.20952 (fee 0.20952 included) exceeds the per-order cap 97.1"


# --- sizing -------------------------------------------------------------------------------------


async def test_sniper_buy_leaves_room_for_the_fee_and_exits_post_only() -> None:
    from tests.unit.test_sniper import RecordingExecutor, market, rule, set_book, settle

    ex = RecordingExecutor()
    store = BookStore(stale_after_s=60)
    sn = Sniper(
        rules=[rule(max_notional="19", take_profit="0.02")],
        books=store,
        orders=ex,
        fees=lambda token: CRYPTO,
    )
    sn.set_market(market())
    task = asyncio.create_task(sn.run())
    try:
        await asyncio.sleep(0)
        set_book(store, {"0.93": "100"})
        await settle()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    buy, sell = ex.requests
    # Without the fee 19 / 0.95 = 20 shares. It takes the 0.93 ask: 19 pUSD there buys
    # 19 / 0.93 shares, whose fee is 19 x 0.072 x 0.07 = 0.09576, so 19.89 shares fit.
    assert buy.size == D("19.89")
    assert buy_cost(buy.size, buy.price, CRYPTO, low=D("0.93")) <= D(19)
    assert buy_cost(D("19.90"), buy.price, CRYPTO, low=D("0.93")) > D(19)
    assert sell.post_only and sell.order_type.value == "GTC"


async def test_sniper_uses_gammas_fee_until_the_clob_fee_is_read() -> None:
    from tests.unit.test_sniper import market, rule

    sn = Sniper(rules=[rule()], books=BookStore(stale_after_s=60), orders=_Nowhere())
    m = market(fee_rate=D("0.05"))
    assert sn._fee(TOKEN, m).rate == D("0.05")
    sn2 = Sniper(
        rules=[rule()], books=BookStore(stale_after_s=60), orders=_Nowhere(), fees=lambda t: CRYPTO
    )
    assert sn2._fee(TOKEN, m) == CRYPTO


def test_take_profit_post_only_can_be_turned_off() -> None:
    from tests.unit.test_sniper import rule

    assert rule(take_profit="0.02").take_profit_post_only is True
    assert rule(take_profit="0.02", take_profit_post_only=False).take_profit_post_only is False


def test_copy_entry_leaves_room_for_the_fee() -> None:
    from tests.unit.test_copy_trader import rule, trade

    r = rule(sizing="fixed_notional", fixed_notional="10", ratio=None)
    t = trade(price="0.50")
    plain = entry_size(r, t, D("0.5"), D(0))
    with_fee = entry_size(r, t, D("0.5"), D(0), CRYPTO)
    assert plain == D(20)
    assert isinstance(with_fee, D) and with_fee == D("19.30")  # 10 / (0.5 + 0.072 x 0.25)
    assert with_fee * D("0.5") + fee_budget(with_fee, D("0.5"), CRYPTO) <= D(10)


class _Nowhere:
    async def submit(self, request: OrderRequest) -> OrderResult:
        raise AssertionError("no order expected")


# --- reports --------------------------------------------------------------------------------------


async def test_reports_show_the_fees_paid(repos: Repositories, tmp_path: Path) -> None:
    await repos.fills.record(fill(LiquidityRole.TAKER, fee="0.20952"))
    sell = fill(LiquidityRole.TAKER, Side.SELL, fee="0.14112").model_copy(
        update={"trade_id": "t2", "price": D("0.98"), "size": D(50)}
    )
    await repos.fills.record(sell)
    with Reports.open(tmp_path / "polyd.db") as reports:
        assert reports.fill_totals().fees == D("0.35064")
        assert reports.summary().fees_paid == "0.35064"
        (pos,) = reports.positions()
    assert pos.fees_paid == D("0.35064")
    # BUY 100 @ 0.97 + 0.20952, SELL 50 @ 0.98 - 0.14112
    assert pos.realized_pnl == (D("0.98") - D("97.20952") / 100) * 50 - D("0.14112")


# --- the free balance -----------------------------------------------------------------------------


class Wallet:
    def __init__(self, balance: str | None) -> None:
        self.balance = balance
        self.reads = 0

    async def collateral_balance(self) -> D:
        self.reads += 1
        if self.balance is None:
            raise TransientError("balance unreadable")
        return D(self.balance)


async def test_buy_past_the_free_balance_is_shrunk_or_refused() -> None:
    book = PositionBook()
    book.add_open(make_order(price="0.5", size="10", client_order_id="resting-buy-1"))  # 5 pUSD
    m = meta(fee=CRYPTO)
    req = make_order(price="0.5", size="30")  # 15 + fee 0.54
    shrunk, fee, why = await Funds(broker=Wallet("15")).fit(req, m, book)
    assert why is None and shrunk.client_order_id == req.client_order_id
    assert shrunk.size == D("19.30")  # (15 - 5) / (0.5 + 0.018)
    assert fee == fee_budget(D("19.30"), D("0.5"), CRYPTO)
    # Less than the market minimum left: refused here, never sent.
    _, _, why = await Funds(broker=Wallet("6")).fit(req, m, book)
    assert why is not None and "under the market minimum" in why
    # Enough, a SELL, no balance source, or an unreadable balance: unchanged.
    for funds, order in [
        (Funds(broker=Wallet("100")), req),
        (Funds(broker=Wallet("0")), make_order(side="SELL")),
        (Funds(), req),
        (Funds(broker=Wallet(None)), req),
    ]:
        same, _, why = await funds.fit(order, m, book)
        assert (same, why) == (order, None)


async def test_balance_read_serves_a_while_less_what_fills_spent() -> None:
    now = [0.0]
    wallet = Wallet("100")
    funds = Funds(broker=wallet, max_age_s=5, clock=lambda: now[0])
    book, m = PositionBook(), meta(fee=CRYPTO)
    small = make_order(price="0.5", size="10")
    for _ in range(3):
        assert (await funds.fit(small, m, book))[0] == small
    assert wallet.reads == 1  # BUYs that fit do not each cost a read
    # A BUY fill spent 90 + fee since: 9.79 is left by our count, so a BUY of 20 (10.036 with
    # its fee) no longer fits and the venue is asked again before anything is shrunk.
    funds.spent(fill(LiquidityRole.TAKER, fee="0.20952").model_copy(update={"price": D("0.9")}))
    assert (await funds.fit(small, m, book))[0] == small and wallet.reads == 1
    wallet.balance = "9.79048"
    shrunk, _, why = await funds.fit(make_order(price="0.5", size="20"), m, book)
    assert why is None and wallet.reads == 2
    assert shrunk.size == D("18.90")  # 9.79048 / 0.518
    now[0] = 6.0  # too old: read again
    await funds.fit(make_order(price="0.5", size="5"), m, book)
    assert wallet.reads == 3


async def test_a_taker_sweep_pays_the_fee_per_leg_not_on_its_average_price() -> None:
    # The venue charges each matched maker order at its own price, each floored to 0.00001
    # (https://docs.polymarket.com/trading/fees: the fee per fill at the fill's price; the
    # simulator's ledger records it per leg). 50 @ 0.50 and 50 @ 0.90 at 0.072:
    # 0.9 + 0.324 = 1.224; on the 0.70 average it would be 1.512.
    from venue.clob.wire import fills_from_trade

    trade = {
        "id": "t-sweep",
        "taker_order_id": "0xtaker",
        "asset_id": TOKEN,
        "side": "BUY",
        "size": "100",
        "price": "0.5",
        "status": "MATCHED",
        "owner": "me",
        "trader_side": "TAKER",
        "maker_orders": [
            {"order_id": "0xm1", "matched_amount": "50", "price": "0.5", "asset_id": TOKEN},
            {"order_id": "0xm2", "matched_amount": "50", "price": "0.9", "asset_id": TOKEN},
        ],
    }
    (f,) = fills_from_trade(trade, owner="me", address="0xabc")
    assert f.price == D("0.7") and f.size == D(100)
    assert f.legs == ((D(50), D("0.5")), (D(50), D("0.9")))
    rules = MarketRules()
    rules.put(meta(fee=CRYPTO))
    assert (await rules.with_fee(f)).fee == D("1.224")
    # Without legs (a paper fill, an unreadable maker list) the fill's own price is used.
    assert (await rules.with_fee(f.model_copy(update={"legs": ()}))).fee == D("1.512")
