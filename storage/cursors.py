"""Per-source cursors and the ids already handled: dedupe that survives restarts.

Owns the `cursors` and `seen_ids` tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from storage.audit import now_iso
from storage.db import Database


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

    async def rewind(self, source: str, to: int) -> int | None:
        """Move the whole-number cursor `source` (a time in Unix seconds, the venue fills'
        checkpoint) back to `to` if it is later, or set it if there is none; never forward.
        Return what it was (None if there was none)."""
        ts = now_iso()

        def job(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT value FROM cursors WHERE source = ?", (source,)).fetchone()
            was = int(row[0]) if row is not None else None
            if was is None or was > to:
                c.execute(
                    "INSERT INTO cursors (source, value, updated_at) VALUES (?,?,?)"
                    " ON CONFLICT(source) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (source, str(to), ts),
                )
            return was

        return await self._db.write(job)

    async def prune_seen(self, source: str, *, before_iso: str) -> int:
        return await self._db.execute(
            "DELETE FROM seen_ids WHERE source = ? AND seen_at < ?", (source, before_iso)
        )
