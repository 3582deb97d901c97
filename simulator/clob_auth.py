"""CLOB authentication: L1 (EIP-712 `ClobAuth`) for API-key creation, L2 (HMAC over the raw
body) for the rest, and the API-key routes (`/auth/*`). Keys are kept on the `Venue`.

The routes are those py-clob-client-v2 calls (`py_clob_client_v2/endpoints.py`,
`client.py`): `POST /auth/api-key` (L1, `create_api_key(nonce)`), `GET /auth/derive-api-key`
(L1), `GET /auth/api-keys` (L2) and `DELETE /auth/api-key` (L2, `delete_api_key()`: deletes the
key whose headers sign the request, no body). A new nonce creates another key for the same
address; the same nonce again is refused, as the venue does."""

from __future__ import annotations

import base64
import binascii
import hashlib

from aiohttp import web

from simulator.clob_http import error, json_response
from simulator.crypto import SignatureError, clob_auth_digest, recover, verify_hmac
from simulator.engine import OrderError
from simulator.venue import ApiKey, Venue


class Auth:
    """Checks a request's L1 or L2 headers; serves API-key creation, derivation and listing."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    def l1(self, request: web.Request) -> tuple[str, int]:
        h = request.headers
        addr, sig, ts = h.get("POLY_ADDRESS"), h.get("POLY_SIGNATURE"), h.get("POLY_TIMESTAMP")
        nonce_s = h.get("POLY_NONCE", "0")
        if not addr or not sig or not ts:
            raise OrderError("Invalid L1 Request headers", 401)
        try:
            nonce = int(nonce_s)
            digest = clob_auth_digest(addr, ts, nonce, self.venue.chain_id)
            signer = recover(digest, sig)
        except (ValueError, SignatureError) as e:
            raise OrderError("Invalid L1 Request headers", 401) from e
        if signer != addr.lower():
            raise OrderError("Invalid L1 Request headers", 401)
        return addr, nonce

    def derive(self, address: str, nonce: int) -> ApiKey:
        seed = hashlib.sha256(f"{self.venue.seed}:{address.lower()}:{nonce}".encode()).digest()
        h = seed.hex()
        key = f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        secret = base64.urlsafe_b64encode(hashlib.sha256(seed + b"secret").digest()).decode()
        passphrase = hashlib.sha256(seed + b"pass").hexdigest()
        return ApiKey(key, secret, passphrase, address, nonce)

    def l2(self, request: web.Request, body: str) -> ApiKey:
        h = request.headers
        key = self.venue.keys.get(h.get("POLY_API_KEY", ""))
        if (
            key is None
            or h.get("POLY_PASSPHRASE") != key.passphrase
            or (h.get("POLY_ADDRESS") or "").lower() != key.address.lower()
        ):
            raise OrderError("Unauthorized/Invalid api key", 401)
        ts, sig = h.get("POLY_TIMESTAMP", ""), h.get("POLY_SIGNATURE", "")
        try:
            ok = verify_hmac(key.secret, ts, request.method, request.path, body, sig)
        except (ValueError, binascii.Error):
            ok = False
        if not ok:
            raise OrderError("Unauthorized/Invalid api key", 401)
        return key

    async def auth(self, request: web.Request) -> tuple[ApiKey, str]:
        raw = await request.read()
        body = raw.decode("utf-8", errors="replace")
        return self.l2(request, body), body

    async def create_api_key(self, request: web.Request) -> web.Response:
        addr, nonce = self.l1(request)
        if (addr.lower(), nonce) in self.venue.keys_by_addr_nonce:
            return error("Could not create api key", 400)
        key = self.derive(addr, nonce)
        self.venue.keys[key.api_key] = key
        self.venue.keys_by_addr_nonce[(addr.lower(), nonce)] = key
        return json_response(
            {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}
        )

    async def derive_api_key(self, request: web.Request) -> web.Response:
        addr, nonce = self.l1(request)
        key = self.venue.keys_by_addr_nonce.get((addr.lower(), nonce))
        if key is None:
            return error("Could not derive api key!", 400)
        return json_response(
            {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}
        )

    async def delete_api_key(self, request: web.Request) -> web.Response:
        """Delete the API key that signed this request; it is refused (401) from then on."""
        key, _ = await self.auth(request)
        self.venue.keys.pop(key.api_key, None)
        self.venue.keys_by_addr_nonce.pop((key.address.lower(), key.nonce), None)
        return json_response("OK")

    async def list_api_keys(self, request: web.Request) -> web.Response:
        key, _ = await self.auth(request)
        mine = [
            k.api_key for k in self.venue.keys.values() if k.address.lower() == key.address.lower()
        ]
        return json_response({"apiKeys": mine})
