"""Signing for the chain: an EOA's EIP-1559 transaction, and the relayer's three envelopes.

The envelopes are the ones Polymarket's SDK submits (Polymarket/py-sdk
`_internal/actions/relayer/gasless.py` and `signing/{proxy,safe,deposit_wallet}.py`,
polymarket-client 0.14.0), rebuilt with `eth_account` so polyd depends on no private SDK
module; `tests/unit/test_chain_signing.py` proves each envelope byte-identical to the SDK's:

* PROXY: the "rlx:" relay-hub hash of (from, ProxyFactory, `proxy(calls)`, fee 0, gas price 0,
  gas limit, nonce, relay hub, relay), personal-signed;
* SAFE: the Safe's EIP-712 `SafeTx` (one call, or MultiSend by delegatecall for several),
  eth-signed digest with v + 4;
* WALLET (deposit wallet): EIP-712 `Batch` of domain `DepositWallet` version 1 with a deadline.

Signing is CPU work: callers run these off the event loop (`asyncio.to_thread`).

`eth_account` (about half a second of imports: it loads eth-keyfile and py_ecc's BLS pairing
tables) is imported on the first signature, not with this module: the daemon imports this for
auto-redemption and may never sign a chain transaction in its life.
"""

from __future__ import annotations

import importlib
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from venue.chain.contracts import ADDRESSES, Addresses, Call, selector


def _eth_account() -> Any:
    """`eth_account.Account`, imported on first use."""
    return importlib.import_module("eth_account").Account


def _messages() -> Any:
    """`eth_account.messages` (`encode_defunct`, `encode_typed_data`), imported on first use."""
    return importlib.import_module("eth_account.messages")


ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
PROXY_GAS_LIMIT = "200000"
DEPOSIT_DEADLINE_S = 600


def sign_eoa_tx(
    key: str, *, chain_id: int, nonce: int, call: Call, gas: int, max_fee: int, tip: int
) -> tuple[bytes, str]:
    """An EIP-1559 transaction: (raw bytes, hash). The hash is known before it is sent."""
    signed = _eth_account().sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": call.to,
            "value": 0,
            "data": call.data,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        },
        key,
    )
    return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


def _proxy_data(calls: list[Call]) -> bytes:
    items = [(1, c.to, 0, c.data) for c in calls]  # type 1 = CALL
    return selector("proxy((uint8,address,uint256,bytes)[])") + abi_encode(
        ["(uint8,address,uint256,bytes)[]"], [items]
    )


def proxy_envelope(
    key: str, *, wallet: str, calls: list[Call], nonce: str, relay: str, a: Addresses = ADDRESSES
) -> dict[str, Any]:
    acct = _eth_account().from_key(key)
    data = _proxy_data(calls)
    payload = (
        b"rlx:"
        + bytes.fromhex(acct.address[2:])
        + bytes.fromhex(a.proxy_factory[2:])
        + data
        + (0).to_bytes(32, "big")
        + (0).to_bytes(32, "big")
        + int(PROXY_GAS_LIMIT).to_bytes(32, "big")
        + int(nonce).to_bytes(32, "big")
        + bytes.fromhex(a.relay_hub[2:])
        + bytes.fromhex(relay[2:])
    )
    msg_hash = keccak(payload)
    sig = acct.sign_message(_messages().encode_defunct(hexstr="0x" + msg_hash.hex())).signature
    return {
        "type": "PROXY",
        "from": acct.address,
        "to": a.proxy_factory,
        "proxyWallet": wallet,
        "data": "0x" + data.hex(),
        "nonce": nonce,
        "signature": "0x" + bytes(sig).hex(),
        "metadata": "",
        "signatureParams": {
            "gasLimit": PROXY_GAS_LIMIT,
            "gasPrice": "0",
            "relay": relay,
            "relayHub": a.relay_hub,
            "relayerFee": "0",
        },
    }


