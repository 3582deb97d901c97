"""Repositories: order journal, fills and positions, cursors, audit log, state, copy intents.

Every write goes through `Database.write`, so it is durable when the await returns. Writes that
must be atomic together (a fill and the position it moves; a transition and its audit entry) run
as one job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from errors import IllegalTransition, StorageError
from models import (
    TERMINAL_STATUSES,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TradeStatus,
)
from storage.db import Database

Audit = tuple[str, Mapping[str, Any]]
"""An audit entry to write in the same transaction: (event name, detail)."""


def now_iso() -> str:
    """Return the current UTC time as ISO-8601 text with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(detail: Mapping[str, Any]) -> str:
    return orjson.dumps(detail, default=str).decode()


_AUDIT_SQL = (
    "INSERT INTO audit_log (at, event, strategy, client_order_id, detail) VALUES (?,?,?,?,?)"
)


def _audit_params(
    event: str,
    detail: Mapping[str, Any],
    *,
    strategy: str | None = None,
    client_order_id: str | None = None,
) -> tuple[Any, ...]:
    return (now_iso(), event, strategy, client_order_id, _json(detail))


def _append_audit(
    c: sqlite3.Connection,
    event: str,
    detail: Mapping[str, Any],
    *,
    strategy: str | None = None,
    client_order_id: str | None = None,
) -> None:
    c.execute(
        _AUDIT_SQL,
        _audit_params(event, detail, strategy=strategy, client_order_id=client_order_id),
    )


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
        )

    @property
    def remaining(self) -> Decimal:
        return max(self.size - self.size_matched, Decimal(0))


@dataclass(frozen=True)
class OrderEvent:
    client_order_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    size_matched: Decimal
    detail: str
    at: str


_ORDER_INSERT_SQL = (
    "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size,"
    " order_type, expiration, post_only, reason, status, venue_order_id,"
    " payload_hash, signed_order, size_matched, detail, created_at, updated_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'0',?,?,?)"
)


NON_TERMINAL_SQL = (
    "SELECT * FROM orders INDEXED BY orders_open"
    " WHERE status NOT IN ('FILLED','CANCELED','EXPIRED','REJECTED') ORDER BY rowid"
)
"""The open orders. INDEXED BY: without statistics SQLite would rather walk the whole table in
rowid order than sort, and the table keeps every order ever placed; the partial index (whose
WHERE clause is this query's) holds only the open ones."""

_ORDER_UPDATE_SQL = (
    "UPDATE orders SET status = ?, venue_order_id = COALESCE(?, venue_order_id),"
    " size_matched = COALESCE(?, size_matched), avg_price = COALESCE(?, avg_price),"
    " detail = ?, updated_at = ? WHERE client_order_id = ?"
)


class OrderNotFound(StorageError):
    """A transition named a client order id the journal has never seen."""


class OrderJournal:
    """The durable record of every order and every status it has had."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

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
    ) -> None:
        """Insert a new order row (PENDING before sending; REJECTED for a local refusal).

        `signed_order` is the signed order as the broker can re-send it (JSON, no credential,
        no API key id), so reconciliation can re-send the identical order.
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
        )
        audit_params = (
            _audit_params(
                audit[0], audit[1], strategy=req.strategy, client_order_id=req.client_order_id
            )
            if audit is not None
            else None
        )

        def job(c: sqlite3.Connection) -> None:
            c.execute(_ORDER_INSERT_SQL, params)
            if audit_params is not None:
                c.execute(_AUDIT_SQL, audit_params)

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
        audit_detail = _json(audit[1]) if audit is not None else None

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
                c.execute(_AUDIT_SQL, (audit_at, audit[0], row[1], client_order_id, audit_detail))
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

    async def get_by_venue_id(self, venue_order_id: str) -> JournalRow | None:
        r = await self._db.fetchone(
            "SELECT * FROM orders WHERE venue_order_id = ?", (venue_order_id,)
        )
        return JournalRow.from_row(r) if r else None

    async def non_terminal(self) -> list[JournalRow]:
        """Every order that may still be in flight or resting: what reconciliation must settle."""
        rows = await self._db.fetchall(NON_TERMINAL_SQL)
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

    async def counts_by_status(self) -> dict[OrderStatus, int]:
        rows = await self._db.fetchall("SELECT status, COUNT(*) FROM orders GROUP BY status")
        return {OrderStatus(r[0]): int(r[1]) for r in rows}


def _position_from_row(token_id: str, r: sqlite3.Row | tuple[Any, ...] | None) -> Position:
    if r is None:
        return Position(token_id=token_id)
    return Position(
        token_id=token_id, size=Decimal(r[0]), avg_cost=Decimal(r[1]), realized_pnl=Decimal(r[2])
    )


