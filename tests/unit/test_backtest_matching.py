"""The backtest's matching model: crossing orders take the recorded levels and what they took
stays taken until the level changes; latency delays arrival; resting orders queue behind the
displayed size and fill only from trades beyond it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from backtest.matching import MatchingModel
from errors import OrderRejected
from execution.ports import Ack, MarketMeta, VenueOrder
from models import Fill, LiquidityRole, OrderRequest, OrderType, Side
from venue.order_book import BookStore

TOKEN = "123456789"
D = Decimal


class _Clock:
    t = 1_000_000_000_000


def _book(store: BookStore, bids: dict[str, str], asks: dict[str, str]) -> None:
    b = store.ensure(TOKEN)
    b.replace(
        {D(p): D(s) for p, s in bids.items()},
        {D(p): D(s) for p, s in asks.items()},
        book_hash="h",
        timestamp_ms=0,
        now=0.0,
    )


def _model(latency_ms: int = 0) -> tuple[MatchingModel, BookStore, list[Fill]]:
    store = BookStore(stale_after_s=60.0, clock=lambda: 0.0)
    m = MatchingModel(books=store, now_ns=lambda: _Clock.t, latency_ns=latency_ms * 1_000_000)
    fills: list[Fill] = []

    async def on_fill(f: Fill) -> None:
        fills.append(f)

    async def on_order(_: VenueOrder) -> None:
        return None

    m.bind(on_fill=on_fill, on_order=on_order)
    return m, store, fills


META = MarketMeta(TOKEN, "0xc", D("0.01"), D("5"), False)


async def _send(
    m: MatchingModel, side: Side, price: str, size: str, kind: OrderType = OrderType.FAK
) -> asyncio.Task[Ack]:
    req = OrderRequest(
        strategy="sniper", token_id=TOKEN, side=side, price=D(price), size=D(size),
        order_type=kind, reason="sniper rule r1: test",
    )  # fmt: skip
    prepared = await m.prepare(req, META)
    task = asyncio.ensure_future(m.send(prepared))
    await asyncio.sleep(0)
    return task


async def test_a_crossing_order_takes_levels_best_first_and_what_it_took_stays_taken() -> None:
    m, store, fills = _model()
    _book(store, {"0.90": "100"}, {"0.95": "10", "0.96": "10", "0.98": "50"})
    first = await _send(m, Side.BUY, "0.96", "15")
    await m.arrive_until(_Clock.t)
    ack = await first
    # It spends its 14.40 pUSD: 10 at 0.95 (9.50), then 4.90 at 0.96 buys 5.104166 shares.
    assert [(f.price, f.size) for f in fills] == [(D("0.95"), D("10")), (D("0.96"), D("5.104166"))]
    assert all(f.role is LiquidityRole.TAKER for f in fills)
    assert ack.size_matched == D("15.104166")
    # The same book, unchanged: only the 4.895834 left at 0.96 remain to be taken.
    second = await _send(m, Side.BUY, "0.96", "20")
    await m.arrive_until(_Clock.t)
    assert (await second).size_matched == D("4.895834")
    # The recording updates 0.95 (replenished): that level is the truth again.
    store.ensure(TOKEN).set_level(False, D("0.95"), D("8"))
    third = await _send(m, Side.BUY, "0.96", "20")
    await m.arrive_until(_Clock.t)
    assert (await third).size_matched == D("8")


async def test_a_buy_below_its_limit_gets_the_improvement_as_shares_as_the_venue_gives_it() -> None:
    """The venue accounts a BUY in its maker amount (pUSD) and spends all of it at the makers'
    prices ("taking with surplus", py-clob-client-v2 issue #89), as the simulator does: the demo
    sniper's FAK BUY of 20.54 at 0.97 spends 19.92 pUSD, and against an ask at 0.95 the venue
    fills 20.968421 shares, not 20.54 (the model once filled 20.536, and a backtest of a live
    run that met such an ask disagreed with it)."""
    m, store, fills = _model()
    _book(store, {}, {"0.95": "40", "0.97": "100"})
    buy = await _send(m, Side.BUY, "0.97", "20.54")
    await m.arrive_until(_Clock.t)
    ack = await buy
    assert [(f.price, f.size) for f in fills] == [(D("0.95"), D("20.968421"))]
    assert ack.size_matched == D("20.968421") and ack.avg_price == D("0.95")
    # A SELL sells its shares, whatever the bids pay above its limit.
    _book(store, {"0.99": "50"}, {})
    sell = await _send(m, Side.SELL, "0.97", "10")
    await m.arrive_until(_Clock.t)
    assert (await sell).size_matched == D("10")


async def test_fok_short_of_size_is_refused_and_fak_with_nothing_is_refused() -> None:
    m, store, fills = _model()
    _book(store, {}, {"0.95": "3"})
    fok = await _send(m, Side.BUY, "0.95", "10", OrderType.FOK)
    fak = await _send(m, Side.BUY, "0.90", "10", OrderType.FAK)
    await m.arrive_until(_Clock.t)
    with pytest.raises(OrderRejected):
        await fok
    with pytest.raises(OrderRejected):
        await fak
    assert fills == []


async def test_latency_delays_arrival_until_the_replay_reaches_it() -> None:
    m, store, fills = _model(latency_ms=250)
    _book(store, {}, {"0.95": "10"})
    task = await _send(m, Side.BUY, "0.95", "10")
    await m.arrive_until(_Clock.t + 249_000_000)
    assert not task.done() and m.parked == 1
    _book(store, {}, {"0.97": "10"})  # the dip is gone by the time the order arrives
    await m.arrive_until(_Clock.t + 250_000_000)
    with pytest.raises(OrderRejected):
        await task
    assert fills == []


async def test_a_resting_order_fills_only_from_trades_beyond_the_queue_ahead() -> None:
    m, store, fills = _model()
    _book(store, {"0.90": "30"}, {"0.95": "10"})
    task = await _send(m, Side.BUY, "0.90", "20", OrderType.GTC)
    await m.arrive_until(_Clock.t)
    assert (await task).size_matched == 0
    await m.on_trade(TOKEN, D("0.91"), D("100"), _Clock.t)  # above our bid: not ours
    await m.on_trade(TOKEN, D("0.90"), D("25"), _Clock.t)  # eats 25 of the 30 ahead
    assert fills == []
    await m.on_trade(TOKEN, D("0.90"), D("12"), _Clock.t)  # 5 more ahead, then 7 for us
    assert [(f.price, f.size, f.role) for f in fills] == [(D("0.90"), D("7"), LiquidityRole.MAKER)]
    await m.on_trade(TOKEN, D("0.89"), D("50"), _Clock.t)  # through our price: the rest
    assert sum(f.size for f in fills) == D("20")
    assert not m.has_resting(TOKEN)
