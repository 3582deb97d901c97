"""polyd's chain calls and relayer envelopes are the official SDK's, byte for byte.

polyd rebuilds them (`venue/chain`) rather than importing the SDK's private modules; these tests
build the same thing with the SDK (polymarket-client, Polymarket/py-sdk
`_internal/actions/relayer/`) and fail on the first difference, so an SDK change that moves the
wire format shows here.
"""

from __future__ import annotations

import dataclasses

from eth_account import Account
from polymarket import environments
from polymarket._internal.actions.relayer import calls as sdk_calls
from polymarket._internal.actions.relayer import gasless as sdk_gasless
from polymarket._internal.actions.relayer.signing import deposit_wallet as sdk_dw
from polymarket._internal.actions.relayer.signing import proxy as sdk_proxy
from polymarket._internal.actions.relayer.signing import safe as sdk_safe

from venue.chain import contracts as c
from venue.chain import signing

KEY = "0x" + "11" * 32
ACCT = Account.from_key(KEY)
WALLET = "0x1234567890123456789012345678901234567890"
CID = "0x" + "ab" * 31 + "00"


def _sdk(call: c.Call) -> sdk_calls.TransactionCall:
    return sdk_calls.TransactionCall(to=call.to, data="0x" + call.data.hex())  # type: ignore[arg-type]  # SDK NewTypes


def test_addresses_match_the_sdk_production_table() -> None:
    cfg = environments.PRODUCTION._config
    a = c.ADDRESSES
    pairs = {
        "collateral_token": a.collateral,
        "conditional_tokens": a.ctf,
        "neg_risk_adapter": a.neg_risk_adapter,
        "collateral_adapter": a.collateral_adapter,
        "neg_risk_collateral_adapter": a.neg_risk_collateral_adapter,
        "position_manager": a.position_manager,
        "protocol_v2_router": a.router,
        "auto_redeem_operator": a.auto_redeem_operator,
        "safe_multisend": a.safe_multisend,
        "relay_hub": a.relay_hub,
    }
    for field, ours in pairs.items():
        assert getattr(cfg, field) == ours, field
    wd = cfg.wallet_derivation
    assert (wd.proxy_factory, wd.deposit_wallet_factory) == (
        a.proxy_factory,
        a.deposit_wallet_factory,
    )
    assert {f.name for f in dataclasses.fields(cfg)} >= set(pairs)


def test_calls_match_the_sdk_builders() -> None:
    a = c.ADDRESSES
    assert (
        c.adapter_redeem(a.collateral_adapter, CID).data_hex
        == sdk_calls.ctf_redeem_positions_call(
            ctf=a.collateral_adapter,  # type: ignore[arg-type]  # SDK NewType
            collateral=a.collateral,  # type: ignore[arg-type]
            condition_id=CID,
        ).data
    )
    assert (
        c.router_redeem(CID, 1, 5_000_000).data_hex
        == sdk_calls.router_redeem_call(
            router=a.router,  # type: ignore[arg-type]
            condition_id=CID,
            outcome_index=1,
            amount=5_000_000,
        ).data
    )
    assert c.set_approval_for_all(a.ctf, a.collateral_adapter).data_hex == (
        sdk_calls.erc1155_set_approval_for_all_call(
            token_address=a.ctf,  # type: ignore[arg-type]
            operator=a.collateral_adapter,  # type: ignore[arg-type]
        ).data
    )


def test_proxy_envelope_matches_the_sdk() -> None:
    a = c.ADDRESSES
    calls = [c.adapter_redeem(a.collateral_adapter, CID)]
    relay = "0x" + "77" * 20
    ours = signing.proxy_envelope(KEY, wallet=WALLET, calls=calls, nonce="3", relay=relay)
    data = sdk_calls.encode_proxy_call([_sdk(x) for x in calls])
    h = sdk_proxy.build_proxy_transaction_hash(
        from_address=ACCT.address,
        to=a.proxy_factory,  # type: ignore[arg-type]
        data=data,
        relayer_fee="0",
        gas_price="0",
        gas_limit=signing.PROXY_GAS_LIMIT,
        nonce="3",
        relay_hub=a.relay_hub,  # type: ignore[arg-type]
        relay=relay,  # type: ignore[arg-type]
    )
    sig = sdk_proxy.sign_proxy_message(ACCT, h)
    theirs = sdk_gasless.build_proxy_payload(
        signer_address=ACCT.address,
        proxy_factory=a.proxy_factory,
        wallet=WALLET,  # type: ignore[arg-type]
        data=data,
        nonce="3",
        signature=sig,
        gas_limit=signing.PROXY_GAS_LIMIT,
        relay=relay,  # type: ignore[arg-type]
        relay_hub=a.relay_hub,
        metadata="",
    )
    assert ours == dict(theirs)


def test_safe_envelope_matches_the_sdk_for_one_and_several_calls() -> None:
    a = c.ADDRESSES
    for calls in (
        [c.adapter_redeem(a.collateral_adapter, CID)],
        [c.router_redeem(CID, 0, 1), c.router_redeem(CID, 1, 2)],
    ):
        ours = signing.safe_envelope(KEY, chain_id=137, wallet=WALLET, calls=calls, nonce="5")
        target, data, value, op = sdk_gasless._resolve_safe_call(
            a.safe_multisend, [_sdk(x) for x in calls]
        )
        sig = sdk_safe.sign_safe_transaction(
            ACCT,
            safe_address=WALLET,  # type: ignore[arg-type]
            to=target,
            data=data,
            value=value,
            operation=op,
            nonce="5",
            chain_id=137,
        )
        theirs = sdk_gasless.build_safe_payload(
            signer_address=ACCT.address,
            wallet=WALLET,  # type: ignore[arg-type]
            target=target,
            data=data,
            value=value,
            operation=op,
            nonce="5",
            signature=sig,
            metadata="",
        )
        assert ours == dict(theirs)


def test_deposit_wallet_envelope_matches_the_sdk() -> None:
    a = c.ADDRESSES
    calls = [c.router_redeem(CID, 0, 7)]
    ours = signing.deposit_wallet_envelope(
        KEY, chain_id=137, wallet=WALLET, calls=calls, nonce="9", deadline=1_900_000_000
    )
    sdk = [_sdk(x) for x in calls]
    sig = sdk_dw.sign_deposit_wallet_batch(
        ACCT,
        wallet=WALLET,  # type: ignore[arg-type]
        calls=sdk,
        nonce="9",
        deadline="1900000000",
        chain_id=137,
    )
    theirs = sdk_gasless.build_deposit_wallet_payload(
        signer_address=ACCT.address,
        deposit_wallet_factory=a.deposit_wallet_factory,
        wallet=WALLET,  # type: ignore[arg-type]
        calls=sdk,
        nonce="9",
        deadline="1900000000",
        signature=sig,
        metadata="",
    )
    assert ours == dict(theirs)
