"""The operator CLI on a PostgreSQL database shared by two daemons, `east` and `west`: `status`,
`positions`, `orders`, `trades` and `pnl` show the daemon named by DAEMON_ID (or `--daemon ID`),
every daemon's with `--all-daemons`, and name the daemon they show."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models import Fill, OrderStatus, Side
from storage import TRADING_STATE_KEY, Repositories
from storage.keys import daemon_key
from storage.pg import PgDatabase
from tests.helpers import clean_env, free_port, make_order, run_cli
from tests.pg import PgServer

D = Decimal
TOKEN_E, TOKEN_W, TOKEN_M = "1111", "2222", "3333"


async def seed(url: str) -> None:
    """East's sniper bought 10 @ 0.40 and rests a SELL; west's copy bought 4 @ 0.50 and is
    halted; a manual trade on the account (no daemon's) holds 3 of another token."""
    async with PgDatabase(url) as db:
        for daemon, strategy, token, price, size in (
            ("east", "sniper", TOKEN_E, "0.40", "10"),
            ("west", "copy", TOKEN_W, "0.50", "4"),
        ):
            repos = Repositories.over(db, daemon_id=daemon)
            buy = make_order(strategy=strategy, token_id=token, price=price, size=size)
            vid = f"0x{daemon}1"
            await repos.orders.record(buy, venue_order_id=vid, payload_hash="h")
            await repos.orders.transition(
                buy.client_order_id, OrderStatus.FILLED, size_matched=D(size)
            )
            await repos.fills.record(
                Fill(
                    trade_id=f"t-{daemon}",
                    venue_order_id=vid,
                    client_order_id=buy.client_order_id,
                    token_id=token,
                    side=Side.BUY,
                    price=D(price),
                    size=D(size),
                )
            )
        east = Repositories.over(db, daemon_id="east")
        sell = make_order(strategy="sniper", token_id=TOKEN_E, side="SELL", price="0.60", size="10")
        await east.orders.record(sell, venue_order_id="0xeast2", payload_hash="h")
        await east.orders.transition(sell.client_order_id, OrderStatus.LIVE)
        west = Repositories.over(db, daemon_id="west")
        halted = json.dumps({"state": "HALTED", "reason": "west halted by hand"})
        await west.state.set(daemon_key(TRADING_STATE_KEY, "west"), halted)
        await west.fills.record(
            Fill(trade_id="t-m", venue_order_id="0xmanual", token_id=TOKEN_M, side=Side.BUY,
                 price=D("0.20"), size=D("3"))
        )  # fmt: skip


@pytest.fixture
def shared(tmp_path: Path, pg_server: PgServer) -> dict[str, str]:
    url = pg_server.fresh_url()
    asyncio.run(seed(url))
    return clean_env(
        DATABASE_URL=url,
        DAEMON_ID="east",
        DB_PATH=str(tmp_path / "unused.db"),
        HTTP_PORT=str(free_port()),  # nothing listens: status reads the database only
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    res = run_cli(*args, "--json", "--env-file", "none", env=env)
    assert res.returncode in (0, 3), res.stderr  # status exits 3: no daemon answers
    return json.loads(res.stdout)


def test_each_view_shows_the_daemon_of_daemon_id_and_names_it(shared: dict[str, str]) -> None:
    positions = cli_json(shared, "positions")
    assert [(p["strategy"], p["daemon"]) for p in positions] == [
        ("sniper", "east"),
        ("unattributed", None),  # the account's, shown to every daemon
    ]
    orders = cli_json(shared, "orders")
    assert {(o["strategy"], o["side"], o["daemon"]) for o in orders} == {
        ("sniper", "BUY", "east"),
        ("sniper", "SELL", "east"),
    }
    assert {(t["trade_id"], t["daemon"]) for t in cli_json(shared, "trades")} == {
        ("t-east", "east"),
        ("t-m", None),
    }
    assert {(p["strategy"], p["daemon"]) for p in cli_json(shared, "pnl")} == {
        ("sniper", "east"),
        ("unattributed", None),
    }
    # The human output names the daemon and the others in the database.
    res = run_cli("orders", "--env-file", "none", env=shared)
    assert res.stdout.splitlines()[0].split() == [
        "daemon:", "east;", "also", "in", "this", "database:", "west", "(--all-daemons)"
    ]  # fmt: skip


def test_daemon_picks_another_daemon_and_all_daemons_shows_everyones(
    shared: dict[str, str],
) -> None:
    west = cli_json(shared, "positions", "--daemon", "west")
    assert [(p["strategy"], p["daemon"]) for p in west] == [
        ("copy", "west"),
        ("unattributed", None),
    ]
    assert {o["daemon"] for o in cli_json(shared, "orders", "--daemon", "west")} == {"west"}
    everyone = cli_json(shared, "positions", "--all-daemons")
    assert [(p["strategy"], p["daemon"]) for p in everyone] == [
        ("copy", "west"),
        ("sniper", "east"),
        ("unattributed", None),
    ]
    assert len(cli_json(shared, "orders", "--all-daemons")) == 3
    assert {t["trade_id"] for t in cli_json(shared, "trades", "--all-daemons")} == {
        "t-east",
        "t-west",
        "t-m",
    }
    res = run_cli("pnl", "--all-daemons", "--env-file", "none", env=shared)
    assert res.stdout.splitlines()[0] == "daemons:       all (east, west)"
    both = run_cli("orders", "--daemon", "west", "--all-daemons", "--env-file", "none", env=shared)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_status_counts_the_chosen_daemons_orders_and_reads_its_trading_state(
    shared: dict[str, str],
) -> None:
    east = cli_json(shared, "status")
    assert east["daemon_id"] == "east"
    db = east["database"]
    assert (db["trading_state"], db["open_orders"], db["fills"]) == (None, 1, 2)
    assert db["orders_by_status"] == {"FILLED": 1, "LIVE": 1}
    assert db["daemons"] == ["east", "west"]
    west = cli_json(shared, "status", "--daemon", "west")["database"]
    assert (west["trading_state"], west["state_reason"]) == ("HALTED", "west halted by hand")
    assert (west["open_orders"], west["orders_by_status"]) == (0, {"FILLED": 1})
    every = cli_json(shared, "status", "--all-daemons")
    assert every["daemon_id"] is None
    assert every["database"]["orders_by_status"] == {"FILLED": 2, "LIVE": 1}
    assert every["database"]["fills"] == 3
    text = run_cli("status", "--daemon", "west", "--env-file", "none", env=shared).stdout
    assert "trading state: HALTED — west halted by hand" in text
    assert "daemon:        west; also in this database: east (--all-daemons)" in text
