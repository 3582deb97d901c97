"""The executor with the live CLOB broker against the simulator, over real sockets, real SDK.

Every fault test checks the invariant the same way: the simulator's ledger holds exactly one
venue order per request, and the journal row agrees with it (id, status, size matched), both
ways; and every order body the venue received is the signed order journaled before the send,
byte for byte (`tests.helpers.exactly_once`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from config import Settings, load_settings
from executor import Executor
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from resilience import BreakerState, Clock, RateLimiter, SystemClock
from resilience.rate_limit import polymarket_limits
from simulator import Simulator
from simulator.market import SimMarket
from storage import Database, Repositories
from storage.engine import make_database
from storage.repositories import JournalRow
from tests.harness import expected_status
from tests.helpers import JOURNAL_SIGNED_SQL, ExactlyOnce, exactly_once
from venue.clob import ClobBroker
from wiring.execution import ExecutionStage as Execution
from wiring.execution import assemble

MAKER = "0x" + "22" * 20


@dataclass
class Live:
    sim: Simulator
    market: SimMarket
    settings: Settings
    db: Database
    repos: Repositories
    metrics: Metrics
    built: Execution
    key: str
    address: str

    @property
    def ex(self) -> Executor:
        return self.built.executor

    @property
    def broker(self) -> ClobBroker:
        assert isinstance(self.built.broker, ClobBroker)
        return self.built.broker

    @property
    def token(self) -> str:
        return self.market.token_ids[0]

    def req(self, **kw: Any) -> OrderRequest:
        base: dict[str, Any] = {
            "strategy": "test",
            "token_id": self.token,
            "side": Side.BUY,
            "price": Decimal("0.40"),
            "size": Decimal("10"),
            "order_type": OrderType.GTC,
        }
        base.update(kw)
        return OrderRequest(**base)

    def our_orders(self) -> list[dict[str, Any]]:
        owner = self.broker.owner
        return [o for o in self.sim.ledger()["orders"] if o["owner"] == owner]

    def posts(self, path: str = "/order") -> int:
        return sum(1 for r in self.sim.request_log if r.method == "POST" and r.path == path)

    async def exactly_once(self) -> ExactlyOnce:
        """Every order body the venue received, held against the journal's signed orders."""
        clob = self.sim.clob
        rows = [dict(r) for r in await self.db.fetchall(JOURNAL_SIGNED_SQL)]
        return exactly_once(
            [r.as_json() for r in clob.received_orders()],
            rows,
            address=self.address,
            complete=clob.received_total == len(clob.received),
        )

    async def assert_sent_as_journaled(self) -> ExactlyOnce:
        report = await self.exactly_once()
        assert report.ok, str(report)
        return report

    async def assert_journal_matches_ledger(self) -> None:
        """The journal and the venue's ledger agree both ways, and nothing was sent unjournaled.

        Every venue order of ours has exactly one journal row; every journal row naming a venue
        order the venue holds agrees with it (status, size matched); a REJECTED row names no
        order the venue holds; a settled row names none the venue lacks. A PENDING or UNKNOWN
        row may or may not have reached the venue yet.
        """
        ledger = {o["id"]: o for o in self.our_orders()}
        rows = [r for r in await self.repos.orders.recent(limit=10_000) if r.venue_order_id]
        by_venue: dict[str, list[JournalRow]] = {}
        for r in rows:
            by_venue.setdefault(r.venue_order_id or "", []).append(r)
        problems: list[str] = []
        for vid in ledger:
            n = len(by_venue.get(vid, []))
            if n != 1:
                problems.append(f"venue order {vid[:12]} has {n} journal rows")
        for row in rows:
            o = ledger.get(row.venue_order_id or "")
            coid, status = row.client_order_id, row.status
            if status is OrderStatus.REJECTED:
                if o is not None:
                    problems.append(f"{coid} is REJECTED but the venue holds its order")
            elif status in (OrderStatus.PENDING, OrderStatus.UNKNOWN):
                continue
            elif o is None:
                problems.append(f"{coid} is {status} but the venue has no such order")
            else:
                want = expected_status(o, row.order_type.value, row.size)
                if status.value not in want or Decimal(o["size_matched"]) != row.size_matched:
                    problems.append(
                        f"{coid}: journal {status}/{row.size_matched}, venue "
                        f"{o['status']}/{o['size_matched']} (want {sorted(want)})"
                    )
        assert not problems, "\n".join(problems)
        await self.assert_sent_as_journaled()


