"""The copy trader against the simulator's Data API: every leader fill is handled exactly once,
also when several share one transaction, and the per-market exposure cap counts the copies this
run has booked before any fill of theirs reaches the positions.

A leader's taker order that matches several resting orders settles in one transaction: the Data
API lists one row per fill, with the same transaction hash; a match that fills the leader's
resting orders on both outcome tokens (or a buy and a sell) does the same. Rows differ by asset,
side, size or price; none may be taken for a re-poll of another. Polls are driven one at a time
(`poll_once`), so "a second poll copies nothing" is checked without waiting on a schedule.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models import OrderRequest, OrderResult, OrderStatus, Position, Side
from observability.metrics import Metrics
from resilience.clock import FakeClock, SystemClock
from resilience.retry import RetryPolicy
from simulator import SimMarket, Simulator
from simulator.sim import DataRow
from storage import Repositories
from strategies.base import OrderSink, PositionSource
from strategies.copy_trader import CopyRules, CopyTrader, WalletRule
from strategies.copy_trader.state import legacy_dedupe_key
from tests.helpers import until
from tests.integration.test_copy_trader_sim import Venue
from tests.integration.test_executor_live import Live, close_live, make_live
from venue.data_api import DataApiBudget, DataApiClient, parse_trade_row

D = Decimal
LEADER = "0x" + "5e" * 20
SELLER = "0x" + "77" * 20  # another wallet whose resting orders the leader takes


def wallet_rule(**kw: Any) -> WalletRule:
    base: dict[str, Any] = {"address": LEADER, "ratio": "0.5", "max_slippage": "0.02"}
    return WalletRule.model_validate(base | kw)


@asynccontextmanager
async def copier(
    sim: Simulator,
    repos: Repositories,
    sink: OrderSink,
    positions: PositionSource,
    rule: WalletRule,
    **kw: Any,
) -> AsyncIterator[CopyTrader]:
    """A copy trader reading the simulator's Data API over loopback; polled by the test."""
    api = DataApiClient(
        base_url=sim.data_url,
        budget=DataApiBudget(1.0, clock=SystemClock()),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.1),
    )
    try:
        yield CopyTrader(
            rules=CopyRules(wallets=(rule,)),
            data_api=api,
            sink=sink,
            positions=positions,
            repos=repos,
            metrics=Metrics(),
            max_trade_age_s=60,
            spread_phases=False,
            **kw,
        )
    finally:
        await api.close()


async def handled(repos: Repositories) -> list[tuple[str, Side, Decimal, Decimal]]:
    """(token, side, leader size, leader price) of every leader fill handled, copied or not."""
    out = []
    for event in ("copy_intent", "copy_skipped"):
        for e in await repos.audit.tail(event=event, limit=500):
            d = e.detail
            if "dedupe_key" in d:  # a handling decision (not the close of an intent)
                out.append(
                    (d["token_id"], Side(d["side"]), D(d["leader_size"]), D(d["leader_price"]))
                )
    return sorted(out)


