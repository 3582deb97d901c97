"""What `vet` reads from the venue: a wallet's trades and holdings, its markets' facts and
trade feeds, and the copy rule to judge it by.

Data API: `/activity?type=TRADE` (the wallet's trades), `/positions` (its holdings now),
`/trades?market=` (each market's trades of every wallet: the price a copy would have met).
Gamma: `/markets?condition_ids=` (tick, minimum size, taker fee, and once resolved the payouts
and `closedTime`). Venue errors propagate as `errors.TransientError` / `errors.FeedError`.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from errors import FeedError, TransientError
from execution.fees import NO_FEE, FeeSchedule, gamma_schedule
from resilience.clock import SystemClock
from resilience.retry import RetryPolicy, retry_call
from strategies.copy_trader.rules import WalletRule, load_rules, parse_rules
from venue import gamma as gamma_api
from venue.data_api import DataApiClient, LeaderTrade

log = structlog.get_logger("backtest.vet")

GAMMA_RETRY: Final = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)

DEFAULT_RULE: Final = {"sizing": "fixed_notional", "fixed_notional": "10"}
"""The copy rule `vet` uses without `--rules`: 10 pUSD per entry, the rule schema's defaults
otherwise (mirror exits, 0.02 slippage, 25 per trade, 100 per market)."""


@dataclass(frozen=True, slots=True)
class MarketFacts:
    """What Gamma says about one market: trading rules, fee and (if resolved) the payouts."""

    condition_id: str
    token_ids: tuple[str, ...]
    outcomes: tuple[str, ...] = ("Yes", "No")
    slug: str = ""
    question: str = ""
    tick: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("5")
    fee: FeeSchedule = NO_FEE
    payouts: Mapping[str, Decimal] | None = None
    resolved_at: int | None = None
    tags: frozenset[str] = frozenset()
    known: bool = True
    """False when Gamma did not know the market: defaults stand in for its rules."""


@dataclass(frozen=True, slots=True)
class VetInput:
    """Everything `simulate` needs: the wallet's trades and the markets they touched."""

    wallet: str
    start: int
    end: int
    trades: tuple[LeaderTrade, ...]
    markets: Mapping[str, MarketFacts]
    tape: Mapping[str, tuple[tuple[int, Decimal], ...]]
    """Per token: the market's trades `(timestamp, price)`, oldest first."""
    leader_now: Mapping[str, Decimal] = field(default_factory=dict)
    """The wallet's holding per token now (`/positions`)."""
    notes: tuple[str, ...] = ()


def _closed_at(row: Mapping[str, Any]) -> int | None:
    """Gamma's `closedTime` ("2025-10-04 12:00:00+00") as unix seconds; None if unreadable."""
    raw = row.get("closedTime")
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip().replace(" ", "T", 1)
    if text.endswith("+00"):
        text += ":00"
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp())


def market_facts(row: Mapping[str, Any]) -> MarketFacts:
    """A Gamma `/markets` row as `MarketFacts`; FeedError when the row is unusable."""
    parsed = gamma_api.parse_market(row)
    m = parsed.market
    payouts = gamma_api.resolution_payouts(row)
    return MarketFacts(
        condition_id=m.condition_id,
        token_ids=m.token_ids,
        outcomes=m.outcomes,
        slug=m.slug,
        question=m.question,
        tick=m.tick_size,
        min_size=m.min_size,
        fee=gamma_schedule(m) or NO_FEE,
        payouts=payouts,
        resolved_at=_closed_at(row) if payouts is not None else None,
        tags=frozenset(s.lower() for s in parsed.tag_slugs),
    )


