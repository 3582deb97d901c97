"""Polymarket Data API adapter (`data-api.polymarket.com`): a wallet's trades and positions.

The only module that knows the Data API's URLs and wire shapes. It accepts both generations:

* v1 routes (`/activity`, `/trades`, `/positions`) answer a bare JSON list of camelCase rows
  whose numbers are JSON numbers, often with binary noise (`0.860000001148`);
* v2 answers `{"data": [...], "pagination": {"has_more", "next_cursor", ...}}` with snake_case
  rows (`proxy_wallet`, `token_id`, `condition_id`, `transaction_hash`, `current_size`).

Numbers become `Decimal` through `Decimal(str(x))` (never through float arithmetic) and are
rounded to the Data API's 6-decimal precision; the copy trader snaps prices to the market's tick.
A row that cannot be understood is skipped and reported with a reason from `ROW_SKIP_REASONS`;
rows of other activity types (rewards, rebates, redeems) are dropped as `not_trade`.

HTTP 5xx, 429 and timeouts become `errors.TransientError` (retried here with backoff); every call
first takes room in one `DataApiBudget` (sliding windows) shared by all wallets, so following many
wallets slows each poll down instead of getting the daemon throttled by Cloudflare
(https://docs.polymarket.com/api-reference/rate-limits).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final, Generic, TypeVar

import aiohttp
import orjson
import structlog

from errors import FeedError, RateLimited, TransientError
from models import Side, validate_condition_id, validate_token_id
from resilience.clock import Clock, SystemClock
from resilience.rate_limit import SlidingWindowLimiter, acquire_windows, documented_limits
from resilience.retry import RetryPolicy, retry_call
from venue import parse
from venue.parse import Unreadable

log = structlog.get_logger("venue.data_api")

T = TypeVar("T")

DATA_API_DECIMALS: Final = Decimal("0.000001")
"""The Data API reports sizes, prices and USDC amounts with 6 decimals (USDC's precision)."""

ROW_SKIP_REASONS: Final = frozenset(
    {
        "not_trade",  # REWARD, REDEEM, MAKER_REBATE, ... rows of /activity
        "not_object",
        "missing_field",
        "bad_number",
        "bad_side",
        "bad_token_id",
        "bad_condition_id",
        "bad_tx_hash",
        "bad_wallet",
        "bad_timestamp",
        "out_of_range",
    }
)

_MALFORMED_REASONS: Final = frozenset({"bad_number", "out_of_range"})
"""Row skips that are malformed numbers (counted in `polyd_feed_malformed_total`)."""

ErrorHook = Callable[[str], None]
"""Called as `hook(kind)` for each failed call or skipped row (kind: a short fixed label)."""


class RowError(ValueError):
    """A Data API row that cannot be used; `reason` is one of `ROW_SKIP_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class LeaderTrade:
    """One trade of a followed wallet, as the Data API reports it."""

    wallet: str
    tx_hash: str
    token_id: str
    condition_id: str
    side: Side
    size: Decimal
    price: Decimal
    timestamp: int
    slug: str = ""
    event_slug: str = ""
    outcome: str = ""
    title: str = ""
    """The market's question (`title` in `/activity` and `/trades` rows); for display only."""

    @property
    def dedupe_key(self) -> str:
        """Transaction hash + asset + side + size + price: one leader fill, stable across polls.

        One taker order that takes several price levels settles in one transaction, one row
        per level, possibly of equal sizes: the price tells them apart. Numbers are written as
        normalised Decimal text at the Data API's 6 decimals, so spellings and float noise
        (`0.48000000001`, `0.480`, `0.48`) give one key.
        """
        price = self.price
        with contextlib.suppress(InvalidOperation):  # beyond 28 digits: keep it as it is
            price = price.quantize(DATA_API_DECIMALS, rounding=ROUND_HALF_EVEN)
        return (
            f"{self.tx_hash}:{self.token_id}:{self.side.value}:{self.size.normalize():f}"
            f":{price.normalize():f}"
        )

    @property
    def notional(self) -> Decimal:
        """Price times size, in USDC."""
        return self.price * self.size


@dataclass(frozen=True, slots=True)
class LeaderPosition:
    """A followed wallet's holding in one token (`/positions`)."""

    wallet: str
    token_id: str
    condition_id: str
    size: Decimal
    avg_price: Decimal | None = None


@dataclass(slots=True)
class Fetched(Generic[T]):
    """Rows parsed from one or more pages, plus `(reason, detail)` for every row skipped."""

    rows: list[T] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pages: int = 0
    truncated: bool = False


# --------------------------------------------------------------------------------------------
# Row parsing (pure functions, shared by v1 and v2)
# --------------------------------------------------------------------------------------------


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` with a non-null value in `row`; RowError("missing_field") if none."""
    value = parse.first(row, *keys)
    if value is None:
        raise RowError("missing_field", "/".join(keys))
    return value


def to_decimal(value: Any, *, what: str = "number") -> Decimal:
    """Convert a JSON number or numeric string to Decimal via its text, at 6-decimal precision."""
    try:
        d = parse.decimal(value)
    except Unreadable:
        raise RowError("bad_number", what) from None
    try:
        d = d.quantize(DATA_API_DECIMALS, rounding=ROUND_HALF_EVEN).normalize()
    except InvalidOperation:  # >= ~1e22: 6 decimals would exceed the context's 28 digits
        raise RowError("bad_number", what) from None
    # normalize() writes 400000 as 4E+5; keep plain integers plain for logs and dedupe keys.
    exp = d.as_tuple().exponent
    return d.quantize(Decimal(1)) if isinstance(exp, int) and exp > 0 else d


def _bounded(value: Any, what: str, check: Callable[..., Decimal]) -> Decimal:
    """`value` through `venue.parse`'s bounds (`parse.size` or `parse.price`), then at the Data
    API's 6 decimals. A number outside the bounds (NaN, an infinity, a negative size, a size
    above `parse.MAX_SHARES`, a price outside [0, 1]) is `RowError("out_of_range")`."""
    try:
        check(value, what=what)
    except parse.OutOfBounds as e:
        raise RowError("out_of_range", str(e)) from None
    except Unreadable:
        raise RowError("bad_number", what) from None
    return to_decimal(value, what=what)


def _hex(value: Any, length: int, reason: str) -> str:
    v = value.lower() if isinstance(value, str) else ""
    if (
        len(v) != length
        or not v.startswith("0x")
        or any(c not in "0123456789abcdef" for c in v[2:])
    ):
        raise RowError(reason, str(value)[:80])
    return v


def parse_trade_row(row: Any) -> LeaderTrade:
    """Parse one `/activity` or `/trades` row (v1 camelCase or v2 snake_case). Raise RowError."""
    if not isinstance(row, Mapping):
        raise RowError("not_object", type(row).__name__)
    kind = row.get("type")
    if kind is not None and str(kind).upper() != "TRADE":
        raise RowError("not_trade", str(kind)[:32])
    wallet = _hex(_first(row, "proxyWallet", "proxy_wallet"), 42, "bad_wallet")
    tx = _hex(_first(row, "transactionHash", "transaction_hash"), 66, "bad_tx_hash")
    token = _first(row, "asset", "token_id", "tokenId")
    try:
        token_id = validate_token_id(str(token) if isinstance(token, int) else token)
    except ValueError:
        raise RowError("bad_token_id", str(token)[:80]) from None
    try:
        condition_id = validate_condition_id(_first(row, "conditionId", "condition_id"))
    except ValueError:
        raise RowError("bad_condition_id") from None
    side_raw = _first(row, "side")
    try:
        side = Side(str(side_raw).upper())
    except ValueError:
        raise RowError("bad_side", str(side_raw)[:16]) from None
    size = _bounded(_first(row, "size"), "size", parse.size)
    price = _bounded(_first(row, "price"), "price", parse.price)
    if size <= 0 or not Decimal(0) < price < Decimal(1):
        raise RowError("out_of_range", f"size={size} price={price}")
    ts_raw = _first(row, "timestamp")
    if isinstance(ts_raw, bool) or not isinstance(ts_raw, int | float | str):
        raise RowError("bad_timestamp")
    try:
        ts = parse.epoch_seconds(ts_raw)  # milliseconds slipped in become seconds
    except Unreadable:
        raise RowError("bad_timestamp", str(ts_raw)[:32]) from None
    if ts <= 0:
        raise RowError("bad_timestamp", str(ts_raw)[:32])
    return LeaderTrade(
        wallet=wallet,
        tx_hash=tx,
        token_id=token_id,
        condition_id=condition_id,
        side=side,
        size=size,
        price=price,
        timestamp=ts,
        slug=str(row.get("slug") or ""),
        event_slug=str(row.get("eventSlug") or row.get("event_slug") or ""),
        outcome=str(row.get("outcome") or ""),
        title=str(row.get("title") or "")[:300],
    )


def parse_position_row(row: Any) -> LeaderPosition:
    """Parse one `/positions` row (v1 `size`/`asset` or v2 `current_size`/`token_id`)."""
    if not isinstance(row, Mapping):
        raise RowError("not_object", type(row).__name__)
    wallet = _hex(_first(row, "proxyWallet", "proxy_wallet"), 42, "bad_wallet")
    token = _first(row, "asset", "token_id", "tokenId")
    try:
        token_id = validate_token_id(token)
    except ValueError:
        raise RowError("bad_token_id", str(token)[:80]) from None
    try:
        condition_id = validate_condition_id(_first(row, "conditionId", "condition_id"))
    except ValueError:
        raise RowError("bad_condition_id") from None
    size = _bounded(_first(row, "size", "current_size"), "size", parse.size)
    avg_raw = row.get("avgPrice", row.get("avg_price"))
    avg = _bounded(avg_raw, "avg_price", parse.price) if avg_raw is not None else None
    return LeaderPosition(wallet, token_id, condition_id, size, avg)


def unwrap(body: Any) -> tuple[list[Any], bool]:
    """Return `(rows, has_more)` from a v1 list or a v2 `{data, pagination}` envelope.

    For a v1 list `has_more` is False: the caller decides from the page length.
    """
    if isinstance(body, list):
        return body, False
    if isinstance(body, Mapping) and isinstance(body.get("data"), list):
        pag = body.get("pagination")
        more = bool(pag.get("has_more")) if isinstance(pag, Mapping) else False
        return list(body["data"]), more
    raise FeedError("Data API answered neither a list nor a {data: [...]} envelope")


# --------------------------------------------------------------------------------------------
# The shared budget
# --------------------------------------------------------------------------------------------

_DATA_API_KEYS: Final = {
    "general": "data_api_general",
    "trades": "data_api_trades",
    "positions": "data_api_positions",
}
_SMOOTHING: Final = 10
"""The smoothing window is this many times shorter than the documented one."""


class DataApiBudget:
    """One request budget for every Data API call the daemon makes, shared by all wallets.

    Each documented "N per 10 s" limit (Polymarket's rate-limits page) becomes a
    `SlidingWindowLimiter` admitting `floor(fraction * N)` requests in any 10 s window: the
    same sliding-window rule Cloudflare throttles by, so the daemon never exceeds its share of
    any window, yet a smooth poller gets the whole share as rate (no burst reserve held back,
    as a token bucket must).
    Every call takes from `general`; `/trades` and `/positions` also take from their own window.

    A sliding window alone lets an overloaded poller spend a whole window's share in its first
    seconds and then stall for the rest (twice the wallets it can serve: 5 s bursts, 5 s gaps).
    So each limit also gets a *smoothing* window a tenth as long with a tenth of the requests
    (rounded up; the documented window still holds the guarantee): overload then slows every
    wallet a little each second instead of starving them in turns.
    """

    def __init__(self, fraction: float, *, clock: Clock) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        limits = documented_limits()
        self.fraction = fraction
        self.clock = clock
        self.windows: dict[str, SlidingWindowLimiter] = {}
        self.smoothing: dict[str, SlidingWindowLimiter] = {}
        for name, key in _DATA_API_KEYS.items():
            requests, window = limits[key]
            allowed = max(1, math.floor(requests * fraction + 1e-9))
            self.windows[name] = SlidingWindowLimiter(allowed, window, clock=clock)
            self.smoothing[name] = SlidingWindowLimiter(
                math.ceil(allowed / _SMOOTHING), window / _SMOOTHING, clock=clock
            )

    def rate_per_s(self, route: str = "activity") -> float:
        """Return the sustained requests per second `route` may make."""
        return min(w.rate_per_s for w in self._for(route))

    def wallets_at(self, interval_s: float, route: str = "activity") -> int:
        """Return how many wallets can each be polled every `interval_s` within the budget."""
        return math.floor(self.rate_per_s(route) * interval_s + 1e-9)

    async def acquire(self, route: str) -> float:
        """Wait for room for `route` (`activity`, `trades` or `positions`); return the wait."""
        return await acquire_windows(self._for(route))

    def _for(self, route: str) -> tuple[SlidingWindowLimiter, ...]:
        names = ("general",) if route not in self.windows else ("general", route)
        return tuple(w for n in names for w in (self.windows[n], self.smoothing[n]))


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class DataApiClient:
    """Async client for the Data API routes the copy trader uses. Timeouts are always on."""

    def __init__(
        self,
        *,
        base_url: str,
        budget: DataApiBudget,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        on_error: ErrorHook | None = None,
        page_size: int = 100,
        max_pages: int = 20,
        rng: random.Random | None = None,
        malformed: parse.MalformedLog | None = None,
    ) -> None:
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be in [1, 500] (the /activity maximum)")
        self._base = base_url.rstrip("/")
        self._budget = budget
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry or RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)
        self._clock = clock or SystemClock()
        self._session = session
        self._owns_session = session is None
        self._on_error = on_error or (lambda kind: None)
        self._malformed = malformed or parse.MalformedLog("data_api")
        """Told of every row refused for a number out of bounds or unreadable."""
        self.page_size = page_size
        self.max_pages = max_pages
        self._rng = rng
        self.requests = 0

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300),
                headers={"Accept": "application/json", "User-Agent": "polyd/0.1"},
            )
            self._owns_session = True
        return self._session

    async def _get_once(self, route: str, path: str, params: Mapping[str, str]) -> Any:
        await self._budget.acquire(route)
        self.requests += 1
        try:
            async with self._http().get(
                self._base + path, params=dict(params), timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as e:
            self._on_error("timeout")
            raise TransientError(f"Data API {path} timed out") from e
        except aiohttp.ClientError as e:
            self._on_error("connection")
            raise TransientError(f"Data API {path}: {type(e).__name__}") from e
        if status == 429:
            self._on_error("http_429")
            hint = parse.float_or_none(retry_after)
            raise RateLimited(f"Data API {path} answered 429", status=429, retry_after=hint)
        if status >= 500:
            self._on_error("http_5xx")
            raise TransientError(f"Data API {path} answered {status}", status=status)
        if status >= 400:
            self._on_error("http_4xx")
            raise FeedError(f"Data API {path} answered {status}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            self._on_error("bad_json")
            raise TransientError(f"Data API {path} answered invalid JSON") from e

    async def _get(self, route: str, path: str, params: Mapping[str, str]) -> Any:
        return await retry_call(
            self._retry,
            lambda: self._get_once(route, path, params),
            retry_on=(TransientError,),
            clock=self._clock,
            log_event="data_api_retry",
            logger=log,
            rng=self._rng,
        )

    async def _paged(
        self,
        route: str,
        path: str,
        params: dict[str, str],
        parse: Callable[[Any], T],
        page_size: int,
    ) -> Fetched[T]:
        out: Fetched[T] = Fetched()
        offset = 0
        for _ in range(self.max_pages):
            body = await self._get(
                route, path, {**params, "limit": str(page_size), "offset": str(offset)}
            )
            try:
                rows, has_more = unwrap(body)
            except FeedError:
                self._on_error("bad_envelope")
                raise
            out.pages += 1
            for row in rows:
                try:
                    out.rows.append(parse(row))
                except RowError as e:
                    out.skipped.append((e.reason, str(e)))
                    if e.reason != "not_trade":
                        self._on_error(f"row_{e.reason}")
                    if e.reason in _MALFORMED_REASONS:
                        self._malformed(str(e), row)
            # A v1 page is a bare list: a full page may have more behind it. Garbage rows can
            # inflate a page, so count what the server sent, not what parsed.
            if not (has_more or len(rows) >= page_size):
                return out
            offset += len(rows)
        out.truncated = True
        return out

    async def activity_trades(
        self, wallet: str, *, start: int | None = None
    ) -> Fetched[LeaderTrade]:
        """Return `wallet`'s TRADE activity at or after `start` (unix s), oldest first."""
        params = {"user": wallet, "type": "TRADE", "sortBy": "TIMESTAMP", "sortDirection": "ASC"}
        if start is not None:
            params["start"] = str(int(start))
        got = await self._paged("activity", "/activity", params, parse_trade_row, self.page_size)
        got.rows.sort(key=lambda t: t.timestamp)
        return got

    async def trades(self, wallet: str, *, start: int | None = None) -> Fetched[LeaderTrade]:
        """Return `wallet`'s trades including maker fills (`takerOnly=false`), oldest first.

        `/trades` has no `start` filter: rows older than `start` are dropped here.
        """
        params = {"user": wallet, "takerOnly": "false"}
        got = await self._paged("trades", "/trades", params, parse_trade_row, self.page_size)
        if start is not None:
            got.rows = [t for t in got.rows if t.timestamp >= start]
        got.rows.sort(key=lambda t: t.timestamp)
        return got

    async def market_trades(self, condition_id: str, *, since: int) -> Fetched[LeaderTrade]:
        """Return every wallet's trades in one market at or after `since` (unix s), oldest first.

        `/trades?market=CONDITION_ID` without `user` lists the market's trades of all wallets,
        newest first ("Get trades for a user or markets",
        https://docs.polymarket.com/api-reference/core/get-trades-for-a-user-or-markets; the real
        capture `trades_2026_07` holds rows of many wallets). Paging stops at the first
        page that reaches back past `since` (or at `max_pages`: `truncated`).
        """
        params = {"market": condition_id, "takerOnly": "false"}
        out: Fetched[LeaderTrade] = Fetched()
        offset = 0
        for _ in range(self.max_pages):
            body = await self._get(
                "trades",
                "/trades",
                {**params, "limit": str(self.page_size), "offset": str(offset)},
            )
            rows, has_more = unwrap(body)
            out.pages += 1
            oldest: int | None = None
            for row in rows:
                try:
                    t = parse_trade_row(row)
                except RowError as e:
                    out.skipped.append((e.reason, str(e)))
                    continue
                oldest = t.timestamp if oldest is None else min(oldest, t.timestamp)
                if t.timestamp >= since:
                    out.rows.append(t)
            if not (has_more or len(rows) >= self.page_size) or (
                oldest is not None and oldest < since
            ):
                break
            offset += len(rows)
        else:
            out.truncated = True
        out.rows.sort(key=lambda t: t.timestamp)
        return out

    async def positions(self, wallet: str, *, market: str | None = None) -> Fetched[LeaderPosition]:
        """Return `wallet`'s open positions (any size: `sizeThreshold=0`), optionally one market."""
        params = {"user": wallet, "sizeThreshold": "0"}
        if market:
            params["market"] = market
        return await self._paged("positions", "/positions", params, parse_position_row, 500)
