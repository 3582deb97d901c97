"""The audit log: the append-only record of decisions, and how any write adds its entry.

Owns the `audit_log` table. Other repositories write their audit entry in their own transaction
through `append_audit` / `AUDIT_SQL` (an `Audit` is the (event, detail) pair they carry); `now_iso`
is the timestamp format every table here stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.db import Database

Audit = tuple[str, Mapping[str, Any]]
"""An audit entry to write in the same transaction: (event name, detail)."""


def now_iso() -> str:
    """Return the current UTC time as ISO-8601 text with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def detail_json(detail: Mapping[str, Any]) -> str:
    """Return an audit detail as the JSON text the `detail` column holds."""
    return orjson.dumps(detail, default=str).decode()


AUDIT_SQL = (
    "INSERT INTO audit_log (at, event, strategy, client_order_id, detail) VALUES (?,?,?,?,?)"
)
"""Insert one audit entry; parameters as `audit_row` builds them."""


def audit_row(
    event: str,
    detail: Mapping[str, Any],
    *,
    strategy: str | None = None,
    client_order_id: str | None = None,
) -> tuple[Any, ...]:
    """Return the `AUDIT_SQL` parameters of one entry, stamped now."""
    return (now_iso(), event, strategy, client_order_id, detail_json(detail))


def append_audit(
    c: sqlite3.Connection,
    event: str,
    detail: Mapping[str, Any],
    *,
    strategy: str | None = None,
    client_order_id: str | None = None,
) -> None:
    """Write one audit entry inside the caller's transaction `c`."""
    c.execute(
        AUDIT_SQL,
        audit_row(event, detail, strategy=strategy, client_order_id=client_order_id),
    )


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log as read back."""

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
            append_audit(c, event, detail, strategy=strategy, client_order_id=client_order_id)

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