# --------------------------------------------------------------------------------------------
# (a) several fills in one transaction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One leader fill: which transaction (index), which outcome token (index), side, size,
    price."""

    tx: int
    outcome: int
    side: Side
    size: str
    price: str


def tx_hash(n: int) -> str:
    return "0x" + f"{n:064x}"


def list_rows(sim: Simulator, market: SimMarket, rows: tuple[Row, ...]) -> None:
    """Publish the leader's fills on the simulator's Data API, all in the same second."""
    now = int(time.time())
    for r in rows:
        token = market.token_ids[r.outcome]
        sim.data_rows.append(
            DataRow(
                LEADER, r.side.value, token, market, D(r.size), D(r.price), now, tx_hash(r.tx), True
            )
        )


ONE_TX_CASES = [
    pytest.param(
        (Row(1, 0, Side.BUY, "10", "0.50"), Row(1, 1, Side.BUY, "10", "0.50")),
        id="same-tx-two-assets",
    ),
    pytest.param(
        (Row(1, 0, Side.BUY, "10", "0.50"), Row(1, 0, Side.SELL, "10", "0.50")),
        id="same-tx-two-sides",
    ),
    pytest.param(
        (Row(1, 0, Side.BUY, "10", "0.50"), Row(1, 0, Side.BUY, "30", "0.50")),
        id="same-tx-two-sizes",
    ),
    pytest.param(
        (Row(1, 0, Side.BUY, "10", "0.50"), Row(2, 0, Side.BUY, "10", "0.50")),
        id="two-txs-otherwise-equal",
    ),
    pytest.param(
        (
            Row(1, 0, Side.BUY, "10", "0.50"),
            Row(1, 1, Side.BUY, "12", "0.45"),
            Row(1, 0, Side.BUY, "30", "0.51"),
            Row(1, 0, Side.SELL, "20", "0.52"),
        ),
        id="same-tx-assets-sides-sizes-prices",
    ),
    pytest.param(
        (Row(1, 0, Side.BUY, "10", "0.50"), Row(1, 0, Side.BUY, "10", "0.51")),
        id="same-tx-same-asset-two-prices",
    ),
]


@pytest.mark.parametrize("rows", ONE_TX_CASES)
async def test_each_leader_fill_in_a_transaction_is_handled_once(
    repos: Repositories, tmp_path: Path, rows: tuple[Row, ...]
) -> None:
    async with Simulator(seed=11, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will dedupe hold?", slug="dedupe-holds")
        list_rows(sim, market, rows)
        venue = Venue(repos)
        async with copier(sim, repos, venue, venue, wallet_rule()) as trader:
            rule = trader.rules.wallets[0]
            assert await trader.poll_once(rule) == len(rows)
            want = sorted(
                (market.token_ids[r.outcome], r.side, D(r.size), D(r.price)) for r in rows
            )
            assert await handled(repos) == want
            # Every BUY is copied (a SELL too, once a copied BUY gave us something to sell).
            buys = sum(1 for r in rows if r.side is Side.BUY)
            assert sum(1 for s in venue.sent if s.side is Side.BUY) == buys
            assert len({s.client_order_id for s in venue.sent}) == len(venue.sent)
            sent = len(venue.sent)
            # The same rows again (the Data API's `start` is inclusive): nothing more.
            assert await trader.poll_once(rule) == 0
            assert len(venue.sent) == sent
            assert await handled(repos) == want
        # A restarted trader (same database) does not copy them again either.
        async with copier(sim, repos, venue, venue, wallet_rule()) as again:
            assert await again.poll_once(again.rules.wallets[0]) == 0
            assert len(venue.sent) == sent


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param(("10", "30"), id="two-levels-two-sizes"),
        pytest.param(("10", "10"), id="two-levels-same-size"),
    ],
)
async def test_a_leader_order_taking_two_price_levels_is_copied_per_fill(
    repos: Repositories, sizes: tuple[str, str]
) -> None:
    async with Simulator(seed=12, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will levels hold?", slug="levels-hold")
        token = market.token_ids[0]
        first, second = D(sizes[0]), D(sizes[1])
        sim.seed_order(maker=SELLER, token_id=token, side="SELL", price=D("0.50"), size=first)
        sim.seed_order(maker=SELLER, token_id=token, side="SELL", price=D("0.51"), size=second)
        # The leader's FAK takes both levels: one transaction, two fills.
        sim.seed_order(
            maker=LEADER,
            token_id=token,
            side="BUY",
            price=D("0.51"),
            size=first + second,
            order_type="FAK",
        )
        fills = [r for r in sim.data_rows if r.wallet == LEADER]
        assert len(fills) == 2 and len({r.tx for r in fills}) == 1
        venue = Venue(repos)
        async with copier(sim, repos, venue, venue, wallet_rule()) as trader:
            assert await trader.poll_once(trader.rules.wallets[0]) == 2
            assert await handled(repos) == [
                (token, Side.BUY, first, D("0.50")),
                (token, Side.BUY, second, D("0.51")),
            ]
            # Half of each fill, at the fill's price plus 0.02.
            assert sorted((s.size, s.price) for s in venue.sent) == sorted(
                [(first / 2, D("0.52")), (second / 2, D("0.53"))]
            )
            assert await trader.poll_once(trader.rules.wallets[0]) == 0
            assert len(venue.sent) == 2


def leader_row(tx: int, size: Any, price: Any) -> dict[str, Any]:
    """One `/activity` row of the leader, as the Data API writes it (v1, JSON numbers)."""
    return {
        "proxyWallet": LEADER,
        "type": "TRADE",
        "transactionHash": tx_hash(tx),
        "asset": "1234567",
        "conditionId": "0x" + "ab" * 32,
        "side": "BUY",
        "size": size,
        "price": price,
        "timestamp": 1_700_000_000,
    }


@pytest.mark.parametrize(
    "price", [0.48000000001, 0.47999999999, "0.48", "0.480", 0.48, "4.8e-1", D("0.480000")]
)
def test_float_noise_in_the_price_gives_one_dedupe_key(price: Any) -> None:
    want = parse_trade_row(leader_row(1, 10, "0.48")).dedupe_key
    assert parse_trade_row(leader_row(1, 10, price)).dedupe_key == want
    # Built directly (not through the parser), a trade keys the same way too.
    trade = parse_trade_row(leader_row(1, 10, "0.48"))
    assert replace(trade, price=D("0.48000000001")).dedupe_key == want
    assert replace(trade, price=D("0.4800")).dedupe_key == want


def test_a_second_price_or_size_gives_another_dedupe_key() -> None:
    key = parse_trade_row(leader_row(1, 10, 0.48)).dedupe_key
    assert parse_trade_row(leader_row(1, 10, 0.49)).dedupe_key != key
    assert parse_trade_row(leader_row(1, 10, 0.480001)).dedupe_key != key
    assert parse_trade_row(leader_row(1, 11, 0.48)).dedupe_key != key
    assert parse_trade_row(leader_row(2, 10, 0.48)).dedupe_key != key


async def test_a_fill_handled_under_the_legacy_key_is_not_copied_again(
    repos: Repositories,
) -> None:
    """A database written before the price joined the dedupe key: its fills stay handled."""
    async with Simulator(seed=13, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will the upgrade hold?", slug="upgrade-holds")
        old = Row(1, 0, Side.BUY, "10", "0.50")  # copied by the previous version
        new = Row(1, 0, Side.BUY, "30", "0.50")  # same transaction, never handled
        list_rows(sim, market, (old, new))
        api = DataApiClient(base_url=sim.data_url, budget=DataApiBudget(1.0, clock=SystemClock()))
        try:
            got = await api.activity_trades(LEADER)
        finally:
            await api.close()
        (old_trade,) = [t for t in got.rows if t.size == D(old.size)]
        legacy = f"{tx_hash(1)}:{market.token_ids[0]}:BUY:10"
        assert legacy_dedupe_key(old_trade) == legacy != old_trade.dedupe_key
        # What the previous version wrote when it handled the fill: its key, marked seen.
        assert await repos.copy_intents.handle(
            LEADER, legacy, old_trade.timestamp, audit=("copy_sent", {"wallet": LEADER})
        )
        venue = Venue(repos)
        async with copier(sim, repos, venue, venue, wallet_rule()) as trader:
            assert await trader.poll_once(trader.rules.wallets[0]) == 1
            assert [(s.size, s.price) for s in venue.sent] == [(D("15"), D("0.52"))]
            assert await handled(repos) == [(market.token_ids[0], Side.BUY, D(new.size), D("0.50"))]
            assert await trader.poll_once(trader.rules.wallets[0]) == 0
            assert len(venue.sent) == 1


# --------------------------------------------------------------------------------------------
# (b) market exposure counts copies booked but not yet in the positions
# --------------------------------------------------------------------------------------------

CAP = D("10")


@asynccontextmanager
async def live_copier(tmp_path: Path, seed: int) -> AsyncIterator[tuple[Live, CopyTrader]]:
    """The real executor (live broker, simulator over loopback, no user feed: fills reach the
    positions only when a reconcile fetches them) as the copy trader's sink and positions."""
    async with Simulator(seed=seed, settle_delay_s=0.01) as sim:
        live = await make_live(tmp_path, sim, http_timeout_s=0.5)
        try:
            sim.seed_order(
                maker=SELLER, token_id=live.token, side="SELL", price=D("0.50"), size=D("500")
            )
            rule = wallet_rule(max_market_exposure=str(CAP), max_trade_notional="25")
            async with copier(
                sim, live.repos, live.ex, live.ex, rule, markets=live.ex.rules
            ) as trader:
                yield live, trader
        finally:
            await close_live(live)


