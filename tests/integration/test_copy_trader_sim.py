"""Copy trader against the simulator's Data API over real sockets (scripted leader wallets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models import OrderRequest, OrderResult, OrderStatus, Position, Side
from observability.metrics import Metrics
from resilience.clock import SystemClock
from resilience.retry import RetryPolicy
from simulator import SimMarket, Simulator
from storage import Database, Repositories
from strategies.copy_trader import CopyRules, CopyTrader, StaticMarketInfo, WalletRule
from tests.helpers import filled_in_full
from venue.data_api import DataApiBudget, DataApiClient

D = Decimal
LEADER = "0x" + "1f" * 20
POLL_S = 0.2


class Venue:
    """OrderSink + PositionSource: journals like the executor, fills every order in full."""

    def __init__(self, repos: Repositories | None = None) -> None:
        self.repos = repos
        self.sent: list[OrderRequest] = []
        self.positions: dict[str, Position] = {}
        self.hold: asyncio.Event | None = None  # when set, submit parks before journaling

    async def submit(self, request: OrderRequest) -> OrderResult:
        if self.hold is not None:
            await self.hold.wait()
        assert self.repos is not None
        await self.repos.orders.record(request)
        self.positions[request.token_id] = self.position(
            request.token_id, strategy=request.strategy
        ).apply(request.side, request.price, request.size)
        await self.repos.orders.transition(
            request.client_order_id, OrderStatus.FILLED, size_matched=request.size
        )
        # Listed once the result is on its way: a test waiting for `sent` sees its settling.
        self.sent.append(request)
        return filled_in_full(request)

    def position(self, token_id: str, *, strategy: str) -> Position:
        return self.positions.get(token_id, Position(token_id=token_id, strategy=strategy))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=5, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(question="Will copy work?", slug="copy-works", tags=("crypto",))


@asynccontextmanager
async def running(
    sim: Simulator,
    db_path: Path,
    rule: WalletRule,
    venue: Venue | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[tuple[CopyTrader, Venue, Metrics, DataApiClient]]:
    db = Database(db_path)
    await db.open()
    repos = Repositories.over(db)
    metrics = metrics or Metrics()
    v = venue or Venue(repos)
    v.repos = repos
    api = DataApiClient(
        base_url=sim.data_url,
        budget=DataApiBudget(1.0, clock=SystemClock()),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.1),
        on_error=lambda kind: metrics.data_api_errors_total.labels(kind).inc(),
    )
    trader = CopyTrader(
        rules=CopyRules(wallets=(rule,)),
        data_api=api,
        sink=v,
        positions=v,
        repos=repos,
        metrics=metrics,
        markets=StaticMarketInfo(),
        poll_interval_s=POLL_S,
        max_trade_age_s=60,
    )
    task = asyncio.create_task(trader.run(), name="copy:test")
    try:
        # The wallet's first start (history recorded as seen) is done: trades from now are new.
        await until(lambda: _started(repos, rule.address))
        yield trader, v, metrics, api
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
        await db.close()


async def _started(repos: Repositories, wallet: str) -> bool:
    return await repos.copy_intents.cursor(wallet) is not None


async def until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- a polling helper, asyncio.timeout would hide which condition failed
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cond()
        if isinstance(r, Awaitable):
            r = await r
        if r:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def rule(**kw: Any) -> WalletRule:
    base: dict[str, Any] = {"address": LEADER, "ratio": "0.1", "max_slippage": "0.02"}
    base.update(kw)
    return WalletRule.model_validate(base)


def skipped(m: Metrics, reason: str) -> float:
    return float(m.copy_skipped_total.labels(reason)._value.get())


async def test_leader_buy_then_partial_exit_mirrored_with_ratio_sizes(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    token = market.token_ids[0]
    async with running(sim, tmp_path / "a.db", rule(ratio="0.1")) as (_t, venue, m, _):
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("200"))
        await until(lambda: len(venue.sent) == 1)
        sim.trade_as(wallet=LEADER, token_id=token, side="SELL", price=D("0.60"), size=D("50"))
        await until(lambda: len(venue.sent) == 2)
    buy, sell = venue.sent
    assert (buy.side, buy.size, buy.price) == (Side.BUY, D("20.00"), D("0.52"))
    # The leader sold a quarter of its 200: we sell a quarter of our 20.
    assert (sell.side, sell.size, sell.price) == (Side.SELL, D("5.00"), D("0.58"))
    assert m.copy_copied_total._value.get() == 2
    assert m.copy_lag_seconds._sum.get() > 0


@pytest.mark.parametrize(
    ("kw", "expected_notional"),
    [
        ({"sizing": "fixed_notional", "fixed_notional": "12", "max_slippage": "0"}, D("12")),
        ({"sizing": "percent", "percent": "5", "max_slippage": "0"}, D("5")),  # 5% of 100
    ],
)
async def test_fixed_and_percent_sizing_spend_expected_notional(
    sim: Simulator, market: SimMarket, tmp_path: Path, kw: dict[str, Any], expected_notional: D
) -> None:
    token = market.token_ids[1]
    async with running(sim, tmp_path / "b.db", rule(**kw)) as (_, venue, _m, _api):
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.40"), size=D("250"))
        await until(lambda: len(venue.sent) == 1)
    (req,) = venue.sent
    assert req.price == D("0.40")
    assert abs(req.size * req.price - expected_notional) < D("0.01")


async def test_filters_skip_against_simulator_with_reasons_in_audit(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    other = sim.add_market(question="Blocked?", slug="blocked-market")
    r = rule(block_slugs=["blocked-market"], min_leader_notional="10", sides=["BUY"])
    async with running(sim, tmp_path / "c.db", r) as (t, venue, m, _):
        sim.trade_as(
            wallet=LEADER, token_id=other.token_ids[0], side="BUY", price=D("0.5"), size=D("100")
        )
        sim.trade_as(
            wallet=LEADER, token_id=market.token_ids[0], side="BUY", price=D("0.5"), size=D("5")
        )
        sim.trade_as(
            wallet=LEADER, token_id=market.token_ids[0], side="SELL", price=D("0.5"), size=D("50")
        )
        sim.trade_as(
            wallet=LEADER, token_id=market.token_ids[0], side="BUY", price=D("0.5"), size=D("100")
        )
        await until(lambda: len(venue.sent) == 1 and skipped(m, "side_not_copied") == 1)
        entries = await t._ledger._repos.audit.tail(event="copy_skipped")
    reasons = sorted(e.detail["reason"] for e in entries)
    assert reasons == ["leader_notional_too_small", "market_blocked", "side_not_copied"]
    assert skipped(m, "market_blocked") == 1 and skipped(m, "leader_notional_too_small") == 1


async def test_kill_between_seen_and_submit_restart_copies_exactly_once(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    token = market.token_ids[0]
    db_path = tmp_path / "k.db"
    first = Venue()  # repos bound by running()
    first.hold = asyncio.Event()  # park inside submit: intent stored, nothing journaled or sent
    async with running(sim, db_path, rule(), venue=first) as (t, _, _m, _api):
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.5"), size=D("100"))
        await until(lambda: bool(t._unsent))
    # The task was cancelled mid-submit ("killed"); the intent is durable.
    assert first.sent == []
    second = Venue()
    async with running(sim, db_path, rule(), venue=second) as (t2, _, _m2, _api2):
        await until(lambda: len(second.sent) == 1)
        await asyncio.sleep(4 * POLL_S)  # more polls see the same trade again
        assert await t2._ledger.pending() == []
    assert len(second.sent) == 1
    # A third run finds nothing left to do.
    third = Venue()
    async with running(sim, db_path, rule(), venue=third):
        await asyncio.sleep(3 * POLL_S)
    assert third.sent == []


async def test_data_api_5xx_and_garbage_cost_no_trade_and_duplicate_none(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    token = market.token_ids[0]
    async with running(sim, tmp_path / "f.db", rule()) as (_t, venue, m, _api):
        sim.faults.add(kind="data_api", status=500, count=4)
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.5"), size=D("100"))
        await until(lambda: len(venue.sent) == 1, timeout=8)
        sim.faults.add(kind="data_api_garbage", count=6)
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.51"), size=D("60"))
        await until(lambda: len(venue.sent) == 2, timeout=8)
        await asyncio.sleep(5 * POLL_S)
    assert len(venue.sent) == 2
    assert len({r.client_order_id for r in venue.sent}) == 2
    assert m.data_api_errors_total.labels("http_5xx")._value.get() >= 4
    assert m.data_api_errors_total.labels("row_missing_field")._value.get() >= 1


async def test_new_wallet_with_20_old_trades_copies_none_then_copies_new_ones(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    # Twenty trades 5-43 s old: all inside the 60 s max trade age, so without the start policy
    # every one of them would be copied on the first poll.
    token = market.token_ids[0]
    now = int(time.time())
    for i in range(20):
        sim.trade_as(
            wallet=LEADER,
            token_id=token,
            side="BUY",
            price=D("0.5"),
            size=D("100"),
            at=now - 5 - 2 * i,
        )
    async with running(sim, tmp_path / "n.db", rule()) as (t, venue, m, _):
        await asyncio.sleep(5 * POLL_S)
        assert venue.sent == []
        (entry,) = await t._ledger._repos.audit.tail(event="copy_wallet_started")
        assert entry.detail["existing_trades"] == 20 and entry.detail["recorded_seen"] == 20
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.5"), size=D("100"))
        await until(lambda: len(venue.sent) == 1)
    assert m.copy_skipped_total.labels("too_old")._value.get() == 0  # set aside, not skipped


async def test_backfill_copies_only_the_trades_inside_its_window(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    token = market.token_ids[0]
    now = int(time.time())
    for age in (50, 45, 40):  # older than the 30 s window: recorded as seen
        sim.trade_as(
            wallet=LEADER, token_id=token, side="BUY", price=D("0.5"), size=D("100"), at=now - age
        )
    inside = [
        sim.trade_as(
            wallet=LEADER, token_id=token, side="BUY", price=D("0.5"), size=D(size), at=now - 10
        )
        for size in ("100", "120")
    ]
    async with running(sim, tmp_path / "w.db", rule(backfill_s=30)) as (t, venue, _m, _):
        await until(lambda: len(venue.sent) == 2)
        await asyncio.sleep(5 * POLL_S)
        (entry,) = await t._ledger._repos.audit.tail(event="copy_wallet_started")
    assert len(venue.sent) == 2
    assert sorted(r.size for r in venue.sent) == [D("10.00"), D("12.00")]
    assert all(
        tx[:12] in r.reason
        for tx, r in zip(inside, sorted(venue.sent, key=lambda r: r.size), strict=True)
    )
    assert entry.detail["recorded_seen"] == 3 and entry.detail["backfill_s"] == 30


def test_backfill_beyond_the_max_trade_age_is_refused_naming_the_wallet() -> None:
    with pytest.raises(ValueError, match="backfill_s"):
        rule(max_trade_age_s=20, backfill_s=30)
