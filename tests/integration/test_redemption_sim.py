"""Redemption end to end against the simulator's chain and relayer, over real sockets.

Every wallet type (EOA, proxy, Safe, deposit wallet) × market kind (v1 binary, v1 neg-risk,
Protocol-V2): the payout lands in the wallet's pUSD (the venue's own ledger) and in the
positions' realized PnL. Then the failure modes: the silent zero-payout trap (CTF
`redeemPositions` with pUSD) detected, a relayer FAILED state, the auto-redeem operator's work
detected (balance already zero → nothing sent), the POL floor.
Sources: reference §12 (Polymarket/py-sdk `_internal/actions/relayer/*`; docs `trading/ctf/redeem`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account

from models import Position
from redemption.plan import Candidate
from redemption.redeemer import Redeemer
from redemption.senders import EoaSender, RelayerSender, Sender
from simulator import SimMarket, Simulator
from storage.db import Database
from storage.fills import FillRepository, upsert_position
from storage.redemptions import RedemptionRepository
from tests.helpers import until
from venue.chain import contracts as cc
from venue.chain.relayer import RelayerClient
from venue.chain.rpc import RpcClient

D = Decimal
KEY = "0x" + "5a" * 32
SIGNER = str(Account.from_key(KEY).address)
RELAYER_KEY, RELAYER_ADDR = "rk-test", "0x" + "99" * 20
A = cc.ADDRESSES


@dataclass
class Env:
    sim: Simulator
    db: Database
    session: aiohttp.ClientSession
    repo: RedemptionRepository
    fills: FillRepository


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with Simulator(seed=5, settle_delay_s=0.01) as sim:
        sim.chain.mine_delay_s = 0.01
        sim.relayer.confirm_delay_s = 0.01
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        db = Database(tmp_path / "r.db")
        await db.open()
        async with aiohttp.ClientSession() as session:
            yield Env(sim, db, session, RedemptionRepository(db=db), FillRepository(db=db))
        await db.close()


def add_market(sim: Simulator, kind: str) -> SimMarket:
    if kind == "v2":
        # A v2 position id in the real namespace (`polymarket-client` 0.14.0,
        # `polymarket/_internal/protocol.py`): module id 1 in the top byte, bits 40..103 zero,
        # the outcome in the last byte; the bytes31 condition id is all but that last byte.
        bits = int(sim.engine.new_hash(), 16)
        body = (1 << 248) | (bits & (((1 << 144) - 1) << 104)) | (bits & (((1 << 32) - 1) << 8))
        cid = f"0x{body:064x}"
        toks = (str(body), str(body | 1))
        m = sim.add_market(question="v2?", slug=f"v2-{cid[:8]}", condition_id=cid, token_ids=toks)
        m.version = "v2"
        return m
    return sim.add_market(
        question=f"{kind}?", slug=f"{kind}-{len(sim.markets)}", neg_risk=kind == "neg_risk"
    )


async def hold(
    e: Env, wallet: str, m: SimMarket, shares: D, *, index: int = 0, strategy: str = "sniper"
) -> None:
    """`wallet` holds `shares` of outcome `index` bought at 0.40: on chain (the venue ledger),
    in the Data API, and in the daemon's positions."""
    token = m.token_ids[index]
    e.sim.fund(wallet, token_id=token, shares=shares)
    e.sim.trade_as(wallet, token, "BUY", D("0.40"), shares)
    pos = Position(token_id=token, strategy=strategy, size=shares, avg_cost=D("0.40"))
    await e.db.write(lambda c: upsert_position(c, pos))


def approve_all(sim: Simulator, wallet: str) -> None:
    for ap in cc.redemption_approvals():
        if "operator" not in ap.name:
            sim.chain.approve_all(wallet, ap.operator, token=ap.token)


def sender_for(e: Env, wallet_type: str, wallet: str) -> Sender:
    if wallet_type == "EOA":
        return EoaSender(
            rpc=RpcClient(url=e.sim.rpc_url, session=e.session),
            key=KEY,
            chain_id=137,
            pol_floor=D("0.5"),
        )
    client = RelayerClient(
        url=e.sim.relayer_url, session=e.session, api_key=RELAYER_KEY, api_key_address=RELAYER_ADDR
    )
    return RelayerSender(
        relayer=client, key=KEY, chain_id=137, wallet=wallet, wallet_type=wallet_type
    )


