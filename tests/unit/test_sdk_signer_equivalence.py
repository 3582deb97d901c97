"""polyd's order signing is byte-identical to the official SDK's, for every wallet type.

The daemon signs in `ClobBroker.prepare` (the coincurve digest signer for signature types 0-2,
the ERC-7739 envelope for deposit wallets, type 3); this holds each prepared order against the
official SDK's own signer, `AsyncSecureClient._sign_order` (Polymarket/py-sdk
`polymarket/clients/async_secure.py`, `_internal/actions/orders/typed_data.py`,
polymarket-client 0.14.0), fed the very same unsigned order (salt and timestamp included):
same signature bytes, same order id (the EIP-712 hash), same POST body. It also holds the digest
for Protocol-V2 markets (ExchangeV3, EIP-712 domain version "3").
"""

from __future__ import annotations

import importlib
import json
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from execution.ports import MarketMeta
from tests.helpers import TOKEN, make_order, require_sdk
from venue.clob import (
    ClobBroker,
    ClobIdentity,
    Credentials,
    DigestSigner,
    LocalSigner,
    domain_separator,
    order_digest,
)
from venue.clob.contracts import EXCHANGES

KEY = "0x" + "5a" * 32
FUNDER = "0x" + "ab" * 20
CHAIN = 137
WALLET_TYPES = {0: "EOA", 1: "POLY_PROXY", 2: "GNOSIS_SAFE", 3: "DEPOSIT_WALLET"}


@pytest.fixture
def sdk() -> SimpleNamespace:
    require_sdk()
    return SimpleNamespace(
        secure=importlib.import_module("polymarket.clients.async_secure"),
        types=importlib.import_module("polymarket._internal.actions.orders.types"),
        typed=importlib.import_module("polymarket._internal.actions.orders.typed_data"),
        post=importlib.import_module("polymarket._internal.actions.orders.post"),
        prod=importlib.import_module("polymarket.environments").PRODUCTION._config,
    )


def _broker(signature_type: int) -> ClobBroker:
    signer = LocalSigner(KEY)
    identity = ClobIdentity(
        signer=signer,
        chain_id=CHAIN,
        signature_type=signature_type,
        funder=signer.address if signature_type == 0 else FUNDER,
        creds=Credentials("key-id", "c2VjcmV0", "pass"),
    )
    return ClobBroker(identity=identity, host="http://127.0.0.1:9")


def _unsigned(sdk: SimpleNamespace, o: dict[str, Any], order_type: str, exchange: str) -> Any:
    return sdk.types.UnsignedOrder(
        chain_id=CHAIN,
        builder=o["builder"],
        exchange_address=exchange,
        expiration=int(o["expiration"]),
        maker=o["maker"],
        maker_amount=int(o["makerAmount"]),
        metadata=o["metadata"],
        order_type=order_type,
        salt=int(o["salt"]),
        side=o["side"],
        signature_type=o["signatureType"],
        signer=o["signer"],
        taker_amount=int(o["takerAmount"]),
        timestamp=int(o["timestamp"]),
        token_id=o["tokenId"],
    )