def our_matched_notional(live: Live) -> Decimal:
    """What our orders matched at the venue, at their fill prices (our copies are takers)."""
    ours = {o["id"] for o in live.our_orders()}
    trades = live.sim.ledger()["trades"]
    return sum((t["size"] * t["price"] for t in trades if t["taker_order_id"] in ours), D(0))


async def test_two_leader_buys_in_a_row_stay_under_the_market_cap_before_fills_arrive(
    tmp_path: Path,
) -> None:
    async with live_copier(tmp_path, seed=21) as (live, trader):
        rule = trader.rules.wallets[0]
        live.sim.trade_as(
            wallet=LEADER, token_id=live.token, side="BUY", price=D("0.50"), size=D("40")
        )
        assert await trader.poll_once(rule) == 1
        (first,) = live.our_orders()
        assert first["status"] == "MATCHED"
        # The copy traded, but no fill has reached the executor's positions yet.
        assert live.ex.position(live.token, strategy="copy").size == 0, (
            "scenario needs fills not yet synced"
        )
        live.sim.trade_as(
            wallet=LEADER, token_id=live.token, side="BUY", price=D("0.50"), size=D("40")
        )
        assert await trader.poll_once(rule) == 1
        assert our_matched_notional(live) <= CAP
        assert len(live.our_orders()) == 1  # the room left is under the market minimum


