"""Where redemption learns what to redeem: the Data API and Gamma (read-only).

* Data API `GET /positions?user=<funder>&redeemable=true&sizeThreshold=0` (docs
  `api-reference/core/get-current-positions-for-a-user`; the real capture
  `positions_2025_redeemable_and_open`): the funder's positions in resolved markets. The index
  lags the chain by a minute or so, so every row is confirmed on chain before anything is sent.
* Gamma `GET /markets?condition_ids=<id>&closed=true`: `negRisk`, `clobTokenIds` and the
  Protocol-V2 `version` ("v1" / "v2") with `positionIds` (docs
  `migrate/polymarket-v2/api-integrations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from errors import FeedError, TransientError
from venue import parse


@dataclass(frozen=True, slots=True)
class RedeemableRow:
    """One Data API row with `redeemable: true`."""

    condition_id: str
    token_id: str
    size: Decimal
    outcome_index: int
    neg_risk: bool


@dataclass(frozen=True, slots=True)
class MarketKind:
    """What Gamma says about a market's redemption path."""

    condition_id: str
    version: str  # "v1" or "v2"
    neg_risk: bool
    token_ids: tuple[str, str]
    payouts: tuple[Decimal, Decimal] | None = None
    """Gamma's payout per outcome once resolved (`closed`, `umaResolutionStatus` "resolved",
    `outcomePrices` 1/0 or 0.5/0.5), else None."""

    @property
    def kind(self) -> str:
        if self.version == "v2":
            return "v2"
        return "neg_risk" if self.neg_risk else "binary"


async def _get(
    session: aiohttp.ClientSession, url: str, params: list[tuple[str, str]], timeout_s: float
) -> Any:
    try:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            body = await resp.read()
            if resp.status == 429 or resp.status >= 500:
                raise TransientError(f"{url} answered {resp.status}", status=resp.status)
            if resp.status != 200:
                raise FeedError(f"{url} answered HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise TransientError(f"{url} failed: {type(e).__name__}") from e
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise FeedError(f"{url}: body is not JSON") from e


async def redeemable_positions(
    session: aiohttp.ClientSession, data_url: str, wallet: str, *, timeout_s: float = 10.0
) -> list[RedeemableRow]:
    """The funder's redeemable positions (every page, 500 a page)."""
    out: list[RedeemableRow] = []
    for page in range(20):
        rows = await _get(
            session,
            data_url.rstrip("/") + "/positions",
            [
                ("user", wallet),
                ("redeemable", "true"),
                ("sizeThreshold", "0"),
                ("limit", "500"),
                ("offset", str(page * 500)),
            ],
            timeout_s,
        )
        if not isinstance(rows, list):
            raise FeedError("Data API /positions did not answer a list")
        for r in rows:
            if not isinstance(r, dict) or r.get("redeemable") is not True:
                continue
            try:
                out.append(
                    RedeemableRow(
                        condition_id=str(r["conditionId"]),
                        token_id=str(r["asset"]),
                        size=parse.size(r["size"]),
                        outcome_index=int(r["outcomeIndex"]),
                        neg_risk=bool(r.get("negativeRisk", False)),
                    )
                )
            except (KeyError, ValueError, TypeError, ArithmeticError):
                continue  # an unreadable row: the chain is asked about what we can read
        if len(rows) < 500:
            break
    return out


async def market_kind(
    session: aiohttp.ClientSession, gamma_url: str, condition_id: str, *, timeout_s: float = 10.0
) -> MarketKind | None:
    """Gamma's version, neg-risk flag and token ids of one market (None: not listed)."""
    rows = await _get(
        session,
        gamma_url.rstrip("/") + "/markets",
        [("condition_ids", condition_id), ("closed", "true")],
        timeout_s,
    )
    if not isinstance(rows, list):
        raise FeedError("Gamma /markets did not answer a list")
    for r in rows:
        if not isinstance(r, dict) or str(r.get("conditionId", "")).lower() != condition_id.lower():
            continue
        version = str(r.get("version") or "v1")
        try:
            ids = r.get("positionIds") if version == "v2" else r.get("clobTokenIds")
            tokens = [str(t) for t in parse.json_list(ids, "token ids")]
        except ValueError as e:
            raise FeedError(f"Gamma market {condition_id}: {e}") from None
        if len(tokens) != 2:
            raise FeedError(f"Gamma market {condition_id} has {len(tokens)} outcome tokens, not 2")
        return MarketKind(
            condition_id=condition_id,
            version=version,
            neg_risk=parse.flag(r.get("negRisk"), False),
            token_ids=(tokens[0], tokens[1]),
            payouts=_payouts(r),
        )
    return None


def _payouts(r: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    if r.get("closed") is not True or r.get("umaResolutionStatus") != "resolved":
        return None
    try:
        prices = [parse.price(p) for p in parse.json_list(r.get("outcomePrices"), "prices")]
    except (ValueError, ArithmeticError):
        return None
    ok = sorted(prices) in ([Decimal(0), Decimal(1)], [Decimal("0.5"), Decimal("0.5")])
    return (prices[0], prices[1]) if len(prices) == 2 and ok else None
