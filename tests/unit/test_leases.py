"""Strategy leases on both engines: claim, conflict, expiry takeover, renewal, release, a race of
two connections on PostgreSQL, and per-daemon scoping of orders and daemon state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config import Settings
from errors import AlreadyRunning
from executor import Executor
from observability.notify import Notifier
from observability.sidecar import Health
from storage import Database, Repositories
from storage.keys import daemon_key
from storage.leases import LeaseRepository
from storage.pg import PgDatabase
from strategies.base import Strategy
from tests.helpers import make_order, make_settings
from tests.pg import PgServer
from wiring.leases import LeaseKeeper, hold_leases
from wiring.stage import Service, Step

TTL = 30.0
SHORT = 0.3  # a lease that expires within the test


@pytest.fixture
def leases(repos: Repositories) -> LeaseRepository:
    return LeaseRepository(db=repos.db)


async def test_a_free_strategy_is_claimed_and_a_held_one_is_refused(
    leases: LeaseRepository,
) -> None:
    got = await leases.claim("sniper", "east", TTL)
    assert got.held_by("east") and got.strategy == "sniper"
    assert (got.expires_at - got.acquired_at).total_seconds() == pytest.approx(TTL, abs=1)
    refused = await leases.claim("sniper", "west", TTL)
    assert refused.daemon_id == "east" and refused.expires_at == got.expires_at
    # Renewal by another daemon is refused too: only expiry frees a lease.
    assert (await leases.renew("sniper", "west", TTL)).daemon_id == "east"
    assert (await leases.claim("copy", "west", TTL)).held_by("west")
    assert [(x.strategy, x.daemon_id) for x in await leases.all()] == [
        ("copy", "west"),
        ("sniper", "east"),
    ]


async def test_an_expired_lease_is_taken_over(leases: LeaseRepository) -> None:
    first = await leases.claim("sniper", "east", SHORT)
    assert first.held_by("east")
    await asyncio.sleep(SHORT + 0.2)
    taken = await leases.claim("sniper", "west", TTL)
    assert taken.held_by("west")
    assert taken.acquired_at > first.acquired_at  # a takeover starts a new lease
    # The old holder's renewal now finds the new holder: it has lost the strategy.
    assert (await leases.renew("sniper", "east", TTL)).daemon_id == "west"


async def test_live_daemons_are_those_holding_an_unexpired_lease_of_either_kind(
    leases: LeaseRepository, repos: Repositories
) -> None:
    """Who is still running, as the database can tell (database time): a daemon holding a
    strategy or an item lease that has not expired. An expired or released lease names a
    daemon that may trade nothing (`wiring.leases.take_over_orders` settles its orders)."""
    items = LeaseRepository(db=repos.db, items=True)
    assert await leases.live_daemons() == frozenset()
    await leases.claim("sniper", "east", TTL)
    await leases.claim("copy", "west", SHORT)
    await items.claim("wallet:0xa:0xb", "north", TTL)
    await items.claim("rule:0xa:r1", "south", SHORT)
    await leases.claim("alpha", "gone", TTL)
    await leases.release(["alpha"], "gone")
    assert await items.live_daemons() == {"east", "west", "north", "south"}
    await asyncio.sleep(SHORT + 0.2)
    assert await leases.live_daemons() == {"east", "north"}
    assert await items.live_daemons() == {"east", "north"}


async def test_the_same_daemon_renews_but_does_not_claim_its_own_lease(
    leases: LeaseRepository,
) -> None:
    first = await leases.claim("sniper", "east", TTL)
    await asyncio.sleep(0.05)
    renewed = await leases.renew("sniper", "east", TTL)
    assert renewed.held_by("east")
    assert renewed.expires_at > first.expires_at
    assert renewed.acquired_at == first.acquired_at  # the same lease, extended
    # A claim (start-up) does not take a live lease held under its own id: that is a previous
    # run or a twin process, which the wiring waits out.
    again = await leases.claim("sniper", "east", TTL)
    assert again.held_by("east") and again.expires_at == renewed.expires_at


async def test_release_frees_only_the_daemons_own_leases(leases: LeaseRepository) -> None:
    await leases.claim("sniper", "east", TTL)
    await leases.claim("copy", "west", TTL)
    assert await leases.release(["sniper", "copy"], "east") == 1
    assert await leases.get("sniper") is None
    assert (await leases.get("copy") or pytest.fail("copy lost")).daemon_id == "west"
    assert (await leases.claim("sniper", "west", TTL)).held_by("west")
    assert await leases.release([], "east") == 0


async def test_a_ttl_must_be_positive(leases: LeaseRepository) -> None:
    with pytest.raises(ValueError, match="TTL must be positive"):
        await leases.claim("sniper", "east", 0)


async def test_two_connections_racing_for_the_same_strategies_never_both_win(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    a, b = PgDatabase(url), PgDatabase(url)
    await asyncio.gather(a.open(), b.open())
    try:
        la, lb = LeaseRepository(db=a), LeaseRepository(db=b)
        names = [f"s{i}" for i in range(40)]
        for _ in range(3):  # claims, then renewals racing claims, then claims again
            got_a, got_b = await asyncio.gather(
                asyncio.gather(*(la.renew(n, "east", TTL) for n in names)),
                asyncio.gather(*(lb.claim(n, "west", TTL) for n in names)),
            )
            for n, x, y in zip(names, got_a, got_b, strict=True):
                # Each side reads the one holder the database settled on.
                assert x.daemon_id == y.daemon_id, n
        stored = {x.strategy: x.daemon_id for x in await la.all()}
        assert (
            stored
            == {x.strategy: x.daemon_id for x in got_b}
            == {x.strategy: x.daemon_id for x in got_a}
        )
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_each_daemon_reconciles_only_its_own_orders(repos: Repositories) -> None:
    east = Repositories.over(repos.db, daemon_id="east")
    mine, theirs = make_order(), make_order()
    await east.orders.record(mine)
    await Repositories.over(repos.db, daemon_id="west").orders.record(theirs)
    # A row journaled before 0008 (no daemon id written) belongs to the default daemon.
    await repos.db.execute(
        "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size, order_type,"
        " status, created_at, updated_at) VALUES ('old-1', 's', 't', 'BUY', '0.5', '10', 'GTC',"
        " 'PENDING', ?, ?)",
        ("2026-01-01T00:00:00.000000+00:00", "2026-01-01T00:00:00.000000+00:00"),
    )
    assert [r.client_order_id for r in await east.orders.non_terminal()] == [mine.client_order_id]
    assert [r.client_order_id for r in await repos.orders.non_terminal()] == ["old-1"]
    # The trading state and fills cursor are kept per daemon; the default keeps the bare name.
    assert daemon_key("trading_state", "default") == "trading_state"
    assert daemon_key("trading_state", "east") == "trading_state@east"


async def test_held_elsewhere_names_the_strategies_another_daemon_trades(
    repos: Repositories, leases: LeaseRepository
) -> None:
    """A daemon's book leaves out what `held_elsewhere` names: the strategies whose lease (live
    or expired) names another daemon and, without a lease row, those whose latest order another
    daemon journaled; never `unattributed`, and nothing on a database only it has written to."""
    east = Repositories.over(repos.db, daemon_id="east")
    west = Repositories.over(repos.db, daemon_id="west")
    await repos.orders.record(make_order(strategy="sniper"))  # the default daemon, alone
    assert await leases.held_elsewhere("default") == frozenset()
    assert await leases.held_elsewhere("east") == {"sniper"}
    await west.orders.record(make_order(strategy="copy"))
    await east.orders.record(make_order(strategy="alpha"))
    await east.orders.record(make_order(strategy="sniper"))  # taken over: the latest is east's
    await west.orders.record(make_order(strategy="unattributed"))
    assert await leases.held_elsewhere("east") == {"copy"}
    assert await leases.held_elsewhere("west") == {"alpha", "sniper"}
    assert await leases.held_elsewhere("default") == {"alpha", "copy", "sniper"}
    # A lease row outranks the orders: west holds alpha now (east's latest order or not); east
    # holds copy (a lease left by a killed run of east, expired or not, still names east).
    await leases.claim("alpha", "west", TTL)
    await leases.claim("copy", "east", SHORT)
    await asyncio.sleep(SHORT + 0.2)
    assert await leases.held_elsewhere("east") == {"alpha"}
    assert await leases.held_elsewhere("west") == {"copy", "sniper"}
    # Released at a clean stop: the orders decide again.
    await leases.release(["copy"], "east")
    assert await leases.held_elsewhere("east") == {"alpha", "copy"}


async def test_positions_can_leave_out_or_pick_strategies(repos: Repositories) -> None:
    for strategy in ("alpha", "beta", "unattributed"):
        await repos.db.execute(
            "INSERT INTO positions (strategy, token_id, size, avg_cost, realized_pnl, updated_at)"
            " VALUES (?, 't', '5', '0.5', '0', '2026-01-01T00:00:00.000000+00:00')",
            (strategy,),
        )
    names = [p.strategy for p in await repos.fills.positions(exclude_strategies={"beta"})]
    assert names == ["alpha", "unattributed"]
    picked = await repos.fills.positions(include_flat=True, strategies={"beta"})
    assert [p.strategy for p in picked] == ["beta"]
    assert len(await repos.fills.positions()) == 3


# -- the daemon's side: wiring.leases.LeaseKeeper ------------------------------------------------


class Forever:
    """A strategy that trades until cancelled; records that it was stopped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopped = False

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped = True


