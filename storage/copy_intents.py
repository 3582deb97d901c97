"""The copy trader's ledger: per-wallet cursors, leader trades seen, and pending intents.

Owns the `copy_intents` table and the `copy:<wallet>` and `copy:<name>:<wallet>` sources in
`cursors`/`seen_ids`. Each copy trader instance (`COPY_NAME`) has its own ledger: a repository
reads and writes only its strategy's rows, so two instances following the same wallet each
copy its trades once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models import OrderRequest
from storage.audit import Audit, append_audit, now_iso
from storage.cursors import CursorRepository
from storage.db import Database

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
    one transaction, which is what makes a copy exactly-once across crashes. Everything is the
    copy trader `strategy`'s (see `scoped`).
    """

    def __init__(self, *, db: Database, strategy: str = COPY_STRATEGY) -> None:
        self._db = db
        self.strategy = strategy

    def scoped(self, strategy: str) -> CopyIntentRepository:
        """The ledger of the copy trader named `strategy`, over the same database."""
        return CopyIntentRepository(db=self._db, strategy=strategy)

    def source(self, wallet: str) -> str:
        """Return the cursor / seen-set source name of a followed wallet: `copy:<wallet>` for
        the default instance (as before instances had names), `copy:<name>:<wallet>` for
        another (a wallet is an address, `0x…`, and a name starts with a letter: the two forms
        cannot meet)."""
        if self.strategy == COPY_STRATEGY:
            return f"copy:{wallet}"
        return f"copy:{self.strategy}:{wallet}"

    async def cursor(self, wallet: str) -> int | None:
        """Return the timestamp (unix s) of the last leader trade handled, if any."""
        r = await self._db.fetchone(
            "SELECT value FROM cursors WHERE source = ?", (self.source(wallet),)
        )
        return int(r[0]) if r else None

    async def start_following(
        self, wallet: str, *, cursor: int, seen: Iterable[str], audit: Audit
    ) -> bool:
        """First start for `wallet`: mark `seen` (its existing trades) handled and set its
        cursor, with the audit entry, atomically. Return False (writing nothing) if the wallet
        has a cursor already (started before)."""
        source = self.source(wallet)
        ts = now_iso()
        keys = list(seen)

        def job(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO cursors (source, value, updated_at) VALUES (?,?,?)",
                (source, str(cursor), ts),
            )
            if cur.rowcount == 0:
                return False
            c.executemany(
                "INSERT OR IGNORE INTO seen_ids (source, id, seen_at) VALUES (?,?,?)",
                [(source, k, ts) for k in keys],
            )
            append_audit(c, audit[0], audit[1], strategy=self.strategy)
            return True

        result: bool = await self._db.write(job)
        return result

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
                    "INSERT OR REPLACE INTO copy_intents (client_order_id, strategy, wallet,"
                    " dedupe_key, leader_ts, request, created_at) VALUES (?,?,?,?,?,?,?)",
                    (
                        coid,
                        self.strategy,
                        intent.wallet,
                        intent.dedupe_key,
                        intent.leader_ts,
                        intent.request.model_dump_json(),
                        ts,
                    ),
                )
            append_audit(c, audit[0], audit[1], strategy=self.strategy, client_order_id=coid)
            return True

        result: bool = await self._db.write(job)
        return result

    async def pending(self) -> list[CopyIntent]:
        """Every stored intent not closed yet, oldest first."""
        rows = await self._db.fetchall(
            "SELECT request, wallet, dedupe_key, leader_ts FROM copy_intents WHERE strategy = ?"
            " ORDER BY rowid",
            (self.strategy,),
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
            c.execute(
                "DELETE FROM copy_intents WHERE client_order_id = ? AND strategy = ?",
                (client_order_id, self.strategy),
            )
            append_audit(c, event, detail, strategy=self.strategy, client_order_id=client_order_id)

        await self._db.write(job)

    async def prune_seen(self, wallet: str, *, before_iso: str) -> int:
        """Forget seen keys of `wallet` handled before `before_iso` (older than any re-fetch)."""
        return await CursorRepository(db=self._db).prune_seen(
            self.source(wallet), before_iso=before_iso
        )
