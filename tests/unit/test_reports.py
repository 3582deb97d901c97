"""storage.reports: the read-only reports the CLI and the demo summary print."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from errors import DatabaseMissing, ReportError
from models import UNATTRIBUTED, Fill, OrderStatus, OrderType, Side
from storage import TRADING_STATE_KEY, Database, Repositories
from storage.reports import Reports, StrategySummary
from tests.helpers import make_order

TOKEN_A, TOKEN_B, TOKEN_C = "1" * 20 + "11", "2" * 20 + "22", "3" * 20 + "33"
TOKEN_D = "4" * 20 + "44"


def fill(trade_id: str, order_id: str, token: str, side: Side, price: str, size: str) -> Fill:
    return Fill(
        trade_id=trade_id,
        venue_order_id=order_id,
        client_order_id=None,
        token_id=token,
        side=side,
        price=Decimal(price),
        size=Decimal(size),
    )


async def seed(path: Path, *, state: dict[str, str] | None = None) -> dict[str, str]:
    """Journal orders in every interesting end state, fills that buy and sell, and a state."""
    async with Database(path) as db:
        repos = Repositories.over(db)
        filled = make_order(token_id=TOKEN_A, price="0.40", order_type=OrderType.FOK)
        live = make_order(strategy="copy", token_id=TOKEN_B, price="0.30", size="5")
        rejected = make_order(strategy="copy", token_id=TOKEN_B, price="0.31", size="5")
        partial = make_order(token_id=TOKEN_C, price="0.50", order_type=OrderType.FAK)
        killed = make_order(token_id=TOKEN_C, price="0.51", order_type=OrderType.FAK)
        await repos.orders.record(filled, venue_order_id="0xa1", payload_hash="h1")
        await repos.orders.transition(
            filled.client_order_id, OrderStatus.FILLED, size_matched=Decimal("10")
        )
        # The SELL of 4 of A: the sniper's own order, so the fill is the sniper's.
        sold = make_order(token_id=TOKEN_A, side="SELL", price="0.50", size="4")
        await repos.orders.record(sold, venue_order_id="0xa9", payload_hash="h9")
        await repos.orders.transition(
            sold.client_order_id, OrderStatus.FILLED, size_matched=Decimal("4")
        )
        await repos.orders.record(live, venue_order_id="0xb2", payload_hash="h2")
        await repos.orders.transition(live.client_order_id, OrderStatus.LIVE)
        await repos.orders.record(rejected, status=OrderStatus.REJECTED, detail="risk")
        await repos.orders.record(partial, venue_order_id="0xc3", payload_hash="h3")
        await repos.orders.transition(
            partial.client_order_id, OrderStatus.CANCELED, size_matched=Decimal("4")
        )
        await repos.orders.record(killed, venue_order_id="0xc4", payload_hash="h4")
        await repos.orders.transition(killed.client_order_id, OrderStatus.CANCELED)
        # A: bought 10 @ 0.40, sold 4 @ 0.50 -> 6 held, +0.40 realized.
        await repos.fills.record(fill("t1", "0xa1", TOKEN_A, Side.BUY, "0.40", "10"))
        await repos.fills.record(fill("t2", "0xa9", TOKEN_A, Side.SELL, "0.50", "4"))
        # C: bought 4 @ 0.50 and sold all 4 @ 0.45 -> flat, -0.20 realized, by orders not in
        # the journal (a manual round trip on the same account): unattributed.
        await repos.fills.record(fill("t3", "0xc8", TOKEN_C, Side.BUY, "0.50", "4"))
        await repos.fills.record(fill("t4", "0xc9", TOKEN_C, Side.SELL, "0.45", "4"))
        # D: bought 2 and sold 2 at the same price -> flat, nothing realized.
        await repos.fills.record(fill("t5", "0xd1", TOKEN_D, Side.BUY, "0.50", "2"))
        await repos.fills.record(fill("t6", "0xd2", TOKEN_D, Side.SELL, "0.50", "2"))
        if state is not None:
            await repos.state.set(TRADING_STATE_KEY, json.dumps(state))
    return {
        "filled": filled.client_order_id,
        "sold": sold.client_order_id,
        "live": live.client_order_id,
        "rejected": rejected.client_order_id,
        "partial": partial.client_order_id,
        "killed": killed.client_order_id,
    }


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "polyd.db"
    ids = asyncio.run(seed(path, state={"state": "HALTED", "reason": "daily loss"}))
    return path, ids


def test_positions_keep_held_and_realized_and_drop_untouched(
    seeded: tuple[Path, dict[str, str]],
) -> None:
    path, _ = seeded
    with Reports.open(path) as reports:
        rows = {p.token_id: p for p in reports.positions()}
    assert set(rows) == {TOKEN_A, TOKEN_C}  # C is flat but realized a loss; D left no trace
    assert rows[TOKEN_A].strategy == "sniper" and rows[TOKEN_C].strategy == UNATTRIBUTED
    assert rows[TOKEN_A].size == Decimal("6")
    assert rows[TOKEN_A].avg_cost == Decimal("0.40")
    assert rows[TOKEN_A].realized_pnl == Decimal("0.40")
    assert rows[TOKEN_C].size == 0
    assert rows[TOKEN_C].realized_pnl == Decimal("-0.20")


def test_orders_newest_first_and_filtered(seeded: tuple[Path, dict[str, str]]) -> None:
    path, ids = seeded
    with Reports.open(path) as reports:
        every = [o.client_order_id for o in reports.orders(limit=100)]
        assert every == [
            ids["killed"],
            ids["partial"],
            ids["rejected"],
            ids["live"],
            ids["sold"],
            ids["filled"],
        ]
        assert [o.client_order_id for o in reports.orders(limit=2)] == every[:2]
        assert [o.client_order_id for o in reports.orders(open_only=True)] == [ids["live"]]
        copy = reports.orders(strategy="copy")
        assert [o.client_order_id for o in copy] == [ids["rejected"], ids["live"]]
        assert copy[0].status == "REJECTED" and copy[0].detail == "risk"
        filled = reports.orders(strategy="sniper", limit=100)[-1]
    assert filled.status == "FILLED"
    assert filled.size_matched == "10"
    assert filled.venue_order_id == "0xa1"


def test_summary_reads_the_trading_state_the_executor_writes(
    seeded: tuple[Path, dict[str, str]],
) -> None:
    path, _ = seeded
    with Reports.open(path) as reports:
        s = reports.summary()
    assert s.trading_state == "HALTED"
    assert s.state_reason == "daily loss"
    assert s.orders_by_status == {"CANCELED": 2, "FILLED": 2, "LIVE": 1, "REJECTED": 1}
    assert s.open_orders == 1
    assert s.fills == 6
    assert s.positions == 1  # only A holds shares
    assert Decimal(s.realized_pnl) == Decimal("0.20")
    assert s.by_strategy == {
        "sniper": StrategySummary(
            positions=1, cost_basis="2.40", realized_pnl="0.40", fees_paid="0", redeemable="0"
        ),
        UNATTRIBUTED: StrategySummary(
            positions=0, cost_basis="0", realized_pnl="-0.20", fees_paid="0", redeemable="0"
        ),
    }
    assert s.last_order_at is not None


def test_summary_without_a_state_change(tmp_path: Path) -> None:
    path = tmp_path / "polyd.db"
    asyncio.run(seed(path))
    with Reports.open(path) as reports:
        s = reports.summary()
    assert s.trading_state is None
    assert s.state_reason is None


def test_outcomes_tell_a_partly_filled_kill_from_a_plain_cancel(
    seeded: tuple[Path, dict[str, str]],
) -> None:
    path, _ = seeded
    with Reports.open(path) as reports:
        outcomes = reports.order_outcomes()
        totals = reports.fill_totals()
    assert outcomes.by_outcome == {
        "CANCELED": 1,
        "FILLED": 2,
        "LIVE": 1,
        "PARTIALLY_FILLED_REST_CANCELED": 1,
        "REJECTED": 1,
    }
    assert outcomes.by_strategy == {"copy": 2, "sniper": 4}
    assert totals.count == 6
    assert totals.bought == Decimal("16")
    assert totals.sold == Decimal("10")


def test_reports_never_create_or_write_the_database(
    tmp_path: Path, seeded: tuple[Path, dict[str, str]]
) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(DatabaseMissing, match="no database at"):
        Reports.open(missing)
    assert not missing.exists()
    path, _ = seeded
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with Reports.open(path) as reports:
        reports.positions()
        reports.orders(open_only=True, strategy="copy")
        reports.summary()
        reports.order_outcomes()
        reports.fill_totals()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_file_that_is_not_our_database_is_a_report_error(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(ReportError, match="cannot read the database"):
        Reports.open(other)
