"""One venue account traded by several daemons: what the account has committed, over all of them.

Owns the `strategy_accounts` table and the account-wide reads of `orders` and `positions`
(PostgreSQL only: on SQLite one daemon has the file, so its own book is the account's).

An order's PENDING row is written in a transaction that, with `ACCOUNT_SHARED=true`, also takes
a transaction-scoped advisory lock on the order's account (`pg_advisory_xact_lock`), then reads
what the account has committed, this order included, and refuses the order (`AccountLimitReached`,
the row and the strategy state it consumes rolled back together) if a per-account cap would be
passed. The lock is held until that transaction commits, so two daemons admitting at once are
serialised: the second reads the first's committed row. Its cost is one lock and one aggregate
read per order (the account's open orders through the partial index `orders_account_open`, and
the positions of the strategies on the account), and a daemon's write batch may wait for
another daemon's to commit.

What the reads count, and how fresh it is:

* open orders (count, and BUY notional = price x unmatched size) of every daemon on the account,
  as journaled: exact at the moment the lock is taken (every order is journaled before it is
  sent, so no order of the account can be at the venue and missing here; rows journaled before
  0009 name no account and are not counted);
* held positions' cost (size x average cost) of every strategy registered to the account, as
  their owning daemons have recorded their fills: behind the venue by each owner's fill lag (a
  user-feed message, or its next reconcile if the feed is down). In that window a filled BUY can
  be counted twice (its fill recorded, its order not yet FILLED) or not at all (its order
  FILLED, its fill not yet recorded); the latter is the bound on how far the account can pass a
  cap: the notional of fills matched and not yet recorded by their daemon.

It also owns the account-wide trading state (migration 0010): `account_halts` (the account's
halt: written and cleared under the same lock, and read by every PENDING row's check, so no
order of any daemon is journaled once a halt has committed), `account_daily_pnl` (each daemon's
PnL of the day over its own strategies, summed for the account's daily loss limit, read by the
same check) and `daemon_accounts` (each daemon's account and `ACCOUNT_SHARED` setting, checked
against the live daemons on the account when a daemon starts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from errors import AccountHalted, AccountLimitReached
from models import utc_day
from storage.audit import append_audit, now_iso
from storage.db import Database
from storage.pg import PgDatabase

_OPEN = "status NOT IN ('FILLED','CANCELED','EXPIRED','REJECTED')"

_COMMITMENTS_SQL = (
    "SELECT o.n, o.buy, o.token_buy, p.cost, p.token_cost,"
    " (SELECT daemon_id FROM account_halts WHERE account = ?),"
    " (SELECT reason FROM account_halts WHERE account = ?),"
    " (SELECT COALESCE(SUM(pnl), 0) FROM account_daily_pnl WHERE account = ? AND day = ?) FROM"
    " (SELECT COUNT(*) AS n,"
    " COALESCE(SUM(CASE WHEN side = 'BUY' THEN price * (size - size_matched) END), 0) AS buy,"
    " COALESCE(SUM(CASE WHEN side = 'BUY' AND token_id = ? THEN price * (size - size_matched)"
    f" END), 0) AS token_buy FROM orders WHERE account = ? AND {_OPEN}) o,"
    " (SELECT COALESCE(SUM(p.size * p.avg_cost), 0) AS cost,"
    " COALESCE(SUM(CASE WHEN p.token_id = ? THEN p.size * p.avg_cost END), 0) AS token_cost"
    " FROM positions p JOIN strategy_accounts a ON a.strategy = p.strategy"
    " WHERE a.account = ? AND p.size > 0) p"
)
"""One statement (one round trip): the account's halt, today's PnL over its daemons, its open
orders, and the positions of the strategies registered to it."""


def _commitment_params(account: str, token_id: str, day: str) -> tuple[str, ...]:
    return (account, account, account, day, token_id, account, token_id, account)


def halted_text(daemon_id: str, reason: str, at: str | None = None) -> str:
    """Why a daemon on an account `daemon_id` halted is halted (since `at`, ISO-8601 UTC)."""
    when = f" at {at[:19].replace('T', ' ')} UTC" if at else ""
    return f"account halted by daemon {daemon_id}{when}: {reason}"


@dataclass(frozen=True, slots=True)
class AccountCommitments:
    """What one venue account has committed, over every daemon trading it."""

    open_orders: int
    open_buy_notional: Decimal
    token_open_buy_notional: Decimal
    positions_cost: Decimal
    token_positions_cost: Decimal
    halted_by: str | None = None
    """The daemon whose halt the account is under, or None."""
    halt_reason: str = ""
    daily_pnl: Decimal = Decimal(0)
    """Today's PnL summed over the account's daemons, as each last wrote its own."""

    @property
    def exposure(self) -> Decimal:
        return self.positions_cost + self.open_buy_notional

    @property
    def token_exposure(self) -> Decimal:
        return self.token_positions_cost + self.token_open_buy_notional

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AccountCommitments:
        buy, token_buy, cost, token_cost, pnl = (Decimal(str(r[i])) for i in (1, 2, 3, 4, 7))
        return cls(
            int(r[0]),
            buy,
            token_buy,
            cost,
            token_cost,
            halted_by=str(r[5]) if r[5] is not None else None,
            halt_reason=str(r[6] or ""),
            daily_pnl=pnl,
        )

    @property
    def halt_text(self) -> str:
        """The refusal of an order on the halted account (as the trading guard words it)."""
        return f"trading is halted: {halted_text(str(self.halted_by), self.halt_reason)}"


@dataclass(frozen=True, slots=True)
class AccountView:
    """What a daemon on a shared account syncs: the account's halt and the other daemons' PnL
    of the day (summed), with this daemon's own row of the day, if any."""

    halted_by: str | None
    halt_reason: str
    others_pnl: Decimal
    own_baseline: Decimal | None


