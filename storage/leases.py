"""Leases: which daemon trades which strategy, follows which wallet and runs which sniper rule
when several share one database.

Owns the `leases` table (one row per strategy) and the `item_leases` table (one row per followed
wallet or sniper rule on one venue account, keyed as `wallet_item` and `rule_item` spell it):
the daemon holding each and until when. Both tables work alike; a `LeaseRepository` is over one.
Every change is one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement, so two daemons claiming
the same strategy at once cannot both win: the database serialises the conflicting rows (on
PostgreSQL the second statement waits for the first's row lock, then re-checks the `WHERE` on
the row as the first left it). The statement takes the lease when it is free, expired, or (when
renewing) already this daemon's, and returns the holder either way.

Times are the database's own clock (`clock_timestamp()` on PostgreSQL, `strftime('now')` on
SQLite), so daemons on hosts whose clocks disagree still agree on when a lease expires.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models import UNATTRIBUTED
from storage.db import Database
from storage.pg import PgDatabase


@dataclass(frozen=True)
class Lease:
    """Who holds `strategy` (a strategy's name, or an item lease's key) and until when (database
    time), as read when it was asked for."""

    strategy: str
    daemon_id: str
    expires_at: datetime
    acquired_at: datetime
    changed: bool = False
    """True if the call that read it took or renewed it (for the daemon it names)."""

    def held_by(self, daemon_id: str) -> bool:
        return self.daemon_id == daemon_id


@dataclass(frozen=True)
class _Dialect:
    now: str  # the database's current time, as stored in `leases`
    later: str  # now plus `?` (the engine's TTL parameter, see `ttl_param`)
    pg: bool

    def ttl_param(self, ttl_s: float) -> str | float:
        return ttl_s if self.pg else f"+{ttl_s:.3f} seconds"


_SQLITE = _Dialect(
    now="strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    later="strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
    pg=False,
)
_PG = _Dialect(
    now="clock_timestamp()",
    later="clock_timestamp() + CAST(? AS double precision) * interval '1 second'",
    pg=True,
)


@dataclass(frozen=True)
class _Table:
    name: str
    key: str  # the column naming what is leased


STRATEGIES = _Table("leases", "strategy")
ITEMS = _Table("item_leases", "item")


def wallet_item(account: str, address: str) -> str:
    """The item lease of following `address` on venue `account` (both lower-cased)."""
    return f"wallet:{account.lower()}:{address.lower()}"


def rule_item(account: str, rule: str) -> str:
    """The item lease of running the sniper rule named `rule` on venue `account`."""
    return f"rule:{account.lower()}:{rule}"


def parse_item(item: str) -> tuple[str, str, str]:
    """(`wallet` or `rule`, account, address or rule name) of an item lease's key."""
    kind, account, name = item.split(":", 2)
    return kind, account, name


def _claim_sql(d: _Dialect, t: _Table, *, renew: bool) -> str:
    # Taken if free or expired; when renewing, also if it is already this daemon's. A renewal
    # keeps `acquired_at`; a takeover (even by the same daemon id, after expiry) starts anew.
    own = f" OR {t.name}.daemon_id = excluded.daemon_id" if renew else ""
    return (
        f"INSERT INTO {t.name} ({t.key}, daemon_id, expires_at, acquired_at)"
        f" VALUES (?, ?, {d.later}, {d.now})"
        f" ON CONFLICT ({t.key}) DO UPDATE SET daemon_id = excluded.daemon_id,"
        " expires_at = excluded.expires_at,"
        f" acquired_at = CASE WHEN {t.name}.daemon_id = excluded.daemon_id"
        f" AND {t.name}.expires_at > {d.now} THEN {t.name}.acquired_at"
        " ELSE excluded.acquired_at END"
        f" WHERE {t.name}.expires_at <= {d.now}{own}"
        f" RETURNING {t.key}, daemon_id, expires_at, acquired_at"
    )


def _holder_sql(t: _Table) -> str:
    return f"SELECT {t.key}, daemon_id, expires_at, acquired_at FROM {t.name} WHERE {t.key} = ?"


