"""Client-side rate limiting: token buckets, sliding windows, a per-endpoint limiter, the limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from resilience.clock import Clock

# Float slack so a waiter that slept exactly the computed deficit is not sent back to sleep
# for a rounding error.
_EPSILON: Final = 1e-9

WaitHook = Callable[[str, float], None]
"""Called as `hook(endpoint, seconds_waited)` after an admission that had to wait."""


class TokenBucket:
    """Admit `rate_per_s` units a second on average and at most `burst` at once.

    Over any interval of T seconds it admits at most `burst + rate_per_s * T` units. Waiters
    are served first come, first served: the head waiter sleeps until enough tokens exist and
    everyone behind it waits on a FIFO lock, so nothing polls. A waiter cancelled at any point
    takes no tokens.
    """

    def __init__(self, rate_per_s: float, burst: float, *, clock: Clock) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock.monotonic()
        # asyncio.Lock wakes waiters in arrival order, which gives FIFO fairness for free.
        self._turn = asyncio.Lock()
        self._queued = 0

    @property
    def clock(self) -> Clock:
        """Return the clock this bucket refills by."""
        return self._clock

    def available(self) -> float:
        """Return the tokens available right now."""
        self._refill()
        return self._tokens

    def try_acquire(self, n: float = 1) -> bool:
        """Take `n` tokens if available now and nobody is queued ahead; never waits."""
        return _try_admit_all((self,), n)

    async def acquire(self, n: float = 1) -> float:
        """Wait for `n` tokens, take them, and return the seconds waited."""
        return await acquire_all((self,), n)

    def _refill(self, now: float | None = None) -> None:
        now = self._clock.monotonic() if now is None else now
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            self._updated = now

    def _wait_s(self, n: float, now: float) -> float:
        self._refill(now)
        if self._tokens + _EPSILON >= n:
            return 0.0
        return (n - self._tokens) / self.rate_per_s

    def _admit(self, n: float, now: float) -> None:
        self._tokens -= n


class _Admits(Protocol):
    """What admitting in several limiters at once needs from each: a FIFO turn, a count of
    queued waiters, a clock, how long until `n` more fit, and taking them."""

    _turn: asyncio.Lock
    _queued: int

    @property
    def clock(self) -> Clock: ...

    def _wait_s(self, n: Any, now: float) -> float: ...

    def _admit(self, n: Any, now: float) -> None: ...


def _ordered(limiters: Sequence[_Admits], what: str) -> list[_Admits]:
    """The distinct `limiters` in a fixed order (so callers sharing them cannot deadlock)."""
    clock = limiters[0].clock
    if any(w.clock is not clock for w in limiters):
        raise ValueError(f"{what} acquired together must share one clock")
    return sorted(set(limiters), key=id)


def _try_admit_all(limiters: Sequence[_Admits], n: Any) -> bool:
    if any(w._queued for w in limiters):
        return False  # someone is waiting; jumping the queue would starve them
    now = limiters[0].clock.monotonic()
    if all(w._wait_s(n, now) <= _EPSILON for w in limiters):
        for w in limiters:
            w._admit(n, now)
        return True
    return False


async def _admit_all(ordered: Sequence[_Admits], n: Any) -> float:
    """Wait for a turn in every limiter, then until all have room; admit `n` in all at once.

    Admitting in every limiter at the same instant keeps each limiter's guarantee true of the
    moment the request is sent. Returns the seconds waited; cancellation admits nothing.
    """
    if _try_admit_all(ordered, n):
        return 0.0
    clock = ordered[0].clock
    start = clock.monotonic()
    for w in ordered:
        w._queued += 1
    try:
        async with contextlib.AsyncExitStack() as turns:
            for w in ordered:
                await turns.enter_async_context(w._turn)
            while True:
                now = clock.monotonic()
                wait_s = max(w._wait_s(n, now) for w in ordered)
                if wait_s <= _EPSILON:
                    for w in ordered:
                        w._admit(n, now)
                    break
                await clock.sleep(wait_s)
    finally:
        for w in ordered:
            w._queued -= 1
    return clock.monotonic() - start


async def acquire_all(buckets: Sequence[TokenBucket], n: float = 1) -> float:
    """Wait until every bucket in `buckets` can spare `n` tokens, take them all at once.

    Taking from all buckets in the same instant keeps each bucket's guarantee true of the
    moment the request is actually sent. Buckets are entered in a fixed order so two callers
    sharing buckets cannot deadlock. Returns the seconds waited; cancellation takes nothing.
    """
    if not buckets:
        raise ValueError("need at least one bucket")
    if n <= 0:
        raise ValueError("n must be > 0")
    for b in buckets:
        if n > b.burst:
            raise ValueError(f"n={n} exceeds burst={b.burst}; it could never be admitted")
    return await _admit_all(_ordered(buckets, "buckets"), n)


class RateLimiter:
    """Hold one or more token buckets per endpoint and admit a call only when all agree.

    A key `"name:qualifier"` adds a bucket to endpoint `"name"`: Polymarket's trading
    endpoints have both a 10 s burst window (`"post_order"`) and a 10 min sustained window
    (`"post_order:sustained"`), and a request must fit both. The same `TokenBucket` object may
    appear under several keys to make endpoints share a budget.
    """

    def __init__(
        self,
        buckets: Mapping[str, TokenBucket],
        *,
        on_wait: WaitHook | None = None,
    ) -> None:
        groups: dict[str, list[TokenBucket]] = {}
        for key, bucket in buckets.items():
            endpoint = key.partition(":")[0]
            groups.setdefault(endpoint, []).append(bucket)
        # dict.fromkeys dedupes while keeping order: a bucket listed twice is taken from once.
        self._groups: dict[str, tuple[TokenBucket, ...]] = {
            endpoint: tuple(dict.fromkeys(group)) for endpoint, group in groups.items()
        }
        # The fixed order each endpoint's buckets are entered in (and the one-clock check),
        # worked out once here rather than on every request; with the smallest burst, above
        # which `n` could never be admitted.
        self._ordered: dict[str, tuple[list[_Admits], float]] = {
            endpoint: (_ordered(group, "buckets"), min(b.burst for b in group))
            for endpoint, group in self._groups.items()
        }
        self._on_wait = on_wait

    @classmethod
    def from_limits(
        cls,
        limits: Mapping[str, tuple[float, float]],
        *,
        clock: Clock,
        on_wait: WaitHook | None = None,
    ) -> RateLimiter:
        """Build one `TokenBucket(rate_per_s, burst)` per key of `limits`."""
        return cls(
            {key: TokenBucket(rate, burst, clock=clock) for key, (rate, burst) in limits.items()},
            on_wait=on_wait,
        )

    @property
    def endpoints(self) -> frozenset[str]:
        """Return the endpoint names this limiter knows."""
        return frozenset(self._groups)

    def buckets(self, endpoint: str) -> tuple[TokenBucket, ...]:
        """Return the buckets that must all admit a call to `endpoint`."""
        try:
            return self._groups[endpoint]
        except KeyError:
            # An unknown endpoint is a wiring bug; refusing loudly beats sending unlimited.
            raise KeyError(f"no rate limit configured for endpoint {endpoint!r}") from None

    def try_acquire(self, endpoint: str, n: float = 1) -> bool:
        """Take `n` tokens for `endpoint` if every bucket can spare them now."""
        return _try_admit_all(self.buckets(endpoint), n)

    async def acquire(self, endpoint: str, n: float = 1) -> float:
        """Wait until `endpoint` may be called; return the seconds waited.

        The same checks and order as `acquire_all(self.buckets(endpoint), n)`, with the bucket
        order computed at construction."""
        got = self._ordered.get(endpoint)
        if got is None:
            self.buckets(endpoint)  # raises the KeyError naming the endpoint
            raise AssertionError("unreachable")
        ordered, smallest_burst = got
        if n <= 0:
            raise ValueError("n must be > 0")
        if n > smallest_burst:
            raise ValueError(f"n={n} exceeds burst={smallest_burst}; it could never be admitted")
        waited = await _admit_all(ordered, n)
        if waited > 0 and self._on_wait is not None:
            self._on_wait(endpoint, waited)
        return waited


# Documented limits: (endpoint key, requests, window seconds). Source for every figure:
# https://docs.polymarket.com/api-reference/rate-limits (2026-06 version). All are Cloudflare
# sliding windows.
_TEN_S: Final = 10.0
_TEN_MIN: Final = 600.0
_DOCUMENTED_LIMITS: Final[tuple[tuple[str, float, float], ...]] = (
    # Trading table, "burst per 10 s / sustained per 10 min", 2026-06 column.
    ("post_order", 5_000, _TEN_S),  # POST /order burst
    ("post_order:sustained", 120_000, _TEN_MIN),  # POST /order sustained
    ("cancel_order", 5_000, _TEN_S),  # DELETE /order burst
    ("cancel_order:sustained", 120_000, _TEN_MIN),  # DELETE /order sustained
    ("post_orders", 2_000, _TEN_S),  # POST /orders burst
    ("post_orders:sustained", 21_000, _TEN_MIN),  # POST /orders sustained
    ("cancel_orders", 2_000, _TEN_S),  # DELETE /orders burst
    ("cancel_orders:sustained", 15_000, _TEN_MIN),  # DELETE /orders sustained
    ("cancel_all", 250, _TEN_S),  # DELETE /cancel-all burst
    ("cancel_all:sustained", 6_000, _TEN_MIN),  # DELETE /cancel-all sustained
    ("cancel_market_orders", 1_500, _TEN_S),  # DELETE /cancel-market-orders burst
    ("cancel_market_orders:sustained", 21_000, _TEN_MIN),  # ... sustained
    # "CLOB ledger" row: /data/orders 500, /data/trades 500 per 10 s.
    ("data_orders", 500, _TEN_S),
    ("data_trades", 500, _TEN_S),
    # "CLOB market data" row: /book 1,500, /books 500, tick size 200 per 10 s.
    ("book", 1_500, _TEN_S),
    ("books", 500, _TEN_S),
    ("tick_size", 200, _TEN_S),
    # "CLOB general" row: 9,000 per 10 s; GET balance-allowance 200 per 10 s.
    ("clob_general", 9_000, _TEN_S),
    ("balance_allowance", 200, _TEN_S),
    # "CLOB auth" row: API-key endpoints 100 per 10 s.
    ("auth", 100, _TEN_S),
    # "Data API" row: general 1,000, /trades 200, /positions 150 per 10 s. /activity has no
    # limit of its own, so it gets the general figure.
    ("data_api_general", 1_000, _TEN_S),
    ("data_api_trades", 200, _TEN_S),
    ("data_api_activity", 1_000, _TEN_S),
    ("data_api_positions", 150, _TEN_S),
    # "Gamma" row: /markets 300, /events 500 per 10 s.
    ("gamma_markets", 300, _TEN_S),
    ("gamma_events", 500, _TEN_S),
)

# Share of a window's budget handed out as instant burst; the rest refills over the window,
# so burst + rate * window == budget and no sliding window can ever exceed it. The 10 s
# windows carry the bursts; the 10 min windows are there to hold the long-run rate, so they
# keep almost all of their budget as rate.
_BURST_SHARE_SHORT: Final = 0.5
_BURST_SHARE_SUSTAINED: Final = 0.05


def documented_limits() -> dict[str, tuple[float, float]]:
    """Return each bucket key's documented `(requests, window_s)` (Polymarket's rate limits)."""
    return {key: (requests, window) for key, requests, window in _DOCUMENTED_LIMITS}


def polymarket_limits(fraction: float) -> dict[str, tuple[float, float]]:
    """Return `{bucket key: (rate_per_s, burst)}` using `fraction` of Polymarket's limits.

    Each documented "N per W seconds" becomes a bucket with `burst + rate_per_s * W ==
    fraction * N`, so even a burst at the start of a window keeps that window in budget.
    Trading endpoints get two keys (`"x"` and `"x:sustained"`); `RateLimiter` makes a call to
    `"x"` pass both. Feed the result to `RateLimiter.from_limits`.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    limits: dict[str, tuple[float, float]] = {}
    for key, requests, window in _DOCUMENTED_LIMITS:
        budget = requests * fraction
        share = _BURST_SHARE_SUSTAINED if window > _TEN_S else _BURST_SHARE_SHORT
        burst = max(1.0, budget * share)
        rate = (budget - burst) / window
        if rate <= 0:
            raise ValueError(f"fraction {fraction} leaves {key} less than one request per window")
        limits[key] = (rate, burst)
    return limits


