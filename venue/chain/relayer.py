"""Polymarket's gasless relayer client (`relayer-v2.polymarket.com`) for proxy, Safe and deposit
wallets: nonce, relay payload, submit, transaction state.

Routes and states: Polymarket/builder-relayer-client @ c42a054 (`src/endpoints.ts`,
`src/types.ts`) and Polymarket/py-sdk `_internal/actions/relayer/`. Auth: the relayer API key
headers `RELAYER_API_KEY` and `RELAYER_API_KEY_ADDRESS` (CLOB credentials are not accepted).
`submit` is never retried here: a timeout there is "outcome unknown"; the redeemer journals the
envelope's nonce first and, on doubt, refuses to send again until a human looks.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from errors import TransientError

STATES_DONE = frozenset({"STATE_CONFIRMED"})
STATES_FAILED = frozenset({"STATE_FAILED", "STATE_INVALID"})
KIND_OF_SIGNATURE_TYPE = {1: "PROXY", 2: "SAFE", 3: "WALLET"}


class RelayerError(Exception):
    """The relayer refused a request (bad key, bad signature, nonce mismatch)."""


class RelayerClient:
    """The relayer's REST routes over one HTTP session."""

    def __init__(
        self,
        *,
        url: str,
        session: aiohttp.ClientSession,
        api_key: str,
        api_key_address: str,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._session = session
        self._headers = {"RELAYER_API_KEY": api_key, "RELAYER_API_KEY_ADDRESS": api_key_address}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _req(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        try:
            async with self._session.request(
                method,
                self._url + path,
                params=params,
                timeout=self._timeout,
                data=orjson.dumps(body) if body is not None else None,
                headers={**self._headers, "Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    raise TransientError(
                        f"relayer {path} answered {resp.status}", status=resp.status
                    )
                if resp.status != 200:
                    raise RelayerError(f"relayer {path} answered {resp.status}: {raw[:200]!r}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"relayer {path} failed: {type(e).__name__}") from e
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RelayerError(f"relayer {path}: body is not JSON") from e

    async def nonce(self, signer: str, kind: str) -> str:
        out = await self._req("GET", "/nonce", params={"address": signer, "type": kind})
        return str(out["nonce"])

    async def relay_payload(self, signer: str, kind: str) -> tuple[str, str]:
        """(relay address, nonce) for a PROXY transaction."""
        out = await self._req("GET", "/relay-payload", params={"address": signer, "type": kind})
        return str(out["address"]), str(out["nonce"])

    async def submit(self, envelope: dict[str, Any]) -> tuple[str, str]:
        """Submit a signed envelope: (transaction id, transaction hash or "")."""
        out = await self._req("POST", "/submit", body=envelope)
        return str(out["transactionID"]), str(out.get("transactionHash") or "")

    async def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """The relayer's record of one transaction (`state`, `transactionHash`, `errorMsg`)."""
        out = await self._req("GET", "/transaction", params={"id": transaction_id})
        if isinstance(out, list):
            return out[0] if out and isinstance(out[0], dict) else None
        return out if isinstance(out, dict) else None
