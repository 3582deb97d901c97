"""The trader's views in the CLI (`status`, `positions`, `orders`, `trades`, `pnl`): tables and
`--json`, over a database filled through the real repositories, the CLI a subprocess.

The PnL of each trade is worked out by hand below (average cost, fees in the cost basis of a
BUY and out of the proceeds of a SELL), not by the code under test.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models import UNATTRIBUTED, Fill, OrderStatus, OrderType, TradeStatus
from storage import Database, Repositories
from storage.keys import ACCOUNT_SNAPSHOT_KEY
from storage.market_names import MarketName
from tests.helpers import clean_env, free_port, make_order, run_cli

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_views_cli")

D = Decimal
RAIN, BTC, MANUAL = "1" * 70 + "11", "2" * 70 + "22", "3" * 70 + "33"
DAY1 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)

# (trade id, strategy, token, side, price, size, fee, status, day): recorded in this order.
# sniper in RAIN:  BUY 10 @ 0.40 fee 0.10 -> 10 shares costing 4.10 (avg 0.41)
#                  BUY 10 @ 0.60          -> 20 shares costing 10.10 (avg 0.505)
#                  SELL 5 @ 0.70 fee 0.05 -> (0.70 - 0.505) x 5 - 0.05 = 0.925
#                  SELL 15 @ 0.30         -> (0.30 - 0.505) x 15 = -3.075; flat
# copy in BTC:     BUY 4 @ 0.25           -> avg 0.25
#                  SELL 2 @ 0.45 FAILED   -> moves nothing, no PnL
#                  SELL 1 @ 0.45 fee 0.01 -> (0.45 - 0.25) x 1 - 0.01 = 0.19; 3 left
# manual in MANUAL: BUY 3 @ 0.20 (no order of ours: unattributed, no name known)
EXPECTED_PNL = {
    "r1": D("0"),
    "r2": D("0"),
    "r3": D("0.925"),
    "r4": D("-3.075"),
    "b1": D("0"),
    "b2": None,
    "b3": D("0.19"),
    "m1": D("0"),
}
SNAPSHOT = {
    "at": "2026-12-04T16:00:00+00:00",
    "state": "ACTIVE",
    "reason": "",
    "pnl_today": "-1.25",
    "daily_loss_limit": "50",
    "realized": "-1.96",
    "unrealized": "0.30",
    "exposure": "1.65",
    "balance": "4990.5",
    "open_orders": 0,
    "marks": {BTC: "0.35"},
    "feeds": {"feed:market": True, "feed:user": False},
    "strategies": {
        "copy": {"realized": "0.19", "unrealized": "0.30", "exposure": "1.05"},
        "sniper": {"realized": "-2.15", "unrealized": "0", "exposure": "0"},
    },
}


async def seed(db_path: Path) -> dict[str, str]:
    """Orders, fills, names and an account snapshot, through the daemon's own repositories."""
    async with Database(db_path) as db:
        repos = Repositories.over(db)
        buy = make_order(token_id=RAIN, price="0.60", size="20", order_type=OrderType.FAK)
        sell = make_order(token_id=RAIN, side="SELL", price="0.30", size="20")
        cbuy = make_order(strategy="copy", token_id=BTC, price="0.25", size="4")
        csell = make_order(strategy="copy", token_id=BTC, side="SELL", price="0.45", size="2")
        for i, req in enumerate((buy, sell, cbuy, csell)):
            await repos.orders.record(req, venue_order_id=f"0xv{i}", payload_hash=f"h{i}")
        fills: list[tuple[str, Any, str, str, str, str, TradeStatus, datetime, str]] = [
            ("r1", buy, "BUY", "0.40", "10", "0.10", TradeStatus.CONFIRMED, DAY1, "0xv0"),
            ("r2", buy, "BUY", "0.60", "10", "0", TradeStatus.CONFIRMED, DAY1, "0xv0"),
            ("r3", sell, "SELL", "0.70", "5", "0.05", TradeStatus.CONFIRMED, DAY2, "0xv1"),
            ("r4", sell, "SELL", "0.30", "15", "0", TradeStatus.MATCHED, DAY2, "0xv1"),
            ("b1", cbuy, "BUY", "0.25", "4", "0", TradeStatus.CONFIRMED, DAY2, "0xv2"),
            ("b2", csell, "SELL", "0.45", "2", "0", TradeStatus.FAILED, DAY2, "0xv3"),
            ("b3", csell, "SELL", "0.45", "1", "0.01", TradeStatus.CONFIRMED, DAY2, "0xv3"),
        ]
        for trade, req, side, price, size, fee, status, ts, vid in fills:
            await repos.fills.record(
                Fill(
                    trade_id=trade,
                    venue_order_id=vid,
                    client_order_id=req.client_order_id,
                    token_id=req.token_id,
                    side=side,
                    price=D(price),
                    size=D(size),
                    fee=D(fee),
                    status=status,
                    ts=ts,
                )
            )
        await repos.fills.record(
            Fill(
                trade_id="m1",
                venue_order_id="0xmanual",
                token_id=MANUAL,
                side="BUY",
                price=D("0.20"),
                size=D("3"),
                ts=DAY2,
            )
        )
        await repos.orders.transition(buy.client_order_id, OrderStatus.FILLED, size_matched=D(20))
        await repos.orders.transition(sell.client_order_id, OrderStatus.FILLED, size_matched=D(20))
        await repos.orders.transition(cbuy.client_order_id, OrderStatus.FILLED, size_matched=D(4))
        await repos.orders.transition(
            csell.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=D(1)
        )
        await repos.names.save(
            [
                MarketName(RAIN, "Will it rain in Paris on Friday?", "Yes", "rain-paris", "0xc1"),
                MarketName(BTC, "Will BTC close above 100k?", "No", "btc-100k", "0xc2"),
            ]
        )
        await repos.state.set(ACCOUNT_SNAPSHOT_KEY, json.dumps(SNAPSHOT))
        return {"buy": buy.client_order_id, "csell": csell.client_order_id}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, str]]:
    db = tmp_path_factory.mktemp("views") / "polyd.db"
    ids = asyncio.run(seed(db))
    # No daemon listens on this port: the views read the database alone.
    return ids, clean_env(DB_PATH=str(db), HTTP_PORT=str(free_port()))


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    res = run_cli(*args, "--env-file", "none", env=env)
    assert res.returncode == code, res.stdout + res.stderr
    return res.stdout