def _multisend(calls: list[Call]) -> bytes:
    inner = b""
    for c in calls:
        inner += b"\x00" + bytes.fromhex(c.to[2:]) + (0).to_bytes(32, "big")
        inner += len(c.data).to_bytes(32, "big") + c.data
    return selector("multiSend(bytes)") + abi_encode(["bytes"], [inner])


def safe_envelope(
    key: str, *, chain_id: int, wallet: str, calls: list[Call], nonce: str, a: Addresses = ADDRESSES
) -> dict[str, Any]:
    acct = _eth_account().from_key(key)
    if len(calls) == 1:
        to, data, operation = calls[0].to, calls[0].data, 0
    else:
        to, data, operation = a.safe_multisend, _multisend(calls), 1  # delegatecall
    typed = {
        "domain": {"chainId": chain_id, "verifyingContract": wallet},
        "types": {
            "EIP712Domain": [
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "SafeTx": [
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "data", "type": "bytes"},
                {"name": "operation", "type": "uint8"},
                {"name": "safeTxGas", "type": "uint256"},
                {"name": "baseGas", "type": "uint256"},
                {"name": "gasPrice", "type": "uint256"},
                {"name": "gasToken", "type": "address"},
                {"name": "refundReceiver", "type": "address"},
                {"name": "nonce", "type": "uint256"},
            ],
        },
        "primaryType": "SafeTx",
        "message": {
            "to": to,
            "value": 0,
            "data": data,
            "operation": operation,
            "safeTxGas": 0,
            "baseGas": 0,
            "gasPrice": 0,
            "gasToken": ZERO_ADDRESS,
            "refundReceiver": ZERO_ADDRESS,
            "nonce": int(nonce),
        },
    }
    s = _messages().encode_typed_data(full_message=typed)
    digest = keccak(b"\x19" + s.version + s.header + s.body)
    sig = bytearray(acct.sign_message(_messages().encode_defunct(primitive=digest)).signature)
    sig[64] = sig[64] + 31 if sig[64] in (0, 1) else sig[64] + 4
    return {
        "type": "SAFE",
        "from": acct.address,
        "to": to,
        "proxyWallet": wallet,
        "data": "0x" + data.hex(),
        "nonce": nonce,
        "signature": "0x" + bytes(sig).hex(),
        "metadata": "",
        "signatureParams": {
            "baseGas": "0",
            "gasPrice": "0",
            "gasToken": ZERO_ADDRESS,
            "operation": str(operation),
            "refundReceiver": ZERO_ADDRESS,
            "safeTxnGas": "0",
        },
    }


def deposit_wallet_envelope(
    key: str,
    *,
    chain_id: int,
    wallet: str,
    calls: list[Call],
    nonce: str,
    deadline: int,
    a: Addresses = ADDRESSES,
) -> dict[str, Any]:
    acct = _eth_account().from_key(key)
    typed = {
        "domain": {
            "chainId": chain_id,
            "name": "DepositWallet",
            "verifyingContract": wallet,
            "version": "1",
        },
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Batch": [
                {"name": "wallet", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
                {"name": "calls", "type": "Call[]"},
            ],
            "Call": [
                {"name": "target", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "data", "type": "bytes"},
            ],
        },
        "primaryType": "Batch",
        "message": {
            "wallet": wallet,
            "nonce": int(nonce),
            "deadline": deadline,
            "calls": [{"target": c.to, "value": 0, "data": c.data} for c in calls],
        },
    }
    sig = acct.sign_message(_messages().encode_typed_data(full_message=typed)).signature
    return {
        "type": "WALLET",
        "from": acct.address,
        "to": a.deposit_wallet_factory,
        "nonce": nonce,
        "signature": "0x" + bytes(sig).hex(),
        "metadata": "",
        "depositWalletParams": {
            "depositWallet": wallet,
            "deadline": str(deadline),
            "calls": [{"target": c.to, "value": "0", "data": c.data_hex} for c in calls],
        },
    }
