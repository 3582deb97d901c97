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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from errors import AccountLimitReached
from storage.db import Database

_OPEN = "status NOT IN ('FILLED','CANCELED','EXPIRED','REJECTED')"

_COMMITMENTS_SQL = (
    "SELECT o.n, o.buy, o.token_buy, p.cost, p.token_cost FROM"
    " (SELECT COUNT(*) AS n,"
    " COALESCE(SUM(CASE WHEN side = 'BUY' THEN price * (size - size_matched) END), 0) AS buy,"
    " COALESCE(SUM(CASE WHEN side = 'BUY' AND token_id = ? THEN price * (size - size_matched)"
    f" END), 0) AS token_buy FROM orders WHERE account = ? AND {_OPEN}) o,"
    " (SELECT COALESCE(SUM(p.size * p.avg_cost), 0) AS cost,"
    " COALESCE(SUM(CASE WHEN p.token_id = ? THEN p.size * p.avg_cost END), 0) AS token_cost"
    " FROM positions p JOIN strategy_accounts a ON a.strategy = p.strategy"
    " WHERE a.account = ? AND p.size > 0) p"
)
"""One statement (one round trip): the account's open orders, and the positions of the
strategies registered to it."""


@dataclass(frozen=True, slots=True)
class AccountCommitments:
    """What one venue account has committed, over every daemon trading it."""

    open_orders: int
    open_buy_notional: Decimal
    token_open_buy_notional: Decimal
    positions_cost: Decimal
    token_positions_cost: Decimal

    @property
    def exposure(self) -> Decimal:
        return self.positions_cost + self.open_buy_notional

    @property
    def token_exposure(self) -> Decimal:
        return self.token_positions_cost + self.token_open_buy_notional

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AccountCommitments:
        return cls(int(r[0]), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]))


def lock_key(account: str) -> str:
    return f"polyd-account:{account}"


def read_commitments(c: sqlite3.Connection, account: str, token_id: str) -> AccountCommitments:
    """The account's commitments as this transaction sees them (PostgreSQL)."""
    row = c.execute(_COMMITMENTS_SQL, (token_id, account, token_id, account)).fetchone()
    return AccountCommitments.from_row(row)


def account_check(
    account: str, token_id: str, decide: Callable[[AccountCommitments], str | None]
) -> Callable[[sqlite3.Connection], None]:
    """A write that runs in the PENDING row's transaction, after the row: lock the account,
    read its commitments (the new row included) and raise `AccountLimitReached` with `decide`'s
    reason if it refuses them."""

    def job(c: sqlite3.Connection) -> None:
        c.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock_key(account),))
        why = decide(read_commitments(c, account, token_id))
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
        account = account.lower()
        row = await self._db.fetchone(_COMMITMENTS_SQL, (token_id, account, token_id, account))
        assert row is not None  # aggregates always return a row
        return AccountCommitments.from_row(row)