def cli_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(env, *args, "--json"))


def test_trades_have_the_pnl_of_each_trade_newest_first(store: Any) -> None:
    _, env = store
    rows = cli_json(env, "trades")
    assert [r["trade_id"] for r in rows] == ["m1", "b3", "b2", "b1", "r4", "r3", "r2", "r1"]
    got = {r["trade_id"]: (None if r["pnl"] is None else D(r["pnl"])) for r in rows}
    assert got == EXPECTED_PNL
    r3 = next(r for r in rows if r["trade_id"] == "r3")
    assert r3 == {
        "at": "2026-12-04T15:30:00.000000+00:00",
        "day": "2026-12-04",
        "strategy": "sniper",
        "token_id": RAIN,
        "market": "Will it rain in Paris on Friday?",
        "outcome": "Yes",
        "side": "SELL",
        "price": "0.70",
        "size": "5",
        "notional": "3.50",
        "fee": "0.05",
        "role": "TAKER",
        "status": "CONFIRMED",
        "pnl": "0.925",
        "position_after": "15",
        "trade_id": "r3",
        "client_order_id": r3["client_order_id"],
        "daemon": "default",
    }
    assert next(r for r in rows if r["trade_id"] == "m1")["strategy"] == UNATTRIBUTED
    # Filters: one strategy, one UTC day, a limit.
    sniper = cli_json(env, "trades", "--strategy", "sniper")
    assert [r["trade_id"] for r in sniper] == ["r4", "r3", "r2", "r1"]
    day1 = cli_json(env, "trades", "--day", "2026-12-03")
    assert [r["trade_id"] for r in day1] == ["r2", "r1"]
    assert [r["trade_id"] for r in cli_json(env, "trades", "--limit", "2")] == ["m1", "b3"]
    # The table: names instead of ids, PnL per trade, the FAILED trade marked and left out.
    table = cli(env, "trades", "--strategy", "copy")
    lines = table.splitlines()
    assert lines[0].split() == [
        "time", "(UTC)", "strategy", "market", "outcome", "side", "price", "size", "notional",
        "fee", "PnL", "position",
    ]  # fmt: skip
    assert "Will BTC close above 100k?" in lines[2] and "0.19" in lines[2]
    assert "SELL FAILED" in lines[3] and lines[3].split()[-2] == "-"
    assert lines[-1] == "3 trades, realized PnL 0.19 pUSD, fees 0.01 pUSD"


def test_trades_refuse_a_bad_day(store: Any) -> None:
    _, env = store
    res = run_cli("trades", "--day", "yesterday", "--env-file", "none", env=env)
    assert res.returncode == 2
    assert "--day must be a date like 2026-01-31, not 'yesterday'" in res.stderr


def test_pnl_per_day_and_strategy(store: Any) -> None:
    _, env = store
    rows = cli_json(env, "pnl")
    assert rows == [
        {"day": "2026-12-04", "strategy": "copy", "trades": 2, "bought": "1.00", "sold": "0.45",
         "fees": "0.01", "realized_pnl": "0.19", "daemon": "default"},
        {"day": "2026-12-04", "strategy": "sniper", "trades": 2, "bought": "0", "sold": "8.00",
         "fees": "0.05", "realized_pnl": "-2.150", "daemon": "default"},
        {"day": "2026-12-04", "strategy": UNATTRIBUTED, "trades": 1, "bought": "0.60",
         "sold": "0", "fees": "0", "realized_pnl": "0", "daemon": None},
        {"day": "2026-12-03", "strategy": "sniper", "trades": 2, "bought": "10.00", "sold": "0",
         "fees": "0.10", "realized_pnl": "0", "daemon": "default"},
    ]  # fmt: skip
    assert [r["day"] for r in cli_json(env, "pnl", "--days", "1")] == ["2026-12-04"] * 3
    assert cli_json(env, "pnl", "--strategy", "copy")[0]["realized_pnl"] == "0.19"
    table = cli(env, "pnl")
    assert table.splitlines()[0].split() == [
        "day",
        "(UTC)",
        "strategy",
        "trades",
        "bought",
        "sold",
        "fees",
        "realized",
        "PnL",
    ]
    assert table.splitlines()[-1] == "realized PnL -1.96 pUSD over 2 days"