def _upsert_position(c: sqlite3.Connection, pos: Position) -> None:
    c.execute(
        "INSERT INTO positions (token_id, size, avg_cost, realized_pnl, updated_at)"
        " VALUES (?,?,?,?,?) ON CONFLICT(token_id) DO UPDATE SET size = excluded.size,"
        " avg_cost = excluded.avg_cost, realized_pnl = excluded.realized_pnl,"
        " updated_at = excluded.updated_at",
        (pos.token_id, str(pos.size), str(pos.avg_cost), str(pos.realized_pnl), now_iso()),
    )


def _replay_position(c: sqlite3.Connection, token_id: str) -> Position:
    """The position in `token_id` from its fills that did not fail, applied in recorded order."""
    pos = Position(token_id=token_id)
    for side, price, size, fee in c.execute(
        "SELECT side, price, size, fee FROM fills WHERE token_id = ? AND status != ?"
        " ORDER BY rowid",
        (token_id, TradeStatus.FAILED.value),
    ):
        pos = pos.apply(Side(side), Decimal(price), Decimal(size), Decimal(fee))
    return pos


class FillRepository:
    """Fills of our orders, and the positions they move — written together, idempotently."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def record(self, fill: Fill) -> Position | None:
        """Store `fill` and apply it to its position; return the new position.

        A fill already stored (same trade id and venue order id) only updates its trade status and
        returns None: the position moves once per fill however often the venue reports it.

        A trade that moves to FAILED never settled: in the same transaction the position is
        rebuilt from the token's fills that did not fail (in the order they were recorded), a
        `fill_failed` audit entry is written, and the new position is returned. A fill first seen
        as FAILED is stored (and audited) and moves nothing.
        """

        def job(c: sqlite3.Connection) -> Position | None:
            cur = c.execute(
                "INSERT OR IGNORE INTO fills (trade_id, venue_order_id, client_order_id, token_id,"
                " side, price, size, fee, role, status, ts, recorded_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    fill.trade_id,
                    fill.venue_order_id,
                    fill.client_order_id,
                    fill.token_id,
                    str(fill.side),
                    str(fill.price),
                    str(fill.size),
                    str(fill.fee),
                    str(fill.role),
                    str(fill.status),
                    fill.ts.isoformat(timespec="microseconds"),
                    now_iso(),
                ),
            )
            failed = fill.status is TradeStatus.FAILED
            if cur.rowcount == 0:
                old = c.execute(
                    "SELECT status FROM fills WHERE trade_id = ? AND venue_order_id = ?",
                    (fill.trade_id, fill.venue_order_id),
                ).fetchone()
                c.execute(
                    "UPDATE fills SET status = ? WHERE trade_id = ? AND venue_order_id = ?",
                    (str(fill.status), fill.trade_id, fill.venue_order_id),
                )
                was_failed = old is not None and old[0] == TradeStatus.FAILED.value
                if was_failed == failed:
                    return None
                before = _position_from_row(
                    fill.token_id,
                    c.execute(
                        "SELECT size, avg_cost, realized_pnl FROM positions WHERE token_id = ?",
                        (fill.token_id,),
                    ).fetchone(),
                )
                replayed = _replay_position(c, fill.token_id)
                _upsert_position(c, replayed)
                _append_audit(
                    c,
                    "fill_failed" if failed else "fill_restored",
                    {
                        "trade_id": fill.trade_id,
                        "venue_order_id": fill.venue_order_id,
                        "side": str(fill.side),
                        "price": str(fill.price),
                        "size": str(fill.size),
                        "position_before": str(before.size),
                        "position_after": str(replayed.size),
                        "realized_pnl_after": str(replayed.realized_pnl),
                    },
                    client_order_id=fill.client_order_id,
                )
                return replayed
            if failed:
                _append_audit(
                    c,
                    "fill_failed",
                    {
                        "trade_id": fill.trade_id,
                        "venue_order_id": fill.venue_order_id,
                        "first_seen_failed": True,
                    },
                    client_order_id=fill.client_order_id,
                )
                return None
            r = c.execute(
                "SELECT size, avg_cost, realized_pnl FROM positions WHERE token_id = ?",
                (fill.token_id,),
            ).fetchone()
            pos = _position_from_row(fill.token_id, r).apply(
                fill.side, fill.price, fill.size, fill.fee
            )
            _upsert_position(c, pos)
            return pos

        return await self._db.write(job)

    async def for_order(self, client_order_id: str) -> list[Fill]:
        rows = await self._db.fetchall(
            "SELECT * FROM fills WHERE client_order_id = ? ORDER BY ts", (client_order_id,)
        )
        return [self._fill(r) for r in rows]

    async def all(self, *, limit: int = 10_000) -> list[Fill]:
        rows = await self._db.fetchall("SELECT * FROM fills ORDER BY ts LIMIT ?", (limit,))
        return [self._fill(r) for r in rows]

    async def position(self, token_id: str) -> Position:
        r = await self._db.fetchone(
            "SELECT size, avg_cost, realized_pnl FROM positions WHERE token_id = ?", (token_id,)
        )
        return _position_from_row(token_id, r)

    async def positions(self, *, include_flat: bool = False) -> list[Position]:
        rows = await self._db.fetchall(
            "SELECT token_id, size, avg_cost, realized_pnl FROM positions ORDER BY token_id"
        )
        out = [_position_from_row(r[0], tuple(r)[1:]) for r in rows]
        return out if include_flat else [p for p in out if p.size != 0 or p.realized_pnl != 0]

    @staticmethod
    def _fill(r: sqlite3.Row) -> Fill:
        return Fill(
            trade_id=r["trade_id"],
            venue_order_id=r["venue_order_id"],
            client_order_id=r["client_order_id"],
            token_id=r["token_id"],
            side=r["side"],
            price=r["price"],
            size=r["size"],
            fee=r["fee"],
            role=r["role"],
            status=r["status"],
            ts=datetime.fromisoformat(r["ts"]),
        )


class CursorRepository:
    """Per-source high-water marks and the ids already handled (dedupe that survives restarts)."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def get(self, source: str) -> str | None:
        r = await self._db.fetchone("SELECT value FROM cursors WHERE source = ?", (source,))
        return str(r[0]) if r else None

    async def is_seen(self, source: str, item_id: str) -> bool:
        r = await self._db.fetchone(
            "SELECT 1 FROM seen_ids WHERE source = ? AND id = ?", (source, item_id)
        )
        return r is not None

    async def seen_among(self, source: str, item_ids: Iterable[str]) -> set[str]:
        ids = list(item_ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._db.fetchall(
                f"SELECT id FROM seen_ids WHERE source = ? AND id IN ({marks})", (source, *chunk)
            )
            found.update(str(r[0]) for r in rows)
        return found

    async def advance(
        self, source: str, *, value: str | None = None, seen: Iterable[str] = ()
    ) -> int:
        """Mark `seen` ids handled and/or move the cursor to `value`, atomically.

        Return how many ids were newly marked (0 means they had all been seen already).
        """
        ts = now_iso()
        ids = list(seen)

        def job(c: sqlite3.Connection) -> int:
            added = 0
            for item_id in ids:
                added += c.execute(
                    "INSERT OR IGNORE INTO seen_ids (source, id, seen_at) VALUES (?,?,?)",
                    (source, item_id, ts),
                ).rowcount
            if value is not None:
                c.execute(
                    "INSERT INTO cursors (source, value, updated_at) VALUES (?,?,?)"
                    " ON CONFLICT(source) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (source, value, ts),
                )
            return added

        return await self._db.write(job)

    async def prune_seen(self, source: str, *, before_iso: str) -> int:
        return await self._db.execute(
            "DELETE FROM seen_ids WHERE source = ? AND seen_at < ?", (source, before_iso)
        )


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    event: str
    strategy: str | None
    client_order_id: str | None
    detail: dict[str, Any]


class AuditLog:
    """Append-only record of decisions (refusals, halts, resumes, reconciliations)."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def append(
        self,
        event: str,
        *,
        strategy: str | None = None,
        client_order_id: str | None = None,
        **detail: Any,
    ) -> None:
        def job(c: sqlite3.Connection) -> None:
            _append_audit(c, event, detail, strategy=strategy, client_order_id=client_order_id)

        await self._db.write(job)

    async def tail(self, *, limit: int = 100, event: str | None = None) -> list[AuditEntry]:
        if event is None:
            rows = await self._db.fetchall(
                "SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._db.fetchall(
                "SELECT * FROM audit_log WHERE event = ? ORDER BY id DESC LIMIT ?", (event, limit)
            )
        return [
            AuditEntry(
                id=r["id"],
                at=r["at"],
                event=r["event"],
                strategy=r["strategy"],
                client_order_id=r["client_order_id"],
                detail=orjson.loads(r["detail"]),
            )
            for r in rows
        ]


class StateRepository:
    """Small durable key/value facts about the daemon (trading state, checkpoints)."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        r = await self._db.fetchone("SELECT value FROM daemon_state WHERE key = ?", (key,))
        return str(r[0]) if r else None

    async def set(self, key: str, value: str, *, audit: Audit | None = None) -> None:
        ts = now_iso()

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO daemon_state (key, value, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (key, value, ts),
            )
            if audit is not None:
                _append_audit(c, audit[0], audit[1])

        await self._db.write(job)


COPY_STRATEGY = "copy"


@dataclass(frozen=True)
class CopyIntent:
    """A copy order decided but maybe not sent yet: the exact request and what it copies."""

    request: OrderRequest
    wallet: str
    dedupe_key: str
    leader_ts: int


class CopyIntentRepository:
    """The copy trader's ledger: per-wallet cursors, leader trades seen, and pending intents.

    Cursors and seen keys live in `cursors`/`seen_ids` under the source `copy:<wallet>`;
    intents in `copy_intents` (migration 2). `handle` writes all three with the audit entry in
    one transaction, which is what makes a copy exactly-once across crashes.
    """

    def __init__(self, *, db: Database) -> None:
        self._db = db

    @staticmethod
    def source(wallet: str) -> str:
        """Return the cursor / seen-set source name of a followed wallet."""
        return f"copy:{wallet}"

    async def cursor(self, wallet: str) -> int | None:
        """Return the timestamp (unix s) of the last leader trade handled, if any."""
        r = await self._db.fetchone(
            "SELECT value FROM cursors WHERE source = ?", (self.source(wallet),)
        )
        return int(r[0]) if r else None

    async def seen_among(self, wallet: str, keys: Iterable[str]) -> set[str]:
        """Return which of `keys` (leader trade dedupe keys) were handled already."""
        return await CursorRepository(db=self._db).seen_among(self.source(wallet), keys)

    async def handle(
        self,
        wallet: str,
        dedupe_key: str,
        timestamp: int,
        *,
        audit: Audit,
        intent: CopyIntent | None = None,
    ) -> bool:
        """Mark a leader trade handled, move the cursor, store `intent` and audit, atomically.

        The cursor only moves forward. Return False (writing nothing) if the trade had been
        handled already.
        """
        source = self.source(wallet)
        ts = now_iso()
        coid = intent.request.client_order_id if intent is not None else None

        def job(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO seen_ids (source, id, seen_at) VALUES (?,?,?)",
                (source, dedupe_key, ts),
            )
            if cur.rowcount == 0:
                return False
            c.execute(
                "INSERT INTO cursors (source, value, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(source) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at"
                " WHERE CAST(excluded.value AS INTEGER) > CAST(cursors.value AS INTEGER)",
                (source, str(timestamp), ts),
            )
            if intent is not None:
                c.execute(
                    "INSERT OR REPLACE INTO copy_intents (client_order_id, wallet, dedupe_key,"
                    " leader_ts, request, created_at) VALUES (?,?,?,?,?,?)",
                    (
                        coid,
                        intent.wallet,
                        intent.dedupe_key,
                        intent.leader_ts,
                        intent.request.model_dump_json(),
                        ts,
                    ),
                )
            _append_audit(c, audit[0], audit[1], strategy=COPY_STRATEGY, client_order_id=coid)
            return True

        result: bool = await self._db.write(job)
        return result

    async def pending(self) -> list[CopyIntent]:
        """Every stored intent not closed yet, oldest first."""
        rows = await self._db.fetchall(
            "SELECT request, wallet, dedupe_key, leader_ts FROM copy_intents ORDER BY rowid"
        )
        return [
            CopyIntent(
                request=OrderRequest.model_validate_json(r["request"]),
                wallet=r["wallet"],
                dedupe_key=r["dedupe_key"],
                leader_ts=int(r["leader_ts"]),
            )
            for r in rows
        ]

    async def close(self, client_order_id: str, event: str, detail: Mapping[str, Any]) -> None:
        """Delete the intent for `client_order_id` and audit how it ended, in one write."""

        def job(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM copy_intents WHERE client_order_id = ?", (client_order_id,))
            _append_audit(c, event, detail, strategy=COPY_STRATEGY, client_order_id=client_order_id)

        await self._db.write(job)

    async def prune_seen(self, wallet: str, *, before_iso: str) -> int:
        """Forget seen keys of `wallet` handled before `before_iso` (older than any re-fetch)."""
        return await CursorRepository(db=self._db).prune_seen(
            self.source(wallet), before_iso=before_iso
        )


@dataclass(frozen=True)
class Repositories:
    """Every repository over one database, built once by the orchestrator."""

    db: Database
    orders: OrderJournal
    fills: FillRepository
    cursors: CursorRepository
    audit: AuditLog
    state: StateRepository
    copy_intents: CopyIntentRepository

    @classmethod
    def over(cls, db: Database) -> Repositories:
        return cls(
            db=db,
            orders=OrderJournal(db=db),
            fills=FillRepository(db=db),
            cursors=CursorRepository(db=db),
            audit=AuditLog(db=db),
            state=StateRepository(db=db),
            copy_intents=CopyIntentRepository(db=db),
        )
