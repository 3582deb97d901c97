"""Signature checks exactly as production performs them: EIP-712 (orders, ClobAuth) and L2 HMAC.

Hashes are computed by hand (no `encode_typed_data`), and public keys are recovered with
coincurve, because the venue verifies every order and must keep up with hundreds a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import coincurve
from eth_hash.auto import keccak

CHAIN_CONTRACTS: dict[int, tuple[str, str]] = {
    137: (
        "0xE111180000d2663C0091e4f400237545B87B996B",
        "0xe2222d279d744050d28e00520010520000310F59",
    ),
    80002: (
        "0xE111180000d2663C0091e4f400237545B87B996B",
        "0xe2222d279d744050d28e00520010520000310F59",
    ),
}

ORDER_TYPE_STRING = (
    "Order(uint256 salt,address maker,address signer,uint256 tokenId,"
    "uint256 makerAmount,uint256 takerAmount,uint8 side,uint8 signatureType,"
    "uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
_ORDER_TYPE_HASH = keccak(ORDER_TYPE_STRING.encode())
_DOMAIN_TYPE_HASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_SOLADY_TYPE_HASH = keccak(
    (
        "TypedDataSign(Order contents,string name,string version,uint256 chainId,"
        "address verifyingContract,bytes32 salt)" + ORDER_TYPE_STRING
    ).encode()
)
_DEPOSIT_WALLET_NAME_HASH = keccak(b"DepositWallet")
_DEPOSIT_WALLET_VERSION_HASH = keccak(b"1")
_CLOB_AUTH_TYPE_HASH = keccak(
    b"ClobAuth(address address,string timestamp,uint256 nonce,string message)"
)
_CLOB_DOMAIN_TYPE_HASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"


class SignatureError(ValueError):
    """The signature is malformed or does not recover to the expected address."""


def _u256(value: int) -> bytes:
    if value < 0 or value >= 1 << 256:
        raise SignatureError("uint256 out of range")
    return value.to_bytes(32, "big")


def _addr(address: str) -> bytes:
    raw = bytes.fromhex(address[2:] if address.startswith("0x") else address)
    if len(raw) != 20:
        raise SignatureError("bad address")
    return b"\x00" * 12 + raw


def _b32(value: str) -> bytes:
    raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(raw) > 32:
        raise SignatureError("bad bytes32")
    return raw.rjust(32, b"\x00")


def domain_separator(chain_id: int, contract: str, version: str = "2") -> bytes:
    """Return the CTF Exchange EIP-712 domain separator."""
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(b"Polymarket CTF Exchange")
        + keccak(version.encode())
        + _u256(chain_id)
        + _addr(contract)
    )


def order_struct_hash(order: dict[str, object]) -> bytes:
    """Hash the V2 `Order` struct from a wire body (`side` as "BUY"/"SELL")."""
    side = 0 if order["side"] == "BUY" else 1
    return keccak(
        _ORDER_TYPE_HASH
        + _u256(int(str(order["salt"])))
        + _addr(str(order["maker"]))
        + _addr(str(order["signer"]))
        + _u256(int(str(order["tokenId"])))
        + _u256(int(str(order["makerAmount"])))
        + _u256(int(str(order["takerAmount"])))
        + _u256(side)
        + _u256(int(str(order["signatureType"])))
        + _u256(int(str(order["timestamp"])))
        + _b32(str(order["metadata"]))
        + _b32(str(order["builder"]))
    )


def order_digest(domain_sep: bytes, struct_hash: bytes) -> bytes:
    """Return the EIP-712 digest; `0x` + its hex is the production order id."""
    return keccak(b"\x19\x01" + domain_sep + struct_hash)


def poly1271_digest(domain_sep: bytes, struct_hash: bytes, chain_id: int, signer: str) -> bytes:
    """Return the ERC-7739 nested digest the v2 client signs for signature type 3."""
    inner = keccak(
        _SOLADY_TYPE_HASH
        + struct_hash
        + _DEPOSIT_WALLET_NAME_HASH
        + _DEPOSIT_WALLET_VERSION_HASH
        + _u256(chain_id)
        + _addr(signer)
        + b"\x00" * 32
    )
    return keccak(b"\x19\x01" + domain_sep + inner)


def recover(digest: bytes, signature: str) -> str:
    """Recover the lowercase 0x address that produced a 65-byte `r||s||v` signature."""
    try:
        raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    except ValueError as e:
        raise SignatureError("signature is not hex") from e
    if len(raw) < 65:
        raise SignatureError("signature too short")
    v = raw[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise SignatureError("bad recovery id")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            raw[:64] + bytes([v]), digest, hasher=None
        )
    except Exception as e:  # coincurve raises plain Exception on invalid points
        raise SignatureError("unrecoverable signature") from e
    return "0x" + keccak(pub.format(compressed=False)[1:])[-20:].hex()


def clob_auth_digest(address: str, timestamp: str, nonce: int, chain_id: int) -> bytes:
    """Return the EIP-712 digest of the L1 `ClobAuth` message."""
    dom = keccak(
        _CLOB_DOMAIN_TYPE_HASH + keccak(b"ClobAuthDomain") + keccak(b"1") + _u256(chain_id)
    )
    struct = keccak(
        _CLOB_AUTH_TYPE_HASH
        + _addr(address)
        + keccak(timestamp.encode())
        + _u256(nonce)
        + keccak(CLOB_AUTH_MESSAGE.encode())
    )
    return keccak(b"\x19\x01" + dom + struct)


def hmac_signature(secret: str, message: str) -> str:
    """Return the urlsafe-base64 HMAC-SHA256 the client puts in POLY_SIGNATURE."""
    key = base64.urlsafe_b64decode(secret)
    return base64.urlsafe_b64encode(
        hmac.new(key, message.encode(), hashlib.sha256).digest()
    ).decode()


def verify_hmac(secret: str, ts: str, method: str, path: str, body: str, sig: str) -> bool:
    """Check an L2 signature over `ts + METHOD + bare path + raw body` (constant time)."""
    msg = ts + method + path + (body.replace("'", '"') if body else "")
    return hmac.compare_digest(hmac_signature(secret, msg), sig)
