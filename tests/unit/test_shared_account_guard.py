"""The trading guards of two daemons on one venue account (`ACCOUNT_SHARED=true`,
`execution.shared_account`) over one PostgreSQL database: a halt by either is the account's and
shows in the other's trading state once it syncs, a resume by either clears it for both, the
kill-switch file keeps the account halted, the daily loss limit applies to the sum of the
daemons' PnL of the day (each over its own strategies), and a daemon starting on an account a
live daemon trades with the other `ACCOUNT_SHARED` setting is refused (exit 2)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from errors import ConfigError
from execution.guard import TradingGuard
from execution.positions import PositionBook
from execution.risk import TradingState
from execution.shared_account import SharedAccount
from models import Position, utc_day
from observability.metrics import Metrics
from resilience import CircuitBreaker
from resilience.clock import FakeClock
from storage import Database, Repositories
from storage.leases import LeaseRepository
from storage.pg import PgDatabase
from tests.helpers import make_settings
from tests.pg import PgServer
from tests.unit.test_accounts import ACCOUNT
from wiring.leases import check_account_shared

D = Decimal
ACCT = ACCOUNT.lower()


@dataclass
class Daemon:
    guard: TradingGuard
    repos: Repositories

    @property
    def shared(self) -> SharedAccount:
        assert self.guard.account is not None
        return self.guard.account


async def daemon(db: Database, daemon_id: str, tmp_path: Path) -> Daemon:
    """One daemon's guard as `wiring.execution` builds it on a shared account, loaded."""
    repos = Repositories.over(db, daemon_id=daemon_id)
    clock, book = FakeClock(1000), PositionBook()
    guard = TradingGuard(
        repos=repos,
        positions=book,
        metrics=Metrics(),
        breaker=CircuitBreaker("venue", failure_threshold=2, reset_timeout_s=30, clock=clock),
        clock=clock,
        kill_switch_path=tmp_path / f"KILL-{daemon_id}",
        daily_loss_limit=D("100"),
    )
    shared = SharedAccount(
        repo=repos.accounts, account=ACCOUNT, daemon_id=daemon_id, positions=book
    )
    guard.share_account(shared)
    await guard.load()
    shared.own([f"{daemon_id}-strategy"])
    return Daemon(guard, repos)


@pytest.fixture
async def pair(pg_server: PgServer, tmp_path: Path) -> AsyncIterator[tuple[Daemon, Daemon]]:
    url = pg_server.fresh_url()
    async with PgDatabase(url) as a_db, PgDatabase(url) as b_db:
        yield await daemon(a_db, "a", tmp_path), await daemon(b_db, "b", tmp_path)


def realise(d: Daemon, pnl: str, *, strategy: str = "") -> None:
    """The daemon's strategy (or `strategy`) has realised `pnl` since the day's first look."""
    name = strategy or f"{d.shared.daemon_id}-strategy"
    d.guard.positions.set_position(Position(token_id="t", strategy=name, realized_pnl=D(pnl)))


async def test_a_halt_by_one_daemon_halts_the_other_at_its_next_sync(
    pair: tuple[Daemon, Daemon],
) -> None:
    a, b = pair
    await a.guard.set_state(TradingState.HALTED, "operator", actor="http")
    assert (b.guard.state, b.guard.refusal(rests=False)) == (TradingState.ACTIVE, None)
    await b.guard.sync_account()
    assert (b.guard.state, b.guard.reason) == (
        TradingState.HALTED,
        "account halted by daemon a: operator",
    )
    assert b.guard.refusal(rests=False) == "trading is halted: account halted by daemon a: operator"
    check = b.shared.health()  # the `account` check of b's /health
    assert not check.ok
    assert check.detail["halted"] == "account halted by daemon a: operator"
    # b's own persisted state is untouched: the halt is the account's, not b's.
    assert await b.repos.state.get("trading_state@b") is None
    # A resume by b clears the account; a, halted by its own halt, follows at its next sync.
    await b.guard.resume("checked", actor="http")
    assert (b.guard.state, b.guard.reason) == (TradingState.ACTIVE, "checked")
    assert (await b.repos.accounts.commitments(ACCOUNT)).halted_by is None
    await a.guard.sync_account()
    assert (a.guard.state, a.guard.reason) == (
        TradingState.ACTIVE,
        "account resumed by another daemon",
    )


