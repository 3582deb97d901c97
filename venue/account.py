"""What `python -m orchestrator doctor` asks the venue about an account before it trades.

Blocking (httpx): for the operator CLI, never the event loop. Every venue failure is a
`PolydError` (`venue.clob.translate`), its message safe to print (no credential in it).

- `geoblock`: `GET https://polymarket.com/api/geoblock` -> `{blocked, ip, country, region}`
  (https://docs.polymarket.com/api-reference/geoblock; the endpoint is on polymarket.com, not
  the API hosts).
- `Account.server_time`: `GET /time`, the CLOB's Unix time in seconds (a bare integer).
- `Account.credentials`: configured credentials are checked with an L2 read
  (`GET /auth/api-keys`, as Polymarket/py-sdk `fetch_api_keys`); without them the key made with
  nonce 0 is derived first (`GET /auth/derive-api-key`) and created (`POST /auth/api-key`) only
  if there is none, so a restart never asks the venue for a key it already has (which it refuses
  with HTTP 400 "Could not create api key"); `ClobHttp.api_creds` owns the exchange.
- `Account.collateral`: `GET /balance-allowance?asset_type=COLLATERAL&signature_type=N` (L2), as
  the SDKs' `get_balance_allowance` sends it: the funder's pUSD balance and its
  allowance to each exchange contract, both in 6-decimal units.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from errors import OrderRejected, PolydError, TransientError
from venue.clob.auth import Credentials, LocalSigner, l2_headers
from venue.clob.translate import VenueHttpError, translate
from venue.clob.transport import ClobHttp

MICRO = Decimal(1_000_000)


@dataclass(frozen=True)
class Geoblock:
    """Whether Polymarket lets this machine's address place orders."""

    blocked: bool
    ip: str
    country: str
    region: str


def geoblock(url: str, *, timeout_s: float) -> Geoblock:
    """Ask Polymarket's geoblock endpoint about this machine; `TransientError` if it cannot."""
    try:
        resp = httpx.get(url, timeout=timeout_s, headers={"Accept": "application/json"})
        resp.raise_for_status()
        body = resp.json()
    except (httpx.HTTPError, ValueError) as e:
        raise TransientError(f"the geoblock check did not answer ({type(e).__name__})") from None
    if not isinstance(body, dict) or not isinstance(body.get("blocked"), bool):
        raise TransientError("the geoblock check answered without a `blocked` flag")
    return Geoblock(
        blocked=body["blocked"],
        ip=str(body.get("ip", ""))[:64],
        country=str(body.get("country", ""))[:8],
        region=str(body.get("region", ""))[:8],
    )


@dataclass(frozen=True)
class Collateral:
    """The funder's pUSD and its allowance to each exchange contract (pUSD, not micro)."""

    balance: Decimal
    allowances: dict[str, Decimal]


class Account:
    """One private key's account at the CLOB (its address, API key, funds)."""

    def __init__(
        self, *, host: str, chain_id: int, private_key: str, signature_type: int, timeout_s: float
    ) -> None:
        self._signer = LocalSigner(private_key)
        self._chain_id = chain_id
        self._http = ClobHttp(host, timeout_s=timeout_s)
        self._signature_type = signature_type

    @property
    def address(self) -> str:
        """The key's own address (the signer)."""
        return self._signer.address

    def server_time(self) -> int:
        """The venue's clock, in Unix seconds."""
        got = self._call("GET", "/time")
        try:
            return int(str(got).strip().strip('"'))
        except ValueError:
            raise TransientError("the venue's /time answer is not a number") from None

    def credentials(self, configured: Credentials | None) -> tuple[Credentials, str]:
        """Working L2 credentials and how they were found: `configured` (checked),
        `derived` or `created`. A refusal raises the translated `PolydError` (401: FatalError)."""
        if configured is not None:
            self.api_keys(configured)
            return configured, "configured"
        try:
            return self._http.api_creds(self._signer, self._chain_id)
        except VenueHttpError as e:
            raise translate(e) from None
        except OrderRejected as e:
            raise PolydError(e.reason) from None

    def api_keys(self, creds: Credentials) -> list[str]:
        """The API keys of this address, read with `creds` (L2): a refusal means they are bad."""
        got = self._call("GET", "/auth/api-keys", headers=self._l2(creds, "/auth/api-keys"))
        keys = got.get("apiKeys") if isinstance(got, dict) else None
        return [str(k) for k in keys] if isinstance(keys, list) else []

    def collateral(self, creds: Credentials) -> Collateral:
        """The funder's pUSD balance and allowances (`GET /balance-allowance`, L2)."""
        path = "/balance-allowance"
        params = {"asset_type": "COLLATERAL", "signature_type": self._signature_type}
        got = self._call("GET", path, headers=self._l2(creds, path), params=params)
        if not isinstance(got, dict):
            raise TransientError("the venue's balance answer is not an object")
        raw = got.get("allowances")
        if raw is None and "allowance" in got:
            raw = {"exchange": got["allowance"]}
        try:
            balance = Decimal(str(got.get("balance"))) / MICRO
            allowances = {str(k): Decimal(str(v)) / MICRO for k, v in dict(raw or {}).items()}
        except (InvalidOperation, TypeError, ValueError):
            raise TransientError("the venue's balance answer is not numbers") from None
        return Collateral(balance=balance, allowances=allowances)

    def close(self) -> None:
        self._http.close()

    def _l2(self, creds: Credentials, path: str) -> dict[str, str]:
        return l2_headers(self._signer.address, creds, "GET", path)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self._http.request(method, path, **kw)
        except VenueHttpError as e:
            raise translate(e) from None
