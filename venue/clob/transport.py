"""The CLOB's HTTP transport: raw bodies, L1/L2 auth, errors as `VenueHttpError`.

* `AsyncClobHttp` (the daemon): one `aiohttp.ClientSession` on the event loop, keep-alive
  connections, the venue's timeout for connecting and for each read. No thread hand-off per
  request: a POST is one coroutine from the signed bytes to the parsed answer.
* `ClobHttp` (the operator CLI and start-up credential derivation): the same requests over a
  blocking `httpx.Client`.

Both send the body bytes they are given, unchanged: the L2 HMAC covers the exact body text and
the venue checks it on the raw bytes. A non-200 answer raises `VenueHttpError` with the status,
the answer and its headers; no answer raises it with `status=None` and says whether the
connection ever opened (`connect_failed`: nothing left the process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import httpx

from errors import OrderRejected, TransientError
from venue.clob.auth import Credentials, LocalSigner, l1_headers
from venue.clob.translate import VenueHttpError

INITIAL_CURSOR: Final = "MA=="
END_CURSOR: Final = "LTE="

_COMMON_HEADERS: Final = {
    "User-Agent": "polyd",
    "Accept": "*/*",
    "Content-Type": "application/json",
}


def _parse(raw: bytes) -> Any:
    """The answer's JSON, or its text if it is not JSON (the venue's `/time` is a bare number;
    an empty 200 is "")."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    return {k: str(v) for k, v in params.items()} if params else None


def read_page(got: Any, path: str) -> tuple[list[Any], str]:
    """`(rows, next_cursor)` of one page of a cursor-paginated read; `END_CURSOR` ends it.

    A page that is not `{data: [...], next_cursor: "..."}` raises `TransientError`.
    """
    if not isinstance(got, dict) or not isinstance(got.get("data"), list):
        raise TransientError(f"unreadable page from {path}")
    nxt = got.get("next_cursor")
    if not isinstance(nxt, str):
        raise TransientError(f"unreadable cursor from {path}")
    return got["data"], nxt


def creds_from(res: Any) -> Credentials:
    """API credentials from an `/auth/api-key` or `/auth/derive-api-key` answer."""
    try:
        return Credentials(str(res["apiKey"]), str(res["secret"]), str(res["passphrase"]))
    except (KeyError, TypeError):
        raise OrderRejected("the venue answered without API credentials", source="venue") from None


class AsyncClobHttp:
    """The daemon's CLOB client: one aiohttp session, created on first use on the running loop."""

    def __init__(self, host: str, *, timeout_s: float, max_connections: int = 32) -> None:
        self.host = host.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        s = self._session
        if s is None or s.closed:
            s = self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=30.0, ttl_dns_cache=300
                ),
                headers=_COMMON_HEADERS,
                skip_auto_headers=("User-Agent",),
            )
        return s

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the JSON answer (or its text). Raise `VenueHttpError`."""
        try:
            async with self._get_session().request(
                method,
                self.host + path,
                headers=headers,
                data=body.encode() if body is not None else None,
                params=_query(params),
            ) as resp:
                raw = await resp.read()
                status = resp.status
                if status != 200:
                    raise VenueHttpError.answer(status, raw, resp.headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise VenueHttpError(None, "connect failed", connect_failed=True) from e
        except (TimeoutError, aiohttp.ClientError) as e:
            raise VenueHttpError(None, "Request exception!") from e
        return _parse(raw)

    async def page(
        self, path: str, headers: Mapping[str, str], params: Mapping[str, Any], cursor: str
    ) -> tuple[list[Any], str]:
        """One page of a cursor-paginated read (see `read_page`)."""
        got = await self.request(
            "GET", path, headers=headers, params={**params, "next_cursor": cursor}
        )
        return read_page(got, path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ClobHttp:
    """A blocking CLOB client over `httpx.Client` (HTTP/2, keep-alive, `timeout_s`): for the
    operator CLI and the start-up credential derivation, never the event loop."""

    def __init__(self, host: str, *, timeout_s: float) -> None:
        self.host = host.rstrip("/")
        self._client = httpx.Client(http2=True, timeout=httpx.Timeout(timeout_s))

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the JSON answer (or its text). Raise `VenueHttpError`."""
        try:
            resp = self._client.request(
                method=method,
                url=f"{self.host}{path}",
                headers={**_COMMON_HEADERS, **(headers or {})},
                content=body.encode("utf-8") if body is not None else None,
                params=_query(params),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise VenueHttpError(None, "connect failed", connect_failed=True) from e
        except httpx.HTTPError as e:
            raise VenueHttpError(None, "Request exception!") from e
        if resp.status_code != 200:
            raise VenueHttpError.answer(resp.status_code, resp.content, resp.headers)
        return _parse(resp.content)

    def api_creds(
        self, signer: LocalSigner, chain_id: int, nonce: int = 0
    ) -> tuple[Credentials, str]:
        """The API key for `signer` (L1 auth) and how it was found: `derived` or `created`.

        The SDK's `create_or_derive_api_key` the other way round: `GET /auth/derive-api-key`,
        and only if that fails or gives no key, `POST /auth/api-key`. Every restart after the
        first finds the key on the first request; asking to create it again is refused (HTTP
        400 "Could not create api key"), a failure that looks alarming in the venue's answers
        and the SDK's own log, and means nothing.

        Two processes of one key starting together (two daemons sharing an account) can both
        find no key and both ask to create it: the venue makes it for one and refuses the
        other with that 400. The refused one then derives the key the other made; only if that
        fails too is the refusal raised.
        """
        derived = self._derive(signer, chain_id, nonce)
        if derived is not None:
            return derived, "derived"
        try:
            created = creds_from(
                self.request(
                    "POST", "/auth/api-key", headers=l1_headers(signer, chain_id, nonce=nonce)
                )
            )
        except VenueHttpError as e:
            if e.status != 400:
                raise
            derived = self._derive(signer, chain_id, nonce)
            if derived is None:
                raise
            return derived, "derived"
        return created, "created"

    def _derive(self, signer: LocalSigner, chain_id: int, nonce: int) -> Credentials | None:
        """The key made with `nonce`, or None if the venue has none (or will not say)."""
        try:
            derived = creds_from(
                self.request(
                    "GET", "/auth/derive-api-key", headers=l1_headers(signer, chain_id, nonce=nonce)
                )
            )
        except (VenueHttpError, OrderRejected):
            return None
        return derived if derived.api_key else None

    def close(self) -> None:
        self._client.close()
