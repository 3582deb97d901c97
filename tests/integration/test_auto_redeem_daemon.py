"""`AUTO_REDEEM=true`: the running daemon redeems a resolved position in the background.

The daemon (a real `python -m orchestrator` process, live against the in-loop simulator, EOA
wallet) finds the Data API's redeemable row, confirms it on the simulated chain, redeems it
through the collateral adapter and journals it REDEEMED; the payout lands in the venue's ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

from simulator import Simulator
from tests.harness import DaemonProcess
from tests.helpers import until
from venue.chain import contracts as cc

D = Decimal


def statuses(db: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return [r[0] for r in c.execute("SELECT status FROM redemptions")]
    except sqlite3.OperationalError:
        return []  # not created or not migrated yet


async def test_auto_redeem_redeems_in_the_background_once(tmp_path: Path) -> None:
    async with Simulator(seed=13, settle_delay_s=0.02) as sim:
        m = sim.add_market(question="Background redeem?", slug="auto-redeem")
        daemon = DaemonProcess(
            sim,
            tmp_path,
            collateral=D("100"),
            AUTO_REDEEM="true",
            AUTO_REDEEM_INTERVAL_S="0.5",
            RPC_URL=sim.rpc_url,
            RELAYER_URL=sim.relayer_url,
        )
        wallet = daemon.address
        sim.chain.fund_pol(wallet, D("5"))
        for ap in cc.redemption_approvals():
            sim.chain.approve_all(wallet, ap.operator, token=ap.token)
        sim.fund(wallet, token_id=m.token_ids[0], shares=D("40"))
        sim.trade_as(wallet, m.token_ids[0], "BUY", D("0.30"), D("40"))
        sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
        daemon.start()
        try:
            await until(lambda: sim.engine.collateral[wallet.lower()] == D("140"), 60)
            await until(lambda: statuses(daemon.db_path) == ["REDEEMED"], 30)
            await asyncio.sleep(1.5)  # more passes: nothing more may be sent
            assert len(sim.chain.txs) == 1
        finally:
            await asyncio.to_thread(daemon.stop)
    with sqlite3.connect(daemon.db_path) as c:
        rows = c.execute("SELECT status, payout, kind, wallet_type FROM redemptions").fetchall()
    assert rows == [("REDEEMED", "40", "binary", "EOA")]
