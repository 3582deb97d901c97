"""The redemption journal: owns the `redemptions` table (migration 0006).

Every step of a redemption is a row transition, written before the step's effect can be lost:
the signed payload is stored with status SENDING *before* it leaves the process, so a restart
(even after `kill -9`) finds it and resumes by looking it up, never by signing again. At most
one unfinished row (SENDING, SENT, UNKNOWN) exists per (wallet, condition); the database's
partial unique index enforces it. A redemption that paid moves the positions it redeemed in the
same transaction as its REDEEMED row (each strategy's shares sold at the payout, as a fill
would), with an audit entry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from models import Position
from storage.audit import append_audit, now_iso
from storage.db import Database
from storage.fills import upsert_position

OPEN_STATUSES = ("SENDING", "SENT", "UNKNOWN")
TERMINAL_STATUSES = ("REDEEMED", "ZERO_PAYOUT", "FAILED", "ALREADY_REDEEMED")


class RedemptionConflict(Exception):
    """An unfinished redemption of this (wallet, condition) is already journaled."""


@dataclass(frozen=True)
class Redemption:
    """One journaled redemption as read back."""

    id: int
    wallet: str
    wallet_type: str
    condition_id: str
    kind: str
    shares: dict[str, tuple[Decimal, Decimal]]
    """token id -> (shares redeemed, pUSD per share)"""
    expected_payout: Decimal
    balance_before: Decimal
    status: str
    payload: str | None
    tx_hash: str | None
    relayer_id: str | None
    relayer_nonce: str | None
    payout: Decimal | None
    error: str | None
    created_at: str
    updated_at: str


def _row(r: sqlite3.Row | tuple[Any, ...]) -> Redemption:
    return Redemption(
        id=int(r[0]),
        wallet=str(r[1]),
        wallet_type=str(r[2]),
        condition_id=str(r[3]),
        kind=str(r[4]),
        shares={k: (Decimal(v[0]), Decimal(v[1])) for k, v in json.loads(r[5]).items()},
        expected_payout=Decimal(r[6]),
        balance_before=Decimal(r[7]),
        status=str(r[8]),
        payload=r[9],
        tx_hash=r[10],
        relayer_id=r[11],
        relayer_nonce=r[12],
        payout=Decimal(r[13]) if r[13] is not None else None,
        error=r[14],
        created_at=str(r[15]),
        updated_at=str(r[16]),
    )


COLUMNS = (
    "id, wallet, wallet_type, condition_id, kind, shares, expected_payout, balance_before, status,"
    " payload, tx_hash, relayer_id, relayer_nonce, payout, error, created_at, updated_at"
)


class RedemptionRepository:
    """Reads and transitions of the redemption journal."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def statuses(self, wallet: str, condition_id: str) -> dict[str, int]:
        """How many of `wallet`'s redemptions of `condition_id` are in each status."""
        rows = await self._db.fetchall(
            "SELECT status, COUNT(*) FROM redemptions WHERE wallet = ? AND condition_id = ?"
            " GROUP BY status",
            (wallet.lower(), condition_id),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def open(self, wallet: str) -> list[Redemption]:
        """Unfinished redemptions of `wallet` (SENDING, SENT, UNKNOWN), oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {COLUMNS} FROM redemptions WHERE wallet = ? AND status IN (?,?,?) ORDER BY id",
            (wallet.lower(), *OPEN_STATUSES),
        )
        return [_row(r) for r in rows]

    async def all(self, *, limit: int = 1000) -> list[Redemption]:
        rows = await self._db.fetchall(
            f"SELECT {COLUMNS} FROM redemptions ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_row(r) for r in rows]

    async def get(self, rid: int) -> Redemption:
        r = await self._db.fetchone(f"SELECT {COLUMNS} FROM redemptions WHERE id = ?", (rid,))
        if r is None:
            raise KeyError(f"no redemption {rid}")
        return _row(r)

    async def begin(
        self,
        *,
        wallet: str,
        wallet_type: str,
        condition_id: str,
        kind: str,
        shares: dict[str, tuple[Decimal, Decimal]],
        expected_payout: Decimal,
        balance_before: Decimal,
        status: str,
        payload: str | None = None,
        tx_hash: str | None = None,
        relayer_nonce: str | None = None,
        error: str | None = None,
    ) -> int:
        """Journal a redemption (SENDING with its signed payload, or ALREADY_REDEEMED); raise
        `RedemptionConflict` if one is unfinished."""
        ts = now_iso()

        def job(c: sqlite3.Connection) -> int:
            try:
                cur = c.execute(
                    "INSERT INTO redemptions (wallet, wallet_type, condition_id, kind, shares,"
                    " expected_payout, balance_before, status, payload, tx_hash, relayer_nonce,"
                    " error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        wallet.lower(),
                        wallet_type,
                        condition_id,
                        kind,
                        json.dumps({k: [str(v[0]), str(v[1])] for k, v in shares.items()}),
                        str(expected_payout),
                        str(balance_before),
                        status,
                        payload,
                        tx_hash,
                        relayer_nonce,
                        error,
                        ts,
                        ts,
                    ),
                )
            except sqlite3.IntegrityError as e:
                raise RedemptionConflict(
                    f"an unfinished redemption of {condition_id} for {wallet} is journaled"
                ) from e
            append_audit(
                c,
                f"redemption_{status.lower()}",
                {"condition_id": condition_id, "kind": kind, "wallet_type": wallet_type},
            )
            return int(cur.lastrowid or 0)

        return await self._db.write(job)

    async def transition(self, rid: int, status: str, **fields: Any) -> None:
        """Move a redemption to `status`, setting `tx_hash`, `relayer_id`, `payout`, `error`."""
        allowed = {"tx_hash", "relayer_id", "payout", "error", "payload", "relayer_nonce"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown redemption fields {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        vals = [str(v) if isinstance(v, Decimal) else v for v in fields.values()]

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                f"UPDATE redemptions SET status = ?, updated_at = ?{', ' + sets if sets else ''}"
                " WHERE id = ?",
                (status, now_iso(), *vals, rid),
            )
            append_audit(c, f"redemption_{status.lower()}", {"id": rid, **_printable(fields)})

        await self._db.write(job)

    async def settle(
        self,
        rid: int,
        *,
        payout: Decimal,
        positions: Iterable[Position],
        status: str = "REDEEMED",
    ) -> None:
        """REDEEMED (or ALREADY_REDEEMED), with the positions it moved, in one transaction."""
        moved = list(positions)

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE redemptions SET status = ?, payout = ?, updated_at = ? WHERE id = ?",
                (status, str(payout), now_iso(), rid),
            )
            for p in moved:
                upsert_position(c, p)
            append_audit(
                c,
                f"redemption_{status.lower()}",
                {"id": rid, "payout": str(payout), "positions": [p.token_id for p in moved]},
            )

        await self._db.write(job)


def _printable(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in fields.items():
        if k == "payload":
            continue  # signed bytes: long and of no use in the audit log
        out[k] = str(v) if isinstance(v, Decimal) else v
    return out
