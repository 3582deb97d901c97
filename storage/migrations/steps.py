"""Data steps of migrations that SQL alone cannot do exactly (Decimal arithmetic).

A step runs inside its migration's transaction, after the migration's SQL and before the
version is recorded: if either fails, neither is applied. `STEPS` maps a migration's name (its
file name without `.sql`) to its step. A step reads and writes the schema as of its migration,
with its own SQL: it must keep working on an old database however the repositories change
later, so it imports none of them (nor anything that imports the database).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from models import UNATTRIBUTED, ZERO, Position, Side


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _replay(c: sqlite3.Connection, strategy: str, token_id: str) -> Position:
    pos = Position(token_id=token_id, strategy=strategy)
    for side, price, size, fee in c.execute(
        "SELECT side, price, size, fee FROM fills WHERE strategy = ? AND token_id = ?"
        " AND status != 'FAILED' ORDER BY rowid",
        (strategy, token_id),
    ):
        pos = pos.apply(Side(side), Decimal(price), Decimal(size), Decimal(fee))
    return pos


def _write(c: sqlite3.Connection, p: Position) -> None:
    c.execute(
        "INSERT INTO positions (strategy, token_id, size, avg_cost, realized_pnl, updated_at)"
        " VALUES (?,?,?,?,?,?)",
        (p.strategy, p.token_id, str(p.size), str(p.avg_cost), str(p.realized_pnl), _now()),
    )


def _audit(c: sqlite3.Connection, event: str, detail: dict[str, Any]) -> None:
    c.execute(
        "INSERT INTO audit_log (at, event, strategy, client_order_id, detail)"
        " VALUES (?,?,?,NULL,?)",
        (_now(), event, UNATTRIBUTED, json.dumps(detail)),
    )


def attribute_positions(c: sqlite3.Connection) -> None:
    """Split each token's old account-wide row into per-(strategy, token) positions.

    Every strategy's position is its fills replayed (the fills were attributed by the SQL
    part). That split is kept where the replays add up to the old row's size, the account's
    holding the journal recorded; otherwise (no fills, or a strategy sold shares another one
    bought, which the old book allowed) the whole old row is booked as unattributed, with the
    token's fills, and the token is audited, so that nothing a strategy did not buy is ever sold
    by it.
    """
    tokens = {str(r[0]) for r in c.execute("SELECT DISTINCT token_id FROM fills")}
    old: dict[str, Position] = {}
    for token_id, size, avg_cost, realized in c.execute(
        "SELECT token_id, size, avg_cost, realized_pnl FROM positions_0003"
    ):
        old[str(token_id)] = Position(
            token_id=str(token_id),
            strategy=UNATTRIBUTED,
            size=Decimal(size),
            avg_cost=Decimal(avg_cost),
            realized_pnl=Decimal(realized),
        )
    for token_id in sorted(tokens | set(old)):
        strategies = [
            str(r[0])
            for r in c.execute(
                "SELECT DISTINCT strategy FROM fills WHERE token_id = ? ORDER BY strategy",
                (token_id,),
            )
        ]
        replays = [_replay(c, s, token_id) for s in strategies]
        before = old.get(token_id)
        held = before.size if before is not None else ZERO
        if replays and sum((p.size for p in replays), ZERO) == held:
            for p in replays:
                _write(c, p)
            continue
        if before is None:
            continue  # fills but no row: nothing was held or realized
        # The token's fills become unattributed too, so that a later replay of them (a trade
        # that turns FAILED) rebuilds this row and never a split the journal cannot support.
        c.execute("UPDATE fills SET strategy = ? WHERE token_id = ?", (UNATTRIBUTED, token_id))
        _write(c, before)
        _audit(
            c,
            "position_unattributed_on_migration",
            {
                "token_id": token_id,
                "size": str(before.size),
                "strategies_in_fills": [s for s in strategies if s != UNATTRIBUTED],
                "reason": "no fills" if not replays else "fills do not add up to the holding",
            },
        )
    c.execute("DROP TABLE positions_0003")


STEPS: dict[str, Callable[[sqlite3.Connection], None]] = {
    "0005_attribution": attribute_positions,
}