async def test_a_copy_whose_outcome_is_unknown_still_counts_against_the_market_cap(
    tmp_path: Path,
) -> None:
    async with live_copier(tmp_path, seed=22) as (live, trader):
        rule = trader.rules.wallets[0]
        # The first copy reaches the venue 3 s after it was sent: our client stopped waiting at
        # 0.5 s, and its lookup right after found nothing yet.
        live.sim.faults.add(kind="latency", route="POST /order", seconds=3.0, count=1)
        live.sim.trade_as(
            wallet=LEADER, token_id=live.token, side="BUY", price=D("0.50"), size=D("40")
        )
        assert await trader.poll_once(rule) == 1
        rows = await live.repos.orders.non_terminal()
        assert [r.status for r in rows] == [OrderStatus.UNKNOWN]
        await until(lambda: [o["status"] for o in live.our_orders()] == ["MATCHED"], 15.0)
        live.sim.trade_as(
            wallet=LEADER, token_id=live.token, side="BUY", price=D("0.50"), size=D("40")
        )
        assert await trader.poll_once(rule) == 1
        assert our_matched_notional(live) <= CAP


class DelayedVenue:
    """OrderSink + PositionSource of a market with delayed matching: every order is accepted and
    rests unmatched for now (`delayed` answers LIVE, nothing filled), so no position moves. The
    simulator has no delayed markets yet; this is the executor's answer there."""

    def __init__(self) -> None:
        self.sent: list[OrderRequest] = []

    async def submit(self, request: OrderRequest) -> OrderResult:
        self.sent.append(request)
        return OrderResult(client_order_id=request.client_order_id, status=OrderStatus.LIVE)

    def position(self, token_id: str, *, strategy: str) -> Position:
        return Position(token_id=token_id, strategy=strategy)