def keeper(leases: LeaseRepository, daemon_id: str, names: list[str], ttl: float) -> LeaseKeeper:
    return LeaseKeeper(leases, daemon_id=daemon_id, strategies=names, ttl_s=ttl)


async def test_a_strategy_held_by_another_daemon_refuses_the_start_naming_it(
    leases: LeaseRepository,
) -> None:
    held = await leases.claim("sniper", "east", TTL)
    west = keeper(leases, "west", ["copy", "sniper"], TTL)
    with pytest.raises(AlreadyRunning) as e:
        await west.acquire()
    until = held.expires_at.isoformat(timespec="seconds")
    assert str(e.value).startswith(
        f"strategy sniper is leased to daemon east until {until} (database time);"
        " this daemon (DAEMON_ID=west) must not trade it too"
    )
    assert await leases.get("copy") is None  # what it had taken is given back
    assert (await leases.get("sniper") or pytest.fail("gone")).daemon_id == "east"


async def test_a_restart_under_the_same_id_waits_for_the_old_lease_to_expire(
    leases: LeaseRepository,
) -> None:
    old = await leases.claim("sniper", "east", SHORT)  # a run killed without releasing
    east = keeper(leases, "east", ["sniper"], 2.0)
    await east.acquire()
    now = await leases.get("sniper") or pytest.fail("not held")
    assert now.daemon_id == "east" and now.acquired_at > old.acquired_at
    assert list(east.deadlines) == ["sniper"] and east.check().ok
    await east.release()
    assert await leases.get("sniper") is None


