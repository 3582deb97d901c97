"""A pending redemption survives `kill -9` of `python -m orchestrator redeem` and is never re-sent.

The simulator runs in the test's loop; `redeem` runs as a real subprocess against it. The chain
holds transactions pending (`Chain.hold`), so the kill lands after the redemption was journaled
and sent but before it confirmed: the worst moment for a duplicate. The second run finds the
journaled transaction (by hash on chain, by id at the relayer), sends nothing new, and settles
once the chain mines it. The SENDING case (killed between journal and send) is covered
in-process: the same signed bytes go out, never a second signature.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from simulator import Simulator
from storage.db import Database
from storage.fills import FillRepository
from storage.redemptions import RedemptionRepository
from tests.helpers import PYTHON, ROOT, clean_env, until
from tests.integration.test_redemption_sim import (
    KEY,
    RELAYER_ADDR,
    RELAYER_KEY,
    Env,
    add_market,
    approve_all,
    hold,
    redeemer,
    sender_for,
    wallet_of,
)

D = Decimal


def env_file(sim: Simulator, tmp_path: Path, wallet_type: str, wallet: str) -> Path:
    sig = {"EOA": 0, "PROXY": 1, "SAFE": 2, "WALLET": 3}[wallet_type]
    lines = [
        "MODE=live",
        f"PRIVATE_KEY={KEY}",
        f"SIGNATURE_TYPE={sig}",
        f"CLOB_HOST={sim.clob_url}",
        f"GAMMA_API_URL={sim.gamma_url}",
        f"DATA_API_URL={sim.data_url}",
        f"RPC_URL={sim.rpc_url}",
        f"RELAYER_URL={sim.relayer_url}",
        f"RELAYER_API_KEY={RELAYER_KEY}",
        f"RELAYER_API_KEY_ADDRESS={RELAYER_ADDR}",
        f"DB_PATH={tmp_path / 'polyd.db'}",
        "LOG_FORMAT=json",
    ]
    if sig:
        lines.append(f"FUNDER_ADDRESS={wallet}")
    path = tmp_path / "redeem.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


async def start(path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "orchestrator",
        "redeem",
        "--env-file",
        str(path),
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with Simulator(seed=9, settle_delay_s=0.01) as sim:
        sim.chain.mine_delay_s = 0.01
        sim.relayer.confirm_delay_s = 0.01
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        db = Database(tmp_path / "polyd.db")
        await db.open()
        async with aiohttp.ClientSession() as session:
            yield Env(sim, db, session, RedemptionRepository(db=db), FillRepository(db=db))
        await db.close()


@pytest.mark.parametrize("wallet_type", ["EOA", "PROXY"])
async def test_pending_redeem_across_kill_9_is_not_resent(
    env: Env, tmp_path: Path, wallet_type: str
) -> None:
    wallet = wallet_of(env, wallet_type)
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("20"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    await env.db.close()  # the subprocess takes the writer lock; the test reads with sqlite3
    path = env_file(env.sim, tmp_path, wallet_type, wallet)
    env.sim.chain.hold = True

    first = await start(path)
    await until(lambda: len(env.sim.chain.txs) == 1, 30)
    await asyncio.sleep(0.3)  # let it journal SENT and start polling
    os.kill(first.pid, signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "polyd.db") as c:
        [(status,)] = c.execute("SELECT status FROM redemptions").fetchall()
    assert status in ("SENDING", "SENT")

    second = await start(path, "--json")
    await asyncio.sleep(1.5)
    assert len(env.sim.chain.txs) == 1  # resumed by lookup, nothing new sent
    assert env.sim.relayer.submits == (0 if wallet_type == "EOA" else 1)
    env.sim.chain.release()
    out, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, err.decode()[-2000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert [line["outcome"] for line in report["markets"]] == ["redeemed"]
    assert len(env.sim.chain.txs) == 1
    assert env.sim.engine.collateral[wallet.lower()] == D("20")
    with sqlite3.connect(tmp_path / "polyd.db") as c:
        rows = c.execute("SELECT status, payout FROM redemptions").fetchall()
    assert rows == [("REDEEMED", "20")]


@pytest.mark.parametrize("wallet_type", ["EOA", "SAFE"])
async def test_killed_between_journal_and_send_sends_the_same_signed_payload(
    env: Env, wallet_type: str
) -> None:
    wallet = wallet_of(env, wallet_type)
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("6"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    r = redeemer(env, wallet_type, wallet)
    # What a run does up to its crash: plan, sign, journal SENDING; the send never happens.
    from redemption.plan import calls_for, confirm
    from venue.chain.sources import market_kind

    market = await market_kind(env.session, env.sim.gamma_url, m.condition_id)
    assert market is not None
    cand = await confirm(r.rpc, wallet, market)
    assert cand is not None
    prepared = await sender_for(env, wallet_type, wallet).prepare(
        calls_for(cand, one_tx_per_call=True)
    )
    await env.repo.begin(
        wallet=wallet,
        wallet_type=wallet_type,
        condition_id=m.condition_id,
        kind="binary",
        shares={m.token_ids[0]: (D("6"), D(1))},
        expected_payout=D("6"),
        balance_before=D(0),
        status="SENDING",
        payload=prepared.payload,
        tx_hash=prepared.tx_hash,
        relayer_nonce=prepared.nonce,
    )

    report = await r.run()

    assert report.outcomes() == ["redeemed"]
    assert len(env.sim.chain.txs) == 1
    if wallet_type == "EOA":
        assert list(env.sim.chain.txs) == [prepared.tx_hash]  # the journaled bytes went out
    [row] = await env.repo.all()
    assert (row.status, row.payout) == ("REDEEMED", D("6"))


async def test_redeem_refuses_while_the_daemon_holds_the_database(env: Env, tmp_path: Path) -> None:
    from storage.lock import writer_lock

    wallet = wallet_of(env, "EOA")
    path = env_file(env.sim, tmp_path, "EOA", wallet)
    lock = writer_lock(tmp_path / "polyd.db")
    await lock.acquire()  # what a running daemon holds
    try:
        proc = await start(path, "--dry-run")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await lock.release()
    assert proc.returncode == 3, out.decode() + err.decode()
    assert "AUTO_REDEEM=true" in err.decode()