class SlidingWindowLimiter:
    """Admit at most `limit` units in any window of `window_s` seconds (a sliding-window log).

    This is how Cloudflare, and so Polymarket, counts: Polymarket's rate-limit page
    (https://docs.polymarket.com/api-reference/rate-limits) says requests over a limit are
    "throttled… sliding windows". Unlike a `TokenBucket`, it keeps no burst reserve: a smooth
    caller gets the full `limit / window_s` rate, and a bursty one gets `limit` at once and then
    waits for the oldest admission to leave the window. Formally, if `a_1 <= a_2 <= ...` are the
    admission instants, `a_{i+limit} - a_i >= window_s` for every i, so every half-open window
    `[t, t + window_s)` holds at most `limit` admissions.

    Waiters are served first come, first served (the same FIFO lock scheme as `TokenBucket`);
    a waiter cancelled at any point records nothing. Only the last `limit` admission instants
    are kept, so memory is bounded by `limit`.
    """

    def __init__(self, limit: int, window_s: float, *, clock: Clock) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._admitted: deque[float] = deque(maxlen=limit)
        self._turn = asyncio.Lock()  # wakes waiters in arrival order: FIFO
        self._queued = 0
        self.admitted_total = 0

    @property
    def clock(self) -> Clock:
        """Return the clock this limiter measures windows by."""
        return self._clock

    @property
    def rate_per_s(self) -> float:
        """Return the sustained rate a smooth caller gets: `limit / window_s`."""
        return self.limit / self.window_s

    def in_window(self) -> int:
        """Return how many admissions the window ending now holds."""
        cutoff = self._clock.monotonic() - self.window_s
        return sum(1 for t in self._admitted if t > cutoff)

    def try_acquire(self, n: int = 1) -> bool:
        """Admit `n` units now if the window has room and nobody is queued; never waits."""
        return _try_admit_all((self,), n)

    async def acquire(self, n: int = 1) -> float:
        """Wait until `n` units fit in the window, admit them, and return the seconds waited."""
        return await acquire_windows((self,), n)

    def _wait_s(self, n: int, now: float) -> float:
        # After admitting n at `now`, the admission `limit` places before the newest must be at
        # least a window old: that is index len + n - limit - 1 of the kept log.
        k = len(self._admitted) + n - self.limit - 1
        if k < 0:
            return 0.0
        return max(0.0, self._admitted[k] + self.window_s - now)

    def _admit(self, n: int, now: float) -> None:
        self._admitted.extend([now] * n)
        self.admitted_total += n


async def acquire_windows(limiters: Sequence[SlidingWindowLimiter], n: int = 1) -> float:
    """Wait until every limiter in `limiters` has room for `n` units, admit them in all at once.

    The sliding-window twin of `acquire_all`: admitting in every limiter at the same instant
    keeps each limiter's guarantee true of the moment the request is sent; limiters are entered
    in a fixed order so callers sharing them cannot deadlock. Returns the seconds waited;
    cancellation admits nothing.
    """
    if not limiters:
        raise ValueError("need at least one limiter")
    if n < 1:
        raise ValueError("n must be >= 1")
    for w in limiters:
        if n > w.limit:
            raise ValueError(f"n={n} exceeds limit={w.limit}; it could never be admitted")
    return await _admit_all(_ordered(limiters, "limiters"), n)
