"""Order signing: the CTF Exchange's EIP-712 digest (the venue's order id), a fast digest signer,
and the byte-exact JSON of a signed order.

An order is signed once; its hash is computed here, locally, so an order whose answer is lost
can be looked up by that hash and never signed again.
"""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

import coincurve
from eth_hash.auto import keccak
from py_clob_client_v2.order_utils.model.order_data_v2 import OrderV2

MICRO: Final = Decimal(1_000_000)
BYTES32_ZERO: Final = "0x" + "00" * 32

_ORDER_TYPE_HASH: Final = keccak(
    b"Order(uint256 salt,address maker,address signer,uint256 tokenId,"
    b"uint256 makerAmount,uint256 takerAmount,uint8 side,uint8 signatureType,"
    b"uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
_DOMAIN_TYPE_HASH: Final = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

ORDER_KEYS: Final = (
    "salt",
    "maker",
    "signer",
    "tokenId",
    "makerAmount",
    "takerAmount",
    "side",
    "expiration",
    "signatureType",
    "timestamp",
    "metadata",
    "builder",
    "signature",
)
"""The signed order's fields in the SDK's wire order (`order_to_json_v2`)."""


def _u256(v: int) -> bytes:
    return v.to_bytes(32, "big")


def _addr(a: str) -> bytes:
    return bytes(12) + bytes.fromhex(a[2:])


def _b32(h: str) -> bytes:
    return bytes.fromhex(h[2:] if h.startswith("0x") else h).rjust(32, b"\x00")


def domain_separator(chain_id: int, exchange: str, version: str = "2") -> bytes:
    """The CTF Exchange EIP-712 domain separator."""
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(b"Polymarket CTF Exchange")
        + keccak(version.encode())
        + _u256(chain_id)
        + _addr(exchange)
    )


def order_digest(order: OrderV2, domain_sep: bytes) -> bytes:
    """The order's EIP-712 digest (what is signed; its hex is the venue's order id)."""
    struct = keccak(
        _ORDER_TYPE_HASH
        + _u256(int(order.salt))
        + _addr(order.maker)
        + _addr(order.signer)
        + _u256(int(order.tokenId))
        + _u256(int(order.makerAmount))
        + _u256(int(order.takerAmount))
        + _u256(int(order.side))
        + _u256(int(order.signatureType))
        + _u256(int(order.timestamp))
        + _b32(order.metadata)
        + _b32(order.builder)
    )
    return keccak(b"\x19\x01" + domain_sep + struct)


def order_hash(order: OrderV2, domain_sep: bytes) -> str:
    """The order's EIP-712 hash: `0x` + 64 hex, the id the venue gives it."""
    return "0x" + order_digest(order, domain_sep).hex()


class DigestSigner:
    """Sign a 32-byte EIP-712 digest with libsecp256k1 (coincurve) directly.

    The SDK's path (`encode_typed_data` + `Account.sign_message`) rebuilds and re-hashes the
    typed data in pure Python on every order (~0.7 ms); the digest is already computed here for
    the order id, so signing it is one ~50 us call. RFC 6979 nonces and low-s normalisation are
    the same as eth-keys' coincurve backend, so the signature is byte-identical to the SDK's
    (a unit test holds this).
    """

    def __init__(self, private_key: str) -> None:
        self._key = coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x")))

    def sign(self, digest: bytes) -> str:
        sig = self._key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
        return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")


def micro(v: Decimal) -> str:
    """`v` in the exchange's 6-decimal integer units, rounded down, as text."""
    return str(int((v * MICRO).to_integral_value(rounding=ROUND_DOWN)))


def serialize(body: dict[str, Any]) -> bytes:
    """The exact bytes posted (and HMAC-signed) for a JSON body: compact, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
