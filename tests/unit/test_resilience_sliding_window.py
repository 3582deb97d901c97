"""SlidingWindowLimiter: no window ever holds more than `limit`, FIFO, cancellation-safe."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience.clock import FakeClock
from resilience.rate_limit import SlidingWindowLimiter, acquire_windows

# The limiter admits a waiter whose deficit is within 1e-9 s (float noise from sleeping exactly
# the computed deficit); the property is checked with that slack.
SLACK = 1e-6


def max_in_any_window(times: list[float], window_s: float) -> int:
    """The most admissions any half-open window [t, t + window_s) holds."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window_s + SLACK:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def drive(
    limiters: list[SlidingWindowLimiter],
    clock: FakeClock,
    arrivals: list[tuple[float, int, bool]],
) -> tuple[list[tuple[int, float]], list[int]]:
    """Start one acquirer per arrival (gap, which limiters, cancel?); return admissions, order."""
    admitted: list[tuple[int, float]] = []
    order: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    doomed: list[asyncio.Task[None]] = []

    async def one(i: int, group: tuple[SlidingWindowLimiter, ...]) -> None:
        await acquire_windows(group, 1)
        admitted.append((i, clock.monotonic()))
        order.append(i)

    for i, (gap, mask, cancel) in enumerate(arrivals):
        if gap:
            await clock.sleep(gap)
        group = tuple(w for j, w in enumerate(limiters) if mask & (1 << j)) or (limiters[0],)
        t = asyncio.create_task(one(i, group))
        tasks.append(t)
        if cancel:
            doomed.append(t)
        await asyncio.sleep(0)
    for t in doomed:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    return admitted, order


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 8),
    window_s=st.floats(0.05, 5.0),
    arrivals=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 3.0]),
            st.integers(1, 3),
            st.booleans(),
        ),
        max_size=40,
    ),
)
def test_no_window_ever_exceeds_the_limit(
    limit: int, window_s: float, arrivals: list[tuple[float, int, bool]]
) -> None:
    async def main() -> None:
        clock = FakeClock(start=100.0)
        general = SlidingWindowLimiter(limit, window_s, clock=clock)
        route = SlidingWindowLimiter(max(1, limit // 2), window_s * 1.5, clock=clock)
        admitted, _ = await drive([general, route], clock, arrivals)
        in_general = [t for i, t in admitted if arrivals[i][1] & 1 or not arrivals[i][1] & 2]
        in_route = [t for i, t in admitted if arrivals[i][1] & 2]
        assert max_in_any_window(in_general, window_s) <= limit
        assert max_in_any_window(in_route, route.window_s) <= route.limit
        # A cancelled waiter leaves no trace in the log.
        assert general.admitted_total == len(in_general)
        assert route.admitted_total == len(in_route)

    asyncio.run(main())


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 10), window_s=st.floats(0.1, 10.0), n=st.integers(1, 60))
def test_smooth_demand_gets_exactly_limit_per_window(limit: int, window_s: float, n: int) -> None:
    async def main() -> list[float]:
        clock = FakeClock()
        w = SlidingWindowLimiter(limit, window_s, clock=clock)
        out = []
        for _ in range(n):
            await w.acquire()
            out.append(clock.monotonic())
        return out

    times = asyncio.run(main())
    # The first `limit` go at once, then one batch per window: no burst reserve is held back.
    for i, t in enumerate(times):
        assert t == pytest.approx((i // limit) * window_s, abs=SLACK)
    assert max_in_any_window(times, window_s) <= limit


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    w = SlidingWindowLimiter(2, 1.0, clock=clock)
    assert w.try_acquire() and w.try_acquire()
    order: list[int] = []

    async def one(i: int) -> None:
        await w.acquire()
        order.append(i)

    tasks = [asyncio.create_task(one(i)) for i in range(7)]
    await asyncio.gather(*tasks)
    assert order == list(range(7))
    assert clock.monotonic() == pytest.approx(4.0)  # 2 at 0 s, then 2 a second


async def test_try_acquire_does_not_jump_the_queue() -> None:
    clock = FakeClock()
    w = SlidingWindowLimiter(1, 1.0, clock=clock)
    assert w.try_acquire()
    waiter = asyncio.create_task(w.acquire())
    await asyncio.sleep(0)
    clock.advance(5.0)
    assert not w.try_acquire()  # room exists, but a waiter is queued ahead
    await waiter


async def test_cancelled_waiter_takes_nothing_and_frees_its_turn() -> None:
    clock = FakeClock()
    w = SlidingWindowLimiter(1, 10.0, clock=clock)
    await w.acquire()

    first = asyncio.create_task(w.acquire())
    second = asyncio.create_task(w.acquire())
    await asyncio.sleep(0)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await second
    assert w.admitted_total == 2
    assert clock.monotonic() == pytest.approx(10.0)


async def test_window_counts_and_rate() -> None:
    clock = FakeClock()
    w = SlidingWindowLimiter(500, 10.0, clock=clock)
    assert w.rate_per_s == 50.0
    for _ in range(3):
        await w.acquire()
    assert w.in_window() == 3
    clock.advance(10.0)
    assert w.in_window() == 0


def test_bad_arguments_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="limit"):
        SlidingWindowLimiter(0, 1.0, clock=clock)
    with pytest.raises(ValueError, match="window_s"):
        SlidingWindowLimiter(1, 0.0, clock=clock)
    w = SlidingWindowLimiter(2, 1.0, clock=clock)
    with pytest.raises(ValueError, match="never be admitted"):
        asyncio.run(acquire_windows((w,), 3))
    other = SlidingWindowLimiter(2, 1.0, clock=FakeClock())
    with pytest.raises(ValueError, match="one clock"):
        asyncio.run(acquire_windows((w, other), 1))


def test_max_in_any_window_helper() -> None:
    assert max_in_any_window([0.0, 0.5, 1.0, 1.5], 1.0) == 2
    assert max_in_any_window(list(itertools.repeat(0.0, 3)), 1.0) == 3
