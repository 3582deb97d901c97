"""The simulated chain and relayer on the wire, and `approve` for each kind of wallet.

JSON-RPC shapes: https://ethereum.org/en/developers/docs/apis/json-rpc/ (a revert is an error
object whose message starts "execution reverted"). Relayer states and auth:
Polymarket/builder-relayer-client @ c42a054 `src/types.ts` (STATE_NEW → STATE_MINED →
STATE_CONFIRMED), reference §12.4 (relayer API key headers; CLOB credentials refused).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_abi.abi import decode as abi_decode

from redemption.build import approvals_state, approve
from redemption.senders import BelowPolFloor, RelayerSender, SendRefused
from simulator import Simulator
from simulator.chain import PAYOUT_REDEMPTION
from tests.helpers import make_settings, until
from tests.integration.test_redemption_sim import KEY, RELAYER_ADDR, RELAYER_KEY, SIGNER
from venue.chain import contracts as cc
from venue.chain.relayer import RelayerClient
from venue.chain.rpc import ChainError, RpcClient

D = Decimal
A = cc.ADDRESSES
WALLET = "0x" + "c4" * 20


async def rpc_post(session: aiohttp.ClientSession, url: str, body: object) -> Any:
    async with session.post(url, json=body) as r:
        return await r.json()


async def test_rpc_batches_reverts_and_logs() -> None:
    async with Simulator(seed=2) as sim, aiohttp.ClientSession() as session:
        m = sim.add_market(question="logs?", slug="logs")
        sim.fund(WALLET, token_id=m.token_ids[0], shares=D("3"))
        sim.chain.approve_all(WALLET, A.collateral_adapter)
        sim.lifecycle.resolve(m.condition_id, m.token_ids[0])
        batch = await rpc_post(
            session,
            sim.rpc_url,
            [
                {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "eth_call",
                    "params": [
                        {
                            "to": A.ctf,
                            "data": cc.erc1155_balance_of(A.ctf, WALLET, m.token_ids[0]).data_hex,
                        },
                        "latest",
                    ],
                },
            ],
        )
        assert batch[0]["result"] == "0x89" and int(batch[1]["result"], 16) == 3_000_000
        rpc = RpcClient(url=sim.rpc_url, session=session)
        with pytest.raises(ChainError, match="execution reverted: unsupported call"):
            await rpc.call(cc.Call(A.router, b"\x00\x00\x00\x01"))
        # A relayed redemption through the adapter leaves a PayoutRedemption log with the payout.
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        sim.relayer.register_wallet(SIGNER, WALLET, "SAFE")
        sim.chain.hold = True
        client = RelayerClient(
            url=sim.relayer_url, session=session, api_key=RELAYER_KEY, api_key_address=RELAYER_ADDR
        )
        sender = RelayerSender(
            relayer=client, key=KEY, chain_id=137, wallet=WALLET, wallet_type="SAFE"
        )
        prepared = await sender.prepare([cc.adapter_redeem(A.collateral_adapter, m.condition_id)])
        sent = await sender.send(prepared.payload, None)
        rid = sent.relayer_id
        assert rid is not None and sent.tx_hash is not None
        states = [(await client.transaction(rid) or {}).get("state")]
        assert await rpc.receipt(sent.tx_hash) is None  # pending: no receipt yet
        sim.chain.release()
        await until(lambda: sim.relayer.txs[rid].state == "STATE_CONFIRMED")
        states.append((await client.transaction(rid) or {}).get("state"))
        receipt = await rpc.receipt(sent.tx_hash)
        logs = await rpc.request(
            "eth_getLogs",
            [{"fromBlock": "0x0", "address": A.collateral_adapter, "topics": [PAYOUT_REDEMPTION]}],
        )
    assert states == ["STATE_NEW", "STATE_CONFIRMED"]
    assert receipt is not None and receipt["status"] == "0x1"
    [log] = logs
    assert (
        log["transactionHash"] == sent.tx_hash
        and abi_decode(["bytes32", "uint256[]", "uint256"], bytes.fromhex(log["data"][2:]))[2]
        == 3_000_000
    )


async def test_relayer_refuses_clob_credentials_and_a_stranger_s_wallet() -> None:
    async with Simulator(seed=2) as sim, aiohttp.ClientSession() as session:
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        sim.relayer.register_wallet("0x" + "01" * 20, WALLET, "SAFE")  # someone else's Safe
        for key in ("not-a-relayer-key", RELAYER_KEY):
            client = RelayerClient(
                url=sim.relayer_url, session=session, api_key=key, api_key_address=RELAYER_ADDR
            )
            sender = RelayerSender(
                relayer=client, key=KEY, chain_id=137, wallet=WALLET, wallet_type="SAFE"
            )
            prepared = await sender.prepare([cc.set_approval_for_all(A.ctf, A.router)])
            with pytest.raises(SendRefused, match="401" if key != RELAYER_KEY else "does not own"):
                await sender.send(prepared.payload, None)
    assert sim.relayer.submits == 0


@pytest.mark.parametrize("signature_type", [0, 1, 2, 3])
async def test_approve_sets_every_redemption_approval_once(
    tmp_path: Path, signature_type: int
) -> None:
    async with Simulator(seed=2) as sim, aiohttp.ClientSession() as session:
        sim.chain.mine_delay_s = sim.relayer.confirm_delay_s = 0.01
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        wallet = SIGNER if signature_type == 0 else WALLET
        if signature_type:
            sim.relayer.register_wallet(
                SIGNER, WALLET, {1: "PROXY", 2: "SAFE", 3: "WALLET"}[signature_type]
            )
        sim.chain.fund_pol(SIGNER, D("2"))
        settings = make_settings(
            tmp_path,
            mode="live",
            private_key=KEY,
            signature_type=signature_type,
            funder_address=wallet if signature_type else None,
            rpc_url=sim.rpc_url,
            relayer_url=sim.relayer_url,
            relayer_api_key=RELAYER_KEY,
            relayer_api_key_address=RELAYER_ADDR,
        )
        done = await approve(settings, session)
        again = await approve(settings, session)
        state = await approvals_state(RpcClient(url=sim.rpc_url, session=session), wallet)
    assert len(done) == 5 and again == []
    assert all(s.approved for s in state)
    assert len(sim.chain.txs) == (5 if signature_type == 0 else 1)  # an EOA: one each; else a batch


async def test_approve_as_an_eoa_without_pol_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with Simulator(seed=2) as sim, aiohttp.ClientSession() as session:
        settings = make_settings(tmp_path, mode="live", private_key=KEY, rpc_url=sim.rpc_url)
        with pytest.raises(BelowPolFloor, match=r"POL floor 0\.5: send POL to it"):
            await approve(settings, session)
    assert sim.chain.txs == {}
