"""Fills of our orders and the positions they move.

Owns the `fills` and `positions` tables. A fill and the position it moves are written in one
transaction, idempotently: a fill reported twice moves its position once, and a trade that
turns FAILED rebuilds the position from the fills that did not fail.

Positions are kept per (strategy, token). A fill is attributed once, when first recorded, to
the strategy of our order it belongs to (its client order id, else its venue order id, in the
`orders` journal); a fill of no order of ours (a manual trade on the same account, an order
missing from the journal) is booked under `UNATTRIBUTED`. The attribution is stored on the
fill, so a replay moves the same position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from models import UNATTRIBUTED, Fill, Position, Side, TradeStatus
from storage.audit import append_audit, now_iso
from storage.db import Database


def _position_from_row(
    strategy: str, token_id: str, r: sqlite3.Row | tuple[Any, ...] | None
) -> Position:
    if r is None:
        return Position(token_id=token_id, strategy=strategy)
    return Position(
        token_id=token_id,
        strategy=strategy,
        size=Decimal(r[0]),
        avg_cost=Decimal(r[1]),
        realized_pnl=Decimal(r[2]),
    )


def _read_position(c: sqlite3.Connection, strategy: str, token_id: str) -> Position:
    r = c.execute(
        "SELECT size, avg_cost, realized_pnl FROM positions WHERE strategy = ? AND token_id = ?",
        (strategy, token_id),
    ).fetchone()
    return _position_from_row(strategy, token_id, r)


def upsert_position(c: sqlite3.Connection, pos: Position) -> None:
    c.execute(
        "INSERT INTO positions (strategy, token_id, size, avg_cost, realized_pnl, updated_at)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT(strategy, token_id) DO UPDATE SET"
        " size = excluded.size, avg_cost = excluded.avg_cost,"
        " realized_pnl = excluded.realized_pnl, updated_at = excluded.updated_at",
        (
            pos.strategy,
            pos.token_id,
            str(pos.size),
            str(pos.avg_cost),
            str(pos.realized_pnl),
            now_iso(),
        ),
    )


Moves = list[tuple[Position, Position]]  # rows written: (before, after), in order


class _Put(Protocol):
    def __call__(self, pos: Position, before: Position | None = None) -> None: ...


def _writer(c: sqlite3.Connection, moves: Moves) -> _Put:
    """Upsert a position, noting it and the row it replaces in `moves` (`before`, when the
    caller has just read that row, saves reading it again)."""

    def put(pos: Position, before: Position | None = None) -> None:
        if before is None:
            before = _read_position(c, pos.strategy, pos.token_id)
        moves.append((before, pos))
        upsert_position(c, pos)

    return put


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a fill did: the fill's own position after it, and every position row
    the transaction wrote, in order, each with the row it replaced (empty if none)."""

    position: Position
    moves: tuple[tuple[Position, Position], ...]


def spill(
    held: Iterable[Position], excess: Decimal, price: Decimal
) -> list[tuple[Position, Decimal]]:
    """Take `excess` shares sold at `price` from the strategies' positions, the largest holding
    first (ties by name); return each position after its sale, with the shares it gave."""
    out = []
    for p in sorted(held, key=lambda p: (-p.size, p.strategy)):
        if excess <= 0:
            break
        if p.strategy == UNATTRIBUTED or p.size <= 0:
            continue
        take = min(excess, p.size)
        out.append((p.apply(Side.SELL, price, take), take))
        excess -= take
    return out


def replay_token(c: sqlite3.Connection, token_id: str) -> dict[str, Position]:
    """Every strategy's position in `token_id` from the token's fills that did not fail,
    applied in recorded order by the rules `record` applies (a SELL no order of ours explains
    takes unattributed shares first, then the strategies')."""
    book: dict[str, Position] = {}
    for strategy, side, price, size, fee in c.execute(
        "SELECT strategy, side, price, size, fee FROM fills WHERE token_id = ? AND status != ?"
        " ORDER BY rowid",
        (token_id, TradeStatus.FAILED.value),
    ):
        strategy, side, price, size = str(strategy), Side(side), Decimal(price), Decimal(size)
        before = book.get(strategy) or Position(token_id=token_id, strategy=strategy)
        book[strategy] = before.apply(side, price, size, Decimal(fee))
        if strategy == UNATTRIBUTED and side is Side.SELL and size > before.size:
            for p, _ in spill(book.values(), size - before.size, price):
                book[p.strategy] = p
    return book


def _take_from_strategies(c: sqlite3.Connection, fill: Fill, excess: Decimal, put: _Put) -> None:
    """A SELL no order of ours explains sold more than the unattributed holding: the shares
    left the account, so the rest comes out of the strategies that hold the token (the largest
    holding first), each selling at the fill's price. Audited per strategy."""
    rows = c.execute(
        "SELECT strategy, size, avg_cost, realized_pnl FROM positions"
        " WHERE token_id = ? AND strategy != ?",
        (fill.token_id, UNATTRIBUTED),
    ).fetchall()
    held = [_position_from_row(str(r[0]), fill.token_id, tuple(r)[1:]) for r in rows]
    for p, take in spill(held, excess, fill.price):
        put(p)
        append_audit(
            c,
            "unattributed_sell_took_from_strategy",
            {
                "trade_id": fill.trade_id,
                "venue_order_id": fill.venue_order_id,
                "token_id": fill.token_id,
                "size": str(take),
                "price": str(fill.price),
            },
            strategy=p.strategy,
        )