_VIEW_SQL = (
    "SELECT (SELECT daemon_id FROM account_halts WHERE account = ?),"
    " (SELECT reason FROM account_halts WHERE account = ?),"
    " (SELECT COALESCE(SUM(pnl), 0) FROM account_daily_pnl"
    " WHERE account = ? AND day = ? AND daemon_id <> ?),"
    " (SELECT baseline FROM account_daily_pnl WHERE account = ? AND day = ? AND daemon_id = ?)"
)


def lock_key(account: str) -> str:
    return f"polyd-account:{account}"


def _lock(c: sqlite3.Connection, account: str) -> None:
    c.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock_key(account),))


def read_commitments(
    c: sqlite3.Connection, account: str, token_id: str, day: str | None = None
) -> AccountCommitments:
    """The account's commitments as this transaction sees them (PostgreSQL)."""
    row = c.execute(_COMMITMENTS_SQL, _commitment_params(account, token_id, day or utc_day()))
    return AccountCommitments.from_row(row.fetchone())


def account_check(
    account: str, token_id: str, decide: Callable[[AccountCommitments], str | None]
) -> Callable[[sqlite3.Connection], None]:
    """A write that runs in the PENDING row's transaction, after the row: lock the account,
    read its commitments (the new row included), raise `AccountHalted` if the account is halted
    and `AccountLimitReached` with `decide`'s reason if it refuses them."""
    day = utc_day()

    def job(c: sqlite3.Connection) -> None:
        _lock(c, account)
        seen = read_commitments(c, account, token_id, day)
        if seen.halted_by is not None:
            raise AccountHalted(seen.halt_text)
        why = decide(seen)
        if why is not None:
            raise AccountLimitReached(why)

    return job


