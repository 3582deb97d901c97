"""The order journal: the durable record of every order and every status it has had.

Owns the `orders` table (and reads `order_events`, which its triggers fill). A transition and its
audit entry are written in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from functools import partial

from errors import IllegalTransition, StorageError
from models import TERMINAL_STATUSES, OrderRequest, OrderStatus, OrderType, Side
from storage.accounts import AccountCommitments, account_check
from storage.audit import AUDIT_SQL, Audit, append_audit, audit_row, detail_json, now_iso
from storage.db import Database
from storage.keys import DEFAULT_DAEMON_ID


@dataclass(frozen=True)
class JournalRow:
    """One order as the journal knows it."""

    client_order_id: str
    strategy: str
    token_id: str
    side: Side
    price: Decimal
    size: Decimal
    order_type: OrderType
    expiration: int | None
    post_only: bool
    reason: str
    status: OrderStatus
    venue_order_id: str | None
    payload_hash: str | None
    size_matched: Decimal
    avg_price: Decimal | None
    detail: str
    created_at: str
    updated_at: str
    daemon_id: str = DEFAULT_DAEMON_ID
    """The daemon that journaled it: the one whose order it is to settle and fill."""
    account: str = ""
    """The venue account (funder address, lower case) it was signed for; '' before 0009."""

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> JournalRow:
        return cls(
            client_order_id=r["client_order_id"],
            strategy=r["strategy"],
            token_id=r["token_id"],
            side=Side(r["side"]),
            price=Decimal(r["price"]),
            size=Decimal(r["size"]),
            order_type=OrderType(r["order_type"]),
            expiration=r["expiration"],
            post_only=bool(r["post_only"]),
            reason=r["reason"],
            status=OrderStatus(r["status"]),
            venue_order_id=r["venue_order_id"],
            payload_hash=r["payload_hash"],
            size_matched=Decimal(r["size_matched"]),
            avg_price=Decimal(r["avg_price"]) if r["avg_price"] is not None else None,
            detail=r["detail"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            daemon_id=r["daemon_id"],
            account=r["account"],
        )

    @property
    def remaining(self) -> Decimal:
        return max(self.size - self.size_matched, Decimal(0))


@dataclass(frozen=True)
class OrderEvent:
    """One status change of an order, as the `order_events` trigger recorded it."""

    client_order_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    size_matched: Decimal
    detail: str
    at: str


_ORDER_INSERT_SQL = (
    "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size,"
    " order_type, expiration, post_only, reason, status, venue_order_id,"
    " payload_hash, signed_order, size_matched, detail, created_at, updated_at, daemon_id, account)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'0',?,?,?,?,?)"
)


_TERMINAL_SQL = "'FILLED','CANCELED','EXPIRED','REJECTED'"
_ROW_COLUMNS = ", ".join(f"o.{f.name}" for f in fields(JournalRow))
"""Every column a `JournalRow` reads, without the signed payload."""


NON_TERMINAL_SQL = (
    "SELECT * FROM orders INDEXED BY orders_open"
    " WHERE status NOT IN ('FILLED','CANCELED','EXPIRED','REJECTED') AND daemon_id = ?"
    " ORDER BY rowid"
)
"""One daemon's open orders (its `DAEMON_ID` the parameter). INDEXED BY: without statistics
SQLite would rather walk the whole table in rowid order than sort, and the table keeps every
order ever placed; the partial index (whose WHERE clause is this query's) holds only the open
ones, few enough that the daemon id is filtered as they are read."""

_ORDER_UPDATE_SQL = (
    "UPDATE orders SET status = ?, venue_order_id = COALESCE(?, venue_order_id),"
    " size_matched = COALESCE(?, size_matched), avg_price = COALESCE(?, avg_price),"
    " detail = ?, updated_at = ? WHERE client_order_id = ?"
)


StateWrite = Callable[[sqlite3.Connection], None]
"""A write that commits in the same transaction as an order's PENDING row: the strategy state
the order consumes (a sniper entry, a take-profit that is now sent). Built by the repository
that owns the state (`storage.strategy_state`), never by a strategy."""


AccountDecider = Callable[[OrderRequest, AccountCommitments], str | None]
"""Why an order would take its account past a per-account cap, given the account's commitments
over every daemon (the order included); None to let it be journaled (`RiskEngine`'s)."""


@dataclass(frozen=True)
class LeftUnsettled:
    """The orders of some strategies that daemons no longer running left unsettled
    (`OrderJournal.left_unsettled`)."""

    ours: list[JournalRow] = field(default_factory=list)
    """Journaled for this daemon's venue account: this daemon can settle them (`take_over`)."""
    elsewhere: list[JournalRow] = field(default_factory=list)
    """Journaled for another venue account: only a daemon signing for it can settle them."""

    @property
    def daemons(self) -> list[str]:
        """The daemons `ours` was journaled by, sorted."""
        return sorted({r.daemon_id for r in self.ours})

    def fills_from(self, checkpoints: Mapping[str, int | None], *, overlap_s: int = 60) -> int:
        """The time (Unix seconds) from which the venue's fills must be read to book those of
        `ours`, given each daemon's fills checkpoint (None: it has none). For each daemon they
        came from: the later of its oldest such order's creation and its checkpoint (it read and
        booked every fill of its orders before that), less `overlap_s`; the earliest of those.
        An unreadable creation time counts as 0: read from the checkpoint, or from the start."""
        starts: list[int] = []
        for daemon in self.daemons:
            oldest = min(_unix(r.created_at) for r in self.ours if r.daemon_id == daemon)
            theirs = checkpoints.get(daemon)
            start = oldest if theirs is None else max(oldest, theirs)
            starts.append(max(0, start - overlap_s))
        return min(starts, default=0)


def _unix(iso: str) -> int:
    """Unix seconds of an ISO-8601 time; 0 if it cannot be read."""
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0


class OrderNotFound(StorageError):
    """A transition named a client order id the journal has never seen."""


class OrderJournal:
    """The durable record of every order and every status it has had."""

    def __init__(self, *, db: Database, daemon_id: str = DEFAULT_DAEMON_ID) -> None:
        self._db = db
        self.daemon_id = daemon_id  # rows this journal writes are this daemon's to reconcile
        # The venue account its orders are signed for (lower case), once the broker knows it.
        self.account = ""
        self._account_decider: AccountDecider | None = None

    def for_account(self, address: str) -> None:
        """Name the venue account (funder/wallet address) every order journaled from now on is
        signed for, so an account's open orders can be counted across daemons."""
        self.account = address.lower()

    def share_account(self, decide: AccountDecider) -> None:
        """Other daemons trade this account: from now on each PENDING row is written under the
        account's lock and refused (`AccountLimitReached`, nothing written) if `decide` says
        so of the account's commitments (`storage.accounts`; PostgreSQL only)."""
        self._account_decider = decide

    def owns(self, row: JournalRow) -> bool:
        """True if `row` is this daemon's order (another daemon's is its own to settle)."""
        return row.daemon_id == self.daemon_id

    async def record(
        self,
        req: OrderRequest,
        *,
        status: OrderStatus = OrderStatus.PENDING,
        venue_order_id: str | None = None,
        payload_hash: str | None = None,
        signed_order: str | None = None,
        detail: str = "",
        audit: Audit | None = None,
        also: StateWrite | None = None,
    ) -> None:
        """Insert a new order row (PENDING before sending; REJECTED for a local refusal).

        `signed_order` is the signed order as the broker can re-send it (JSON, no credential,
        no API key id), so reconciliation can re-send the identical order. `also` runs in the
        same transaction: the row and the strategy state it consumes commit together or not at
        all. On a shared account (`share_account`) a PENDING row that would pass a per-account
        cap raises `AccountLimitReached`, and nothing is written.
        """
        ts = now_iso()
        # Parameters are built here, on the event loop: the job on the database thread then
        # spends its time in SQLite (which releases the GIL), so batches overlap with the loop.
        params = (
            req.client_order_id,
            req.strategy,
            req.token_id,
            req.side.value,
            str(req.price),
            str(req.size),
            req.order_type.value,
            req.expiration,
            int(req.post_only),
            req.reason,
            status.value,
            venue_order_id,
            payload_hash,
            signed_order,
            detail,
            ts,
            ts,
            self.daemon_id,
            self.account,
        )
        audit_params = (
            audit_row(
                audit[0], audit[1], strategy=req.strategy, client_order_id=req.client_order_id
            )
            if audit is not None
            else None
        )
        check = None
        if self._account_decider is not None and status is OrderStatus.PENDING and self.account:
            check = account_check(self.account, req.token_id, partial(self._account_decider, req))

        def job(c: sqlite3.Connection) -> None:
            c.execute(_ORDER_INSERT_SQL, params)
            if check is not None:
                check(c)
            if audit_params is not None:
                c.execute(AUDIT_SQL, audit_params)
            if also is not None:
                also(c)

        await self._db.write(job)

    async def transition(
        self,
        client_order_id: str,
        to: OrderStatus,
        *,
        venue_order_id: str | None = None,
        size_matched: Decimal | None = None,
        avg_price: Decimal | None = None,
        detail: str = "",
        audit: Audit | None = None,
    ) -> OrderStatus:
        """Move an order to `to`; return the status it had. Raise IllegalTransition if forbidden.

        Moving a terminal row to the status it already has is a no-op (idempotent settlement).
        """
        ts = now_iso()
        # Built on the event loop, so the database thread mostly runs SQLite (see `record`).
        update = (
            to.value,
            venue_order_id,
            str(size_matched) if size_matched is not None else None,
            str(avg_price) if avg_price is not None else None,
            detail,
            ts,
            client_order_id,
        )
        audit_at = now_iso()
        audit_detail = detail_json(audit[1]) if audit is not None else None

        def job(c: sqlite3.Connection) -> OrderStatus:
            row = c.execute(
                "SELECT status, strategy FROM orders WHERE client_order_id = ?",
                (client_order_id,),
            ).fetchone()
            if row is None:
                raise OrderNotFound(f"no journal row for client order id {client_order_id}")
            old = OrderStatus(row[0])
            if old == to and old in TERMINAL_STATUSES:
                return old
            if not old.can_become(to):
                raise IllegalTransition(f"{client_order_id}: {old} -> {to} is not allowed")
            c.execute(_ORDER_UPDATE_SQL, update)
            if audit is not None:
                c.execute(AUDIT_SQL, (audit_at, audit[0], row[1], client_order_id, audit_detail))
            return old

        return await self._db.write(job)

    async def get(self, client_order_id: str) -> JournalRow | None:
        r = await self._db.fetchone(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        )
        return JournalRow.from_row(r) if r else None

    async def signed_order(self, client_order_id: str) -> str | None:
        """The signed order journaled with the row (JSON), or None if there is none."""
        r = await self._db.fetchone(
            "SELECT signed_order FROM orders WHERE client_order_id = ?", (client_order_id,)
        )
        return str(r[0]) if r is not None and r[0] is not None else None

    async def open_venue_ids(self) -> list[str]:
        """The venue order ids of this daemon's open orders (what it may cancel on a shared
        account)."""
        return [r.venue_order_id for r in await self.non_terminal() if r.venue_order_id]

    async def get_by_venue_id(self, venue_order_id: str, *, own: bool = False) -> JournalRow | None:
        """The order with this venue order id; with `own`, only if this daemon journaled it."""
        r = await self._db.fetchone(
            "SELECT * FROM orders WHERE venue_order_id = ?", (venue_order_id,)
        )
        row = JournalRow.from_row(r) if r else None
        return None if row is None or (own and not self.owns(row)) else row

    async def non_terminal(self) -> list[JournalRow]:
        """Every order of this daemon that may still be in flight or resting: what its
        reconciliation must settle (another daemon's orders are that daemon's to settle)."""
        rows = await self._db.fetchall(NON_TERMINAL_SQL, (self.daemon_id,))
        return [JournalRow.from_row(r) for r in rows]

    async def recent(self, *, open_only: bool = False, limit: int = 100) -> list[JournalRow]:
        where = (
            " INDEXED BY orders_open WHERE status NOT IN ('FILLED','CANCELED','EXPIRED','REJECTED')"
            if open_only
            else ""
        )
        rows = await self._db.fetchall(
            f"SELECT * FROM orders{where} ORDER BY rowid DESC LIMIT ?", (limit,)
        )
        return [JournalRow.from_row(r) for r in rows]

    async def events(self, client_order_id: str) -> list[OrderEvent]:
        rows = await self._db.fetchall(
            "SELECT * FROM order_events WHERE client_order_id = ? ORDER BY id", (client_order_id,)
        )
        return [
            OrderEvent(
                client_order_id=r["client_order_id"],
                from_status=OrderStatus(r["from_status"]) if r["from_status"] else None,
                to_status=OrderStatus(r["to_status"]),
                size_matched=Decimal(r["size_matched"]),
                detail=r["detail"],
                at=r["at"],
            )
            for r in rows
        ]

    async def left_unsettled(
        self, strategies: Collection[str], *, live: Collection[str]
    ) -> LeftUnsettled:
        """The orders of `strategies` that a daemon no longer running left unsettled.

        Unsettled: still open (PENDING, UNKNOWN, LIVE, ...), or terminal with matched shares the
        `fills` table does not hold all of (a FILLED answer to the post whose trade event was
        not booked yet when the daemon died). No longer running: another daemon id, none of
        `live` (the daemons holding a lease). Orders journaled with no account (before 0009)
        are left out: no daemon can tell which account to look them up on. Those journaled for
        this daemon's account are `ours`, the others `elsewhere`.

        One read of those strategies' orders (no index by strategy), with each terminal one's
        booked shares summed in SQL; the signed payloads are not read. The comparison is in
        double precision on either engine (SQLite has no decimal type), with a margin of half a
        millionth of a share: share quantities have six decimals at most, so an order short of
        booked is short by a millionth or more, and the rounding error of such sums in double
        precision is orders of magnitude below the margin.
        """
        names = sorted(set(strategies))
        if not names:
            return LeftUnsettled()
        skip = sorted(set(live) | {self.daemon_id})
        rows = [
            JournalRow.from_row(r)
            for r in await self._db.fetchall(
                f"SELECT {_ROW_COLUMNS} FROM orders o"
                f" WHERE o.strategy IN ({','.join('?' * len(names))})"
                f" AND o.daemon_id NOT IN ({','.join('?' * len(skip))}) AND o.account <> ''"
                f" AND (o.status NOT IN ({_TERMINAL_SQL}) OR CAST(o.size_matched AS DOUBLE"
                " PRECISION) > 0.0000005 + COALESCE((SELECT SUM(CAST(f.size AS DOUBLE"
                " PRECISION)) FROM fills f WHERE f.client_order_id = o.client_order_id), 0))"
                " ORDER BY o.created_at, o.client_order_id",
                (*names, *skip),
            )
        ]
        ours: list[JournalRow] = []
        elsewhere: list[JournalRow] = []
        for r in rows:
            (ours if self.account and r.account == self.account else elsewhere).append(r)
        return LeftUnsettled(ours, elsewhere)

    async def take_over(self, rows: Sequence[JournalRow]) -> list[JournalRow]:
        """Make this daemon the owner of `rows` (`LeftUnsettled.ours`): its reconcile settles
        them and its fill sync books their fills from now on. One transaction, with one
        `orders_taken_over` audit entry per daemon they came from; a row that changed hands
        meanwhile is left alone. Settled orders keep the daemon that placed them: the history
        stays as it happened. Returns the rows as the journal now holds them."""
        if not rows:
            return []
        ts = now_iso()
        by_daemon: dict[str, list[str]] = {}
        for row in rows:
            by_daemon.setdefault(row.daemon_id, []).append(row.client_order_id)

        def job(c: sqlite3.Connection) -> set[str]:
            taken: set[str] = set()
            for daemon_id, ids in by_daemon.items():
                mine = []
                for coid in ids:
                    n = c.execute(
                        "UPDATE orders SET daemon_id = ?, updated_at = ?"
                        " WHERE client_order_id = ? AND daemon_id = ?",
                        (self.daemon_id, ts, coid, daemon_id),
                    ).rowcount
                    if n:
                        mine.append(coid)
                if mine:
                    append_audit(
                        c,
                        "orders_taken_over",
                        {"from_daemon": daemon_id, "orders": mine, "to_daemon": self.daemon_id},
                    )
                taken.update(mine)
            return taken

        taken = await self._db.write(job)
        return [
            replace(r, daemon_id=self.daemon_id, updated_at=ts)
            for r in rows
            if r.client_order_id in taken
        ]

    async def counts_by_status(self) -> dict[OrderStatus, int]:
        rows = await self._db.fetchall("SELECT status, COUNT(*) FROM orders GROUP BY status")
        return {OrderStatus(r[0]): int(r[1]) for r in rows}