async def _sdk_sign(
    sdk: SimpleNamespace, unsigned: Any, signature_type: int, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The SDK's own `_sign_order`, handed `unsigned` instead of a fresh random salt."""
    client = object.__new__(sdk.secure.AsyncSecureClient)
    client._ended = False
    client._ctx = SimpleNamespace(
        signer=Account.from_key(KEY),
        signer_type="OWNER",
        wallet=unsigned.signer if signature_type == 3 else unsigned.maker,
        wallet_type=WALLET_TYPES[signature_type],
    )
    monkeypatch.setattr(sdk.secure, "create_unsigned_order", lambda draft, **kw: unsigned)
    return await client._sign_order(None, post_only=False)


@pytest.mark.parametrize("signature_type", [0, 1, 2, 3])
@pytest.mark.parametrize("neg_risk", [False, True])
@pytest.mark.parametrize(
    ("side", "order_type"),
    [("BUY", "GTC"), ("SELL", "GTC"), ("BUY", "GTD"), ("SELL", "FOK"), ("BUY", "FAK")],
)
async def test_prepared_order_is_the_sdks_signed_order(
    sdk: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    signature_type: int,
    neg_risk: bool,
    side: str,
    order_type: str,
) -> None:
    extra: dict[str, object] = (
        {"expiration": int(time.time()) + 3600} if order_type == "GTD" else {}
    )
    req = make_order(side=side, order_type=order_type, price="0.37", size="12.5", **extra)
    meta = MarketMeta(TOKEN, "0x" + "1" * 64, Decimal("0.01"), Decimal("5"), neg_risk)
    broker = _broker(signature_type)
    try:
        prepared = await broker.prepare(req, meta)
    finally:
        await broker.close()
    body = json.loads(prepared.payload)
    o = body["order"]
    exchange = sdk.prod.neg_risk_exchange if neg_risk else sdk.prod.standard_exchange
    unsigned = _unsigned(sdk, o, order_type, exchange)

    signed = await _sdk_sign(sdk, unsigned, signature_type, monkeypatch)
    assert o["signature"] == signed.signature

    standard = sdk.typed._build_standard_typed_data(unsigned, protocol_version="2")
    sdk_hash = "0x" + _hash_eip191_message(encode_typed_data(full_message=standard)).hex()
    assert prepared.venue_order_id == sdk_hash

    _, sdk_body = sdk.post.build_post_order_request(signed, owner_api_key="key-id")
    ours = dict(body)
    if ours.get("postOnly") is False:  # the SDK leaves a false postOnly out; same meaning
        del ours["postOnly"]
    sdk_body["orderType"] = order_type
    assert ours == json.loads(json.dumps(sdk_body))


@pytest.mark.parametrize("signature_type", [0, 1, 2])
def test_the_digest_signer_matches_the_sdk_on_exchange_v3(
    sdk: SimpleNamespace, signature_type: int
) -> None:
    """Protocol-V2 markets sign against ExchangeV3 with domain version "3" (SDK:
    `create_unsigned_order` sets `protocol_version="3"` for a v2 position id)."""
    acct = Account.from_key(KEY)
    signer = acct.address
    maker = signer if signature_type == 0 else FUNDER
    unsigned = sdk.types.UnsignedOrder(
        chain_id=CHAIN,
        builder=sdk.types.BYTES32_ZERO,
        exchange_address=sdk.prod.exchange_v3,
        expiration=0,
        maker=maker,
        maker_amount=5_000_000,
        metadata=sdk.types.BYTES32_ZERO,
        order_type="GTC",
        salt=123456789,
        side="BUY",
        signature_type=signature_type,
        signer=signer,
        taker_amount=10_000_000,
        timestamp=1_764_000_000_000,
        token_id=TOKEN,
        protocol_version="3",
    )
    typed = sdk.typed.build_order_typed_data(unsigned)
    sdk_sig = "0x" + acct.sign_typed_data(full_message=typed).signature.hex().removeprefix("0x")
    order = SimpleNamespace(
        salt=unsigned.salt,
        maker=maker,
        signer=signer,
        tokenId=TOKEN,
        makerAmount=unsigned.maker_amount,
        takerAmount=unsigned.taker_amount,
        side=0,
        signatureType=signature_type,
        timestamp=unsigned.timestamp,
        metadata=unsigned.metadata,
        builder=unsigned.builder,
    )
    digest = order_digest(order, domain_separator(CHAIN, sdk.prod.exchange_v3, "3"))
    assert digest == _hash_eip191_message(encode_typed_data(full_message=typed))
    assert DigestSigner(KEY).sign(digest) == sdk_sig


def test_polyd_and_the_sdk_agree_on_the_exchange_addresses(sdk: SimpleNamespace) -> None:
    ours = EXCHANGES[CHAIN]
    assert ours.standard == sdk.prod.standard_exchange
    assert ours.neg_risk == sdk.prod.neg_risk_exchange
    assert ours.v3 == sdk.prod.exchange_v3
    assert sdk.prod.chain_id == CHAIN