class AccountRepository:
    """Strategies registered to venue accounts, and an account's commitments read on demand."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def register(self, account: str, strategies: Iterable[str]) -> None:
        """Register `strategies` to `account` (a strategy keeps the account it was first
        registered to: its positions are in that wallet)."""
        names = [(s, account.lower()) for s in strategies]

        def job(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT OR IGNORE INTO strategy_accounts (strategy, account) VALUES (?, ?)", names
            )

        await self._db.write(job)

    async def commitments(self, account: str, token_id: str = "") -> AccountCommitments:
        """The account's commitments now, without the lock (for reports and tests)."""
        params = _commitment_params(account.lower(), token_id, utc_day())
        row = await self._db.fetchone(_COMMITMENTS_SQL, params)
        assert row is not None  # aggregates always return a row
        return AccountCommitments.from_row(row)

    # -- the account's halt and daily PnL (0010) -------------------------------------------------
    async def halt(self, account: str, daemon_id: str, reason: str) -> None:
        """Halt the account for every daemon on it (audited), under the account's lock: a
        PENDING row journaled after this returns sees it. A halt already there is kept (its
        first reason stays)."""

        def job(c: sqlite3.Connection) -> None:
            _lock(c, account)
            c.execute(
                "INSERT INTO account_halts (account, daemon_id, reason, halted_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (account) DO NOTHING",
                (account, daemon_id, reason, now_iso()),
            )
            append_audit(
                c, "account_halted", {"account": account, "daemon": daemon_id, "reason": reason}
            )

        await self._db.write(job)

    async def resume(self, account: str, daemon_id: str) -> None:
        """Clear the account's halt (audited, under the account's lock)."""

        def job(c: sqlite3.Connection) -> None:
            _lock(c, account)
            gone = c.execute("DELETE FROM account_halts WHERE account = ?", (account,)).rowcount
            if gone:
                append_audit(c, "account_resumed", {"account": account, "daemon": daemon_id})

        await self._db.write(job)

    async def record_pnl(
        self, account: str, day: str, daemon_id: str, pnl: Decimal, baseline: Decimal
    ) -> None:
        """Write this daemon's PnL of `day` (over its own strategies) and its baseline."""
        await self._db.execute(
            "INSERT INTO account_daily_pnl (account, day, daemon_id, pnl, baseline, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, day, daemon_id) DO UPDATE"
            " SET pnl = excluded.pnl, baseline = excluded.baseline,"
            " updated_at = excluded.updated_at",
            (account, day, daemon_id, str(pnl), str(baseline), now_iso()),
        )

    async def view(self, account: str, day: str, daemon_id: str) -> AccountView:
        """The account's halt and the other daemons' PnL of `day`, read now (no lock)."""
        params = (account, account, account, day, daemon_id, account, day, daemon_id)
        r = await self._db.fetchone(_VIEW_SQL, params)
        assert r is not None  # scalar subqueries always return a row
        own = Decimal(str(r[3])) if r[3] is not None else None
        halted_by = str(r[0]) if r[0] is not None else None
        return AccountView(halted_by, str(r[1] or ""), Decimal(str(r[2])), own)

    # -- each daemon's account and ACCOUNT_SHARED setting (0010) -----------------------------
    async def enrol(self, account: str, daemon_id: str, *, shared: bool) -> list[str]:
        """Record that `daemon_id` trades `account` with `ACCOUNT_SHARED=shared`, unless a live
        daemon (one holding an unexpired lease) trades it with the other setting: then write
        nothing and return those daemons' ids. Under the account's lock on PostgreSQL, so two
        daemons starting at once with different settings do not both pass."""
        pg = isinstance(self._db, PgDatabase)
        now = "clock_timestamp()" if pg else "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        out: list[str] = []

        def job(c: sqlite3.Connection) -> None:
            if pg:
                _lock(c, account)
            rows = c.execute(
                "SELECT d.daemon_id FROM daemon_accounts d WHERE d.account = ?"
                " AND d.daemon_id <> ? AND d.shared <> ? AND EXISTS (SELECT 1 FROM leases l"
                f" WHERE l.daemon_id = d.daemon_id AND l.expires_at > {now}) ORDER BY d.daemon_id",
                (account, daemon_id, int(shared)),
            ).fetchall()
            out.extend(str(r[0]) for r in rows)
            if out:
                return
            c.execute(
                "INSERT INTO daemon_accounts (daemon_id, account, shared, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (daemon_id) DO UPDATE"
                " SET account = excluded.account, shared = excluded.shared,"
                " updated_at = excluded.updated_at",
                (daemon_id, account, int(shared), now_iso()),
            )

        await self._db.write(job)
        return out


# -- the read model's view of shared accounts (`storage.views`: the CLI, console, chat) -----------
@dataclass(frozen=True, slots=True)
class AccountStatus:
    """A venue account traded with `ACCOUNT_SHARED=true`, as its rows read now: its halt (who,
    why, when) and today's PnL, the sum the daily loss limit reads, with each daemon's part."""

    account: str
    daemons: list[str]
    """The daemons recorded on the account with `ACCOUNT_SHARED=true` (`daemon_accounts`)."""
    halted_by: str | None
    halt_reason: str
    halted_at: str | None
    day: str
    daily_pnl: Decimal
    pnl_by_daemon: dict[str, Decimal]
    """Each daemon's PnL of `day` over its own strategies, as it last wrote it."""


def read_account_status(
    c: sqlite3.Connection, daemon_id: str | None, day: str | None = None
) -> list[AccountStatus]:
    """The shared accounts `daemon_id` trades (None: every shared account in the database), read
    without the lock. Empty when no daemon recorded `ACCOUNT_SHARED=true` (SQLite, a single
    daemon, a database from before 0010: `sqlite3.Error` is the caller's)."""
    day = day or utc_day()
    rows = c.execute(
        "SELECT account, daemon_id FROM daemon_accounts WHERE shared = 1"
        " ORDER BY account, daemon_id"
    ).fetchall()
    members: dict[str, list[str]] = {}
    for account, daemon in rows:
        members.setdefault(str(account), []).append(str(daemon))
    out = []
    for account, daemons in members.items():
        if daemon_id is not None and daemon_id not in daemons:
            continue
        halt = c.execute(
            "SELECT daemon_id, reason, halted_at FROM account_halts WHERE account = ?", (account,)
        ).fetchone()
        parts = {
            str(r[0]): Decimal(str(r[1]))
            for r in c.execute(
                "SELECT daemon_id, pnl FROM account_daily_pnl WHERE account = ? AND day = ?"
                " ORDER BY daemon_id",
                (account, day),
            )
        }
        out.append(
            AccountStatus(
                account=account,
                daemons=daemons,
                halted_by=str(halt[0]) if halt is not None else None,
                halt_reason=str(halt[1]) if halt is not None else "",
                halted_at=str(halt[2]) if halt is not None else None,
                day=day,
                daily_pnl=sum(parts.values(), Decimal(0)),
                pnl_by_daemon=parts,
            )
        )
    return out