def _time(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


def _lease(row: sqlite3.Row | tuple[object, ...], *, changed: bool = False) -> Lease:
    return Lease(
        strategy=str(row[0]),
        daemon_id=str(row[1]),
        expires_at=_time(row[2]),
        acquired_at=_time(row[3]),
        changed=changed,
    )


# What a lease call raises when the database fails, on either engine (PostgreSQL's errors reach
# the repositories as the `sqlite3` classes): callers above `storage/` catch this instead of
# naming a driver.
LEASE_DB_ERROR = sqlite3.Error


class LeaseRepository:
    """Claim, renew and release strategy leases (or, with `items=True`, item leases: followed
    wallets and sniper rules) on either engine."""

    def __init__(self, *, db: Database, items: bool = False) -> None:
        self._db = db
        self._d = _PG if isinstance(db, PgDatabase) else _SQLITE
        self._t = ITEMS if items else STRATEGIES

    async def claim(self, strategy: str, daemon_id: str, ttl_s: float) -> Lease:
        """Take `strategy` for `ttl_s` seconds if it is free or expired; return its holder
        (`changed` if this call took it). A lease this daemon id already holds is *not* taken:
        at start-up that is a previous run of this daemon, or another process with the same
        id (see `wiring.leases`)."""
        return await self._upsert(strategy, daemon_id, ttl_s, renew=False)

    async def renew(self, strategy: str, daemon_id: str, ttl_s: float) -> Lease:
        """Extend this daemon's lease of `strategy` to `ttl_s` seconds from now (or take it if
        it is free or expired); return its holder (`changed` if renewed), another daemon's
        lease if it was lost."""
        return await self._upsert(strategy, daemon_id, ttl_s, renew=True)

    async def _upsert(self, strategy: str, daemon_id: str, ttl_s: float, *, renew: bool) -> Lease:
        if not ttl_s > 0:
            raise ValueError(f"a lease's TTL must be positive, not {ttl_s!r}")
        sql = _claim_sql(self._d, self._t, renew=renew)
        holder_sql = _holder_sql(self._t)
        params = (strategy, daemon_id, self._d.ttl_param(ttl_s))

        def job(c: sqlite3.Connection) -> Lease:
            rows = c.execute(sql, params).fetchall()
            if rows:
                return _lease(rows[0], changed=True)
            held = c.execute(holder_sql, (strategy,)).fetchone()
            if held is None:  # cannot happen: the conflict that refused us is this row
                raise sqlite3.IntegrityError(f"lease of {strategy} refused and not found")
            return _lease(held)

        return await self._db.write(job)

    async def release(self, strategies: Sequence[str], daemon_id: str) -> int:
        """Give up this daemon's leases of `strategies`; return how many it still held."""
        names = list(strategies)
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        return await self._db.execute(
            f"DELETE FROM {self._t.name} WHERE daemon_id = ? AND {self._t.key} IN ({marks})",
            (daemon_id, *names),
        )

    async def get(self, strategy: str) -> Lease | None:
        row = await self._db.fetchone(_holder_sql(self._t), (strategy,))
        return _lease(row) if row is not None else None

    async def held_elsewhere(self, daemon_id: str) -> frozenset[str]:
        """The strategies that are another daemon's, as `daemon_id` starts: those whose lease
        (held or expired) names another daemon, and, among those with no lease row (released at
        a clean stop, or never leased: SQLite), those whose latest journaled order another
        daemon journaled (`orders.daemon_id`, the rule the trader's views scope by). Never
        `unattributed`: those holdings are the account's. On a database only `daemon_id` has
        written to (one daemon, SQLite), none.

        One read of every order's strategy (no index by strategy): once per start-up. Strategy
        leases only: whichever repository asks."""
        rows = await self._db.fetchall(
            "SELECT strategy FROM leases WHERE daemon_id <> ?"
            " UNION SELECT strategy FROM orders"
            " WHERE rowid IN (SELECT MAX(rowid) FROM orders GROUP BY strategy)"
            " AND daemon_id <> ? AND strategy NOT IN (SELECT strategy FROM leases)",
            (daemon_id, daemon_id),
        )
        return frozenset(str(r[0]) for r in rows) - {UNATTRIBUTED}

    async def live_daemons(self) -> frozenset[str]:
        """The daemons holding a lease that has not expired (database time), strategy or item:
        those still running, as far as the database can tell. A daemon named by none of them
        has stopped, or cannot renew, and may trade nothing. Both tables, whichever repository
        asks."""
        now = self._d.now
        rows = await self._db.fetchall(
            f"SELECT daemon_id FROM {STRATEGIES.name} WHERE expires_at > {now}"
            f" UNION SELECT daemon_id FROM {ITEMS.name} WHERE expires_at > {now}"
        )
        return frozenset(str(r[0]) for r in rows)

    async def all(self) -> list[Lease]:
        t = self._t
        rows = await self._db.fetchall(
            f"SELECT {t.key}, daemon_id, expires_at, acquired_at FROM {t.name} ORDER BY {t.key}"
        )
        return [_lease(r) for r in rows]
