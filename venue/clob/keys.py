"""API-key management at the CLOB (Polymarket/py-sdk `polymarket/_internal/actions/auth.py`;
the routes py-clob-client-v2 also used: `create_api_key`, `derive_api_key`, `delete_api_key`):

- `POST /auth/api-key` with L1 headers (an EIP-712 `ClobAuth` signature by the private key,
  `POLY_NONCE`): a new key for the address. The venue keys credentials by (address, nonce), so a
  rotation asks with a nonce not used before (the current Unix time).
- `GET /auth/derive-api-key` with L1 headers: the key already made with that nonce.
- `DELETE /auth/api-key` with L2 headers: deletes the key that signs the request; the venue
  refuses it (401) from then on.

Blocking: for the operator CLI (`python -m orchestrator rotate-api-key`), never the event loop.
"""

from __future__ import annotations

from venue.clob.auth import Credentials, LocalSigner, l1_headers, l2_headers
from venue.clob.translate import VenueHttpError, translate
from venue.clob.transport import ClobHttp, creds_from

__all__ = ["ApiKeys", "Credentials"]


class ApiKeys:
    """Create, derive and delete the API keys of one private key's address."""

    def __init__(self, *, host: str, chain_id: int, private_key: str, timeout_s: float) -> None:
        self._signer = LocalSigner(private_key)
        self._chain_id = chain_id
        self._http = ClobHttp(host, timeout_s=timeout_s)

    @property
    def address(self) -> str:
        return self._signer.address

    def create(self, nonce: int) -> Credentials:
        """A new key (L1, `POST /auth/api-key`). Raises `OrderRejected` if the venue refuses."""
        try:
            return creds_from(
                self._request(
                    "POST", "/auth/api-key", l1_headers(self._signer, self._chain_id, nonce=nonce)
                )
            )
        except VenueHttpError as e:
            raise translate(e) from None

    def derive(self, nonce: int = 0) -> Credentials:
        """The key made with `nonce` (L1, `GET /auth/derive-api-key`)."""
        try:
            return creds_from(
                self._request(
                    "GET",
                    "/auth/derive-api-key",
                    l1_headers(self._signer, self._chain_id, nonce=nonce),
                )
            )
        except VenueHttpError as e:
            raise translate(e) from None

    def delete(self, creds: Credentials) -> None:
        """Delete the key `creds` (L2, `DELETE /auth/api-key`, signed with that key)."""
        headers = l2_headers(self._signer.address, creds, "DELETE", "/auth/api-key")
        try:
            self._request("DELETE", "/auth/api-key", headers)
        except VenueHttpError as e:
            raise translate(e) from None

    def _request(self, method: str, path: str, headers: dict[str, str]) -> object:
        return self._http.request(method, path, headers=headers)

    def close(self) -> None:
        self._http.close()
