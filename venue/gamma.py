"""Gamma API adapter (`gamma-api.polymarket.com`): market discovery.

Gamma rows carry `outcomes`, `outcomePrices` and `clobTokenIds` as JSON-encoded *strings*;
some proxies send real arrays. Both are accepted. Rows that cannot become a
`models.Market` (legacy scalar markets without a CLOB, missing ids) are skipped, counted and
logged, never fatal.

Server-side filters are used where Gamma has them (closed, active, end-date window, liquidity
and volume floors, tag ids, ids/slugs); `acceptingOrders` and `enableOrderBook` have no query
parameter, so they and the window/floors are re-checked here on every row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import aiohttp
import orjson
import structlog
from pydantic import ValidationError

from errors import FeedError, TransientError
from execution.market_rules import V2_REFUSAL
from models import Market
from observability.metrics import Metrics
from resilience.backoff import Backoff
from resilience.clock import Clock, SystemClock
from resilience.rate_limit import RateLimiter
from venue import parse

log = structlog.get_logger("gamma")

PAGE_SIZE: Final = 100
MAX_PAGES: Final = 50
# Gamma query parameters take at most this many repeated ids in one request, by our choice:
# long URLs get refused by proxies well before Gamma's own limits.
IDS_PER_REQUEST: Final = 50


@dataclass(frozen=True)
class MarketQuery:
    """What to ask Gamma for. Empty selectors and `None` floors mean "no filter"."""

    token_ids: tuple[str, ...] = ()
    condition_ids: tuple[str, ...] = ()
    slugs: tuple[str, ...] = ()
    tag_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    """Tag slugs: looked up through `/events?tag_slug=` (markets have no tag-slug filter)."""
    active: bool | None = True
    closed: bool | None = False
    accepting_orders: bool | None = True
    enable_order_book: bool | None = True
    ends_within_s: float | None = None
    """Only markets whose end date is between now and now + this many seconds."""
    end_date_min: datetime | None = None
    end_date_max: datetime | None = None
    min_liquidity: Decimal | None = None
    min_volume: Decimal | None = None

    @property
    def explicit(self) -> bool:
        return bool(self.token_ids or self.condition_ids or self.slugs)

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        lo, hi = self.end_date_min, self.end_date_max
        if self.ends_within_s is not None:
            lo = max(lo, now) if lo else now
            w = now + timedelta(seconds=self.ends_within_s)
            hi = min(hi, w) if hi else w
        return lo, hi


@dataclass
class MarketRow:
    """A parsed Gamma market plus the numbers discovery filters on."""

    market: Market
    enable_order_book: bool
    liquidity: Decimal | None
    volume: Decimal | None
    tag_slugs: tuple[str, ...] = ()
    raw_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class MalformedRow(FeedError):
    """A Gamma row with a number outside `venue.parse`'s bounds: skipped, and counted as
    malformed input (`polyd_feed_malformed_total{feed="gamma"}`)."""


def _cumulative(raw: Any, *, what: str) -> Decimal:
    return parse.size(raw, what=what, bound=parse.MAX_PUSD_CUMULATIVE)


def _bounded(
    row: Mapping[str, Any],
    key: str,
    check: Callable[..., Decimal],
    *,
    alias: str | None = None,
) -> Decimal | None:
    """`row[key]` (or `row[alias]`) through a `venue.parse` bound; None when absent or not a
    number (the default applies); `MalformedRow` when outside the bound (NaN, 1e308, -1)."""
    raw = row.get(key)
    if raw is None and alias is not None:
        raw, key = row.get(alias), alias
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        return check(raw, what=key)
    except parse.OutOfBounds as e:
        raise MalformedRow(str(e)) from None
    except parse.Unreadable:
        return None


def parse_market(row: Mapping[str, Any]) -> MarketRow:
    """Translate one Gamma `/markets` row; raise FeedError saying why it is unusable
    (`MalformedRow` for a number outside `venue.parse`'s bounds)."""
    if not isinstance(row, Mapping):
        raise FeedError("row is not an object")
    cid = row.get("conditionId")
    if not cid:
        raise FeedError("no conditionId")
    try:
        tokens = [str(t) for t in parse.json_list(row.get("clobTokenIds"), "clobTokenIds")]
        outcomes = [str(o) for o in parse.json_list(row.get("outcomes"), "outcomes")]
    except ValueError as e:
        raise FeedError(str(e)) from None
    if not tokens:
        raise FeedError("no clobTokenIds (market has no order book)")
    if outcomes and len(outcomes) != len(tokens):
        raise FeedError("outcomes and clobTokenIds differ in length")
    tick = _bounded(row, "orderPriceMinTickSize", parse.price)
    min_size = _bounded(row, "orderMinSize", parse.size)
    liquidity = _bounded(row, "liquidityNum", parse.pusd, alias="liquidity")
    volume = _bounded(row, "volumeNum", _cumulative, alias="volume")
    fields: dict[str, Any] = {
        "condition_id": cid,
        "token_ids": tuple(tokens),
        "outcomes": tuple(outcomes) if outcomes else ("Yes", "No")[: len(tokens)],
        "neg_risk": parse.flag(row.get("negRisk"), False),
        "end_date": parse.iso_datetime(row.get("endDate")),
        "accepting_orders": parse.flag(row.get("acceptingOrders"), False),
        "active": parse.flag(row.get("active"), False),
        "closed": parse.flag(row.get("closed"), False),
        "slug": str(row.get("slug") or ""),
        "question": str(row.get("question") or "")[:500],
    }
    if tick is not None:
        fields["tick_size"] = tick
    if min_size is not None:
        fields["min_size"] = min_size
    fields.update(_fee_fields(row))
    try:
        market = Market(**fields)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise FeedError(f"{where}: {first.get('msg', 'invalid')}") from None
    tags = row.get("tags")
    tag_slugs = (
        tuple(str(t.get("slug")) for t in tags if isinstance(t, dict) and t.get("slug"))
        if isinstance(tags, list)
        else ()
    )
    return MarketRow(
        market=market,
        enable_order_book=parse.flag(row.get("enableOrderBook"), False),
        liquidity=liquidity,
        volume=volume,
        tag_slugs=tag_slugs,
        raw_id=str(row.get("id", "")),
    )


def _fee_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """`Market` fee fields from Gamma's `feesEnabled` and `feeSchedule {rate, exponent,
    takerOnly}` (real captures: a 2026-04 sports market at rate 0.03, a 2026-06 crypto_fees_v2
    list at 0.07). `feesEnabled: false` is rate 0; a fee market without a readable schedule says
    nothing (the CLOB's `fd` is the source either way)."""
    enabled = row.get("feesEnabled")
    if enabled is False:
        return {"fee_rate": Decimal(0)}
    sched = row.get("feeSchedule")
    if enabled is not True or not isinstance(sched, Mapping):
        return {}
    rate = _bounded(sched, "rate", parse.price)
    exponent = _bounded(sched, "exponent", parse.size)
    taker_only = sched.get("takerOnly", True)
    if (
        rate is None
        or not 0 <= rate < 1
        or (exponent is not None and not 0 < exponent <= 10)
        or not isinstance(taker_only, bool)
    ):
        log.warning("gamma_fee_schedule_unreadable", condition_id=str(row.get("conditionId"))[:80])
        return {}
    out: dict[str, Any] = {"fee_rate": rate, "fee_taker_only": taker_only}
    if exponent is not None:
        out["fee_exponent"] = exponent
    return out


def keep(row: MarketRow, q: MarketQuery, now: datetime) -> bool:
    """Return True if `row` passes every client-side filter of `q`."""
    m = row.market
    if q.active is not None and m.active != q.active:
        return False
    if q.closed is not None and m.closed != q.closed:
        return False
    if q.accepting_orders is not None and m.accepting_orders != q.accepting_orders:
        return False
    if q.enable_order_book is not None and row.enable_order_book != q.enable_order_book:
        return False
    lo, hi = q.window(now)
    if lo is not None or hi is not None:
        if m.end_date is None:
            return False
        if lo is not None and m.end_date < lo:
            return False
        if hi is not None and m.end_date > hi:
            return False
    if q.min_liquidity is not None and (row.liquidity is None or row.liquidity < q.min_liquidity):
        return False
    return not (q.min_volume is not None and (row.volume is None or row.volume < q.min_volume))


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GammaClient:
    """Async Gamma client: `/markets` and `/events` listings with filters and pagination."""

    def __init__(
        self,
        *,
        base_url: str,
        session: aiohttp.ClientSession,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        timeout_s: float = 10.0,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        malformed: parse.MalformedLog | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._limiter = limiter
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._page_size = page_size
        self._max_pages = max_pages
        self._now = now
        self.skipped = 0
        self.skipped_v2 = 0
        """Protocol-V2 markets refused (`V2_REFUSAL`), since start."""
        self._malformed = malformed or parse.MalformedLog("gamma", metrics=metrics)
        """Told of every row refused for a number out of bounds."""
        self.on_row: Callable[[dict[str, Any]], None] | None = None
        """Told of every market row `markets()`/`events()` keep, as Gamma sent it, before the
        caller (discovery) hands the markets on: a recorder records what a strategy saw, at
        the time it saw it."""

    async def _get(self, path: str, params: list[tuple[str, str]], bucket: str) -> Any:
        if self._limiter is not None:
            await self._limiter.acquire(bucket)
        try:
            async with self._session.get(
                self._base + path, params=params, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    raise TransientError(f"Gamma {path} answered {resp.status}", status=resp.status)
                if resp.status != 200:
                    raise FeedError(f"Gamma {path} answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"Gamma {path} request failed: {type(e).__name__}") from e
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise FeedError(f"Gamma {path} body is not JSON") from e

    def _params(self, q: MarketQuery, now: datetime, *, events: bool) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        if q.active is not None:
            p.append(("active", str(q.active).lower()))
        if q.closed is not None:
            p.append(("closed", str(q.closed).lower()))
        lo, hi = q.window(now)
        if lo is not None:
            p.append(("end_date_min", _iso(lo)))
        if hi is not None:
            p.append(("end_date_max", _iso(hi)))
        if q.min_liquidity is not None:
            p.append(("liquidity_min" if events else "liquidity_num_min", str(q.min_liquidity)))
        if q.min_volume is not None:
            p.append(("volume_min" if events else "volume_num_min", str(q.min_volume)))
        p.extend(("tag_id", t) for t in q.tag_ids)
        return p

    async def _pages(
        self, path: str, params: list[tuple[str, str]], bucket: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in range(self._max_pages):
            page_params = [
                *params,
                ("limit", str(self._page_size)),
                ("offset", str(page * self._page_size)),
            ]
            data = await self._get(path, page_params, bucket)
            if not isinstance(data, list):
                raise FeedError(f"Gamma {path} did not answer a list")
            out.extend(r for r in data if isinstance(r, dict))
            self._skip(sum(1 for r in data if not isinstance(r, dict)), "row is not an object")
            if len(data) < self._page_size:
                break
        else:
            log.warning("gamma_page_cap", path=path, pages=self._max_pages)
        return out

    async def pages(self, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every row of a `/markets` listing with these filters (the markets bucket)."""
        return await self._pages(path, params, "gamma_markets")

    def _skip_v2(self, row: Mapping[str, Any]) -> None:
        """A Protocol-V2 market (Gamma `version: "v2"`): positions in the PositionManager, orders
        against ExchangeV3 with EIP-712 domain version "3" (docs `migrate/polymarket-v2/*`; SDK
        `_resolve_order_routing`). polyd signs CTF-exchange orders only, so it refuses them here,
        before any rule can pick one, and counts them (docs/redemption.md)."""
        self.skipped_v2 += 1
        if self._metrics is not None:
            self._metrics.v2_markets_skipped_total.inc()
        log.info(
            "gamma_row_skipped",
            why=V2_REFUSAL,
            gamma_id=str(row.get("id", ""))[:20],
            slug=str(row.get("slug", ""))[:80],
        )

    def _skip(self, n: int, why: str, **kw: Any) -> None:
        if n <= 0:
            return
        self.skipped += n
        if self._metrics is not None:
            self._metrics.gamma_rows_skipped_total.inc(n)
        log.info("gamma_row_skipped", why=why, count=n, **kw)

    def _rows(self, raw: Iterable[dict[str, Any]], q: MarketQuery, now: datetime) -> list[Market]:
        out: dict[str, Market] = {}
        for r in raw:
            if r.get("version") == "v2":
                self._skip_v2(r)
                continue
            try:
                row = parse_market(r)
            except FeedError as e:
                self._skip(1, str(e), gamma_id=str(r.get("id", ""))[:20])
                if isinstance(e, MalformedRow):
                    self._malformed(str(e), r)
                continue
            if q.tags and not (set(q.tags) & set(row.tag_slugs)) and row.tag_slugs:
                continue
            if keep(row, q, now):
                out[row.market.condition_id] = row.market
                if self.on_row is not None:
                    self.on_row(r)
        return list(out.values())

    async def markets(self, q: MarketQuery) -> list[Market]:
        """Return the markets matching `q` (deduplicated by condition id)."""
        now = self._now()
        base = self._params(q, now, events=False)
        raw: list[dict[str, Any]] = []
        if q.explicit:
            for key, values in (
                ("clob_token_ids", q.token_ids),
                ("condition_ids", q.condition_ids),
                ("slug", q.slugs),
            ):
                for i in range(0, len(values), IDS_PER_REQUEST):
                    chunk = values[i : i + IDS_PER_REQUEST]
                    raw += await self._pages(
                        "/markets", base + [(key, v) for v in chunk], "gamma_markets"
                    )
        elif q.tags:
            for tag in q.tags:
                events = await self._pages(
                    "/events",
                    [*self._params(q, now, events=True), ("tag_slug", tag)],
                    "gamma_events",
                )
                for ev in events:
                    ms = ev.get("markets")
                    if isinstance(ms, list):
                        raw += [
                            {**m, "tags": ev.get("tags", [])} for m in ms if isinstance(m, dict)
                        ]
        else:
            raw = await self._pages("/markets", base, "gamma_markets")
        return self._rows(raw, q, now)

    async def events(self, q: MarketQuery) -> list[Market]:
        """Return the markets embedded in `/events` rows matching `q`."""
        now = self._now()
        events = await self._pages("/events", self._params(q, now, events=True), "gamma_events")
        raw: list[dict[str, Any]] = []
        for ev in events:
            ms = ev.get("markets")
            if isinstance(ms, list):
                raw += [m for m in ms if isinstance(m, dict)]
        return self._rows(raw, q, now)


def resolution_payouts(row: Mapping[str, Any]) -> dict[str, Decimal] | None:
    """Payout per token of a resolved Gamma market row, or None if it is not (yet) one.

    Resolved means `closed`, `umaResolutionStatus == "resolved"` and `outcomePrices` (a JSON
    string ordered like `clobTokenIds`) with exactly one outcome at 1 and the other at 0, as in
    NT's real captures (PR #4164). `["0","0"]` (no winner determinable) and non-binary prices
    (0.58 / 0.42) are not: the caller keeps polling them.
    """
    if row.get("closed") is not True or row.get("umaResolutionStatus") != "resolved":
        return None
    try:
        tokens = [str(t) for t in parse.json_list(row.get("clobTokenIds"), "clobTokenIds")]
        prices = [parse.price(p) for p in parse.json_list(row.get("outcomePrices"), "prices")]
    except (ValueError, ArithmeticError):  # parse.Unreadable included: NaN, 1.5, "1e999"
        return None
    if len(tokens) != 2 or len(prices) != 2 or sorted(prices) != [Decimal(0), Decimal(1)]:
        return None
    return dict(zip(tokens, prices, strict=True))


async def resolved_markets(
    gamma: GammaClient, token_ids: Sequence[str]
) -> list[tuple[str, dict[str, Decimal]]]:
    """[(condition id, payouts)] of the resolved markets among those of `token_ids`."""
    out: list[tuple[str, dict[str, Decimal]]] = []
    for i in range(0, len(token_ids), IDS_PER_REQUEST):
        chunk = token_ids[i : i + IDS_PER_REQUEST]
        rows = await gamma.pages(
            "/markets", [("closed", "true"), *(("clob_token_ids", t) for t in chunk)]
        )
        for r in rows:
            payouts = resolution_payouts(r)
            if payouts is not None and r.get("conditionId"):
                out.append((str(r["conditionId"]), payouts))
    return out


DiscoveryResult = dict[str, list[Market]]
"""Markets found, by query-set name (e.g. sniper rule name)."""


class Discovery:
    """Refresh market lists from Gamma every `interval_s` and hand them to `on_update`.

    `queries` maps a name (a sniper rule, say) to the queries whose union it wants. A failed
    refresh keeps the previous result for that name and retries sooner, with backoff.
    """

    def __init__(
        self,
        *,
        gamma: GammaClient,
        queries: Mapping[str, Sequence[MarketQuery]],
        on_update: Callable[[DiscoveryResult], None],
        interval_s: float,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._gamma = gamma
        self._queries = {k: list(v) for k, v in queries.items()}
        self._on_update = on_update
        self._interval_s = interval_s
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self.result: DiscoveryResult = {}
        self.refreshes = 0
        self.ok_once = asyncio.Event()
        self.v2_skipped: dict[str, int] = {}
        """Protocol-V2 markets each query set's last refresh refused (`V2_REFUSAL`)."""

    async def refresh(self) -> bool:
        """Run every query once; return True if all succeeded."""
        all_ok = True
        result = dict(self.result)
        for name, queries in self._queries.items():
            found: dict[str, Market] = {}
            v2_before = self._gamma.skipped_v2
            try:
                for q in queries:
                    for m in await self._gamma.markets(q):
                        found[m.condition_id] = m
            except (TransientError, FeedError) as e:
                all_ok = False
                log.warning("discovery_failed", name=name, error=str(e))
                continue
            result[name] = list(found.values())
            self.v2_skipped[name] = self._gamma.skipped_v2 - v2_before
            if self.v2_skipped[name]:
                log.info(
                    "discovery_v2_skipped", name=name, count=self.v2_skipped[name], why=V2_REFUSAL
                )
        self.result = result
        self.refreshes += 1
        markets = {m.condition_id for ms in result.values() for m in ms}
        if self._metrics is not None:
            self._metrics.watched_markets.set(len(markets))
        log.info("discovery_refreshed", markets=len(markets), ok=all_ok)
        self._on_update(result)
        if all_ok:
            self.ok_once.set()
        return all_ok

    async def run(self) -> None:
        """Refresh forever; never returns except by cancellation."""
        backoff = Backoff(1.0, self._interval_s)
        while True:
            try:
                ok = await self.refresh()
            except Exception:  # the task's loop boundary: log, count, retry
                log.exception("discovery_crashed")
                ok = False
            if ok:
                backoff.reset()
                await self._clock.sleep(self._interval_s)
            else:
                await self._clock.sleep(backoff.next())