def attribute(c: sqlite3.Connection, client_order_id: str | None, venue_order_id: str) -> str:
    """The strategy of our order behind a fill, or `UNATTRIBUTED` if no journaled order is."""
    r = None
    if client_order_id is not None:
        r = c.execute(
            "SELECT strategy FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
    if r is None:
        r = c.execute(
            "SELECT strategy FROM orders WHERE venue_order_id = ?", (venue_order_id,)
        ).fetchone()
    return str(r[0]) if r is not None else UNATTRIBUTED


class FillRepository:
    """Fills of our orders, and the positions they move — written together, idempotently."""

    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def record(self, fill: Fill) -> Position | None:
        """Store `fill` and apply it to its position; return the new position (`record_moves`
        says more)."""
        recorded = await self.record_moves(fill)
        return recorded.position if recorded is not None else None

    async def record_moves(self, fill: Fill) -> Recorded | None:
        """Store `fill` and apply it to its position; return the new position with every row
        the transaction wrote and the row each replaced (what an in-memory mirror needs).

        A fill already stored (same trade id and venue order id) only updates its trade status and
        returns None: the position moves once per fill however often the venue reports it.

        A trade that moves to FAILED never settled: in the same transaction the position is
        rebuilt from the token's fills that did not fail (in the order they were recorded), a
        `fill_failed` audit entry is written, and the new position is returned. A fill first seen
        as FAILED is stored (and audited) and moves nothing.
        """

        def job(c: sqlite3.Connection) -> Recorded | None:
            moves: Moves = []
            put = _writer(c, moves)
            strategy = attribute(c, fill.client_order_id, fill.venue_order_id)
            cur = c.execute(
                "INSERT OR IGNORE INTO fills (trade_id, venue_order_id, client_order_id, strategy,"
                " token_id, side, price, size, fee, role, status, ts, recorded_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    fill.trade_id,
                    fill.venue_order_id,
                    fill.client_order_id,
                    strategy,
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
                    "SELECT status, strategy FROM fills WHERE trade_id = ? AND venue_order_id = ?",
                    (fill.trade_id, fill.venue_order_id),
                ).fetchone()
                if old is not None:
                    strategy = str(old[1])  # attributed when first recorded
                c.execute(
                    "UPDATE fills SET status = ? WHERE trade_id = ? AND venue_order_id = ?",
                    (str(fill.status), fill.trade_id, fill.venue_order_id),
                )
                was_failed = old is not None and old[0] == TradeStatus.FAILED.value
                if was_failed == failed:
                    return None
                before = _read_position(c, strategy, fill.token_id)
                # Every strategy's position in the token: an unattributed SELL may have taken
                # shares from the strategies, and its failure gives them back.
                rebuilt = replay_token(c, fill.token_id)
                for p in rebuilt.values():
                    put(p)
                replayed = rebuilt.get(strategy) or Position(
                    token_id=fill.token_id, strategy=strategy
                )
                put(replayed)
                append_audit(
                    c,
                    "fill_failed" if failed else "fill_restored",
                    {
                        "trade_id": fill.trade_id,
                        "venue_order_id": fill.venue_order_id,
                        "strategy": strategy,
                        "side": str(fill.side),
                        "price": str(fill.price),
                        "size": str(fill.size),
                        "position_before": str(before.size),
                        "position_after": str(replayed.size),
                        "realized_pnl_after": str(replayed.realized_pnl),
                    },
                    client_order_id=fill.client_order_id,
                )
                return Recorded(replayed, tuple(moves))
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
            before = _read_position(c, strategy, fill.token_id)
            pos = before.apply(fill.side, fill.price, fill.size, fill.fee)
            put(pos, before)
            if strategy == UNATTRIBUTED and fill.side is Side.SELL and fill.size > before.size:
                _take_from_strategies(c, fill, fill.size - before.size, put)
            return Recorded(pos, tuple(moves))

        return await self._db.write(job)

    async def positions_in(self, token_id: str) -> list[Position]:
        """Every strategy's position in `token_id` (flat ones too)."""
        rows = await self._db.fetchall(
            "SELECT strategy, size, avg_cost, realized_pnl FROM positions WHERE token_id = ?"
            " ORDER BY strategy",
            (token_id,),
        )
        return [_position_from_row(r[0], token_id, tuple(r)[1:]) for r in rows]

    async def for_order(self, client_order_id: str) -> list[Fill]:
        rows = await self._db.fetchall(
            "SELECT * FROM fills WHERE client_order_id = ? ORDER BY ts", (client_order_id,)
        )
        return [self._fill(r) for r in rows]

    async def all(self, *, limit: int = 10_000) -> list[Fill]:
        rows = await self._db.fetchall("SELECT * FROM fills ORDER BY ts LIMIT ?", (limit,))
        return [self._fill(r) for r in rows]

    async def position(self, token_id: str, *, strategy: str) -> Position:
        r = await self._db.fetchone(
            "SELECT size, avg_cost, realized_pnl FROM positions"
            " WHERE strategy = ? AND token_id = ?",
            (strategy, token_id),
        )
        return _position_from_row(strategy, token_id, r)

    async def positions(
        self,
        *,
        include_flat: bool = False,
        exclude_strategies: Collection[str] = (),
        strategies: Collection[str] | None = None,
    ) -> list[Position]:
        """Every (strategy, token) position, by strategy then token; without the strategies in
        `exclude_strategies`, and only those in `strategies` when given."""
        rows = await self._db.fetchall(
            "SELECT strategy, token_id, size, avg_cost, realized_pnl FROM positions"
            " ORDER BY strategy, token_id"
        )
        out = [
            _position_from_row(r[0], r[1], tuple(r)[2:])
            for r in rows
            if r[0] not in exclude_strategies and (strategies is None or r[0] in strategies)
        ]
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