async def test_a_live_twin_with_the_same_id_refuses_the_start_after_the_ttl(
    leases: LeaseRepository,
) -> None:
    # A 3 s TTL: the twin must renew (its lease would expire within the 4 s the second start
    # waits), and each renewal has a second, two chances before the local deadline (2.5 s). With
    # 0.9 s a loop stalled by a CPU-heavy neighbour for 0.75 s lost the twin's lease.
    twin = keeper(leases, "east", ["sniper"], 3.0)
    await twin.acquire()
    renewing = asyncio.create_task(twin.run())
    try:
        with pytest.raises(AlreadyRunning, match="another process runs with DAEMON_ID=east"):
            await keeper(leases, "east", ["sniper"], 3.0).acquire()
    finally:
        renewing.cancel()
    assert twin.check().ok and (await leases.get("sniper") or pytest.fail("gone")).daemon_id == (
        "east"
    )


async def test_a_lease_taken_by_another_daemon_stops_the_strategy(
    leases: LeaseRepository,
) -> None:
    # east's own clock stands still, so its local deadline (TTL x 5/6) never passes and the
    # renewal below has its full budget: what stops the strategy is the database's answer
    # that west holds the lease, not east noticing its own stall first.
    east = LeaseKeeper(
        leases, daemon_id="east", strategies=["sniper"], ttl_s=SHORT, monotonic=lambda: 100.0
    )
    await east.acquire()
    strategy = Forever("sniper")
    guarded = east.guard(strategy)
    running = asyncio.create_task(guarded.run())
    await asyncio.sleep(SHORT + 0.2)  # the lease expires in the database: west may take it
    assert (await leases.claim("sniper", "west", TTL)).held_by("west")
    await east.renew_once()
    await asyncio.wait_for(running, 5)
    assert strategy.stopped and "sniper" not in east.deadlines
    health = east.check()
    assert not health.ok and "sniper taken by daemon west" in str(health.detail)
    await guarded.run()  # restarted by the supervisor: it does not trade again
    await east.release()  # nothing of west's is released
    assert (await leases.get("sniper") or pytest.fail("gone")).daemon_id == "west"