async def make_live(
    tmp_path: Path,
    sim: Simulator,
    *,
    key: str | None = None,
    limiter: RateLimiter | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> Live:
    market = sim.markets[0] if sim.markets else sim.add_market("Will it rain?", "rain")
    acct = Account.from_key(key) if key else Account.create()
    sim.fund(acct.address, collateral=Decimal("10000"))
    values: dict[str, Any] = {
        "mode": "live",
        "private_key": acct.key.hex(),
        "clob_host": sim.clob_url,
        "user_ws_url": sim.user_ws_url,
        "db_path": str(tmp_path / "polyd.db"),
        "http_timeout_s": 0.5,
        "retry_attempts": 6,
        "retry_base_delay_s": 0.05,
        "retry_max_delay_s": 0.4,
        "order_lookup_grace_s": 1.0,
        "breaker_failure_threshold": 5,
        "breaker_reset_timeout_s": 0.5,
    }
    values.update(overrides)
    settings = load_settings(env_file=None, **values)
    db = make_database(db_path=settings.db_path, database_url=settings.database_url)
    await db.open()
    repos = Repositories.over(db, daemon_id=settings.daemon_id)  # as `wiring.shared` builds them
    metrics = Metrics()
    built = await assemble(
        settings, repos=repos, metrics=metrics, redactor=Redactor(), limiter=limiter, clock=clock
    )
    return Live(sim, market, settings, db, repos, metrics, built, acct.key.hex(), acct.address)


async def close_live(live: Live) -> None:
    for _, close in reversed(live.built.closers):
        await close()
    await live.db.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def live(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Live]:
    """The executor live against the simulator, journaling to a SQLite file or to a fresh
    PostgreSQL schema (`DATABASE_URL`): every test using it runs on both engines."""
    engine: dict[str, Any] = {}
    if request.param == "postgres":
        engine["database_url"] = request.getfixturevalue("pg_server").fresh_url()
    async with Simulator(seed=7, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, **engine)
        try:
            yield lv
        finally:
            await close_live(lv)


def seed_asks(live: Live, price: str = "0.40", size: str = "50") -> None:
    live.sim.seed_order(
        maker=MAKER, token_id=live.token, side="SELL", price=Decimal(price), size=Decimal(size)
    )


# --- exactly-once under faults ------------------------------------------------------------


async def test_429_burst_resent_same_payload_one_venue_order(live: Live) -> None:
    live.sim.faults.add(kind="status", route="POST /order", status=429, count=3, retry_after=0)
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.LIVE
    assert live.posts() == 4
    assert [o["id"] for o in live.our_orders()] == [res.venue_order_id]
    row = await live.repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE and row.payload_hash
    await live.assert_journal_matches_ledger()
    # The four bodies the venue received are the one journaled signed order, byte for byte.
    sent = await live.assert_sent_as_journaled()
    assert sent.sends == {res.client_order_id: 4}


async def test_engine_restart_425_then_post_only_retried_one_venue_order(live: Live) -> None:
    live.sim.faults.add(kind="engine_restart", seconds=0.3, post_only_s=0.2)
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.LIVE, res.reason
    assert live.posts() >= 2
    assert len(live.our_orders()) == 1
    await live.assert_journal_matches_ledger()
    sent = await live.assert_sent_as_journaled()
    assert sent.sends == {res.client_order_id: live.posts()}


async def test_500s_retried_then_filled_one_venue_order(live: Live) -> None:
    seed_asks(live)
    live.sim.faults.add(kind="status", route="POST /order", status=500, count=2)
    res = await live.ex.submit(live.req(order_type=OrderType.FOK))
    assert res.status is OrderStatus.FILLED
    assert res.filled_size == Decimal("10")
    assert len(live.our_orders()) == 1
    await live.assert_journal_matches_ledger()
    sent = await live.assert_sent_as_journaled()
    assert sent.sends == {res.client_order_id: 3}  # the same order three times


@pytest.mark.parametrize(
    ("order_type", "venue_status", "journal_status", "matched"),
    [
        (OrderType.GTC, "LIVE", OrderStatus.LIVE, Decimal("0")),
        (OrderType.FOK, "MATCHED", OrderStatus.FILLED, Decimal("10")),
    ],
)
async def test_accepted_then_5xx_until_retries_run_out_is_settled_by_lookup_not_rejected(
    tmp_path: Path,
    order_type: OrderType,
    venue_status: str,
    journal_status: OrderStatus,
    matched: Decimal,
) -> None:
    # The matching engine takes the order (it rests, or it matches), then the venue answers 500
    # to that POST and to every re-send of it: the venue holds an order the client never heard
    # about. Only a lookup by its hash can say so; calling it REJECTED would forget a live order.
    async with Simulator(seed=12, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, retry_attempts=3, order_lookup_grace_s=5.0)
        try:
            if order_type is OrderType.FOK:
                seed_asks(lv, price="0.40")
            sim.faults.add(kind="accept_then_status", route="POST /order", status=500)
            res = await lv.ex.submit(lv.req(order_type=order_type))
            assert lv.posts() == 3  # every attempt the retry policy allows, all answered 500
            [venue] = lv.our_orders()
            assert venue["status"] == venue_status
            assert res.status is journal_status, res
            assert res.venue_order_id == venue["id"]
            row = await lv.repos.orders.get(res.client_order_id)
            assert row is not None and row.status is journal_status
            assert row.size_matched == matched
            await lv.assert_journal_matches_ledger()
            sent = await lv.assert_sent_as_journaled()
            assert sent.sends == {res.client_order_id: 3}
        finally:
            await close_live(lv)


async def test_503_cancel_only_window_rejects_new_order_and_cancel_still_goes(live: Live) -> None:
    resting = await live.ex.submit(live.req())
    assert resting.status is OrderStatus.LIVE
    live.sim.faults.add(kind="status", route="POST /order", status=503, count=100)
    res = await live.ex.submit(live.req(price=Decimal("0.30")))
    assert res.status is OrderStatus.REJECTED
    assert "cancel-only" in res.reason
    assert await live.ex.cancel(resting.client_order_id)
    assert [o["status"] for o in live.our_orders()] == ["CANCELED"]
    await live.assert_journal_matches_ledger()


async def test_late_response_after_timeout_settled_by_lookup_never_resent(live: Live) -> None:
    seed_asks(live)
    live.sim.faults.add(kind="late_response", route="POST /order", seconds=1.0)
    clob, unknown = live.sim.clob, live.metrics.outcome_unknown_total
    received_before = clob.received_total
    waiting = 0  # heartbeats served between the venue taking the POST and the client giving up

    async def heartbeat() -> None:
        nonlocal waiting
        while True:
            await asyncio.sleep(0.005)
            if clob.received_total > received_before and unknown._value.get() == 0:
                waiting += 1

    beating = asyncio.create_task(heartbeat())
    try:
        res = await live.ex.submit(live.req(order_type=OrderType.FOK))
        for _ in range(40):
            row = await live.repos.orders.get(res.client_order_id)
            if row is not None and row.status is OrderStatus.FILLED:
                break
            await live.ex.settle_unknowns()
            await asyncio.sleep(0.05)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    await asyncio.sleep(1.0)  # the venue logs the request once its late answer is written
    assert live.posts() == 1  # never re-sent
    assert len(live.our_orders()) == 1
    row = await live.repos.orders.get(res.client_order_id)
    assert row is not None and row.status is OrderStatus.FILLED
    assert row.size_matched == Decimal("10")
    events = [e.to_status for e in await live.repos.orders.events(res.client_order_id)]
    assert OrderStatus.UNKNOWN in events
    assert live.metrics.outcome_unknown_total._value.get() == 1
    # The 0.5 s client timeout ran off the loop: the loop kept serving while the client waited
    # (a wait on the loop would have kept the venue, on this loop, from even reading the POST).
    assert waiting > 0
    await live.assert_journal_matches_ledger()


async def test_unknown_order_never_found_rejected_after_grace(live: Live) -> None:
    # The order dies in transit: the venue answers nothing and never saw it.
    live.sim.faults.add(kind="status", route="POST /order", status=599, count=0)
    req = live.req()
    meta = await live.ex.rules.ensure(req.token_id)
    assert meta is not None
    prepared = await live.broker.prepare(req, meta)
    await live.ex._journal_pending(prepared)
    res = await live.ex._outcome_unknown(prepared, "test: connection dropped")
    assert res.status is OrderStatus.UNKNOWN
    await asyncio.sleep(1.1)
    await live.ex.settle_unknowns()
    row = await live.repos.orders.get(req.client_order_id)
    assert row is not None and row.status is OrderStatus.REJECTED
    assert live.our_orders() == []


# --- refusals never reach the venue ---------------------------------------------------------

# A v1-shaped position id (bits 40..103 not all zero) that no market has: a small number such as
# 123456789 would read as a Protocol-V2 id and be refused for that reason instead.
UNKNOWN_TOKEN = "9999999999999999999999999999999999999999999999999999999999999999999999999999"

# The exact refusal of each order in `test_rule_and_risk_refusals_audited_counted_never_sent`:
# which check refused it (source) and why.
REFUSALS = [
    "rules: price 0.405 is not on the tick grid 0.01",
    "rules: size 2 is under the market minimum 5.0",
    "rules: size 10.555 has more than 2 decimal places",
    "rules: market is not accepting orders",
    f"rules: unknown market for token {UNKNOWN_TOKEN}",
    "risk: order notional 90.00 exceeds the per-order cap 50",
    "risk: SELL of 10 exceeds what strategy test holds and has not already offered for sale (0)",
    "rules: marketable BUY notional 0.80 is under $1",
]


async def test_rule_and_risk_refusals_audited_counted_never_sent(live: Live) -> None:
    closed = live.sim.add_market("Closed?", "closed", accepting_orders=False)
    bad = [
        live.req(price=Decimal("0.405")),  # off the tick grid
        live.req(size=Decimal("2")),  # under min size
        live.req(size=Decimal("10.555")),  # too many decimals
        live.req(token_id=closed.token_ids[0]),  # not accepting orders
        live.req(token_id=UNKNOWN_TOKEN),  # unknown market (v1 namespace)
        live.req(price=Decimal("0.90"), size=Decimal("100")),  # per-order notional cap (50)
        live.req(side=Side.SELL),  # sells a position we do not hold
        live.req(order_type=OrderType.FOK, size=Decimal("2"), price=Decimal("0.40")),  # < $1
    ]
    before = len(live.sim.request_log)
    results = [await live.ex.submit(r) for r in bad]
    assert all(r.status is OrderStatus.REJECTED and r.reason for r in results)
    assert [r.reason for r in results] == REFUSALS
    # The journal and the audit trail say the same, with the source apart.
    rows = [await live.repos.orders.get(r.client_order_id) for r in bad]
    assert [row.detail if row else None for row in rows] == REFUSALS
    refused = await live.repos.audit.tail(limit=50, event="order_refused")
    by_coid = {a.client_order_id: a.detail for a in refused}
    assert [
        f"{by_coid[r.client_order_id]['source']}: {by_coid[r.client_order_id]['reason']}"
        for r in bad
    ] == REFUSALS
    assert live.posts() == 0
    new = live.sim.request_log[before:]
    assert not any(r.path in ("/order", "/orders") for r in new)
    audit = await live.repos.audit.tail(limit=50, event="order_refused")
    assert len(audit) == len(bad)
    rules = live.metrics.order_rejections_total.labels("test", "rules")._value.get()
    risk = live.metrics.order_rejections_total.labels("test", "risk")._value.get()
    assert rules + risk == len(bad)
    await live.ex.halt("test")
    res = await live.ex.submit(live.req())
    assert res.status is OrderStatus.REJECTED and res.reason.startswith("halted")
    assert res.reason == "halted: trading is halted: test"
    assert live.posts() == 0


# --- the breaker ---------------------------------------------------------------------------


async def test_breaker_opens_refuses_lets_cancel_half_opens_and_closes(tmp_path: Path) -> None:
    async with Simulator(seed=3, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path,
            sim,
            retry_attempts=1,
            breaker_failure_threshold=2,
            breaker_reset_timeout_s=0.5,
        )
        try:
            resting = await lv.ex.submit(lv.req())
            assert resting.status is OrderStatus.LIVE
            sim.faults.add(kind="status", route="POST /order", status=500, count=2)
            for _ in range(2):
                r = await lv.ex.submit(lv.req(price=Decimal("0.30")))
                assert r.status is OrderStatus.REJECTED
            assert lv.ex.breaker.state is BreakerState.OPEN
            posts = lv.posts()
            refused = await lv.ex.submit(lv.req(price=Decimal("0.31")))
            assert refused.status is OrderStatus.REJECTED and refused.reason.startswith("breaker")
            assert lv.posts() == posts  # never sent
            assert await lv.ex.cancel(resting.client_order_id)  # cancels still go
            await asyncio.sleep(0.55)
            probe = await lv.ex.submit(lv.req(price=Decimal("0.32")))
            assert probe.status is OrderStatus.LIVE
            assert lv.ex.breaker.state is BreakerState.CLOSED  # type: ignore[comparison-overlap]  # mypy narrowed it above
            assert lv.metrics.breaker_opened_total.labels("venue")._value.get() == 1
            await lv.assert_journal_matches_ledger()
        finally:
            await close_live(lv)


# --- rate limits ---------------------------------------------------------------------------


async def test_rate_limiter_keeps_observed_post_rate_under_budget(tmp_path: Path) -> None:
    limits = polymarket_limits(1.0)
    limits["post_order"] = (20.0, 2.0)  # 2 at once, then 20/s
    limiter = RateLimiter.from_limits(limits, clock=SystemClock())
    async with Simulator(seed=4, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim, limiter=limiter)
        try:
            reqs = [lv.req(price=Decimal("0.30")) for _ in range(16)]
            t0 = time.monotonic()
            results = await asyncio.gather(*(lv.ex.submit(r) for r in reqs))
            elapsed = time.monotonic() - t0
            assert all(r.status is OrderStatus.LIVE for r in results)
            stamps = sorted(r.ts for r in sim.request_log if r.path == "/order")
            assert len(stamps) == 16
            assert elapsed >= (16 - 2) / 20 * 0.9
            window = 0.25
            for i, t in enumerate(stamps):
                in_window = sum(1 for u in stamps[i:] if u - t < window)
                assert in_window <= 2 + 20 * window + 1
        finally:
            await close_live(lv)


# --- user websocket and REST reconcile -----------------------------------------------------


async def test_fill_during_user_ws_drop_recovered_by_rest_reconcile(live: Live) -> None:
    feed = live.built.user_feed
    assert feed is not None
    task = asyncio.create_task(feed.run())
    try:
        for _ in range(100):
            if feed.connected:
                break
            await asyncio.sleep(0.02)
        assert feed.connected
        res = await live.ex.submit(live.req(price=Decimal("0.45")))
        assert res.status is OrderStatus.LIVE
        await live.sim.drop_websockets("user")
        # Matched while no socket is connected: the venue will not replay it.
        live.sim.seed_order(
            maker=MAKER, token_id=live.token, side="SELL", price=Decimal("0.45"), size=Decimal("10")
        )
        for _ in range(100):
            row = await live.repos.orders.get(res.client_order_id)
            # The reconcile settles the order by hash first, then fetches the trades.
            if (
                row is not None
                and row.status is OrderStatus.FILLED
                and live.ex.position(live.token, strategy="test").size == Decimal("10")
            ):
                break
            await asyncio.sleep(0.05)
        assert feed.connects >= 2
        row = await live.repos.orders.get(res.client_order_id)
        assert row is not None and row.status is OrderStatus.FILLED
        assert live.ex.position(live.token, strategy="test").size == Decimal("10")
        fills = await live.repos.fills.for_order(res.client_order_id)
        assert sum(f.size for f in fills) == Decimal("10")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- start-up reconciliation ---------------------------------------------------------------


async def test_startup_reconcile_settles_pending_and_unknown_rows_of_killed_process(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=5, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim)
        seed_asks(first)
        ex, broker = first.ex, first.broker
        meta = await ex.rules.ensure(first.token)
        assert meta is not None
        # 1: journaled PENDING and sent (rests), then the process died before the answer.
        resting = await broker.prepare(first.req(price=Decimal("0.30")), meta)
        await ex._journal_pending(resting)
        await broker.send(resting)
        # 2: journaled, sent, matched; the row was left UNKNOWN.
        filled = await broker.prepare(first.req(order_type=OrderType.FOK), meta)
        await ex._journal_pending(filled)
        await broker.send(filled)
        await first.repos.orders.transition(filled.request.client_order_id, OrderStatus.UNKNOWN)
        # 3: journaled PENDING, never sent.
        lost = await broker.prepare(first.req(price=Decimal("0.20")), meta)
        await ex._journal_pending(lost)
        key = first.key
        await close_live(first)
        await asyncio.sleep(1.05)  # past the lookup grace for the lost order

        second = await make_live(tmp_path, sim, key=key)
        try:
            counts = await second.ex.reconcile()
            assert counts["settled"] == 3
            get = second.repos.orders.get
            r1 = await get(resting.request.client_order_id)
            r2 = await get(filled.request.client_order_id)
            r3 = await get(lost.request.client_order_id)
            assert r1 is not None and r1.status is OrderStatus.LIVE
            assert r2 is not None and r2.status is OrderStatus.FILLED
            assert r2.size_matched == Decimal("10")
            assert r3 is not None and r3.status is OrderStatus.REJECTED
            assert await second.repos.orders.non_terminal() == [r1]
            assert second.ex.position(second.token, strategy="test").size == Decimal(
                "10"
            )  # trades fetched
            await second.assert_journal_matches_ledger()
        finally:
            await close_live(second)


# --- batches -------------------------------------------------------------------------------


async def test_submit_many_posts_batches_of_fifteen_once(live: Live) -> None:
    reqs = [live.req(price=Decimal("0.30")) for _ in range(17)]
    results = await live.ex.submit_many(reqs)
    assert [r.status for r in results] == [OrderStatus.LIVE] * 17
    assert live.posts("/orders") == 2 and live.posts() == 0
    assert len(live.our_orders()) == 17
    await live.assert_journal_matches_ledger()


async def test_batch_accepted_then_5xx_is_not_resent_and_each_order_settled_by_lookup(
    live: Live,
) -> None:
    # A batch is never retried; when the venue took it and then answered 500, every order in it
    # is the venue's and must be found by its hash, not called REJECTED.
    live.sim.faults.add(kind="accept_then_status", route="POST /orders", status=500)
    reqs = [live.req(price=Decimal("0.30")) for _ in range(3)]
    results = await live.ex.submit_many(reqs)
    assert [r.status for r in results] == [OrderStatus.LIVE] * 3, results
    assert live.posts("/orders") == 1 and live.posts() == 0
    assert sorted(r.venue_order_id or "" for r in results) == sorted(
        o["id"] for o in live.our_orders()
    )
    await live.assert_journal_matches_ledger()
    sent = await live.assert_sent_as_journaled()
    assert sent.sends == {r.client_order_id: 1 for r in reqs}


# --- the checks above bite -----------------------------------------------------------------


async def test_journal_ledger_check_flags_a_venue_order_without_its_journal_row(
    live: Live,
) -> None:
    res = await live.ex.submit(live.req(price=Decimal("0.30")))
    assert res.status is OrderStatus.LIVE
    await live.assert_journal_matches_ledger()
    meta = await live.ex.rules.ensure(live.token)
    assert meta is not None
    stray = await live.broker.prepare(live.req(price=Decimal("0.31")), meta)
    await live.broker.send(stray)  # at the venue, never journaled
    with pytest.raises(AssertionError, match=f"venue order {stray.venue_order_id[:12]} has 0"):
        await live.assert_journal_matches_ledger()


async def test_exactly_once_check_flags_an_order_signed_again_and_passes_the_journaled_one(
    live: Live,
) -> None:
    req = live.req(price=Decimal("0.30"))
    meta = await live.ex.rules.ensure(live.token)
    assert meta is not None
    signed = await live.broker.prepare(req, meta)
    await live.repos.orders.record(
        req,
        venue_order_id=signed.venue_order_id,
        payload_hash=signed.payload_hash,
        signed_order=signed.signed_order,
    )
    again = await live.broker.prepare(req, meta)  # the same request signed again: a new salt
    assert again.venue_order_id != signed.venue_order_id
    await live.broker.send(again)
    report = await live.exactly_once()
    assert report.received == 1 and not report.sends
    assert report.problems == [
        f"/order: the venue received order {again.venue_order_id} (salt "
        f"{json.loads(again.payload)['order']['salt']}), which 0 journal rows hold: signed "
        "again, or sent without its row"
    ]
    await live.broker.send(signed)
    report = await live.exactly_once()
    assert report.sends == {req.client_order_id: 1} and len(report.problems) == 1


# --- nothing blocks the loop, secrets never leave ------------------------------------------


async def test_the_order_path_signs_and_posts_on_the_loop_without_a_thread_hand_off(
    live: Live,
) -> None:
    # Signing (~0.1 ms) costs less than a round trip through a thread pool (~0.15 ms), and the
    # POST is aiohttp on the loop: an order crosses no thread in the venue client. Each
    # signature holds the loop only briefly (the loop's lag while signing is a figure of
    # `python -m bench executor`; the bound here is loose enough for a loaded machine).
    loop_thread = threading.get_ident()
    seen: list[int] = []
    held: list[float] = []
    real_sign = live.broker._sign

    def timed_sign(req: OrderRequest, meta: Any) -> Any:
        seen.append(threading.get_ident())
        t0 = time.perf_counter()
        try:
            return real_sign(req, meta)
        finally:
            held.append(time.perf_counter() - t0)

    live.broker._sign = timed_sign  # type: ignore[method-assign]
    before = {t.name for t in threading.enumerate()}
    results = await asyncio.gather(
        *(live.ex.submit(live.req(price=Decimal("0.30"))) for _ in range(8))
    )
    assert [r.status for r in results] == [OrderStatus.LIVE] * 8
    assert seen == [loop_thread] * 8
    assert sorted(held)[len(held) // 2] < 0.005
    started = {t.name for t in threading.enumerate()} - before
    assert not [n for n in started if n.startswith("clob-")]


async def test_secrets_never_in_db_logs_or_health(live: Live, caplog: Any) -> None:
    from structlog.testing import capture_logs

    creds = live.broker.identity.creds
    secrets = [live.key, live.key.removeprefix("0x"), creds.api_secret, creds.api_passphrase]
    with capture_logs() as logs:
        seed_asks(live)
        await live.ex.submit(live.req(order_type=OrderType.FOK))
        live.sim.faults.add(kind="status", route="POST /order", status=400, count=1)
        await live.ex.submit(live.req())
        await live.ex.reconcile()
    dump = "\n".join(await live.db.iterdump()) if hasattr(live.db, "iterdump") else ""
    rows: list[str] = []
    for table in ("orders", "order_events", "fills", "audit_log", "daemon_state", "cursors"):
        rows.extend(str(tuple(r)) for r in await live.db.fetchall(f"SELECT * FROM {table}"))
    text = dump + "\n".join(rows) + repr(logs) + caplog.text + repr(live.ex.health())
    for s in secrets:
        assert s not in text
