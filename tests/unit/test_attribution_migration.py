"""The attribution migration: a database written before positions were kept per strategy is
re-keyed by (strategy, token), holdings re-derived from the journal where its fills account for
them and the rest booked as unattributed, in one transaction."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from errors import ReportError
from models import UNATTRIBUTED, Position, Side
from storage import Database, Repositories, load_migrations
from storage.reports import Reports
from tests.helpers import database_before

D = Decimal
X, Y, Z, W = "1" * 40, "2" * 40, "3" * 40, "4" * 40


def old_database(path: Path) -> sqlite3.Connection:
    """A database with every migration before the attribution one applied."""
    return database_before(path, "_attribution")


def order(c: sqlite3.Connection, coid: str, strategy: str, token: str, side: str, vid: str) -> None:
    c.execute(
        "INSERT INTO orders (client_order_id, strategy, token_id, side, price, size, order_type,"
        " status, venue_order_id, created_at, updated_at)"
        " VALUES (?,?,?,?,'0.5','10','FAK','FILLED',?,'t','t')",
        (coid, strategy, token, side, vid),
    )


FILLS: list[tuple[str, str, str | None, str, str, str, str]] = [
    # trade, venue order id, client order id, token, side, price, size
    ("t1", "0xs1", "s1", X, "BUY", "0.40", "10"),  # the sniper's
    ("t2", "0xc1", None, X, "BUY", "0.50", "5"),  # the copy trader's, by venue order id
    ("t3", "0xm1", None, Y, "BUY", "0.30", "7"),  # a manual trade: no order of ours
    ("t4", "0xs2", "s2", Z, "BUY", "0.40", "10"),  # the sniper bought Z ...
    ("t5", "0xc2", "c2", Z, "SELL", "0.60", "10"),  # ... and the copy trader sold it
]


def account_rows() -> dict[str, Position]:
    """The old account-wide rows, as the old book moved them (every fill of a token)."""
    rows: dict[str, Position] = {}
    for _, _, _, token, side, price, size in FILLS:
        p = rows.get(token) or Position(token_id=token)
        rows[token] = p.apply(Side(side), D(price), D(size))
    rows[W] = Position(token_id=W, size=D("3"), avg_cost=D("0.25"))  # no fills at all
    return rows


async def test_old_positions_are_split_per_strategy_and_the_rest_is_unattributed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    c = old_database(path)
    order(c, "s1", "sniper", X, "BUY", "0xs1")
    order(c, "c1", "copy", X, "BUY", "0xc1")
    order(c, "s2", "sniper", Z, "BUY", "0xs2")
    order(c, "c2", "copy", Z, "SELL", "0xc2")
    for trade, vid, coid, token, side, price, size in FILLS:
        c.execute(
            "INSERT INTO fills (trade_id, venue_order_id, client_order_id, token_id, side, price,"
            " size, fee, role, status, ts, recorded_at)"
            " VALUES (?,?,?,?,?,?,?,'0','TAKER','CONFIRMED','2026-01-01T00:00:00+00:00','t')",
            (trade, vid, coid, token, side, price, size),
        )
    for p in account_rows().values():
        c.execute(
            "INSERT INTO positions VALUES (?,?,?,?,'t')",
            (p.token_id, str(p.size), str(p.avg_cost), str(p.realized_pnl)),
        )
    c.commit()
    c.close()

    async with Database(path) as db:
        assert await db.schema_version() == len(load_migrations())
        repos = Repositories.over(db)
        got = {(p.strategy, p.token_id): p for p in await repos.fills.positions()}
        fills = {f.trade_id: f for f in await repos.fills.all()}
        audit = await repos.audit.tail(event="position_unattributed_on_migration")

    assert got[("sniper", X)].size == D("10") and got[("sniper", X)].avg_cost == D("0.40")
    assert got[("copy", X)].size == D("5") and got[("copy", X)].avg_cost == D("0.50")
    assert got[(UNATTRIBUTED, Y)].size == D("7")  # the manual trade
    assert got[(UNATTRIBUTED, W)].size == D("3")  # a holding with no fills
    # Z: the copy trader sold what the sniper bought; the account holds none, and the split
    # cannot be told from the journal: the old row (flat, realized 2.00) is unattributed.
    assert got[(UNATTRIBUTED, Z)].size == 0
    assert got[(UNATTRIBUTED, Z)].realized_pnl == D("2.00")
    assert ("sniper", Z) not in got and ("copy", Z) not in got
    assert set(got) == {
        ("sniper", X),
        ("copy", X),
        (UNATTRIBUTED, Y),
        (UNATTRIBUTED, W),
        (UNATTRIBUTED, Z),
    }
    # Per token, the holdings add up to what the account held before.
    for token, before in account_rows().items():
        total = sum((p.size for (_, t), p in got.items() if t == token), D(0))
        assert total == before.size, token
    assert sorted(e.detail["token_id"] for e in audit) == [Z, W]
    assert [fills[t].client_order_id for t in ("t1", "t3")] == ["s1", None]
    with Reports.open(path) as reports:
        strategies = {f.trade_id: f.strategy for f in reports.fills()}
    assert strategies == {
        "t1": "sniper",
        "t2": "copy",
        "t3": UNATTRIBUTED,
        "t4": UNATTRIBUTED,  # Z could not be split: its fills go with its holding
        "t5": UNATTRIBUTED,
    }
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert not any(t.startswith("positions_") for t in tables)


def test_reports_name_a_database_that_predates_attribution(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_database(path).close()
    with pytest.raises(ReportError, match="predates per-strategy positions"):
        Reports.open(path)


def test_every_data_step_names_a_shipped_migration() -> None:
    """A data step keyed by a name no migration has would silently never run (a renumbered
    migration file keeps its SQL but loses its step)."""
    from storage.migrations.steps import STEPS

    names = {m.name for m in load_migrations()}
    assert set(STEPS) <= names, sorted(set(STEPS) - names)
