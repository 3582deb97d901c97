"""Strategy leases in the daemon's life cycle: several daemons on one PostgreSQL database, each
trading its own strategies (`storage.leases`, docs/storage-postgres.md).

At start-up, once its stages are built (and its own orders reconciled), the daemon claims a lease
for each strategy it runs (by its name: `SNIPER_NAME`, `COPY_NAME`), then, when it has a venue
account, an item lease for each wallet its copy trader follows and each rule its sniper runs on
that account (`lease_items`), before any of them starts. Item leases work as strategy leases
below; losing one stops the strategy that owns it. Each lease, when claimed, is:

* held by another daemon and not expired: the daemon stops with exit 3 (`AlreadyRunning`), one
  line naming the strategy (or wallet, or rule), the holder and until when it holds it;
* held under this daemon's own `DAEMON_ID`: a previous run that ended without releasing it
  (`kill -9`, a crash, a lost host) or another process started with the same id. The daemon
  waits, up to the TTL, for the lease to expire; a previous run cannot renew it, so it expires
  within the TTL and is taken. If it is still held after that, someone is renewing it: exit 3.

While running, a background task renews every lease each third of the TTL. A lease found held by
another daemon, or not renewed in time (the database unreachable or too slow), stops that
strategy at once (fail safe: it may be someone else's by now) and turns `/health` degraded; the
strategy stays stopped until the daemon restarts. On a clean stop the leases are released, so
another daemon may take them without waiting for the TTL. The rules files are read at start-up
only, so the set of leases never changes while running (a reload that changes the names or the
rules files is refused, `wiring.reload`).

Once the leases are held, a strategy taken over from another daemon joins this daemon's book
(`adopt_positions`), and the orders of it that a daemon no longer running left unsettled on this
daemon's venue account become this daemon's to settle (`take_over_orders`), before it starts.

On SQLite none of the leasing runs: the database file's writer lock already makes the daemon
alone (a `DAEMON_ID` changed since the last run still takes its strategies over as above).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from config import Settings
from errors import AlreadyRunning, ConfigError, StorageError
from execution.reconciler import FILLS_CURSOR
from executor import Executor
from observability.health import CheckResult
from observability.notify import Notifier
from storage import Database, Repositories
from storage.keys import daemon_key
from storage.leases import (
    LEASE_DB_ERROR,
    Lease,
    LeaseRepository,
    parse_item,
    rule_item,
    wallet_item,
)
from strategies.base import Strategy
from strategies.copy_trader import CopyTrader
from strategies.sniper import Sniper
from wiring.stage import Service, Step

log = structlog.get_logger("leases")

# A lease is given up locally this long (a fraction of the TTL) before it could expire in the
# database, so a strategy stops before another daemon can take it over.
SAFETY_FRACTION = 1 / 6


def _when(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


class LeaseKeeper:
    """Claim, renew and release one daemon's leases; stop a strategy whose lease is lost.

    Its leases are its strategies' (`strategies`, over `repo`) and, on a shared database, its
    item leases (`items`: each followed wallet's and sniper rule's key, `storage.leases`, with
    the strategy that follows or runs it, over `item_repo`). All are claimed, renewed and
    released alike; losing an item lease stops the strategy that owns it.

    `sleep` and `monotonic` are injectable so the wait for an own lease can be tested without
    waiting a whole TTL.
    """

    def __init__(
        self,
        repo: LeaseRepository,
        *,
        daemon_id: str,
        strategies: Sequence[str],
        ttl_s: float,
        items: Mapping[str, str] | None = None,
        item_repo: LeaseRepository | None = None,
        notify: Callable[..., object] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(set(strategies)) != len(strategies):
            raise ValueError(f"strategy names must be unique to be leased: {list(strategies)}")
        items = dict(items or {})
        if items and item_repo is None:
            raise ValueError("item leases need an item lease repository")
        if not set(items.values()) <= set(strategies) or set(items) & set(strategies):
            raise ValueError(f"item leases must belong to leased strategies: {items}")
        self.repo = repo
        self.daemon_id = daemon_id
        self.strategies = list(strategies)
        self.items = items
        """Item lease key -> the strategy that stops if it is lost."""
        self.ttl_s = ttl_s
        self.interval_s = ttl_s / 3
        self._notify = notify
        self._sleep = sleep
        self._monotonic = monotonic
        self._repos = dict.fromkeys(self.strategies, repo)
        if item_repo is not None:
            self._repos.update(dict.fromkeys(items, item_repo))
        self._owner = {**{name: name for name in self.strategies}, **items}
        self.deadlines: dict[str, float] = {}  # held lease -> local time it must be renewed by
        self.lost: dict[str, str] = {}  # lease (strategy or item) -> why it was lost
        self.stopped: dict[str, str] = {}  # strategy -> which of its leases was lost, and why
        self._lost_events = {name: asyncio.Event() for name in self.strategies}

    # start-up -------------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Claim every lease, or release those taken and raise `AlreadyRunning`."""
        try:
            await self._acquire()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.release()
            raise
        log.info(
            "leases_acquired",
            daemon_id=self.daemon_id,
            strategies=sorted(k for k in self.deadlines if k not in self.items),
            items=sorted(k for k in self.deadlines if k in self.items),
            ttl_s=self.ttl_s,
        )

    async def _acquire(self) -> None:
        own: dict[str, Lease] = {}  # held under our own id by a previous run or a twin
        for name in [*self.strategies, *self.items]:
            started = self._monotonic()
            lease = await self._repos[name].claim(name, self.daemon_id, self.ttl_s)
            if lease.changed:
                self._hold(lease, started)
            elif lease.held_by(self.daemon_id):
                own[name] = lease
            else:
                raise self._refusal(lease)
        if own:
            await self._wait_out(own)

    def _what(self, name: str) -> str:
        """What the lease `name` is for, as the operator reads it."""
        if name not in self.items:
            return f"strategy {name}"
        kind, account, thing = parse_item(name)
        if kind == "wallet":
            return f"followed wallet {thing} on account {account}"
        return f"sniper rule {thing} on account {account}"

    def _refusal(self, lease: Lease) -> AlreadyRunning:
        name = lease.strategy
        if name not in self.items:
            act, advice = "trade", "give each daemon its own strategies"
        elif parse_item(name)[0] == "wallet":
            act, advice = "follow", "follow each wallet from one daemon per account"
        else:
            act, advice = "run", "give each sniper rule of one account to one daemon"
        return AlreadyRunning(
            f"{self._what(name)} is leased to daemon {lease.daemon_id} until"
            f" {_when(lease.expires_at)} (database time); this daemon (DAEMON_ID={self.daemon_id})"
            f" must not {act} it too: {advice}, or stop {lease.daemon_id} first"
        )

    def _hold(self, lease: Lease, started: float) -> None:
        # Renewed by `started + TTL` at the latest (less a margin), or the strategy stops.
        self.deadlines[lease.strategy] = started + self.ttl_s * (1 - SAFETY_FRACTION)

    async def _wait_out(self, own: dict[str, Lease]) -> None:
        """Wait, up to the TTL, for leases left under our own id to expire, and take them."""
        log.warning(
            "lease_held_by_this_daemon_id",
            strategies=sorted(own),
            detail="a previous run that did not release them (killed?) or another process with"
            f" this DAEMON_ID; waiting up to {self.ttl_s:g}s for them to expire",
        )
        give_up = self._monotonic() + self.ttl_s + 1
        next_renewal = self._monotonic() + self.interval_s
        step = max(0.05, min(1.0, self.ttl_s / 20))
        while True:
            await self._sleep(step)
            if self._monotonic() >= next_renewal:  # the leases already taken must not lapse
                next_renewal = self._monotonic() + self.interval_s
                await self.renew_once()
                for name, why in sorted(self.lost.items()):
                    raise AlreadyRunning(
                        f"{self._what(name)}'s lease was {why} while this daemon waited for its"
                        " other leases; give each daemon its own strategies"
                    )
            for name in sorted(own):
                started = self._monotonic()
                lease = await self._repos[name].claim(name, self.daemon_id, self.ttl_s)
                if lease.changed:
                    self._hold(lease, started)
                    del own[name]
                elif not lease.held_by(self.daemon_id):  # another daemon took it meanwhile
                    raise self._refusal(lease)
                else:
                    own[name] = lease
            if not own:
                log.info("lease_taken_over_from_this_daemon_id", strategies=sorted(self.deadlines))
                return
            if self._monotonic() >= give_up:
                name, lease = sorted(own.items())[0]
                raise AlreadyRunning(
                    f"{self._what(name)} is leased to daemon {lease.daemon_id} (this DAEMON_ID)"
                    f" until {_when(lease.expires_at)} (database time) and was renewed while"
                    f" this daemon waited {self.ttl_s:g}s: another process runs with"
                    f" DAEMON_ID={self.daemon_id}; stop it, or give this one another DAEMON_ID"
                )

    # running --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Renew every held lease each third of the TTL, and stop a strategy as soon as one of
        its leases is past its local deadline (however the renewal failed), until cancelled."""
        next_renewal = self._monotonic() + self.interval_s
        while True:
            wake = min([next_renewal, *self.deadlines.values()])
            await self._sleep(max(0.0, wake - self._monotonic()))
            self.expire_overdue()
            if self._monotonic() >= next_renewal:
                next_renewal = self._monotonic() + self.interval_s
                await self.renew_once()

    def expire_overdue(self) -> None:
        """Stop every strategy one of whose leases was not renewed by its local deadline."""
        now = self._monotonic()
        for name, deadline in list(self.deadlines.items()):
            if now >= deadline:
                self._lose(name, f"not renewed within {self.ttl_s * (1 - SAFETY_FRACTION):g}s")

    async def renew_once(self) -> None:
        """One renewal round; a lease taken by another daemon or not renewed in time is lost."""
        await asyncio.gather(*(self._renew(name) for name in list(self.deadlines)))

    async def _renew(self, name: str) -> None:
        started = self._monotonic()
        # A renewal that has not answered by the lease's local deadline has failed.
        budget = max(0.01, min(self.interval_s, self.deadlines[name] - started))
        try:
            async with asyncio.timeout(budget):
                lease = await self._repos[name].renew(name, self.daemon_id, self.ttl_s)
        except (TimeoutError, StorageError, OSError, LEASE_DB_ERROR) as e:
            log.warning("lease_renewal_failed", strategy=name, error=str(e) or type(e).__name__)
            self.expire_overdue()
            return
        if name not in self.deadlines:
            return  # lost or released meanwhile: never taken back while running
        if lease.changed:
            self._hold(lease, started)
        else:
            self._lose(name, f"taken by daemon {lease.daemon_id} (until {_when(lease.expires_at)})")

    def _lose(self, name: str, why: str) -> None:
        self.deadlines.pop(name, None)
        self.lost[name] = why
        owner = self._owner[name]
        whose = "its lease" if owner == name else f"the lease of {self._what(name)}"
        self.stopped.setdefault(owner, f"{whose} was {why}")
        self._lost_events[owner].set()
        log.error(
            "lease_lost", strategy=owner, lease=name, why=why, detail="the strategy stops trading"
        )
        if self._notify is not None:
            self._notify(
                "lease_lost",
                f"lease_lost:{name}",
                f"strategy {owner} stopped: {whose} was {why}; /health is degraded",
                strategy=owner,
            )

    def guard(self, strategy: Strategy) -> Strategy:
        """`strategy`, stopped (its task cancelled) as soon as its lease is lost."""
        return LeasedStrategy(strategy, self._lost_events[strategy.name], self.stopped)

    def check(self) -> CheckResult:
        if self.lost:
            return CheckResult(
                False,
                "lease lost: "
                + "; ".join(
                    f"{k if k not in self.items else self._what(k)} {v}"
                    for k, v in sorted(self.lost.items())
                ),
            )
        held = sorted(k for k in self.deadlines if k not in self.items)
        detail: dict[str, Any] = {"daemon_id": self.daemon_id, "held": held}
        if self.items:
            detail["items"] = sorted(k for k in self.deadlines if k in self.items)
        return CheckResult(True, detail)

    # stop -----------------------------------------------------------------------------------
    async def release(self) -> None:
        """Give up the leases still held, so another daemon need not wait for them to expire."""
        held, self.deadlines = list(self.deadlines), {}
        by_repo: dict[int, tuple[LeaseRepository, list[str]]] = {}
        for name in held:
            repo = self._repos[name]
            by_repo.setdefault(id(repo), (repo, []))[1].append(name)
        for repo, names in by_repo.values():
            n = await repo.release(names, self.daemon_id)
            log.info("leases_released", strategies=names, released=n)


class LeasedStrategy:
    """A strategy that runs only while its lease is held (see `LeaseKeeper.guard`)."""

    def __init__(self, inner: Strategy, lost: asyncio.Event, why: dict[str, str]) -> None:
        self.inner = inner
        self.name = inner.name
        self._lost = lost
        self._why = why

    def __getattr__(self, attr: str) -> Any:  # the strategy's own state, for status and tests
        return getattr(self.inner, attr)

    async def run(self) -> None:
        if self._lost.is_set():
            return
        work = asyncio.ensure_future(self.inner.run())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the daemon stops: the strategy's own cleanup first
            work.cancel()
            lost.cancel()
            await asyncio.gather(work, lost, return_exceptions=True)
            raise
        lost.cancel()
        if work.done():
            return work.result()  # it ended or crashed on its own: the supervisor decides
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        log.error(
            "strategy_stopped_lease_lost", strategy=self.name, why=self._why.get(self.name, "")
        )


class _Daemon(Protocol):
    settings: Settings
    db: Database
    notifier: Notifier
    strategies: list[Strategy]
    services: list[Service]
    closers: list[Step]

    @property
    def health(self) -> Any: ...

    @property
    def repos(self) -> Repositories: ...

    @property
    def executor(self) -> Executor | None: ...


async def check_account_shared(repos: Repositories, account: str, s: Settings) -> None:
    """Record this daemon's account and `ACCOUNT_SHARED` setting; raise `ConfigError` (exit 2)
    if a live daemon (one holding a lease) trades the account with the other setting: one with
    it would count on locks, halts and cancels the other does not take part in."""
    others = await repos.accounts.enrol(account, s.daemon_id, shared=s.account_shared)
    if others:
        theirs = str(not s.account_shared).lower()
        many = len(others) > 1
        who = f"daemon{'s' if many else ''} {', '.join(others)} trade{'' if many else 's'}"
        raise ConfigError(
            [
                f"ACCOUNT_SHARED: {who} venue account {account} with"
                f" ACCOUNT_SHARED={theirs}; this daemon (DAEMON_ID={s.daemon_id}) has"
                f" ACCOUNT_SHARED={str(s.account_shared).lower()}: set the same ACCOUNT_SHARED"
                " on every daemon trading one account"
            ]
        )


def lease_items(strategies: Sequence[Strategy], account: str) -> dict[str, str]:
    """The item leases of `strategies` on venue `account`: each wallet a copy trader follows and
    each rule a sniper runs, with the strategy's name. None without an account (a paper daemon
    with no venue account: its orders reach no account two daemons could share)."""
    items: dict[str, str] = {}
    if not account:
        return items
    for st in strategies:
        if isinstance(st, CopyTrader):
            items.update({wallet_item(account, w.address): st.name for w in st.rules.active})
        elif isinstance(st, Sniper):
            items.update({rule_item(account, r.name): st.name for r in st.rules})
    return items


async def hold_leases(ctx: _Daemon) -> LeaseKeeper | None:
    """Lease the daemon's strategies, and the wallets they follow and rules they run on its
    account, on a shared PostgreSQL database (none on SQLite) before they start: exit 3 if
    another daemon holds one; renew them while running; release them at stop."""
    s = ctx.settings
    if s.database_url is None:
        return None
    account = ctx.repos.orders.account
    keeper = LeaseKeeper(
        LeaseRepository(db=ctx.db),
        daemon_id=s.daemon_id,
        strategies=[st.name for st in ctx.strategies],
        ttl_s=s.lease_ttl_s,
        items=lease_items(ctx.strategies, account),
        item_repo=LeaseRepository(db=ctx.db, items=True),
        notify=ctx.notifier.notify,
    )
    await keeper.acquire()
    if account:  # after the leases: of two daemons starting at once, the second is refused
        try:
            await check_account_shared(ctx.repos, account, s)
        except ConfigError:
            await keeper.release()
            raise
    if s.account_shared and account:
        # Their positions count towards the account's caps for every daemon trading it.
        await ctx.repos.accounts.register(account, keeper.strategies)
        shared = ctx.executor.guard.account if ctx.executor is not None else None
        if shared is not None:  # its daily PnL is its own strategies'
            shared.own(keeper.strategies)
    ctx.closers.append(("leases", keeper.release))  # closers run in reverse: before storage
    ctx.strategies[:] = [keeper.guard(st) for st in ctx.strategies]
    ctx.services.append(("leases", keeper.run))
    ctx.health.register("leases", keeper.check)
    return keeper


async def adopt_positions(ctx: _Daemon) -> None:
    """Once its leases are held (on either engine), before its strategies start: first the
    orders of its strategies that a daemon no longer running left unsettled are settled
    (`take_over_orders`); then the strategies this daemon runs that were another daemon's when
    its executor started (taken over from a daemon that stopped or lost the lease, or the
    DAEMON_ID changed) join its position book: their positions were left out
    (`Executor.start`). Today's PnL does not move: what they made before, the fills just
    booked for the gone daemon's orders included, was the other daemon's day."""
    executor = ctx.executor
    if executor is None:
        return
    names = {st.name for st in ctx.strategies}
    # Before the book takes them: fills booked now move no figure of this daemon's day.
    await take_over_orders(ctx, executor, names)
    book = executor.positions
    taken = book.left_out & names
    if not taken:
        return
    rows = await ctx.repos.fills.positions(include_flat=True, strategies=taken)
    book.adopt(taken, rows)
    log.info("positions_adopted", strategies=sorted(taken), positions=len(rows))


async def take_over_orders(ctx: _Daemon, executor: Executor, names: Collection[str]) -> None:
    """Settle the orders of the strategies `names` (this daemon's) that a daemon no longer
    running (no live lease) left unsettled: one it had sent and not settled, or one FILLED on
    the venue's answer whose fill it had not booked when it died (`OrderJournal.left_unsettled`).
    Run at every start, so a takeover a crash cut short is finished by the next one.

    Those on this daemon's venue account become its own. First its fills checkpoint goes back
    to before their first unbooked fill could be (`LeftUnsettled.fills_from`), so that once
    they are its own its fill sync books those fills even if it dies before this pass ends;
    then they change hands (`OrderJournal.take_over`) and a reconcile settles the open ones and
    books the fills.
    Those on another account stay their daemon's (this daemon cannot look them up): a warning,
    and a notice, name them and what to do.
    """
    repos = ctx.repos
    live = await repos.leases.live_daemons()
    left = await repos.orders.left_unsettled(names, live=live)
    if left.elsewhere:
        daemons = sorted({r.daemon_id for r in left.elsewhere})
        accounts = sorted({r.account for r in left.elsewhere})
        text = (
            f"{len(left.elsewhere)} order(s) of {', '.join(sorted(names))} left unsettled by"
            f" daemon {', '.join(daemons)} on venue account {', '.join(accounts)}, not this"
            f" daemon's ({repos.orders.account or 'none'}): only a daemon signing for that"
            " account can settle them and book their fills; start that DAEMON_ID once with its"
            " account's key, then restart this daemon (its book reads positions at start), or"
            " check them on the venue"
        )
        log.warning(
            "orders_left_unsettled",
            orders=[r.client_order_id for r in left.elsewhere[:20]],
            count=len(left.elsewhere),
            daemons=daemons,
            accounts=accounts,
            detail=text,
        )
        ctx.notifier.notify("orders_left_unsettled", "orders_left_unsettled", text)
    if not left.ours:
        return
    checkpoints: dict[str, int | None] = {}
    for daemon in left.daemons:
        theirs = await repos.cursors.get(daemon_key(FILLS_CURSOR, daemon))
        checkpoints[daemon] = int(theirs) if theirs else None
    since = left.fills_from(checkpoints)
    was = await repos.cursors.rewind(daemon_key(FILLS_CURSOR, repos.daemon_id), since)
    taken = await repos.orders.take_over(left.ours)
    log.warning(
        "orders_taken_over",
        orders=[r.client_order_id for r in taken[:20]],
        count=len(taken),
        daemons=left.daemons,
        fills_from=since,
        fills_checkpoint_was=was,
    )
    counts = await executor.reconcile()
    log.info("orders_taken_over_settled", count=len(taken), fills_seen=counts["fills"])