async def test_a_lease_not_renewed_in_time_stops_the_strategy_before_it_expires(
    leases: LeaseRepository,
) -> None:
    clock = [100.0]
    east = LeaseKeeper(
        leases, daemon_id="east", strategies=["sniper"], ttl_s=TTL, monotonic=lambda: clock[0]
    )
    await east.acquire()
    clock[0] += TTL * 0.8
    east.expire_overdue()
    assert east.check().ok
    await east.renew_once()  # renewed: a new deadline from now
    clock[0] += TTL * 0.8
    east.expire_overdue()
    assert east.check().ok
    clock[0] += TTL * 0.1  # past TTL x 5/6 without a renewal: stop before it can expire
    east.expire_overdue()
    assert not east.check().ok and east.lost["sniper"].startswith("not renewed within")


class Crashes:
    name = "sniper"

    async def run(self) -> None:
        raise RuntimeError("a bug")


async def test_a_guarded_strategy_crashes_and_stops_as_it_would_unguarded(
    leases: LeaseRepository,
) -> None:
    east = keeper(leases, "east", ["sniper"], TTL)
    with pytest.raises(RuntimeError, match="a bug"):  # the supervisor restarts it as before
        await east.guard(Crashes()).run()
    strategy = Forever("sniper")
    running = asyncio.create_task(east.guard(strategy).run())
    await asyncio.sleep(0.05)
    running.cancel()  # the daemon stops: the strategy's own cleanup has run when it returns
    with pytest.raises(asyncio.CancelledError):
        await running
    assert strategy.stopped and east.check().ok


async def test_leases_taken_are_renewed_while_waiting_out_an_own_lease(
    leases: LeaseRepository,
) -> None:
    # TTLs of seconds, not fractions: a loop stalled by a CPU-heavy neighbour must not lose
    # copy's lease to a missed deadline (renewed every 0.83 s, its deadline 2.1 s).
    await leases.claim("sniper", "east", 3.0)  # a killed run's lease, expiring in 3 s
    east = keeper(leases, "east", ["copy", "sniper"], 2.5)
    await east.acquire()  # copy is taken at once; sniper after about 3 s (east gives up at 3.5)
    # copy's first lease (2.5 s) would have lapsed by now; renewed, it is still east's.
    assert (await leases.claim("copy", "west", TTL)).daemon_id == "east"
    assert sorted(east.deadlines) == ["copy", "sniper"] and east.check().ok


@dataclass
class Built:
    """What `hold_leases` reads and extends of the daemon's context."""

    settings: Settings
    db: Database
    health: Health
    notifier: Notifier = field(default_factory=Notifier)
    strategies: list[Strategy] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    closers: list[Step] = field(default_factory=list)
    executor: Executor | None = None  # a paper daemon's account is not shared

    @property
    def repos(self) -> Repositories:
        return Repositories.over(self.db, daemon_id=self.settings.daemon_id)


async def test_the_daemon_leases_its_strategies_on_postgres_and_releases_them_at_stop(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    async with PgDatabase(url) as db:
        settings = make_settings(tmp_path, database_url=url, daemon_id="east", lease_ttl_s=5)
        strategy = Forever("sniper")
        ctx = Built(settings, db, Health(mode="paper", version="t"), strategies=[strategy])
        keeper_ = await hold_leases(ctx)
        assert keeper_ is not None and [n for n, _ in ctx.services] == ["leases"]
        assert ctx.strategies[0] is not strategy and ctx.strategies[0].name == "sniper"
        leases = LeaseRepository(db=db)
        assert (await leases.get("sniper") or pytest.fail("not leased")).daemon_id == "east"
        _, body = await ctx.health.evaluate()
        assert body["checks"]["leases"]["ok"], body
        for _, close in reversed(ctx.closers):
            await close()
        assert await leases.get("sniper") is None
    # On SQLite the file's writer lock keeps the daemon alone: no lease is taken.
    async with Database(tmp_path / "alone.db") as sdb:
        alone = Built(make_settings(tmp_path), sdb, Health(mode="paper", version="t"))
        alone.strategies.append(strategy)
        assert await hold_leases(alone) is None and alone.strategies == [strategy]
