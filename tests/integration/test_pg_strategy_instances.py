"""Strategy instances on one PostgreSQL database: two daemon processes, each on its own venue
account with its own copy trader (`COPY_NAME`) and sniper (`SNIPER_NAME`), both follow the same
leader wallet and run a rule of the same name; both copy the leader's trade and both snipe,
each order, position, slot and metric under its own instance's name. A third daemon on east's
account following that wallet (under yet another copy trader name, so its strategy lease is
free) exits 3 with one line naming the wallet, the account and its holder; a clean stop
releases every lease."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from eth_account import Account

from demo import funded_key
from simulator import Simulator
from storage.leases import wallet_item
from tests.helpers import COPY_LEADER, COPY_RULES, NEAR_CLOSE_SNIPER_RULES
from tests.integration.test_pg_several_daemons import (
    Daemon,
    daemon_env,
    ready,
    rows,
    stop,
    until,
)
from tests.pg import PgServer

D = Decimal
MAKER = "0x" + "6c" * 20


def metrics(d: Daemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=5) as r:
        return str(r.read().decode())


async def test_two_copy_traders_follow_one_wallet_from_two_accounts_each_under_its_name(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    (tmp_path / "sniper.toml").write_text(NEAR_CLOSE_SNIPER_RULES)
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    copy = {"copy_rules_path": tmp_path / "copy.toml", "copy_poll_interval_s": 0.25}
    async with Simulator(seed=41, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        snipe = sim.add_market(
            question="Close soon?", slug="close", tags=("crypto",), end_date=soon
        )
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        ctok = copied.token_ids[0]
        sim.seed_order(MAKER, ctok, "SELL", D("0.51"), D("5000"))
        east_key, west_key = funded_key(sim, D("1000")), funded_key(sim, D("1000"))
        east_account = Account.from_key(east_key).address.lower()
        west_account = Account.from_key(west_key).address.lower()
        east_env = daemon_env(
            sim,
            tmp_path,
            "east",
            url,
            private_key=east_key,
            copy_name="copy-east",
            sniper_enabled=True,
            sniper_rules_path=tmp_path / "sniper.toml",
            sniper_name="snipe-east",
            **copy,
        )
        west_env = daemon_env(
            sim,
            tmp_path,
            "west",
            url,
            private_key=west_key,
            copy_name="copy-west",
            sniper_enabled=True,
            sniper_rules_path=tmp_path / "sniper.toml",
            sniper_name="snipe-west",
            **copy,
        )
        east, west = await Daemon(east_env).start(), await Daemon(west_env).start()
        try:
            await ready(east)
            await ready(west)
            assert rows(url, "SELECT strategy, daemon_id FROM leases ORDER BY 1") == [
                ("copy-east", "east"),
                ("copy-west", "west"),
                ("snipe-east", "east"),
                ("snipe-west", "west"),
            ]
            assert sorted(rows(url, "SELECT item, daemon_id FROM item_leases")) == sorted(
                [
                    (wallet_item(east_account, COPY_LEADER), "east"),
                    (wallet_item(west_account, COPY_LEADER), "west"),
                    (f"rule:{east_account}:near-close", "east"),
                    (f"rule:{west_account}:near-close", "west"),
                ]
            )
            # The leader buys: each copy trader copies it once, under its own name; the
            # snipers' ask appears and each sniper buys under its name.
            sim.trade_as(
                wallet=COPY_LEADER, token_id=ctok, side="BUY", price=D("0.50"), size=D("100")
            )
            sim.seed_order(MAKER, snipe.token_ids[0], "SELL", D("0.93"), D("100"))
            filled = "SELECT strategy, daemon_id FROM orders WHERE status = 'FILLED'"
            await until("four orders filled", lambda: len(rows(url, filled)) == 4)
            assert sorted(rows(url, filled)) == [
                ("copy-east", "east"),
                ("copy-west", "west"),
                ("snipe-east", "east"),
                ("snipe-west", "west"),
            ]
            held = "SELECT strategy, token_id FROM positions WHERE size > 0 ORDER BY 1"
            await until("four positions", lambda: len(rows(url, held)) == 4)
            assert rows(url, held) == [
                ("copy-east", ctok),
                ("copy-west", ctok),
                ("snipe-east", snipe.token_ids[0]),
                ("snipe-west", snipe.token_ids[0]),
            ]
            # Each ledger and each sniper's state is its instance's.
            sources = "SELECT source FROM cursors WHERE source LIKE 'copy:%' ORDER BY 1"
            assert rows(url, sources) == [
                (f"copy:copy-east:{COPY_LEADER}",),
                (f"copy:copy-west:{COPY_LEADER}",),
            ]
            slots = "SELECT strategy, rule, entries FROM sniper_slots ORDER BY 1"
            assert rows(url, slots) == [
                ("snipe-east", "near-close", 1),
                ("snipe-west", "near-close", 1),
            ]
            east_metrics = await asyncio.to_thread(metrics, east)
            assert 'polyd_strategy_signals_total{strategy="copy-east"} 1.0' in east_metrics
            assert 'polyd_strategy_signals_total{strategy="snipe-east"} 1.0' in east_metrics
            assert 'strategy="copy"' not in east_metrics

            # A third daemon on east's account following the same wallet is refused: exit 3,
            # one line naming the wallet, the account and its holder.
            north_env = daemon_env(
                sim, tmp_path, "north", url, private_key=east_key, copy_name="copy-north", **copy
            )
            north = await Daemon(north_env).start()
            assert await stop(north, wait_s=60) == 3
            (refusal,) = [x for x in north.lines() if x.get("event") == "already_running"]
            assert refusal["error"].startswith(
                f"followed wallet {COPY_LEADER} on account {east_account} is leased to daemon"
                " east until "
            )
            assert "this daemon (DAEMON_ID=north) must not follow it too" in refusal["error"]
            # Its strategy lease was given back; east and west trade on.
            assert ("copy-north",) not in rows(url, "SELECT strategy FROM leases")
            assert rows(url, "SELECT 1 FROM item_leases WHERE daemon_id = 'north'") == []
            await ready(east)
            await ready(west)
        finally:
            codes = await asyncio.gather(stop(east), stop(west))
        assert list(codes) == [0, 0]
        assert rows(url, "SELECT strategy FROM leases") == []  # released on a clean stop
        assert rows(url, "SELECT item FROM item_leases") == []