async def test_a_resting_copy_counts_against_the_market_cap(repos: Repositories) -> None:
    async with Simulator(seed=23, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will the delay hold?", slug="delay-holds")
        token = market.token_ids[0]
        venue = DelayedVenue()
        rule = wallet_rule(max_market_exposure=str(CAP), max_trade_notional="25")
        async with copier(sim, repos, venue, venue, rule) as trader:
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            assert len(venue.sent) == 1  # resting, 19.23 @ 0.52: about 10.00 of room used
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            assert sum((r.notional for r in venue.sent), D(0)) <= CAP


class JournaledDelayedVenue(DelayedVenue):
    """A delayed-matching venue behind a journal, as the executor keeps one: every order is
    journaled and accepted LIVE; the test then ends it as the venue would (`end`)."""

    def __init__(self, repos: Repositories) -> None:
        super().__init__()
        self.repos = repos

    async def submit(self, request: OrderRequest) -> OrderResult:
        await self.repos.orders.record(request)
        await self.repos.orders.transition(request.client_order_id, OrderStatus.LIVE)
        return await super().submit(request)

    async def end(self, request: OrderRequest, status: OrderStatus, matched: Decimal) -> None:
        await self.repos.orders.transition(
            request.client_order_id,
            status,
            size_matched=matched,
            avg_price=request.price if matched else None,
        )


@pytest.mark.parametrize(
    ("status", "matched"),
    [
        pytest.param(OrderStatus.CANCELED, D("0"), id="canceled-unfilled"),
        pytest.param(OrderStatus.EXPIRED, D("0"), id="expired-unfilled"),
        pytest.param(OrderStatus.CANCELED, D("5"), id="canceled-after-a-partial-fill"),
    ],
)
async def test_a_resting_copy_that_ends_frees_the_room_it_did_not_fill(
    repos: Repositories, status: OrderStatus, matched: Decimal
) -> None:
    async with Simulator(seed=24, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will the room come back?", slug="room-back")
        token = market.token_ids[0]
        venue = JournaledDelayedVenue(repos)
        rule = wallet_rule(max_market_exposure=str(CAP), max_trade_notional="25")
        async with copier(sim, repos, venue, venue, rule) as trader:
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            (first,) = venue.sent  # resting, 19.23 @ 0.52: the whole room
            # While it rests, the next leader trade finds no room.
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            assert venue.sent == [first]
            # The venue ends it, `matched` of it filled: the rest of its room is free again.
            await venue.end(first, status, matched)
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            _, second = venue.sent
            bought = matched * first.price
            assert second.notional <= CAP - bought
            assert second.notional > CAP - bought - second.price  # all the room, to a share


async def test_a_copy_the_trader_cannot_follow_holds_its_room_for_the_copy_age_only(
    repos: Repositories,
) -> None:
    """A sink that journals nothing leaves the trader blind to the copy's outcome: its room is
    held for the wallet's max trade age (60 s here), then freed."""
    async with Simulator(seed=25, settle_delay_s=0.01) as sim:
        market = sim.add_market(question="Will the room expire?", slug="room-expires")
        token = market.token_ids[0]
        venue = DelayedVenue()
        clock = FakeClock()
        rule = wallet_rule(max_market_exposure=str(CAP), max_trade_notional="25")
        async with copier(sim, repos, venue, venue, rule, clock=clock) as trader:
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            clock.advance(59)
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            assert len(venue.sent) == 1  # still held
            clock.advance(1)
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("40"))
            assert await trader.poll_once(rule) == 1
            assert len(venue.sent) == 2
            assert venue.sent[1].notional > CAP - venue.sent[1].price  # all the room again
