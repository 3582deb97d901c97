"""The operator views on a PostgreSQL database shared by two daemons, `east` and `west`: `status`,
`positions`, `orders`, `trades` and `pnl` show the daemon named by DAEMON_ID (or `--daemon ID`),
every daemon's with `--all-daemons`, and name the daemon they show; the running daemon's web
console and chat show its own DAEMON_ID's rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from models import Fill, OrderStatus, Side, utc_day
from observability.console import Console, board
from observability.metrics import Metrics
from observability.sidecar import Health, Sidecar
from storage import TRADING_STATE_KEY, Repositories
from storage.keys import ACCOUNT_SNAPSHOT_KEY, daemon_key
from storage.pg import PgDatabase
from storage.views import Views
from tests.helpers import clean_env, free_port, make_order, make_settings, run_cli
from tests.pg import PgServer
from tests.unit.test_accounts import ACCOUNT
from tests.unit.test_executor_paper import DictBooks, make_executor
from wiring.chat import DaemonDesk
from wiring.summary import Summary

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


# -- one venue account shared by east and west (ACCOUNT_SHARED=true) ----------------------------
ACCT = ACCOUNT.lower()


async def share_account(url: str) -> None:
    """East and west trade one account with ACCOUNT_SHARED=true; west halted it; each wrote
    its PnL of the day."""
    async with PgDatabase(url) as db:
        for daemon, pnl in (("east", "-12.5"), ("west", "-30")):
            repos = Repositories.over(db, daemon_id=daemon)
            assert await repos.accounts.enrol(ACCT, daemon, shared=True) == []
            await repos.accounts.record_pnl(ACCT, utc_day(), daemon, D(pnl), D(0))
        west = Repositories.over(db, daemon_id="west").accounts
        await west.halt(ACCT, "west", "operator: venue maintenance")


def test_status_of_one_daemon_shows_the_accounts_halt_another_wrote_and_its_summed_pnl(
    shared: dict[str, str],
) -> None:
    asyncio.run(share_account(shared["DATABASE_URL"]))
    east = cli_json(shared, "status")
    assert east["database"]["trading_state"] is None  # east's own row: never changed
    (account,) = east["account"]["shared_accounts"]
    assert (account["account"], account["daemons"]) == (ACCT, ["east", "west"])
    assert (account["halted_by"], account["halt_reason"]) == ("west", "operator: venue maintenance")
    assert account["halted_at"]
    assert account["daily_pnl"] == "-42.5"
    assert account["pnl_by_daemon"] == {"east": "-12.5", "west": "-30"}
    text = run_cli("status", "--env-file", "none", env=shared).stdout
    halt = next(ln for ln in text.splitlines() if ln.startswith("trading state:"))
    assert halt.startswith("trading state: HALTED — account 0xabab")
    assert halt.endswith("halted by daemon west at " + account["halted_at"][:19].replace("T", " ")
                         + " UTC: operator: venue maintenance")  # fmt: skip
    assert "(this daemon's own state: ACTIVE (never changed); the account's halt holds)" in text
    pnl = next(ln for ln in text.splitlines() if ln.startswith("PnL today:"))
    assert pnl.startswith("PnL today:     -42.50 pUSD, account 0xabab")
    assert "of which east -12.50, west -30" in text
    # A resume clears the line; the summed PnL stays.
    asyncio.run(resume(shared["DATABASE_URL"]))
    again = run_cli("status", "--env-file", "none", env=shared).stdout
    assert "trading state: ACTIVE (never changed)" in again
    assert "of which east -12.50, west -30" in again


async def resume(url: str) -> None:
    async with PgDatabase(url) as db:
        await Repositories.over(db, daemon_id="east").accounts.resume(ACCT, "east")


def test_status_without_a_shared_account_has_no_account_part(shared: dict[str, str]) -> None:
    east = cli_json(shared, "status")
    assert east["account"]["shared_accounts"] == []
    text = run_cli("status", "--env-file", "none", env=shared).stdout
    assert "of which" not in text and "account 0x" not in text


async def write_snapshots(url: str, tmp_path: Path) -> None:
    """East's and west's summary services each write their account snapshot."""
    async with PgDatabase(url) as db:
        for daemon in ("east", "west"):
            repos = Repositories.over(db, daemon_id=daemon)
            ex = make_executor(repos, DictBooks())
            settings = make_settings(tmp_path, daemon_id=daemon)
            summary = Summary(
                executor=partial(lambda e: e, ex),
                health=Health(mode="paper", version="0"),
                db=db,
                repos=repos,
                settings=partial(lambda s: s, settings),
                strategies=partial(lambda d: [f"{d}-strategy"], daemon),
            )
            assert await summary.tick(line=False) is not None


def test_each_daemon_keeps_its_own_snapshot_and_all_daemons_names_each(
    shared: dict[str, str], tmp_path: Path
) -> None:
    old = {"at": "2026-12-06T00:00:00+00:00", "state": "ACTIVE", "pnl_today": "7"}

    async def legacy_only() -> None:
        async with PgDatabase(shared["DATABASE_URL"]) as db:
            await Repositories.over(db).state.set(ACCOUNT_SNAPSHOT_KEY, json.dumps(old))

    asyncio.run(legacy_only())
    # Before east writes its own, the old row is still read, and said to be of no known daemon.
    before = cli_json(shared, "status")["account"]
    assert (before["pnl_today"], before["snapshot_daemon"]) == ("7", None)
    text = run_cli("status", "--env-file", "none", env=shared).stdout
    assert "written before snapshots were per daemon" in text
    asyncio.run(write_snapshots(shared["DATABASE_URL"], tmp_path))
    for daemon in ("east", "west"):
        mine = cli_json(shared, "status", "--daemon", daemon)["account"]
        assert mine["snapshot_daemon"] == daemon
        assert [s["name"] for s in mine["strategies"]][-1:] == [f"{daemon}-strategy"]
        assert mine["daemon_snapshots"] == {}
    every = cli_json(shared, "status", "--all-daemons")["account"]
    snaps = every["daemon_snapshots"]
    assert sorted(snaps) == ["", "east", "west"]  # "": the old row, whoever wrote it
    assert (snaps["east"]["daemon"], snaps["west"]["daemon"]) == ("east", "west")
    assert snaps[""]["pnl_today"] == "7"
    text = run_cli("status", "--all-daemons", "--env-file", "none", env=shared).stdout
    rows = {
        ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("east ", "west "))
    }
    assert sorted(rows) == ["east", "west"]
    assert rows["east"][2:4] == rows["west"][2:4] == ["ACTIVE", "0"]
    assert any(ln.startswith("(before per-daemon snapshots)") for ln in text.splitlines())


async def test_the_console_and_chat_show_the_accounts_halt_and_summed_pnl(
    shared: dict[str, str], tmp_path: Path
) -> None:
    url = shared["DATABASE_URL"]
    await share_account(url)
    with Views.open(tmp_path / "unused.db", url) as views:
        page = board(views, daily_loss_limit=D(100), now=datetime.now(UTC))
    (account,) = page["status"]["shared_accounts"]
    assert (account["halted_by"], account["halt_reason"]) == ("west", "operator: venue maintenance")
    assert account["daily_pnl"] == "-42.5"
    assert account["pnl_by_daemon"] == {"east": "-12.5", "west": "-30"}
    desk = DaemonDesk(
        db_path=tmp_path / "unused.db",
        database_url=url,
        daily_loss_limit=D(100),
        mode="paper",
        executor=lambda: None,
        run_control=None,
    )
    status = (await desk.report("status")).splitlines()
    assert status[0].startswith("polyd (paper): HALTED (account halted by daemon west at ")
    assert status[0].endswith(" UTC: operator: venue maintenance)")
    assert status[1] == (
        "today's PnL of account …abababab, every daemon: -42.50 (halts at -100.00);"
        " east -12.50, west -30.00"
    )
    assert "this daemon's book today: (not known yet)" in status
    pnl = await desk.report("pnl")
    assert "every daemon: -42.50" in pnl


async def test_the_console_and_chat_of_a_daemon_show_its_own_rows(
    shared: dict[str, str], tmp_path: Path
) -> None:
    """The running daemon's console board and chat read its DAEMON_ID's rows, as the CLI does:
    west (halted by hand, its copy position, no open order) sees none of east's orders, sniper
    position or fills; each sees the unattributed holding and fills no order explains."""
    url = shared["DATABASE_URL"]
    health = Health(mode="paper", version="t")
    sidecar = Sidecar(host="127.0.0.1", port=0, health=health, metrics=Metrics())

    def console(daemon: str) -> Console:
        return Console(
            sidecar, health=health, db_path=tmp_path / "unused.db", database_url=url,
            daily_loss_limit=D(100), daemon_id=daemon,
        )  # fmt: skip

    west = await console("west").board()
    assert (west["status"]["trading_state"], west["status"]["state_reason"]) == (
        "HALTED",
        "west halted by hand",
    )
    assert [p["strategy"] for p in west["positions"]] == ["copy", "unattributed"]
    assert west["orders"] == []  # east's resting SELL is east's
    assert {t["trade_id"] for t in west["trades"]} == {"t-west", "t-m"}
    assert (west["status"]["open_orders"], west["status"]["fills"]) == (0, 2)
    east = await console("east").board()
    assert east["status"]["trading_state"] == "ACTIVE"
    assert [p["strategy"] for p in east["positions"]] == ["sniper", "unattributed"]
    assert [(o["strategy"], o["side"]) for o in east["orders"]] == [("sniper", "SELL")]
    assert {t["trade_id"] for t in east["trades"]} == {"t-east", "t-m"}

    def desk(daemon: str) -> DaemonDesk:
        return DaemonDesk(
            db_path=tmp_path / "unused.db", database_url=url, daily_loss_limit=D(100),
            mode="paper", executor=lambda: None, run_control=None, daemon_id=daemon,
        )  # fmt: skip

    chat = desk("west")
    status = (await chat.report("status")).splitlines()
    assert status[0] == "polyd (paper): HALTED (west halted by hand)"
    assert "open orders: 0, positions: 2, fills: 2" in status
    positions = await chat.report("positions")
    assert "copy " in positions and "sniper" not in positions and "unattributed " in positions
    assert ": 2 fills, bought 2.60," in await chat.report("daily")  # 4 x 0.50 + 3 x 0.20
    # New fills as they are recorded: west is told of its own and of those no order explains.
    east_chat = desk("east")
    assert await chat.new_fills() == [] and await east_chat.new_fills() == []
    await record_later_fills(url)
    told = await chat.new_fills()
    assert len(told) == 1 and told[0].startswith("fill: BUY 2 of ")
    assert [n.split()[1] for n in await east_chat.new_fills()] == ["sniper", "BUY"]


async def record_later_fills(url: str) -> None:
    """East's resting SELL fills in part; another manual trade lands on the account."""
    async with PgDatabase(url) as db:
        east = Repositories.over(db, daemon_id="east")
        (sell,) = [o for o in await east.orders.non_terminal() if o.side == "SELL"]
        await east.fills.record(
            Fill(trade_id="t-east-2", venue_order_id="0xeast2",
                 client_order_id=sell.client_order_id, token_id=TOKEN_E, side=Side.SELL,
                 price=D("0.60"), size=D("4"))
        )  # fmt: skip
        await east.fills.record(
            Fill(trade_id="t-m2", venue_order_id="0xmanual2", token_id=TOKEN_M, side=Side.BUY,
                 price=D("0.20"), size=D("2"))
        )  # fmt: skip
