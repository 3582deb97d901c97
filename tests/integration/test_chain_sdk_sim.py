"""The official SDK's own chain and relayer readers work against the simulator unchanged.

Polymarket/py-sdk (polymarket-client 0.14.0): `_internal/eoa/rpc.py` `JsonRpcClient` (batched
`eth_call`), `_internal/actions/relayer/approvals.py` `get_trading_approvals_state` (ERC-20
allowances and ERC-1155 operator approvals of the production environment table) and
`_internal/actions/relayer/poll.py` `poll_until_terminal` (`GET /v1/account/transactions/{id}`).
A simulator that answered in a shape of its own would fail here, not in production.
"""

from __future__ import annotations

import aiohttp
import pytest
from polymarket import environments
from polymarket._internal.actions.relayer import approvals as sdk_approvals
from polymarket._internal.actions.relayer import poll as sdk_poll
from polymarket._internal.eoa.rpc import JsonRpcClient
from polymarket.clients._transport import AsyncTransport
from polymarket.errors import TransactionFailedError

from redemption.senders import RelayerSender
from simulator import Simulator
from tests.integration.test_redemption_sim import KEY, RELAYER_ADDR, RELAYER_KEY, SIGNER
from venue.chain import contracts as cc
from venue.chain.relayer import RelayerClient

WALLET = "0x" + "b7" * 20


async def test_sdk_reads_chain_id_and_approvals_from_the_simulated_chain() -> None:
    cfg = environments.PRODUCTION._config
    async with Simulator(seed=4) as sim:
        rpc = JsonRpcClient(AsyncTransport(base_url=sim.rpc_url))
        try:
            assert await rpc.eth_chain_id() == 137
            before = await sdk_approvals.get_trading_approvals_state(rpc, wallet=WALLET, config=cfg)
            for a in before.missing.erc20:
                sim.chain.allowances[(WALLET, a.spender.lower())] = a.amount
            for b in before.missing.erc1155:
                sim.chain.approve_all(WALLET, b.operator, token=b.token_address)
            after = await sdk_approvals.get_trading_approvals_state(rpc, wallet=WALLET, config=cfg)
        finally:
            await rpc.close()
    assert not before.is_fully_approved
    assert len(before.missing.erc20) == 7 and len(before.missing.erc1155) == 10
    assert after.is_fully_approved


@pytest.mark.parametrize("fail", [False, True])
async def test_sdk_polls_a_relayed_transaction_to_its_terminal_state(fail: bool) -> None:
    async with Simulator(seed=4) as sim, aiohttp.ClientSession() as session:
        sim.relayer.add_api_key(RELAYER_KEY, RELAYER_ADDR)
        sim.relayer.register_wallet(SIGNER, WALLET, "SAFE")
        sim.relayer.fail_next = int(fail)
        client = RelayerClient(
            url=sim.relayer_url, session=session, api_key=RELAYER_KEY, api_key_address=RELAYER_ADDR
        )
        sender = RelayerSender(
            relayer=client, key=KEY, chain_id=137, wallet=WALLET, wallet_type="SAFE"
        )
        prepared = await sender.prepare(
            [cc.set_approval_for_all(cc.ADDRESSES.ctf, cc.ADDRESSES.router)]
        )
        sent = await sender.send(prepared.payload, None)
        assert sent.relayer_id is not None
        transport = AsyncTransport(base_url=sim.relayer_url)
        try:
            if fail:
                with pytest.raises(TransactionFailedError, match="execution reverted"):
                    await sdk_poll.poll_until_terminal(
                        transport,
                        transaction_id=sent.relayer_id,
                        fallback_hash=None,
                        max_polls=50,
                        poll_delay_s=0.02,
                    )
            else:
                outcome = await sdk_poll.poll_until_terminal(
                    transport,
                    transaction_id=sent.relayer_id,
                    fallback_hash=None,
                    max_polls=50,
                    poll_delay_s=0.02,
                )
                assert outcome.transaction_hash == sent.tx_hash
                assert (
                    cc.ADDRESSES.ctf.lower(),
                    WALLET,
                    cc.ADDRESSES.router.lower(),
                ) in sim.chain.approvals
        finally:
            await transport.close()