def test_positions_show_names_marks_and_pnl(store: Any) -> None:
    _, env = store
    rows = {r["strategy"]: r for r in cli_json(env, "positions")}
    assert set(rows) == {"sniper", "copy", UNATTRIBUTED}
    copy = rows["copy"]
    assert (copy["market"], copy["outcome"], copy["slug"]) == (
        "Will BTC close above 100k?", "No", "btc-100k"
    )  # fmt: skip
    assert (D(copy["size"]), D(copy["avg_cost"]), D(copy["mark"])) == (D(3), D("0.25"), D("0.35"))
    assert D(copy["unrealized_pnl"]) == D("0.30")  # (0.35 - 0.25) x 3
    assert D(copy["realized_pnl"]) == D("0.19")
    assert D(copy["pnl"]) == D("0.49")
    assert D(rows["sniper"]["size"]) == 0 and D(rows["sniper"]["realized_pnl"]) == D("-2.15")
    assert rows["sniper"]["mark"] is None  # flat: nothing to mark
    assert rows[UNATTRIBUTED]["market"] == "" and rows[UNATTRIBUTED]["mark"] is None
    table = cli(env, "positions")
    assert "Will BTC close above 100k?" in table and "Will it rain in Paris on Friday?" in table
    copy_line = next(ln for ln in table.splitlines() if ln.startswith("copy "))
    # size, avg cost, mark, unrealized, realized, PnL, fees
    assert copy_line.split()[-7:] == ["3", "0.25", "0.35", "0.30", "0.19", "0.49", "0.01"]
    assert f"token {MANUAL[:13]}…" in table  # no name known: the id's head
    assert "1 held without a mark" in table
    only = cli_json(env, "positions", "--strategy", "copy")
    assert [r["strategy"] for r in only] == ["copy"]


def test_orders_show_average_fill_price_and_fees(store: Any) -> None:
    ids, env = store
    rows = {r["client_order_id"]: r for r in cli_json(env, "orders")}
    buy = rows[ids["buy"]]
    # 10 @ 0.40 and 10 @ 0.60 against a 0.60 limit: filled at 0.50 on average, fee 0.10.
    assert (D(buy["price"]), D(buy["avg_fill_price"]), D(buy["fees"])) == (
        D("0.60"), D("0.50"), D("0.10")
    )  # fmt: skip
    assert buy["market"] == "Will it rain in Paris on Friday?" and buy["outcome"] == "Yes"
    csell = rows[ids["csell"]]  # its FAILED fill does not count
    assert (D(csell["size_matched"]), D(csell["avg_fill_price"]), D(csell["fees"])) == (
        D(1), D("0.45"), D("0.01")
    )  # fmt: skip
    table = cli(env, "orders")
    assert table.splitlines()[0].split()[6:11] == ["limit", "size", "filled", "fill", "price"]
    line = next(ln for ln in table.splitlines() if "Paris" in ln and " BUY " in ln)
    assert line.split()[-6:] == ["0.60", "20", "20", "0.50", "0.10", "FILLED"]


def test_status_shows_pnl_today_against_the_limit_exposure_balance_and_feeds(store: Any) -> None:
    _, env = store
    text = cli(env, "status", code=3)  # no daemon: the database part still answers
    assert "PnL today:     -1.25 pUSD (halts at -50; 2% of the limit used)" in text
    assert "realized PnL:  -1.96 pUSD, unrealized (marked) 0.30 pUSD" in text
    assert "exposure:      1.65 pUSD (marked holdings + open BUYs), balance 4990.50 pUSD" in text
    assert "feeds: feed:market ok, feed:user DOWN" in text
    copy = next(ln for ln in text.splitlines() if ln.startswith("copy "))
    assert copy.split() == ["copy", "1", "0.75", "0.19", "0.30", "1.05", "0.01"]
    res = run_cli("status", "--json", "--env-file", "none", env=env)
    account = json.loads(res.stdout)["account"]
    assert account["pnl_today"] == "-1.25" and account["daily_loss_limit"] == "50"
    assert account["balance"] == "4990.5" and account["exposure"] == "1.65"
    assert account["feeds"] == {"feed:market": True, "feed:user": False}
    assert account["snapshot_at"] == SNAPSHOT["at"]
    # SQLite, one daemon: its snapshot from before per-daemon rows is its own, no shared account.
    assert (account["snapshot_daemon"], account["shared_accounts"]) == ("default", [])
    assert "written before snapshots" not in text and "of which" not in text
    assert "trading state: ACTIVE" in text
    assert [s["name"] for s in account["strategies"]] == ["copy", "sniper", UNATTRIBUTED]
