"""polyd's L1 (EIP-712 `ClobAuth`) and L2 (HMAC) headers are byte-identical to the official
SDK's for the same key, credentials and timestamp (Polymarket/py-sdk, polymarket-client 0.14.0:
`_internal/l1_auth.py` `sign_api_key_auth`, `_internal/actions/auth.py`
`build_l1_auth_headers`, `clients/async_secure.py` `_make_l2_header_resolver`), and to the
deprecated py-clob-client-v2's (`headers/headers.py`), which the simulator's tests still drive.
"""

from __future__ import annotations

import hashlib
import importlib
from types import SimpleNamespace

import pytest
from eth_account import Account

from tests.helpers import require_sdk
from venue.clob.auth import Credentials, LocalSigner, hmac_signature, l1_headers, l2_headers

KEYS = ["0x" + "5a" * 32, "0x" + "01" * 32, hashlib.sha256(b"polyd test key").hexdigest()]
"""Fixed keys (the last one unprefixed): test ids must be the same in every collection, which
parallel test workers compare."""
CREDS = Credentials("0b1e2c3d-key", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==", "pass")
TS = 1_764_000_123


@pytest.fixture
def sdk() -> SimpleNamespace:
    require_sdk()
    return SimpleNamespace(
        l1=importlib.import_module("polymarket._internal.l1_auth"),
        auth=importlib.import_module("polymarket._internal.actions.auth"),
        secure=importlib.import_module("polymarket.clients.async_secure"),
        creds=importlib.import_module("polymarket.models.clob").ApiKeyCreds,
    )


@pytest.mark.parametrize("key", KEYS)
def test_the_signer_address_is_eth_accounts_checksummed_address(key: str) -> None:
    assert LocalSigner(key).address == Account.from_key(key).address
    assert LocalSigner(key.removeprefix("0x")).address == Account.from_key(key).address


def test_a_bad_private_key_is_named() -> None:
    with pytest.raises(ValueError, match="private key"):
        LocalSigner("0xnothex")


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("chain_id", "nonce"), [(137, 0), (137, 1_764_000_000), (80002, 7)])
def test_l1_headers_are_the_sdks(sdk: SimpleNamespace, key: str, chain_id: int, nonce: int) -> None:
    from py_clob_client_v2.headers.headers import create_level_1_headers
    from py_clob_client_v2.signer import Signer

    ours = l1_headers(LocalSigner(key), chain_id, nonce=nonce, timestamp=TS)
    sig = sdk.l1.sign_api_key_auth(
        Account.from_key(key), chain_id=chain_id, timestamp=TS, nonce=nonce
    )
    assert ours == sdk.auth.build_l1_auth_headers(sig)
    assert ours == create_level_1_headers(Signer(key, chain_id), nonce=nonce, timestamp=TS)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/order", '{"order":{"salt":1,"side":"BUY"},"owner":"k","orderType":"GTC"}'),
        ("DELETE", "/orders", '["0xa","0xb"]'),
        ("GET", "/data/orders", None),
        ("DELETE", "/cancel-all", None),
        ("POST", "/v1/heartbeats", '{"heartbeat_id":""}'),
    ],
)
async def test_l2_headers_are_the_sdks(
    sdk: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    body: str | None,
) -> None:
    from py_clob_client_v2.clob_types import ApiCreds, RequestArgs
    from py_clob_client_v2.headers.headers import create_level_2_headers
    from py_clob_client_v2.signer import Signer

    key = KEYS[0]
    address = LocalSigner(key).address
    ours = l2_headers(address, CREDS, method, path, body, timestamp=TS)

    monkeypatch.setattr(sdk.secure.time, "time", lambda: TS + 0.25)
    creds = sdk.creds.model_validate(
        {"apiKey": CREDS.api_key, "secret": CREDS.api_secret, "passphrase": CREDS.api_passphrase}
    )
    resolver = sdk.secure._make_l2_header_resolver(Account.from_key(key), creds)
    assert ours == dict(await resolver(method, path, body))

    old = create_level_2_headers(
        Signer(key, 137),
        ApiCreds(CREDS.api_key, CREDS.api_secret, CREDS.api_passphrase),
        RequestArgs(method=method, request_path=path, body=body, serialized_body=body),
        timestamp=TS,
    )
    assert ours == old


def test_an_unpadded_secret_is_accepted_as_the_sdk_does(sdk: SimpleNamespace) -> None:
    hmac = importlib.import_module("polymarket._internal.hmac")
    secret = "c2VjcmV0"[:-2]  # padding dropped
    got = hmac_signature(secret, TS, "GET", "/x", None)
    assert got == hmac.build_hmac_signature(
        secret=secret, timestamp=TS, method="GET", path="/x", body=None
    )