async def test_the_kill_switch_file_keeps_the_account_halted_after_a_resume_elsewhere(
    pair: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = pair
    (tmp_path / "KILL-a").touch()
    await a.guard.check()
    await b.guard.sync_account()
    assert b.guard.reason == "account halted by daemon a: kill-switch file present"
    await b.guard.resume("not knowing")
    await a.guard.sync_account()  # a's file is still there: the account is halted again
    await b.guard.sync_account()
    assert (b.guard.state, b.guard.reason) == (
        TradingState.HALTED,
        "account halted by daemon a: kill-switch file present",
    )


@pytest.mark.parametrize(("b_loss", "halted"), [("-59.99", False), ("-60", True), ("-60.01", True)])
async def test_the_daily_loss_limit_is_the_sum_of_the_daemons_pnl(
    pair: tuple[Daemon, Daemon], b_loss: str, halted: bool
) -> None:
    """a lost 40 and b as parametrized, each on its own strategy; a's book also holds a loss of
    b's strategy (loaded at its start), which a does not count: b does."""
    a, b = pair
    for d in (a, b):
        realise(d, "0")
        await d.guard.sync_account()  # the day's first look: the baselines
    realise(a, "-40")
    realise(a, "-1000", strategy="b-strategy")
    realise(b, b_loss)
    await b.guard.sync_account()  # b writes its row
    await a.guard.sync_account()  # a reads it
    assert a.shared.daily_pnl() == D("-40") + D(b_loss)
    detail = a.shared.health().detail
    assert (detail["daily_pnl"], detail["own_daily_pnl"]) == (str(D("-40") + D(b_loss)), "-40")
    await a.guard.check()
    total = D("-40") + D(b_loss)
    if not halted:
        assert a.guard.state is TradingState.ACTIVE
        return
    reason = f"daily loss limit of the account, every daemon counted, reached ({total} <= -100)"
    assert (a.guard.state, a.guard.reason) == (TradingState.HALTED, reason)
    await b.guard.sync_account()
    assert b.guard.reason == f"account halted by daemon a: {reason}"


async def test_a_restart_the_same_day_goes_on_from_the_rows_baseline(
    pair: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, _ = pair
    realise(a, "10")
    await a.guard.sync_account()  # baseline 10
    realise(a, "-20")
    await a.guard.sync_account()  # -30 today
    again = await daemon(a.repos.db, "a", tmp_path)  # the book restored from the fills
    realise(again, "-20")
    assert again.shared.own_pnl() == D("-30")
    row = await a.repos.accounts.view(ACCT, utc_day(), "b")
    assert row.others_pnl == D("-30")


async def test_a_daemon_with_the_other_account_shared_setting_is_refused_naming_the_live_one(
    pg_server: PgServer, tmp_path: Path
) -> None:
    async with PgDatabase(pg_server.fresh_url()) as db:
        west = make_settings(
            tmp_path, database_url="postgresql://x/y", daemon_id="west", account_shared=True
        )
        await check_account_shared(Repositories.over(db, daemon_id="west"), ACCT, west)
        leases = LeaseRepository(db=db)
        await leases.claim("sniper", "west", ttl_s=30)
        north = make_settings(tmp_path, database_url="postgresql://x/y", daemon_id="north")
        with pytest.raises(ConfigError) as refused:
            await check_account_shared(Repositories.over(db, daemon_id="north"), ACCT, north)
        assert refused.value.problems == [
            f"ACCOUNT_SHARED: daemon west trades venue account {ACCT} with"
            " ACCOUNT_SHARED=true; this daemon (DAEMON_ID=north) has ACCOUNT_SHARED=false:"
            " set the same ACCOUNT_SHARED on every daemon trading one account"
        ]
        # The same setting is fine; so is the other one once west's leases are gone.
        east = west.model_copy(update={"daemon_id": "east"})
        await check_account_shared(Repositories.over(db, daemon_id="east"), ACCT, east)
        await leases.release(["sniper"], "west")
        await check_account_shared(Repositories.over(db, daemon_id="north"), ACCT, north)
        rows = await db.fetchall("SELECT daemon_id, shared FROM daemon_accounts ORDER BY 1")
        assert [(r[0], r[1]) for r in rows] == [("east", 1), ("north", 0), ("west", 1)]


async def test_a_halt_on_a_daemon_still_halted_halts_the_account_resumed_elsewhere(
    pair: tuple[Daemon, Daemon],
) -> None:
    """b resumed the account; a has not synced yet (still HALTED here) when its operator halts
    again with the same reason: the account is halted again all the same."""
    a, b = pair
    await a.guard.set_state(TradingState.HALTED, "operator")
    await b.guard.resume("checked")
    await a.guard.set_state(TradingState.HALTED, "operator")
    seen = await b.repos.accounts.commitments(ACCOUNT)
    assert (seen.halted_by, seen.halt_reason) == ("a", "operator")


async def test_a_storage_error_halt_is_the_daemons_own_and_outlasts_a_resume_elsewhere(
    pair: tuple[Daemon, Daemon],
) -> None:
    a, b = pair
    await a.guard.set_state(TradingState.HALTED, "operator")
    await b.guard.sync_account()
    b.guard.storage_failed()  # held in memory; never written to the account
    await a.guard.resume("checked")
    await b.guard.sync_account()
    assert (b.guard.state, b.guard.reason) == (TradingState.HALTED, "storage error")


async def test_metrics_show_the_accounts_halt_and_summed_pnl_on_every_daemon(
    pair: tuple[Daemon, Daemon],
) -> None:
    a, b = pair
    for d in (a, b):
        realise(d, "0")
        await d.guard.sync_account()  # the day's first look: the baselines
    realise(a, "-7")
    realise(b, "-5")
    await a.guard.sync_account()
    await a.guard.set_state(TradingState.HALTED, "operator", actor="http")
    await b.guard.sync_account()

    def sample(d: Daemon, name: str) -> float | None:
        return d.guard.metrics.registry.get_sample_value(name)

    assert sample(b, "polyd_account_halted") == 1
    assert sample(b, "polyd_account_daily_pnl_usd") == -12
    await b.guard.resume("checked", actor="http")
    await a.guard.sync_account()
    assert (sample(a, "polyd_account_halted"), sample(a, "polyd_account_daily_pnl_usd")) == (0, -12)


@pytest.mark.parametrize("own", ["none", "reducing", "held"])
async def test_a_resume_elsewhere_ends_only_a_halt_that_was_the_accounts(
    pair: tuple[Daemon, Daemon], own: str
) -> None:
    """a halts the account and resumes it; b, halted meanwhile by the account only, goes back to
    what it was on its own: active with its own state never written, its operator's reduce-only,
    or its writer-lock hold (trading must not resume while the lock is lost)."""
    a, b = pair
    expected = (TradingState.ACTIVE, "")
    if own == "reducing":
        await b.guard.set_state(TradingState.REDUCING, "operator: reduce only", actor="http")
        expected = (TradingState.REDUCING, "operator: reduce only")
    elif own == "held":
        b.guard.hold("writer lock lost")
        expected = (TradingState.HALTED, "writer lock lost")
    await a.guard.set_state(TradingState.HALTED, "operator")
    await b.guard.sync_account()
    assert b.guard.state is TradingState.HALTED
    await a.guard.resume("checked")
    await b.guard.sync_account()
    assert (b.guard.state, b.guard.reason) == expected
    if own == "none":
        assert await b.repos.state.get("trading_state@b") is None


@pytest.mark.parametrize("halted_itself", [True, False])
async def test_a_restart_remembers_whether_its_halt_was_the_accounts(
    pair: tuple[Daemon, Daemon], tmp_path: Path, halted_itself: bool
) -> None:
    """b restarts while the account is halted: by b itself (its persisted halt is the
    account's, so a resume by a ends it) or by a (b's own state stays untouched by the resume)."""
    a, b = pair
    halter = b if halted_itself else a
    await halter.guard.set_state(TradingState.HALTED, "operator")
    again = await daemon(b.repos.db, "b", tmp_path)
    assert again.guard.state is TradingState.HALTED
    await a.guard.resume("checked")
    await again.guard.sync_account()
    if halted_itself:
        assert (again.guard.state, again.guard.reason) == (
            TradingState.ACTIVE,
            "account resumed by another daemon",
        )
    else:
        assert (again.guard.state, again.guard.reason) == (TradingState.ACTIVE, "")
        assert await b.repos.state.get("trading_state@b") is None


async def test_the_sync_loop_syncs_once_a_second_and_outlives_a_sync_that_fails(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """`run_account_sync` (a service of the daemon): a halt by another daemon reaches this one
    through the loop alone, and a sync that raises (here: b's database closed under it) is
    counted and logged, and the loop goes on syncing at its interval."""
    url = pg_server.fresh_url()
    async with PgDatabase(url) as a_db:
        a = await daemon(a_db, "a", tmp_path)
        async with PgDatabase(url) as b_db:
            b = await daemon(b_db, "b", tmp_path)
            loop = asyncio.create_task(b.guard.run_account_sync())
            await a.guard.set_state(TradingState.HALTED, "operator")
            await until(lambda: b.guard.state is TradingState.HALTED)
            assert b.guard.reason == "account halted by daemon a: operator"

        def failed() -> float:
            got = b.guard.metrics.registry.get_sample_value(
                "polyd_venue_errors_total", {"endpoint": "account_sync", "kind": "error"}
            )
            return got or 0

        before = failed()
        with capture_logs() as logs:
            await until(lambda: failed() >= before + 2)
        assert not loop.done()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert {(e["event"], e["log_level"]) for e in logs} == {("account_sync_failed", "error")}
    clock = b.guard.clock
    assert isinstance(clock, FakeClock) and clock.sleeps and set(clock.sleeps) == {1.0}


async def until(done: Callable[[], bool]) -> None:
    """Let the loop run (on real database round trips) until `done()`; fail after 10 s."""
    async with asyncio.timeout(10):
        while not done():  # noqa: ASYNC110  # a count or state, not an event to wait on
            await asyncio.sleep(0.01)
