"""Order signing: polyd's order struct, the CTF Exchange's EIP-712 digest (the venue's order
id), the signature for every wallet type, and the byte-exact JSON of a signed order.

An order is signed once; its hash is computed here, locally, so an order whose answer is lost
can be looked up by that hash and never signed again.

Sources (read, not copied): the order struct, salt and timestamp of Polymarket/py-sdk
`polymarket/_internal/actions/orders/orders.py` and `types.py`; the typed data and the ERC-7739
envelope of deposit wallets (signature type 3, `POLY_1271`) of `_internal/actions/orders/
typed_data.py`; the POST body of `_internal/actions/orders/post.py` (polymarket-client 0.14.0).
`tests/unit/test_sdk_signer_equivalence.py` holds every wallet type, both exchanges, both sides
and every order type byte-identical to the SDK's `_sign_order`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final, Protocol

from eth_hash.auto import keccak

from venue.clob.auth import LocalSigner

MICRO: Final = Decimal(1_000_000)
BYTES32_ZERO: Final = "0x" + "00" * 32

POLY_1271: Final = 3
"""Signature type of deposit wallets: an ERC-1271 check of an ERC-7739 envelope."""

_ORDER_TYPE: Final = (
    b"Order(uint256 salt,address maker,address signer,uint256 tokenId,"
    b"uint256 makerAmount,uint256 takerAmount,uint8 side,uint8 signatureType,"
    b"uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
_ORDER_TYPE_HASH: Final = keccak(_ORDER_TYPE)
_TYPED_DATA_SIGN_TYPE_HASH: Final = keccak(
    b"TypedDataSign(Order contents,string name,string version,uint256 chainId,"
    b"address verifyingContract,bytes32 salt)" + _ORDER_TYPE
)
_DEPOSIT_WALLET_NAME: Final = keccak(b"DepositWallet")
_DEPOSIT_WALLET_VERSION: Final = keccak(b"1")
_SALT_BITS: Final = 53
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

SIDES: Final = ("BUY", "SELL")
"""The wire name of `Order.side` (0 = BUY, 1 = SELL)."""


class OrderFields(Protocol):
    """What `order_digest` reads: an `Order`, or anything shaped like one (tests)."""

    @property
    def salt(self) -> int | str: ...
    @property
    def maker(self) -> str: ...
    @property
    def signer(self) -> str: ...
    @property
    def tokenId(self) -> str: ...
    @property
    def makerAmount(self) -> int | str: ...
    @property
    def takerAmount(self) -> int | str: ...
    @property
    def side(self) -> int: ...
    @property
    def signatureType(self) -> int: ...
    @property
    def timestamp(self) -> int | str: ...
    @property
    def metadata(self) -> str: ...
    @property
    def builder(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Order:
    """An unsigned CTF Exchange order, in the venue's field names and wire types.

    Amounts are 6-decimal integer units as text; `side` is 0 (BUY) or 1 (SELL); `timestamp`
    is Unix milliseconds as text; `salt` an integer (it goes on the wire as a JSON number).
    """

    salt: int
    maker: str
    signer: str
    tokenId: str
    makerAmount: str
    takerAmount: str
    side: int
    signatureType: int
    timestamp: str
    metadata: str
    builder: str
    expiration: str = "0"

    def wire(self, signature: str) -> dict[str, Any]:
        """The signed order as the POST body's `order` (field order of `ORDER_KEYS`)."""
        return {
            "salt": self.salt,
            "maker": self.maker,
            "signer": self.signer,
            "tokenId": self.tokenId,
            "makerAmount": self.makerAmount,
            "takerAmount": self.takerAmount,
            "side": SIDES[self.side],
            "expiration": self.expiration,
            "signatureType": self.signatureType,
            "timestamp": self.timestamp,
            "metadata": self.metadata,
            "builder": self.builder,
            "signature": signature,
        }


def new_salt() -> int:
    """A fresh order salt: 53 random bits (py-sdk `_generate_salt`)."""
    return secrets.randbits(_SALT_BITS)


def now_ms() -> str:
    """The order timestamp: Unix milliseconds, as text."""
    return str(time.time_ns() // 1_000_000)


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


def _struct_hash(order: OrderFields) -> bytes:
    return keccak(
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


def order_digest(order: OrderFields, domain_sep: bytes) -> bytes:
    """The order's EIP-712 digest (what is signed; its hex is the venue's order id)."""
    return keccak(b"\x19\x01" + domain_sep + _struct_hash(order))


def order_hash(order: OrderFields, domain_sep: bytes) -> str:
    """The order's EIP-712 hash: `0x` + 64 hex, the id the venue gives it."""
    return "0x" + order_digest(order, domain_sep).hex()


def poly_1271_signature(
    signer: LocalSigner, order: OrderFields, domain_sep: bytes, chain_id: int
) -> str:
    """A deposit wallet's order signature: the ERC-7739 `TypedDataSign` envelope.

    The key signs `keccak(0x1901 || exchange domain || TypedDataSign(contents = the order
    struct, the wallet's domain: "DepositWallet", "1", chainId, verifyingContract = the wallet
    (the order's `signer`), salt 0))`; the wallet checks it under ERC-1271. The signature is
    `inner (65 bytes) || exchange domain || contents hash || contents type || its length (2
    bytes)`. The order id is still the plain order digest.
    """
    contents = _struct_hash(order)
    envelope = keccak(
        _TYPED_DATA_SIGN_TYPE_HASH
        + contents
        + _DEPOSIT_WALLET_NAME
        + _DEPOSIT_WALLET_VERSION
        + _u256(chain_id)
        + _addr(order.signer)
        + bytes(32)
    )
    inner = signer.sign_raw(keccak(b"\x19\x01" + domain_sep + envelope))
    return (
        "0x"
        + (inner + domain_sep + contents + _ORDER_TYPE + len(_ORDER_TYPE).to_bytes(2, "big")).hex()
    )


DigestSigner = LocalSigner
"""Sign a 32-byte EIP-712 digest with libsecp256k1 (see `venue.clob.auth.LocalSigner`).

The SDK's path (`encode_typed_data` + `sign_typed_data`) rebuilds and re-hashes the typed data
in pure Python on every order (~0.3-0.7 ms); the digest is already computed here for the order
id, so signing it is one ~50 us call."""


def micro(v: Decimal) -> str:
    """`v` in the exchange's 6-decimal integer units, rounded down, as text."""
    return str(int((v * MICRO).to_integral_value(rounding=ROUND_DOWN)))


def serialize(body: dict[str, Any]) -> bytes:
    """The exact bytes posted (and HMAC-signed) for a JSON body: compact, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