async def fetch_markets(
    gamma: gamma_api.GammaClient, condition_ids: Sequence[str]
) -> dict[str, MarketFacts]:
    """Gamma's facts for each market (closed ones first: Gamma lists open ones by default)."""
    out: dict[str, MarketFacts] = {}
    for closed in ("true", "false"):
        wanted = [c for c in condition_ids if c not in out]
        for i in range(0, len(wanted), gamma_api.IDS_PER_REQUEST):
            chunk = wanted[i : i + gamma_api.IDS_PER_REQUEST]
            params = [("closed", closed), *(("condition_ids", c) for c in chunk)]
            # The Gamma client does not retry; a one-shot run should not die on one 5xx.
            rows = await retry_call(
                GAMMA_RETRY,
                functools.partial(gamma.pages, "/markets", params),
                retry_on=(TransientError,),
                clock=SystemClock(),
                log_event="vet_gamma_retry",
                logger=log,
            )
            for r in rows:
                try:
                    f = market_facts(r)
                except FeedError as e:
                    log.warning("vet_market_unreadable", error=str(e))
                    continue
                if f.condition_id in chunk:
                    out[f.condition_id] = f
    return out


async def fetch(
    wallet: str,
    *,
    data_api: DataApiClient,
    gamma: gamma_api.GammaClient,
    start: int,
    end: int,
) -> VetInput:
    """Pull the wallet's trades in `[start, end]`, its holdings and its markets' facts and
    trade feeds. Venue errors propagate (`errors.TransientError`, `errors.FeedError`)."""
    notes: list[str] = []
    got = await data_api.activity_trades(wallet, start=start)
    trades = tuple(t for t in got.rows if t.wallet == wallet and start <= t.timestamp <= end)
    if got.truncated:
        notes.append(
            f"the wallet's history was cut at {len(got.rows)} trades (Data API paging limit): "
            "use fewer --days"
        )
    if got.skipped:
        bad = sum(1 for reason, _ in got.skipped if reason != "not_trade")
        if bad:
            notes.append(f"{bad} unreadable Data API row(s) were skipped")
    pos = await data_api.positions(wallet)
    leader_now = {p.token_id: p.size for p in pos.rows if p.wallet == wallet}
    cids = sorted({t.condition_id for t in trades})
    markets = await fetch_markets(gamma, cids)
    missing = [c for c in cids if c not in markets]
    if missing:
        notes.append(
            f"{len(missing)} market(s) unknown to Gamma: default tick 0.01, minimum 5, no fee"
        )
    tape: dict[str, list[tuple[int, Decimal]]] = {}
    for cid in cids:
        feed = await data_api.market_trades(cid, since=start)
        if feed.truncated:
            notes.append(f"market {cid[:10]}…: trade feed cut at {len(feed.rows)} trades")
        for t in feed.rows:
            if t.timestamp <= end + 86_400:
                tape.setdefault(t.token_id, []).append((t.timestamp, t.price))
    for t in trades:  # the leader's own trades are on the tape even if the feed missed them
        tape.setdefault(t.token_id, []).append((t.timestamp, t.price))
    frozen = {tok: tuple(sorted(set(rows))) for tok, rows in tape.items()}
    return VetInput(
        wallet=wallet,
        start=start,
        end=end,
        trades=trades,
        markets=markets,
        tape=frozen,
        leader_now=leader_now,
        notes=tuple(notes),
    )


def load_rule(path: str | None, wallet: str) -> WalletRule:
    """The copy rule for `wallet`: its entry in the rules file, else the file's `[defaults]`
    (or, without a file, `DEFAULT_RULE`) applied to it. ConfigError when the file is bad."""
    if path is None:
        return parse_rules({"wallets": [{**DEFAULT_RULE, "address": wallet}]}).wallets[0]
    rules = load_rules(Path(path))  # validates the whole file, and says where it is bad
    for w in rules.wallets:
        if w.address == wallet:
            return w
    raw = Path(path).read_bytes()
    data = orjson.loads(raw) if path.lower().endswith(".json") else tomllib.loads(raw.decode())
    defaults = dict(data.get("defaults") or {})
    if not {"sizing", "ratio", "fixed_notional", "percent"} & set(defaults):
        defaults = {**DEFAULT_RULE, **defaults}
    return parse_rules({"defaults": defaults, "wallets": [{"address": wallet}]}).wallets[0]
