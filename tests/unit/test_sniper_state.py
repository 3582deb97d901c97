"""Durable sniper state over a real database: entries, cooldowns, arming and take-profits survive
a restart (a new `Sniper` over the same database), written with the order's PENDING row.

The sink journals like the executor (`OrderJournal.record(..., also=...)`, then the outcome) and
answers with a scripted status; the process-level proof (restarts and `kill -9` of the daemon
against the simulator) is `tests/faults/test_sniper_restart.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from structlog.testing import capture_logs

from errors import StorageError
from models import OrderRequest, OrderResult, OrderStatus, Position, Side
from storage import Repositories
from storage.journal import StateWrite
from strategies.sniper import Sniper, SniperRule
from tests.unit.test_sniper import YES, Clock, market, rule, set_book
from venue.order_book import BookStore


class JournalingSink:
    """OrderSink with `also=`: journals PENDING with the state write, then the scripted outcome.

    `local_refusal` answers as the executor's risk check does: a REJECTED row, no PENDING, and
    the state write not run. `storage_fails` raises `StorageError` as the executor does when a
    write fails: at the PENDING row ("pending": nothing written) or after it ("outcome").
    """

    def __init__(self, repos: Repositories, status: OrderStatus = OrderStatus.FILLED) -> None:
        self.repos = repos
        self.status = status
        self.local_refusal = False
        self.storage_fails: str | None = None
        self.requests: list[OrderRequest] = []
        self.held: dict[str, D] = {}

    async def submit(self, request: OrderRequest, *, also: StateWrite | None = None) -> OrderResult:
        self.requests.append(request)
        coid = request.client_order_id
        if self.local_refusal:
            await self.repos.orders.record(request, status=OrderStatus.REJECTED)
            return OrderResult(client_order_id=coid, status=OrderStatus.REJECTED, reason="risk")
        if self.storage_fails == "pending":
            raise StorageError("the PENDING write failed")
        await self.repos.orders.record(request, also=also)
        if self.storage_fails == "outcome":
            raise StorageError("the outcome's write failed")
        status = self.status if request.side is Side.BUY else OrderStatus.LIVE
        filled = request.size if status is OrderStatus.FILLED else D(0)
        await self.repos.orders.transition(coid, status, size_matched=filled)
        if request.side is Side.BUY and filled:
            self.held[request.token_id] = self.held.get(request.token_id, D(0)) + filled
        return OrderResult(
            client_order_id=coid,
            status=status,
            filled_size=filled,
            avg_price=request.price if filled else None,
            reason="venue: not enough balance" if status is OrderStatus.REJECTED else "",
        )

    def position(self, token_id: str, *, strategy: str) -> Position:
        return Position(token_id=token_id, strategy=strategy, size=self.held.get(token_id, D(0)))

    @property
    def buys(self) -> list[OrderRequest]:
        return [r for r in self.requests if r.side is Side.BUY]

    @property
    def sells(self) -> list[OrderRequest]:
        return [r for r in self.requests if r.side is Side.SELL]


async def until(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- names the condition that failed
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def quiet() -> None:
    """Let the sniper and the database writer run dry."""
    await asyncio.sleep(0.15)


@contextlib.asynccontextmanager
async def running(
    repos: Repositories,
    rules: list[SniperRule],
    sink: JournalingSink,
    *,
    wall: datetime | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[tuple[Sniper, BookStore]]:
    """One run of the sniper (a process life): a new Sniper, books and clock over `repos`."""
    store = BookStore(stale_after_s=60)
    at = wall or datetime.now(UTC)
    sn = Sniper(
        rules=rules,
        books=store,
        orders=sink,
        clock=clock or Clock(),
        wall_clock=lambda: at,
        state=repos.sniper_state,
        fill_wait_s=0.5,
    )
    sn.set_market(market())
    task = asyncio.create_task(sn.run())
    await asyncio.sleep(0)
    try:
        yield sn, store
        await quiet()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def slot_row(repos: Repositories, name: str = "r1") -> dict[str, Any] | None:
    r = await repos.db.fetchone(
        "SELECT entries, armed, last_fire_at FROM sniper_slots WHERE rule = ? AND token_id = ?",
        (name, YES),
    )
    return dict(r) if r is not None else None


async def test_max_entries_1_holds_across_three_restarts(repos: Repositories) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=1)
    for _ in range(3):
        async with running(repos, [r], sink) as (_, store):
            set_book(store, {"0.93": "100"})
            await quiet()
            set_book(store, {"0.97": "100"})  # out of the band: re-armed ...
            await quiet()
            set_book(store, {"0.92": "100"})  # ... and a new opportunity
    assert len(sink.buys) == 1
    assert (await slot_row(repos) or {})["entries"] == 1


async def test_the_entry_commits_with_the_pending_row_or_not_at_all(repos: Repositories) -> None:
    req = OrderRequest(
        strategy="sniper",
        token_id=YES,
        side=Side.BUY,
        price=D("0.95"),
        size=D("20"),
        order_type="FAK",
    )
    await repos.orders.record(req)
    fired = repos.sniper_state.fired("r1", YES, req.client_order_id, 1.0)
    with pytest.raises(sqlite3.IntegrityError):  # the same client order id twice
        await repos.orders.record(req, also=fired)
    assert await slot_row(repos) is None  # rolled back with the row it rode on


async def test_cooldown_survives_a_restart_as_wall_clock_time(repos: Repositories) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=5, cooldown_s=30)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with running(repos, [r], sink, wall=t0) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 1, "the first entry")
    # 10 s later (a new process: its monotonic clock means nothing to the old one).
    async with running(repos, [r], sink, wall=t0 + timedelta(seconds=10)) as (_, store):
        set_book(store, {"0.97": "100"})
        await quiet()
        set_book(store, {"0.92": "100"})
        await quiet()
        assert len(sink.buys) == 1  # inside the stored cooldown
    async with running(repos, [r], sink, wall=t0 + timedelta(seconds=31)) as (_, store):
        set_book(store, {"0.97": "100"})
        await quiet()
        set_book(store, {"0.92": "100"})
        await until(lambda: len(sink.buys) == 2, "the entry after the cooldown")
    row = await slot_row(repos)
    assert row is not None and row["entries"] == 2
    assert row["last_fire_at"] == (t0 + timedelta(seconds=31)).timestamp()


async def test_a_restart_does_not_refire_on_the_opportunity_it_acted_on(
    repos: Repositories,
) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=5, cooldown_s=0)
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 1, "the entry")
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "90"})  # the same opportunity, still there
        await quiet()
        assert len(sink.buys) == 1
        set_book(store, {"0.97": "100"})  # gone (re-armed, stored) ...
        await quiet()
    assert (await slot_row(repos) or {})["armed"] == 1
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})  # ... and back: a new opportunity
        await until(lambda: len(sink.buys) == 2, "the second entry")


async def test_a_venue_refusal_gives_the_entry_back_a_local_one_writes_nothing(
    repos: Repositories,
) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=1)
    sink.local_refusal = True
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 1, "the refused order")
    assert await slot_row(repos) is None  # no PENDING row: nothing was counted

    sink.local_refusal, sink.status = False, OrderStatus.REJECTED
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 2, "the order the venue refuses")
    row = await slot_row(repos)
    assert row is not None and row["entries"] == 0  # journaled, counted, given back
    returned = await repos.audit.tail(event="sniper_entry_returned")
    assert [e.client_order_id for e in returned] == [sink.buys[1].client_order_id]

    sink.status = OrderStatus.FILLED
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.97": "100"})  # a refused slot stays disarmed until the ask leaves
        await quiet()
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 3, "the entry the refusals did not use up")
        set_book(store, {"0.97": "100"})
        await quiet()
        set_book(store, {"0.92": "100"})
        await quiet()
    assert len(sink.buys) == 3
    assert (await slot_row(repos) or {})["entries"] == 1


async def test_an_order_whose_outcome_is_unknown_keeps_its_entry(repos: Repositories) -> None:
    sink = JournalingSink(repos, status=OrderStatus.UNKNOWN)
    r = rule(max_entries=1)
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 1, "the entry")
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.92": "100"})
        await quiet()
    assert len(sink.buys) == 1  # it may have bought: never a second one
    assert (await slot_row(repos) or {})["entries"] == 1


async def test_renaming_a_rule_resets_it_and_start_up_says_so(repos: Repositories) -> None:
    sink = JournalingSink(repos)
    async with running(repos, [rule(name="old-name", max_entries=1)], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.buys) == 1, "the entry")
    with capture_logs() as logs:
        async with running(repos, [rule(name="new-name", max_entries=1)], sink) as (_, store):
            set_book(store, {"0.93": "100"})
            await until(lambda: len(sink.buys) == 2, "the renamed rule's entry")
    (gone,) = [e for e in logs if e["event"] == "sniper_state_not_loaded"]
    assert gone["rules"] == ["old-name"] and gone["entries"] == {"old-name": 1}
    (fresh,) = [e for e in logs if e["event"] == "sniper_rules_without_state"]
    assert fresh["rules"] == ["new-name"]
    # The old name's state is kept: putting the name back restores its entries.
    async with running(repos, [rule(name="old-name", max_entries=1)], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await quiet()
    assert len(sink.buys) == 2


async def test_state_of_a_rule_gone_for_longer_than_the_retention_is_pruned(
    repos: Repositories,
) -> None:
    st = repos.sniper_state
    write = st.fired("gone", YES, "c1", 0.0)
    await repos.db.write(write)
    assert await st.prune_absent(["kept"], now=time.time()) == 0  # just written
    assert await st.prune_absent(["kept"], now=time.time() + 31 * 86_400) == 1
    assert await st.rule_names() == {}


async def test_a_take_profit_stored_before_a_crash_is_sent_once_at_the_next_start(
    repos: Repositories,
) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=1, take_profit="0.02")
    exit_req = OrderRequest(
        strategy="sniper",
        token_id=YES,
        side=Side.SELL,
        price=D("0.97"),
        size=D("20"),
        order_type="GTC",
        post_only=True,
        reason="sniper rule r1: take profit 0.02",
    )
    # What a run that died between the BUY's fill and the SELL's PENDING row left behind.
    await repos.sniper_state.store_take_profit("r1", YES, "buy-1", exit_req)
    async with running(repos, [r], sink):
        await until(lambda: len(sink.sells) == 1, "the recovered take-profit")
    assert sink.sells[0].client_order_id == exit_req.client_order_id
    assert await repos.sniper_state.take_profits({"r1"}) == []  # closed with its PENDING row
    async with running(repos, [r], sink):
        await quiet()
    assert len(sink.sells) == 1


async def test_a_filled_entry_stores_its_take_profit_until_the_sell_is_journaled(
    repos: Repositories,
) -> None:
    sink = JournalingSink(repos)
    r = rule(max_entries=1, take_profit="0.02")
    async with running(repos, [r], sink) as (_, store):
        set_book(store, {"0.93": "100"})
        await until(lambda: len(sink.sells) == 1, "the take-profit")
    assert await repos.sniper_state.take_profits({"r1"}) == []
    row = await repos.orders.get(sink.sells[0].client_order_id)
    assert row is not None and row.status is OrderStatus.LIVE


def test_durable_state_needs_a_sink_that_journals_it(repos: Repositories) -> None:
    from tests.unit.test_sniper import RecordingExecutor

    with pytest.raises(TypeError, match="also="):
        Sniper(
            rules=[rule()],
            books=BookStore(stale_after_s=60),
            orders=RecordingExecutor(),
            state=repos.sniper_state,
        )


async def test_a_stored_take_profit_the_journal_already_holds_is_dropped_not_resent(
    repos: Repositories,
) -> None:
    sink = JournalingSink(repos)
    exit_req = OrderRequest(
        strategy="sniper",
        token_id=YES,
        side=Side.SELL,
        price=D("0.97"),
        size=D("20"),
        order_type="GTC",
        reason="sniper rule r1: take profit 0.02",
    )
    # A run refused it locally (a REJECTED row) and died before dropping it.
    await repos.sniper_state.store_take_profit("r1", YES, "buy-1", exit_req)
    await repos.orders.record(exit_req, status=OrderStatus.REJECTED)
    async with running(repos, [rule(take_profit="0.02")], sink):
        await quiet()
    assert sink.sells == []
    assert await repos.db.fetchall("SELECT 1 FROM sniper_take_profits") == []


async def test_a_submission_that_crashed_the_sniper_is_read_back_from_storage_at_its_restart(
    repos: Repositories,
) -> None:
    """The supervisor restarts the same `Sniper` after a submission raised. Its slot is read back
    from storage: an order whose PENDING write failed counted nothing and sent nothing, so the
    restart fires on the opportunity still on the book (in memory the slot stayed disarmed, and
    counted, until the book lost that opportunity, which the restart may never see); an order
    whose PENDING row was written stays counted, and is not repeated."""
    sink = JournalingSink(repos)
    store = BookStore(stale_after_s=60)
    at = datetime.now(UTC)
    sn = Sniper(
        rules=[rule(max_entries=2, cooldown_s=0)],
        books=store,
        orders=sink,
        clock=Clock(),
        wall_clock=lambda: at,
        state=repos.sniper_state,
        fill_wait_s=0.5,
    )
    sn.set_market(market())
    set_book(store, {"0.93": "100"})

    async def crashes() -> None:
        with pytest.raises(ExceptionGroup) as crash:
            await asyncio.wait_for(sn.run(), 5)
        assert crash.group_contains(StorageError)

    sink.storage_fails = "pending"
    await crashes()
    assert len(sink.buys) == 1 and await slot_row(repos) is None  # nothing counted
    sink.storage_fails = "outcome"
    await crashes()  # restarted on the same book: fires, and is counted this time
    assert len(sink.buys) == 2
    assert (await slot_row(repos) or {})["entries"] == 1
    sink.storage_fails = None
    task = asyncio.create_task(sn.run())
    try:
        await quiet()
        assert len(sink.buys) == 2  # the same opportunity, acted on: not repeated
        set_book(store, {"0.97": "100"})  # gone (re-armed) ...
        await quiet()
        set_book(store, {"0.92": "100"})  # ... and a new one: the second and last entry
        await until(lambda: len(sink.buys) == 3, "the second entry")
        set_book(store, {"0.97": "100"})
        await quiet()
        set_book(store, {"0.93": "100"})
        await quiet()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(sink.buys) == 3  # max_entries=2: the failed PENDING write used none
    assert (await slot_row(repos) or {})["entries"] == 2
