"""Fills of our orders and the positions they move.

Owns the `fills` and `positions` tables. A fill and the position it moves are written in one
transaction, idempotently: a fill reported twice moves its position once, and a trade that
turns FAILED rebuilds the position from the fills that did not fail.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from decimal import Decimal
from typing import Any

from models import Fill, Position, Side, TradeStatus
from storage.audit import append_audit, now_iso
from storage.db import Database


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
                append_audit(
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
                append_audit(
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
