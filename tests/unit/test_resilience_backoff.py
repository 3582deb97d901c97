"""Reconnect backoff and the fake clock it is usually paired with."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience.backoff import Backoff
from resilience.clock import FakeClock, SystemClock


def test_no_jitter_delays_double_then_cap() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(1.0, 30.0, multiplier=3.0, jitter=0.0)
    assert [backoff.next() for _ in range(3)] == [1.0, 3.0, 9.0]
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next() == 1.0


@given(seed=st.integers(min_value=0, max_value=2**32), jitter=st.floats(0.0, 0.5))
def test_first_delay_reconnects_within_a_second(seed: int, jitter: float) -> None:
    backoff = Backoff(0.5, 60.0, jitter=jitter, rng=random.Random(seed))
    first = backoff.next()
    assert 0.5 * (1 - jitter) - 1e-9 <= first <= 0.5 * (1 + jitter) + 1e-9
    assert first < 1.0


@given(seed=st.integers(min_value=0, max_value=2**32), steps=st.integers(1, 200))
def test_jittered_delays_stay_within_bounds(seed: int, steps: int) -> None:
    backoff = Backoff(0.25, 20.0, multiplier=2.0, jitter=0.2, rng=random.Random(seed))
    for k in range(steps):
        base = min(20.0, 0.25 * 2.0**k)
        delay = backoff.next()
        assert base * 0.8 - 1e-9 <= delay <= min(20.0, base * 1.2) + 1e-9


def test_many_steps_do_not_overflow() -> None:
    backoff = Backoff(1.0, 10.0, multiplier=10.0, jitter=0.0)
    for _ in range(2000):
        backoff.next()
    assert backoff.next() == 10.0


def test_same_seed_gives_same_delays() -> None:
    a = Backoff(1.0, 30.0, rng=random.Random(3))
    b = Backoff(1.0, 30.0, rng=random.Random(3))
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"),
    [(-1.0, 1.0, 2.0, 0.2), (2.0, 1.0, 2.0, 0.2), (1.0, 2.0, 0.5, 0.2), (1.0, 2.0, 2.0, 1.0)],
)
def test_invalid_shape_raises_value_error(
    initial: float, maximum: float, multiplier: float, jitter: float
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Backoff(initial, maximum, multiplier, jitter)


async def test_fake_clock_sleep_advances_time_and_records() -> None:
    clock = FakeClock(start=100.0)
    await clock.sleep(2.5)
    await clock.sleep(0.5)
    assert clock.monotonic() == 103.0
    assert clock.sleeps == [2.5, 0.5]


async def test_fake_clock_concurrent_sleepers_reach_the_latest_deadline() -> None:
    clock = FakeClock()
    await asyncio.gather(clock.sleep(5.0), clock.sleep(1.0))
    assert clock.monotonic() == 5.0


async def test_fake_clock_sleep_can_be_cancelled() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(10.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.monotonic() == 0.0


def test_fake_clock_advance_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    clock.advance(1.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.5)
    assert clock.monotonic() == 1.0


async def test_system_clock_is_monotonic_and_sleeps_zero() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= before


def test_package_reexports_public_names() -> None:
    import resilience

    for name in resilience.__all__:
        assert getattr(resilience, name) is not None
    assert resilience.Backoff is Backoff
