"""Token buckets, the per-endpoint limiter and the Polymarket limit table, in virtual time."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilience.clock import FakeClock
from resilience.rate_limit import (
    RateLimiter,
    TokenBucket,
    acquire_all,
    documented_limits,
    polymarket_limits,
)

TRADING = (
    "post_order",
    "cancel_order",
    "post_orders",
    "cancel_orders",
    "cancel_all",
    "cancel_market_orders",
)


class ManualClock:
    """Virtual time that moves only when the test calls `advance`; sleepers wake in order."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def next_deadline(self) -> float | None:
        live = [deadline for deadline, _, f in self._sleepers if not f.done()]
        return min(live, default=None)

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(50):
        await asyncio.sleep(0)


def max_in_window(times: list[float], window: float) -> int:
    """Return the most admissions inside any closed interval of length `window`."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + window + 1e-9) - i for i, t in enumerate(ordered)),
        default=0,
    )


# --- TokenBucket ---------------------------------------------------------------------------


async def test_full_bucket_admits_burst_without_waiting() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 5, clock=clock)
    waits = [await bucket.acquire() for _ in range(5)]
    assert waits == [0.0] * 5
    assert clock.sleeps == []


async def test_after_burst_admissions_follow_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 3, clock=clock)
    times = []
    for _ in range(11):
        await bucket.acquire()
        times.append(clock.monotonic())
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:] == pytest.approx([0.25 * k for k in range(1, 9)])


async def test_acquire_returns_seconds_waited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 1, clock=clock)
    assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(0.5)


async def test_idle_bucket_refills_only_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 4, clock=clock)
    for _ in range(4):
        assert bucket.try_acquire()
    clock.advance(100.0)
    assert bucket.available() == 4


def test_try_acquire_takes_when_available_and_refuses_when_empty() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 2, clock=clock)
    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.advance(1.0)
    assert bucket.try_acquire()


async def test_try_acquire_does_not_jump_the_queue() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.try_acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await settle()
    clock._now = 5.0  # tokens exist now, but the waiter has not woken yet
    assert not bucket.try_acquire()
    await clock.advance(0.0)
    assert await waiter == pytest.approx(5.0)


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1.0, 3, clock=clock)
    order: list[int] = []

    async def take(i: int, n: int) -> None:
        await bucket.acquire(n)
        order.append(i)

    for _ in range(3):
        bucket.try_acquire()
    # A large request at the head must not be overtaken by the small ones behind it.
    tasks = [asyncio.create_task(take(i, n)) for i, n in enumerate([3, 1, 1, 2])]
    await settle()
    assert clock.sleeping == 1  # only the head sleeps; the rest wait on the lock
    await clock.advance(3.0)
    assert order == [0]
    await clock.advance(2.0)
    assert order == [0, 1, 2]
    await clock.advance(2.0)
    assert order == [0, 1, 2, 3]
    await asyncio.gather(*tasks)


async def test_cancelled_head_waiter_takes_no_tokens() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1.0, 2, clock=clock)
    assert bucket.try_acquire(2)
    head = asyncio.create_task(bucket.acquire(2))
    await settle()
    await clock.advance(1.5)
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    assert bucket.available() == pytest.approx(1.5)
    await clock.advance(0.5)
    assert bucket.try_acquire(2)


async def test_cancelled_queued_waiter_takes_no_tokens_and_keeps_order() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.try_acquire()
    first = asyncio.create_task(bucket.acquire())
    second = asyncio.create_task(bucket.acquire())
    third = asyncio.create_task(bucket.acquire())
    await settle()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await clock.advance(1.0)
    assert first.done()
    assert not third.done()
    await clock.advance(1.0)
    assert third.done()
    assert await third == pytest.approx(2.0)
    assert bucket.available() == pytest.approx(0.0)


async def test_request_larger_than_burst_is_refused() -> None:
    bucket = TokenBucket(1.0, 2, clock=FakeClock())
    with pytest.raises(ValueError, match="exceeds burst"):
        await bucket.acquire(3)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_invalid_bucket_raises_value_error(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        TokenBucket(rate, burst, clock=FakeClock())


async def test_buckets_on_different_clocks_cannot_be_combined() -> None:
    a = TokenBucket(1.0, 1, clock=FakeClock())
    b = TokenBucket(1.0, 1, clock=FakeClock())
    with pytest.raises(ValueError, match="clock"):
        await acquire_all([a, b])


async def run_until_done(clock: ManualClock, tasks: list[asyncio.Task[None]]) -> None:
    """Drive virtual time: let tasks run until they block, then jump to the next deadline."""
    while not all(task.done() for task in tasks):
        await settle()
        deadline = clock.next_deadline()
        if deadline is not None:
            await clock.advance(deadline - clock.monotonic())
    await asyncio.gather(*tasks)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50.0),
    burst=st.integers(min_value=1, max_value=8),
    # Gaps in units of 1/rate, often zero: simultaneous clumps on top of demand that hovers
    # around capacity, which is where an over-admitting bucket would show.
    gaps=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0)), min_size=1, max_size=150
    ),
    window_tokens=st.floats(min_value=0.01, max_value=60.0),
)
@example(rate=2.0, burst=3, gaps=[0.0] * 10, window_tokens=0.8)
async def test_admissions_in_any_window_stay_within_burst_plus_rate(
    rate: float, burst: int, gaps: list[float], window_tokens: float
) -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    admitted: list[float] = []

    async def caller(arrival: float) -> None:
        await clock.sleep(arrival)
        await bucket.acquire()
        admitted.append(clock.monotonic())

    arrivals = list(itertools.accumulate(g / rate for g in gaps))
    await run_until_done(clock, [asyncio.create_task(caller(a)) for a in arrivals])
    assert len(admitted) == len(gaps)
    window = window_tokens / rate  # windows scale with the token period, like the gaps
    assert max_in_window(admitted, window) <= math.floor(burst + rate * window + 1e-6)


# --- RateLimiter ---------------------------------------------------------------------------


async def test_limiter_endpoint_needs_every_window_to_admit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        {
            "post_order": TokenBucket(10.0, 5, clock=clock),
            "post_order:sustained": TokenBucket(1.0, 3, clock=clock),
        }
    )
    assert limiter.endpoints == frozenset({"post_order"})
    waits = [await limiter.acquire("post_order") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(1.0)  # the sustained window was the binding one


async def test_limiter_takes_from_all_windows_at_once_or_not_at_all() -> None:
    clock = ManualClock()
    burst_bucket = TokenBucket(100.0, 10, clock=clock)
    sustained = TokenBucket(1.0, 1, clock=clock)
    limiter = RateLimiter({"x": burst_bucket, "x:sustained": sustained})
    assert limiter.try_acquire("x")
    assert not limiter.try_acquire("x")
    assert burst_bucket.available() == pytest.approx(9.0)
    waiter = asyncio.create_task(limiter.acquire("x"))
    await settle()
    await clock.advance(0.5)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert burst_bucket.available() == pytest.approx(10.0)
    assert sustained.available() == pytest.approx(0.5)


async def test_limiter_reports_waits_to_hook_only_when_it_waited() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float]] = []
    limiter = RateLimiter(
        {"book": TokenBucket(2.0, 1, clock=clock)},
        on_wait=lambda endpoint, s: seen.append((endpoint, s)),
    )
    await limiter.acquire("book")
    await limiter.acquire("book")
    assert [endpoint for endpoint, _ in seen] == ["book"]
    assert seen[0][1] == pytest.approx(0.5)


async def test_limiter_unknown_endpoint_raises_key_error() -> None:
    limiter = RateLimiter({"book": TokenBucket(1.0, 1, clock=FakeClock())})
    with pytest.raises(KeyError, match="nope"):
        await limiter.acquire("nope")


async def test_limiter_shared_bucket_is_one_budget() -> None:
    clock = FakeClock()
    shared = TokenBucket(1.0, 2, clock=clock)
    limiter = RateLimiter({"data_api_general": shared, "data_api_activity": shared})
    assert limiter.try_acquire("data_api_general")
    assert limiter.try_acquire("data_api_activity")
    assert not limiter.try_acquire("data_api_general")


async def test_limiter_bucket_listed_twice_for_endpoint_is_taken_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 2, clock=clock)
    limiter = RateLimiter({"x": bucket, "x:again": bucket})
    assert limiter.try_acquire("x")
    assert bucket.available() == pytest.approx(1.0)


# --- Polymarket limits ---------------------------------------------------------------------


def test_polymarket_limits_cover_every_documented_endpoint() -> None:
    limiter = RateLimiter.from_limits(polymarket_limits(1.0), clock=FakeClock())
    assert limiter.endpoints == {
        *TRADING,
        "data_orders",
        "data_trades",
        "book",
        "books",
        "tick_size",
        "clob_general",
        "auth",
        "balance_allowance",
        "data_api_general",
        "data_api_trades",
        "data_api_activity",
        "data_api_positions",
        "gamma_markets",
        "gamma_events",
    }
    for endpoint in TRADING:
        assert len(limiter.buckets(endpoint)) == 2


def test_documented_numbers_match_reference_2026_06() -> None:
    docs = documented_limits()
    assert docs["post_order"] == (5_000, 10.0)
    assert docs["post_order:sustained"] == (120_000, 600.0)
    assert docs["cancel_orders:sustained"] == (15_000, 600.0)
    assert docs["cancel_all"] == (250, 10.0)
    assert docs["cancel_market_orders:sustained"] == (21_000, 600.0)
    assert docs["data_api_activity"] == docs["data_api_general"]
    assert docs["data_api_positions"] == (150, 10.0)


@pytest.mark.parametrize("fraction", [1.0, 0.8, 0.5, 0.25])
def test_every_bucket_fits_its_window_budget_at_fraction(fraction: float) -> None:
    docs = documented_limits()
    limits = polymarket_limits(fraction)
    assert limits.keys() == docs.keys()
    for key, (rate, burst) in limits.items():
        requests, window = docs[key]
        assert burst >= 1
        assert rate > 0
        assert burst + rate * window == pytest.approx(requests * fraction), key


def test_fraction_scales_rate_and_burst_linearly() -> None:
    full = polymarket_limits(1.0)
    half = polymarket_limits(0.5)
    for key in ("post_order", "post_order:sustained", "book", "gamma_markets"):
        assert half[key][0] == pytest.approx(full[key][0] / 2)
        assert half[key][1] == pytest.approx(full[key][1] / 2)


def test_sustained_window_sets_the_long_run_trading_rate() -> None:
    limits = polymarket_limits(1.0)
    for endpoint in TRADING:
        assert limits[f"{endpoint}:sustained"][0] < limits[endpoint][0]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_fraction_out_of_range_raises_value_error(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        polymarket_limits(fraction)


def test_fraction_too_small_for_an_endpoint_raises_value_error() -> None:
    with pytest.raises(ValueError, match="auth"):
        polymarket_limits(0.01)


async def test_flooded_post_order_stays_within_both_documented_windows() -> None:
    fraction = 0.05
    clock = FakeClock()
    limiter = RateLimiter.from_limits(polymarket_limits(fraction), clock=clock)
    admitted: list[float] = []
    while clock.monotonic() < 1_800.0:  # three sustained windows of flat-out demand
        await limiter.acquire("post_order")
        admitted.append(clock.monotonic())
    assert max_in_window(admitted, 10.0) <= 5_000 * fraction
    assert max_in_window(admitted, 600.0) <= 120_000 * fraction
    # ...and the sustained window is nearly used, not wasted.
    assert max_in_window(admitted, 600.0) >= 0.95 * 120_000 * fraction


async def test_limiter_orders_each_endpoints_buckets_once_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resilience.rate_limit as rl

    clock = FakeClock()
    shared = TokenBucket(100.0, 100, clock=clock)
    limiter = RateLimiter(
        {"a": shared, "a:sustained": TokenBucket(1.0, 2, clock=clock), "b": shared}
    )

    def refuse(*args: object) -> list[object]:
        raise AssertionError("bucket order recomputed per request")

    monkeypatch.setattr(rl, "_ordered", refuse)
    assert await limiter.acquire("a") == 0.0
    assert await limiter.acquire("b") == 0.0
    assert shared.available() == pytest.approx(98.0)
    with pytest.raises(ValueError, match="exceeds burst=2"):
        await limiter.acquire("a", 3)
    with pytest.raises(KeyError, match="'c'"):
        await limiter.acquire("c")


def test_limiter_refuses_an_endpoint_whose_buckets_keep_different_clocks() -> None:
    with pytest.raises(ValueError, match="one clock"):
        RateLimiter(
            {
                "a": TokenBucket(1.0, 1, clock=FakeClock()),
                "a:x": TokenBucket(1.0, 1, clock=FakeClock()),
            }
        )
