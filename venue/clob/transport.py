"""The CLOB's HTTP transport: one `httpx.Client` per broker, L1/L2 auth headers, raw bodies.

Requests are byte-for-byte those of `py-clob-client-v2`'s own HTTP helper (same headers, same
body bytes, HTTP/2, pooled keep-alive connections): the L2 HMAC covers the exact body text, and
the venue checks it on the raw bytes. Only the header *builders* come from the SDK, through its
public `headers` module; the client is ours, so its timeout is ours and no SDK module state is
replaced.

Blocking: every method here runs on the broker's HTTP thread pool, never on the event loop.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
from py_clob_client_v2.clob_types import ApiCreds, RequestArgs
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.headers.headers import create_level_1_headers, create_level_2_headers
from py_clob_client_v2.signer import Signer

from errors import TransientError
from venue.clob.translate import KeepResponse

INITIAL_CURSOR: Final = "MA=="
END_CURSOR: Final = "LTE="

_COMMON_HEADERS: Final = {
    "User-Agent": "py_clob_client_v2",
    "Accept": "*/*",
    "Connection": "keep-alive",
    "Content-Type": "application/json",
}
"""What the SDK's HTTP helper adds to every request (plus `Accept-Encoding: gzip` on GET)."""


def _with_common(method: str, headers: dict[str, str]) -> dict[str, str]:
    headers.update(_COMMON_HEADERS)
    if method == "GET":
        headers["Accept-Encoding"] = "gzip"
    return headers


class ClobHttp:
    """A blocking CLOB client over our own `httpx.Client` (HTTP/2, keep-alive, `timeout_s`)."""

    def __init__(self, host: str, *, timeout_s: float) -> None:
        self.host = host.rstrip("/")
        self._client = httpx.Client(http2=True, timeout=httpx.Timeout(timeout_s))

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the JSON answer (or its text if it is not JSON).

        Raise `KeepResponse` (a `PolyApiException` keeping the response) for a non-200, and a
        `PolyApiException` chained to the httpx error for a transport failure, as the SDK does.
        """
        try:
            resp = self._client.request(
                method=method,
                url=f"{self.host}{path}",
                headers=_with_common(method, dict(headers or {})),
                content=body.encode("utf-8") if body is not None else None,
                params=params,
            )
        except httpx.RequestError as exc:
            raise PolyApiException(error_msg="Request exception!") from exc
        if resp.status_code != 200:
            raise KeepResponse(resp)
        try:
            return resp.json()
        except ValueError:
            return resp.text

    @staticmethod
    def l2_headers(
        signer: Signer, creds: ApiCreds, method: str, path: str, body: str | None = None
    ) -> dict[str, str]:
        """L2 auth headers: an HMAC over the time, `method`, `path` (no query) and body text."""
        headers: dict[str, str] = create_level_2_headers(
            signer,
            creds,
            RequestArgs(method=method, request_path=path, body=body, serialized_body=body),
        )
        return headers

    def page(
        self, path: str, headers: dict[str, str], params: dict[str, Any], cursor: str
    ) -> tuple[list[Any], str]:
        """One page of a cursor-paginated read: `(rows, next_cursor)`; `END_CURSOR` ends it.

        A page that is not `{data: [...], next_cursor: "..."}` raises `TransientError`.
        """
        got = self.request("GET", path, headers=headers, params={**params, "next_cursor": cursor})
        if not isinstance(got, dict) or not isinstance(got.get("data"), list):
            raise TransientError(f"unreadable page from {path}")
        nxt = got.get("next_cursor")
        if not isinstance(nxt, str):
            raise TransientError(f"unreadable cursor from {path}")
        return got["data"], nxt

    def api_creds(self, signer: Signer, nonce: int = 0) -> ApiCreds:
        """Derive the API key for `signer` (L1 auth), or create it if there is none yet.

        The SDK's `create_or_derive_api_key` the other way round: `GET /auth/derive-api-key`,
        and only if that fails or gives no key, `POST /auth/api-key`. Every restart after the
        first finds the key on the first request; asking to create it again is refused (HTTP
        400 "Could not create api key"), a failure that looks alarming in the venue's answers
        and the SDK's own log, and means nothing.
        """
        try:
            derived = _creds(
                self.request(
                    "GET",
                    "/auth/derive-api-key",
                    headers=create_level_1_headers(signer, nonce=nonce),
                )
            )
            if derived.api_key:
                return derived
        except PolyException:
            pass
        return _creds(
            self.request(
                "POST", "/auth/api-key", headers=create_level_1_headers(signer, nonce=nonce)
            )
        )

    def close(self) -> None:
        self._client.close()


def _creds(res: Any) -> ApiCreds:
    try:
        return ApiCreds(
            api_key=res["apiKey"], api_secret=res["secret"], api_passphrase=res["passphrase"]
        )
    except (KeyError, TypeError):
        raise PolyException("the venue answered without API credentials") from None
