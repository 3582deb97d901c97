"""API-key management at the CLOB, as py-clob-client-v2 does it (`py_clob_client_v2/client.py`
`create_api_key`, `derive_api_key`, `delete_api_key`; paths in `endpoints.py`):

- `POST /auth/api-key` with L1 headers (an EIP-712 `ClobAuth` signature by the private key,
  `POLY_NONCE`): a new key for the address. The venue keys credentials by (address, nonce), so a
  rotation asks with a nonce not used before (the current Unix time).
- `GET /auth/derive-api-key` with L1 headers: the key already made with that nonce.
- `DELETE /auth/api-key` with L2 headers: deletes the key that signs the request; the venue
  refuses it (401) from then on.

Blocking: for the operator CLI (`python -m orchestrator rotate-api-key`), never the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from py_clob_client_v2.clob_types import ApiCreds
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.headers.headers import create_level_1_headers
from py_clob_client_v2.signer import Signer

from errors import PolydError
from venue.clob.translate import translate
from venue.clob.transport import ClobHttp, _creds


@dataclass(frozen=True, repr=False)
class Credentials:
    """One set of L2 API credentials. Its repr shows nothing (they are secrets)."""

    api_key: str
    api_secret: str
    api_passphrase: str

    def __repr__(self) -> str:
        return "Credentials(**********)"


class ApiKeys:
    """Create, derive and delete the API keys of one private key's address."""

    def __init__(self, *, host: str, chain_id: int, private_key: str, timeout_s: float) -> None:
        self._signer = Signer(private_key, chain_id)
        self._http = ClobHttp(host, timeout_s=timeout_s)

    @property
    def address(self) -> str:
        return str(self._signer.address())

    def create(self, nonce: int) -> Credentials:
        """A new key (L1, `POST /auth/api-key`). Raises `OrderRejected` if the venue refuses."""
        try:
            got = self._http.request(
                "POST", "/auth/api-key", headers=create_level_1_headers(self._signer, nonce=nonce)
            )
            return _plain(_creds(got))
        except (PolyApiException, PolyException) as e:
            raise _error(e) from None

    def derive(self, nonce: int = 0) -> Credentials:
        """The key made with `nonce` (L1, `GET /auth/derive-api-key`)."""
        try:
            got = self._http.request(
                "GET",
                "/auth/derive-api-key",
                headers=create_level_1_headers(self._signer, nonce=nonce),
            )
            return _plain(_creds(got))
        except (PolyApiException, PolyException) as e:
            raise _error(e) from None

    def delete(self, creds: Credentials) -> None:
        """Delete the key `creds` (L2, `DELETE /auth/api-key`, signed with that key)."""
        api = ApiCreds(creds.api_key, creds.api_secret, creds.api_passphrase)
        headers = self._http.l2_headers(self._signer, api, "DELETE", "/auth/api-key")
        try:
            self._http.request("DELETE", "/auth/api-key", headers=headers)
        except (PolyApiException, PolyException) as e:
            raise _error(e) from None

    def close(self) -> None:
        self._http.close()


def _plain(c: ApiCreds) -> Credentials:
    return Credentials(c.api_key, c.api_secret, c.api_passphrase)


def _error(e: PolyException) -> PolydError:
    return translate(e)
