"""Small durable key/value facts about the daemon (trading state, checkpoints).

Owns the `daemon_state` table; a change of state and its audit entry are written together.
"""

from __future__ import annotations

import sqlite3

from storage.audit import Audit, append_audit, now_iso
from storage.db import Database


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
                append_audit(c, audit[0], audit[1])

        await self._db.write(job)
