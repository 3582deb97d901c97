"""The daemon with the copy trader, live against the simulator through the real executor."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from demo import funded_key, simulator_overrides
from execution.market_rules import V2_REFUSAL
from observability.logging import Redactor
from orchestrator import EXIT_CONFIG, EXIT_OK, Context, Daemon
from simulator import SimMarket, Simulator
from storage import Database, Repositories
from storage.repositories import AuditEntry
from tests.helpers import clean_env, make_settings, run_cli
from tests.integration.test_redemption_sim import add_market

D = Decimal
LEADER = "0x" + "5e" * 20
MAKER = "0x" + "6a" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=3, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    m = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("crypto",))
    sim.seed_order(MAKER, m.token_ids[0], "SELL", D("0.51"), D("500"))
    return m


def settings_for(sim: Simulator, tmp_path: Path, rules: Path) -> Settings:
    return make_settings(
        tmp_path,
        **simulator_overrides(sim, funded_key(sim, D("1000"))),
        sniper_enabled=False,
        copy_rules_path=rules,
        copy_poll_interval_s=0.25,
        shutdown_timeout_s=3,
    )


def write_rules(tmp_path: Path) -> Path:
    # backfill_s: the leader trades as soon as the daemon is ready, which may be before the
    # copy trader's first start for the wallet (a trade older than that is not copied).
    p = tmp_path / "copy.toml"
    p.write_text(
        f'[[wallets]]\naddress = "{LEADER}"\nlabel = "leader"\nratio = "0.1"\n'
        'max_slippage = "0.02"\nbackfill_s = 30\nmax_trade_notional = "20"\n'
    )
    return p


async def run_daemon(settings: Any, seconds: float, on_ready: Any = None) -> int:
    daemon = Daemon(settings, redactor=Redactor([]), duration_s=seconds, on_ready=on_ready)
    return await daemon.run()


async def copies_in(db_path: Path) -> list[Any]:
    async with Database(db_path) as db:
        rows = await db.fetchall("SELECT * FROM orders WHERE strategy = 'copy'")
    return [dict(r) for r in rows]


async def audit_tail(db_path: Path, event: str) -> list[AuditEntry]:
    async with Database(db_path) as db:
        return await Repositories.over(db).audit.tail(event=event)


async def test_daemon_copies_leader_buy_through_executor_once_across_restart(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    settings = settings_for(sim, tmp_path, write_rules(tmp_path))
    token = market.token_ids[0]

    def trade_when_ready(ctx: Context) -> None:
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("100"))

    assert await run_daemon(settings, 2.5, trade_when_ready) == EXIT_OK
    first = await copies_in(settings.db_path)
    assert len(first) == 1
    row = first[0]
    assert (row["side"], D(row["size"]), D(row["price"])) == ("BUY", D("10.00"), D("0.52"))
    assert row["status"] == "FILLED"
    # A restart sees the same leader trade again (still young): it is not copied twice.
    assert await run_daemon(settings, 1.5) == EXIT_OK
    assert len(await copies_in(settings.db_path)) == 1
    audit = await audit_tail(settings.db_path, "copy_sent")
    # The lag is recorded (its size depends on the machine's load: no bound is asserted).
    assert len(audit) == 1 and audit[0].detail["lag_s"] >= 0


def test_bad_rules_file_exits_2_naming_wallet_and_field(tmp_path: Path) -> None:
    rules = tmp_path / "copy.toml"
    rules.write_text(f'[[wallets]]\naddress = "{LEADER}"\nlabel = "bad-one"\nratio = "-2"\n')
    env = clean_env(
        COPY_RULES_PATH=str(rules),
        DB_PATH=str(tmp_path / "polyd.db"),
        HTTP_PORT="0",
        SNIPER_ENABLED="false",
        LOG_FORMAT="json",
        GAMMA_API_URL="http://127.0.0.1:9",
        CLOB_HOST="http://127.0.0.1:9",
        DATA_API_URL="http://127.0.0.1:9",
    )
    t0 = time.monotonic()
    proc = run_cli("--env-file", "none", "--duration", "5", env=env, timeout=60)
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "bad-one" in out and "ratio" in out
    assert time.monotonic() - t0 < 30


async def test_rules_with_no_enabled_wallet_build_no_strategy(tmp_path: Path) -> None:
    rules = tmp_path / "copy.json"
    rules.write_text(json.dumps({"wallets": [{"address": LEADER, "ratio": "1", "enabled": False}]}))
    settings = make_settings(
        tmp_path,
        sniper_enabled=False,
        copy_rules_path=rules,
        gamma_api_url="http://127.0.0.1:9",
        clob_host="http://127.0.0.1:9",
    )
    seen: list[str] = []
    code = await run_daemon(settings, 0.3, lambda ctx: seen.extend(s.name for s in ctx.strategies))
    assert code == EXIT_OK and "copy" not in seen
    await asyncio.sleep(0)


async def test_daemon_tag_lists_use_gamma_tags_allowed_copied_blocked_skipped(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    sports = sim.add_market(question="Will the team win?", slug="team-wins", tags=("sports",))
    sim.seed_order(MAKER, sports.token_ids[0], "SELL", D("0.51"), D("500"))
    untagged = sim.add_market(question="No tags?", slug="no-tags")
    sim.seed_order(MAKER, untagged.token_ids[0], "SELL", D("0.51"), D("500"))
    rules = tmp_path / "copy.toml"
    rules.write_text(
        f'[[wallets]]\naddress = "{LEADER}"\nlabel = "leader"\nratio = "0.1"\n'
        'max_slippage = "0.02"\nbackfill_s = 30\n'
        'allow_tags = ["crypto", "sports"]\nblock_tags = ["Sports"]\n'
    )
    settings = settings_for(sim, tmp_path, rules)

    def trade_when_ready(ctx: Context) -> None:
        for m in (market, sports, untagged):
            sim.trade_as(
                wallet=LEADER, token_id=m.token_ids[0], side="BUY", price=D("0.50"), size=D("100")
            )

    assert await run_daemon(settings, 3.0, trade_when_ready) == EXIT_OK
    copies = await copies_in(settings.db_path)
    assert [c["token_id"] for c in copies] == [market.token_ids[0]]  # the crypto market only
    skips = await audit_tail(settings.db_path, "copy_skipped")
    reasons = {e.detail["token_id"]: e.detail["reason"] for e in skips}
    assert reasons == {
        sports.token_ids[0]: "market_blocked",
        untagged.token_ids[0]: "market_not_allowed",
    }


async def test_daemon_refuses_a_copied_leader_trade_in_a_protocol_v2_market(
    sim: Simulator, market: SimMarket, tmp_path: Path
) -> None:
    """A leader trading a Protocol-V2 market (a position id in the v2 namespace, which the
    official SDK routes to ExchangeV3 with EIP-712 domain "3") is copied into an order that the
    market rules refuse with the v2 reason before anything is fetched or signed; the v1 copy of
    the same run goes through."""
    v2 = add_market(sim, "v2")
    settings = settings_for(sim, tmp_path, write_rules(tmp_path))

    def trade_when_ready(ctx: Context) -> None:
        for m in (v2, market):
            sim.trade_as(
                wallet=LEADER, token_id=m.token_ids[0], side="BUY", price=D("0.50"), size=D("100")
            )

    assert await run_daemon(settings, 3.0, trade_when_ready) == EXIT_OK
    copies = {c["token_id"]: c for c in await copies_in(settings.db_path)}
    assert set(copies) == {market.token_ids[0], v2.token_ids[0]}
    assert copies[market.token_ids[0]]["status"] == "FILLED"
    refused = copies[v2.token_ids[0]]
    assert refused["status"] == "REJECTED"
    refusals = await audit_tail(settings.db_path, "order_refused")
    assert [(e.detail["source"], e.detail["reason"]) for e in refusals] == [("rules", V2_REFUSAL)]
    sent = [r.body for r in sim.clob.received_orders()]
    assert len(sent) == 1 and market.token_ids[0].encode() in sent[0]
