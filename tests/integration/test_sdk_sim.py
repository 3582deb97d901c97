"""The official SDK (`polymarket-client`) drives the simulator through `venue.sdk_env`: every call
the daemon's order path would make — book, credentials (L1), market rules, order signing and
posting (single and batch), order and trade reads, heartbeats, balance/allowance, the cancels —
is served with the venue's wire shapes and answered without an error status.

SDK calls from Polymarket/py-sdk `polymarket/clients/async_public.py` and
`polymarket/clients/async_secure.py` (polymarket-client 0.14.0).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account

from simulator import Simulator
from tests.helpers import require_sdk
from venue.sdk_env import VenueUrls, environment


def sim_environment(sim: Simulator) -> Any:
    return environment(
        VenueUrls(
            clob_url=sim.clob_url,
            clob_market_ws_url=sim.market_ws_url,
            clob_user_ws_url=sim.user_ws_url,
            gamma_url=sim.gamma_url,
            data_url=sim.data_url,
        )
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    require_sdk()
    async with Simulator(seed=7, settle_delay_s=0.01) as s:
        yield s


async def _items(paginator: Any) -> list[Any]:
    return [x async for x in paginator.iter_items()]


async def test_the_sdk_runs_the_daemons_order_path_against_the_simulator(sim: Simulator) -> None:
    from polymarket import AcceptedOrder, AsyncPublicClient, AsyncSecureClient

    token = sim.add_market("Will it rain?", "rain").token_ids[0]
    env = sim_environment(sim)
    acct = Account.create()
    sim.fund(acct.address, collateral=Decimal("1000"))

    pub = AsyncPublicClient(env)
    book = await pub.get_order_book(token_id=token)
    assert book.asset_id == token

    client = await AsyncSecureClient.create(
        private_key=acct.key.hex(), wallet=acct.address, environment=env
    )
    try:
        signed = await client.create_limit_order(token_id=token, price="0.4", size="10", side="BUY")
        assert signed.maker_amount == 4_000_000 and signed.taker_amount == 10_000_000
        ack = await client.post_order(signed)
        assert ack.ok and ack.status == "live"
        assert (await client.get_order(order_id=ack.order_id)).id == ack.order_id
        assert [o.id for o in await _items(client.list_open_orders())] == [ack.order_id]
        assert await _items(client.list_account_trades()) == []
        assert (await client.send_order_heartbeat()).heartbeat_id
        bal = await client.get_balance_allowance(asset_type="COLLATERAL")
        assert bal.balance == 1000 * 10**6  # the wallet's pUSD; open orders are not netted
        assert {a.lower() for a in bal.allowances} == {
            env._config.standard_exchange.lower(),
            env._config.neg_risk_exchange.lower(),
        }
        assert (await client.cancel_order(order_id=ack.order_id)).canceled == (ack.order_id,)

        batch = await client.post_orders(
            [
                await client.create_limit_order(token_id=token, price=p, size="10", side="BUY")
                for p in ("0.3", "0.2")
            ]
        )
        accepted = [a.order_id for a in batch if isinstance(a, AcceptedOrder)]
        assert len(accepted) == 2
        assert set((await client.cancel_market_orders(asset_id=token)).canceled) == set(accepted)
        assert (await client.cancel_all()).canceled == ()
    finally:
        await client.close()
        await pub.close()
    errors = [r for r in sim.request_log if r.status >= 400 and not r.path.startswith("/_sim/")]
    assert errors == [], errors


async def test_the_sdk_never_re_signs_a_re_posted_order(sim: Simulator) -> None:
    """`post_order` posts the signed order it is given, once per call, with no retry of its own
    (its only retry is `place_*_order`'s re-post of the same signed order after an on-chain
    approval, which polyd does not call); a second post is the venue's duplicate refusal."""
    from polymarket import AcceptedOrder, AsyncSecureClient
    from polymarket.errors import RequestRejectedError

    token = sim.add_market("Will it snow?", "snow").token_ids[0]
    acct = Account.create()
    sim.fund(acct.address, collateral=Decimal("100"))
    client = await AsyncSecureClient.create(
        private_key=acct.key.hex(), wallet=acct.address, environment=sim_environment(sim)
    )
    try:
        signed = await client.create_limit_order(token_id=token, price="0.1", size="10", side="BUY")
        ack = await client.post_order(signed)
        assert isinstance(ack, AcceptedOrder)
        with pytest.raises(RequestRejectedError, match="Duplicated"):
            await client.post_order(signed)
    finally:
        await client.close()
    posts = [r for r in sim.clob.received_orders() if r.path == "/order"]
    assert len(posts) == 2
    assert {r.order_id for r in posts} == {ack.order_id}
    sigs = {json.loads(r.body)["order"]["signature"] for r in posts}
    assert sigs == {signed.signature}


async def test_the_sdk_derives_the_api_key_polyd_derives(sim: Simulator) -> None:
    """Moving a wallet from polyd's client to the SDK keeps its API key: both derive nonce 0
    through the same L1 route (`venue.clob.build_client` vs `AsyncSecureClient.create`)."""
    from polymarket import AsyncSecureClient

    from venue.clob import build_client

    acct = Account.create()
    ours = await asyncio.to_thread(
        build_client,
        host=sim.clob_url,
        chain_id=sim.chain_id,
        private_key=acct.key.hex(),
        creds=None,
        signature_type=0,
        funder=None,
    )
    client = await AsyncSecureClient.create(
        private_key=acct.key.hex(), wallet=acct.address, environment=sim_environment(sim)
    )
    try:
        theirs = client._ctx.credentials
        assert ours.creds is not None
        assert (theirs.key, theirs.secret, theirs.passphrase) == (
            ours.creds.api_key,
            ours.creds.api_secret,
            ours.creds.api_passphrase,
        )
    finally:
        await client.close()


async def test_the_sdks_market_and_user_streams_run_against_the_simulator(sim: Simulator) -> None:
    from polymarket import AcceptedOrder, AsyncSecureClient
    from polymarket.streams import MarketSpec, UserSpec

    token = sim.add_market("Will it hail?", "hail").token_ids[0]
    acct = Account.create()
    sim.fund(acct.address, collateral=Decimal("100"))
    client = await AsyncSecureClient.create(
        private_key=acct.key.hex(), wallet=acct.address, environment=sim_environment(sim)
    )
    try:
        market = await client.subscribe(MarketSpec(asset_ids=[token]))
        user = await client.subscribe(UserSpec())
        signed = await client.create_limit_order(token_id=token, price="0.4", size="10", side="BUY")
        ack = await client.post_order(signed)
        assert isinstance(ack, AcceptedOrder)
        book = await asyncio.wait_for(anext(market), 5)
        assert book.type == "book" and getattr(book.payload, "asset_id", None) == token
        change = await asyncio.wait_for(anext(market), 5)
        assert change.type == "price_change"
        mine = await asyncio.wait_for(anext(user), 5)
        assert mine.type == "order" and getattr(mine.payload, "id", None) == ack.order_id
        await market.close()
        await user.close()
    finally:
        await client.close()