def redeemer(e: Env, wallet_type: str, wallet: str, **kw: object) -> Redeemer:
    return Redeemer(
        wallet=wallet,
        sender=sender_for(e, wallet_type, wallet),
        rpc=RpcClient(url=e.sim.rpc_url, session=e.session),
        repo=e.repo,
        fills=e.fills,
        session=e.session,
        data_url=e.sim.data_url,
        gamma_url=e.sim.gamma_url,
        poll_interval_s=0.02,
        confirm_timeout_s=5.0,
        **kw,  # type: ignore[arg-type]  # test knobs
    )


def wallet_of(e: Env, wallet_type: str) -> str:
    if wallet_type == "EOA":
        e.sim.chain.fund_pol(SIGNER, D("5"))
        return SIGNER
    wallet = "0x" + {"PROXY": "a1", "SAFE": "a2", "WALLET": "a3"}[wallet_type] * 20
    e.sim.relayer.register_wallet(SIGNER, wallet, wallet_type)
    return wallet


@pytest.mark.parametrize("wallet_type", ["EOA", "PROXY", "SAFE", "WALLET"])
@pytest.mark.parametrize("kind", ["binary", "neg_risk", "v2"])
async def test_redeem_each_wallet_type_and_market_kind_pays_and_settles(
    env: Env, wallet_type: str, kind: str
) -> None:
    wallet = wallet_of(env, wallet_type)
    approve_all(env.sim, wallet)
    m = add_market(env.sim, kind)
    await hold(env, wallet, m, D("25"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    before = env.sim.engine.collateral.get(wallet.lower(), D(0))

    report = await redeemer(env, wallet_type, wallet).run()

    assert report.outcomes() == ["redeemed"], report.lines
    assert env.sim.engine.collateral[wallet.lower()] - before == D("25")
    assert env.sim.engine.shares.get((wallet.lower(), m.token_ids[0]), D(0)) == 0
    [pos] = await env.fills.positions_in(m.token_ids[0])
    assert (pos.size, pos.realized_pnl) == (D(0), D("15"))  # 25 x (1 - 0.40)
    [row] = await env.repo.all()
    assert (row.status, row.payout, row.kind, row.wallet_type) == (
        "REDEEMED",
        D("25"),
        kind,
        wallet_type,
    )
    sent = [t for t in env.sim.chain.txs.values() if t.sender in (wallet.lower(), SIGNER.lower())]
    assert len(sent) == 1
    # A second pass sends nothing: the chain holds nothing more, the journal says done.
    assert (await redeemer(env, wallet_type, wallet).run()).outcomes() == []
    assert len(env.sim.chain.txs) == 1


async def test_redeem_dry_run_plans_without_sending(env: Env) -> None:
    wallet = wallet_of(env, "PROXY")
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("10"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    report = await redeemer(env, "PROXY", wallet).run(dry_run=True)
    assert report.outcomes() == ["planned"] and report.lines[0]["expected"] == "10"
    assert env.sim.relayer.submits == 0 and await env.repo.all() == []


async def test_ctf_redeem_with_pusd_pays_nothing_and_is_flagged_zero_payout(env: Env) -> None:
    wallet = wallet_of(env, "SAFE")
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("12"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])

    def trap(c: Candidate, one: bool) -> list[cc.Call]:
        return [cc.ctf_redeem_with_pusd(c.condition_id)]

    alerts: list[tuple[str, str, str]] = []
    report = await redeemer(
        env, "SAFE", wallet, planner=trap, alert=lambda *a: alerts.append(a)
    ).run()

    assert report.outcomes() == ["zero_payout"]
    [(kind, key, text)] = alerts
    assert (kind, key) == ("redemption_zero_payout", f"redemption_zero_payout:{m.condition_id}")
    assert "paid nothing (expected 12 pUSD" in text
    [tx] = env.sim.chain.txs.values()
    assert tx.status == 1  # the trap: the transaction succeeds...
    assert env.sim.engine.shares[(wallet.lower(), m.token_ids[0])] == D(
        "12"
    )  # ...and burns nothing
    [row] = await env.repo.all()
    assert row.status == "ZERO_PAYOUT" and "expected 12" in (row.error or "")
    [pos] = await env.fills.positions_in(m.token_ids[0])
    assert pos.size == D("12")  # nothing settled
    # Never retried automatically: a human looks first.
    assert (await redeemer(env, "SAFE", wallet).run()).outcomes() == ["skipped"]
    assert len(env.sim.chain.txs) == 1


async def test_relayer_failed_state_is_journaled_failed_and_positions_untouched(env: Env) -> None:
    wallet = wallet_of(env, "WALLET")
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "neg_risk")
    await hold(env, wallet, m, D("8"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    env.sim.relayer.fail_next = 1

    report = await redeemer(env, "WALLET", wallet).run()

    assert report.outcomes() == ["failed"]
    [row] = await env.repo.all()
    assert row.status == "FAILED" and row.error == "execution reverted"
    [pos] = await env.fills.positions_in(m.token_ids[0])
    assert pos.size == D("8")
    # FAILED means nothing happened on chain: the next pass redeems.
    assert (await redeemer(env, "WALLET", wallet).run()).outcomes() == ["redeemed"]


async def test_missing_adapter_approval_reverts_and_fails(env: Env) -> None:
    wallet = wallet_of(env, "PROXY")  # no approvals
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("8"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    report = await redeemer(env, "PROXY", wallet).run()
    assert report.outcomes() == ["failed"]
    assert "not token owner or approved" in report.lines[0]["why"]
    # Retried on later passes, but not forever: after MAX_FAILED a human looks.
    for _ in range(2):
        assert (await redeemer(env, "PROXY", wallet).run()).outcomes() == ["failed"]
    skipped = await redeemer(env, "PROXY", wallet).run()
    assert skipped.outcomes() == ["skipped"] and "3 redemptions failed" in skipped.lines[0]["why"]
    assert env.sim.relayer.submits == 3


async def test_auto_redeem_operator_detected_nothing_sent_positions_settled(env: Env) -> None:
    wallet = wallet_of(env, "PROXY")
    env.sim.chain.approve_all(wallet, A.auto_redeem_operator, token=A.ctf)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("30"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    env.sim.chain.auto_redeem_every(0.02)
    await until(lambda: env.sim.engine.collateral.get(wallet.lower()) == D("30"))
    [op_tx] = env.sim.chain.txs.values()
    assert op_tx.sender == A.auto_redeem_operator.lower()

    report = await redeemer(env, "PROXY", wallet).run()

    assert report.outcomes() == ["already_redeemed"]
    assert env.sim.relayer.submits == 0
    [row] = await env.repo.all()
    assert row.status == "ALREADY_REDEEMED"
    [pos] = await env.fills.positions_in(m.token_ids[0])
    assert (pos.size, pos.realized_pnl) == (D(0), D("18"))
    assert (await redeemer(env, "PROXY", wallet).run()).outcomes() == []  # recorded once


async def test_eoa_below_pol_floor_refuses_and_sends_nothing(env: Env) -> None:
    wallet = SIGNER
    env.sim.chain.fund_pol(SIGNER, D("0.5"))
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("5"))
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    report = await redeemer(env, "EOA", wallet).run()
    assert report.outcomes() == ["refused"] and "POL floor" in report.lines[0]["why"]
    assert env.sim.chain.txs == {} and await env.repo.all() == []  # nothing signed, no row


async def test_losing_position_redeems_for_zero_without_alert(env: Env) -> None:
    wallet = wallet_of(env, "SAFE")
    approve_all(env.sim, wallet)
    m = add_market(env.sim, "binary")
    await hold(env, wallet, m, D("10"), index=1)
    env.sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
    report = await redeemer(env, "SAFE", wallet).run()
    assert report.outcomes() == ["redeemed"] and report.lines[0]["payout"] == "0"
    [pos] = await env.fills.positions_in(m.token_ids[1])
    assert (pos.size, pos.realized_pnl) == (D(0), D("-4"))
