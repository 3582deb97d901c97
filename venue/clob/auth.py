"""Who polyd is at the CLOB: its key (`LocalSigner`), API credentials, and the L1/L2 auth headers.

* L1 (API-key creation and derivation): an EIP-712 `ClobAuth` signature by the private key,
  domain `ClobAuthDomain` version "1" (no verifying contract), message `{address, timestamp
  (string), nonce, message}`; headers `POLY_ADDRESS`, `POLY_SIGNATURE`, `POLY_TIMESTAMP`,
  `POLY_NONCE`. Source: Polymarket/py-sdk `polymarket/_internal/l1_auth.py` and
  `_internal/actions/auth.py` (polymarket-client 0.14.0).
* L2 (everything else): an HMAC-SHA256 with the URL-safe base64 secret over
  `timestamp + method + path (no query) + body`, URL-safe base64; headers `POLY_ADDRESS`,
  `POLY_API_KEY`, `POLY_PASSPHRASE`, `POLY_SIGNATURE`, `POLY_TIMESTAMP`. Source: py-sdk
  `polymarket/_internal/hmac.py`, `clients/async_secure.py` `_make_l2_header_resolver`.

A unit test holds both byte-identical to the official SDK's headers (and to the deprecated
py-clob-client-v2's) for the same key, credentials and timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final

import coincurve
from eth_hash.auto import keccak

CLOB_AUTH_MESSAGE: Final = "This message attests that I control the given wallet"

_CLOB_AUTH_TYPE_HASH: Final = keccak(
    b"ClobAuth(address address,string timestamp,uint256 nonce,string message)"
)
_CLOB_AUTH_DOMAIN_TYPE_HASH: Final = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId)"
)


@dataclass(frozen=True, repr=False)
class Credentials:
    """One set of L2 API credentials. Its repr shows nothing (they are secrets)."""

    api_key: str
    api_secret: str
    api_passphrase: str

    def __repr__(self) -> str:
        return "Credentials(**********)"


class LocalSigner:
    """A private key: its checksummed address, and 65-byte signatures of 32-byte digests.

    libsecp256k1 (coincurve) directly: RFC 6979 nonces and low-s normalisation, as eth-keys'
    coincurve backend (what eth-account uses), so a signature is byte-identical to the SDK's
    `Account._sign_hash` / `sign_typed_data` of the same digest (unit tests hold this). One call
    is ~50 us; no typed-data re-encoding.
    """

    __slots__ = ("_key", "address")

    def __init__(self, private_key: str) -> None:
        try:
            self._key = coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x")))
        except ValueError:
            raise ValueError("the private key is not 32 bytes of hex") from None
        pub = self._key.public_key.format(compressed=False)[1:]
        self.address: str = checksum_address(keccak(pub)[-20:])

    def sign(self, digest: bytes) -> str:
        """`0x` + r || s || v (v = 27 + recovery id), as eth-account writes it."""
        sig = self._key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
        return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")

    def sign_raw(self, digest: bytes) -> bytes:
        """The same signature as 65 raw bytes."""
        sig = self._key.sign_recoverable(digest, hasher=None)
        return sig[:64] + bytes((sig[64] + 27,))

    def __repr__(self) -> str:
        return f"LocalSigner({self.address})"


@dataclass(repr=False)
class ClobIdentity:
    """Everything that identifies polyd's orders and requests at the CLOB.

    `funder` holds the funds (the key's own address for EOA, signature type 0); `creds` are the
    L2 API credentials (swapped whole on a rotation).
    """

    signer: LocalSigner
    chain_id: int
    signature_type: int
    funder: str
    creds: Credentials

    @property
    def address(self) -> str:
        return self.signer.address

    def __repr__(self) -> str:
        return f"ClobIdentity({self.signer.address}, type={self.signature_type})"


def checksum_address(raw: bytes) -> str:
    """EIP-55: hex digit `i` upper-cased where nibble `i` of keccak(lower-case hex) is >= 8."""
    low = raw.hex()
    h = keccak(low.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(low))


def _u256(v: int) -> bytes:
    return v.to_bytes(32, "big")


def clob_auth_digest(address: str, timestamp: int, nonce: int, chain_id: int) -> bytes:
    """The EIP-712 digest of a `ClobAuth` message (what an L1 header signs)."""
    domain = keccak(
        _CLOB_AUTH_DOMAIN_TYPE_HASH + keccak(b"ClobAuthDomain") + keccak(b"1") + _u256(chain_id)
    )
    struct = keccak(
        _CLOB_AUTH_TYPE_HASH
        + bytes(12)
        + bytes.fromhex(address[2:])
        + keccak(str(timestamp).encode())
        + _u256(nonce)
        + keccak(CLOB_AUTH_MESSAGE.encode())
    )
    return keccak(b"\x19\x01" + domain + struct)


def l1_headers(
    signer: LocalSigner, chain_id: int, *, nonce: int = 0, timestamp: int | None = None
) -> dict[str, str]:
    """L1 headers: the key's `ClobAuth` signature for `timestamp` (now) and `nonce`."""
    ts = int(time.time()) if timestamp is None else timestamp
    sig = signer.sign(clob_auth_digest(signer.address, ts, nonce, chain_id))
    return {
        "POLY_ADDRESS": signer.address,
        "POLY_SIGNATURE": sig,
        "POLY_TIMESTAMP": str(ts),
        "POLY_NONCE": str(nonce),
    }


def hmac_signature(secret: str, timestamp: int, method: str, path: str, body: str | None) -> str:
    """The L2 HMAC: URL-safe base64 of HMAC-SHA256(secret, ts + method + path + body).

    The body is taken verbatim (the bytes posted); the secret may lack its base64 padding.
    """
    message = f"{timestamp}{method}{path}"
    if body:
        message += body
    try:
        key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        raise ValueError("the API secret is not base64") from None
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def l2_headers(
    address: str,
    creds: Credentials,
    method: str,
    path: str,
    body: str | None = None,
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """L2 headers for `method path` with `body` (the exact text sent; `path` without query)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "POLY_ADDRESS": address,
        "POLY_API_KEY": creds.api_key,
        "POLY_PASSPHRASE": creds.api_passphrase,
        "POLY_SIGNATURE": hmac_signature(creds.api_secret, ts, method, path, body),
        "POLY_TIMESTAMP": str(ts),
    }
