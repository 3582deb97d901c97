"""Retry policy: what is retried, how long it waits, and that cancellation always wins."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from errors import (
    OrderRejected,
    OutcomeUnknown,
    PolydError,
    RateLimited,
    TransientError,
    VenueUnavailable,
)
from resilience.clock import FakeClock
from resilience.retry import RetryPolicy, async_retrying, retry_call

NO_JITTER = RetryPolicy(attempts=4, base_delay_s=1.0, max_delay_s=8.0, jitter=0.0)


class Flaky:
    """Raise the queued errors in order, then return "ok"; count calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def call(fn: Flaky, clock: FakeClock, policy: RetryPolicy = NO_JITTER) -> str:
    return await retry_call(
        policy,
        fn,
        retry_on=(TransientError,),
        clock=clock,
        log_event="test_retry",
        logger=structlog.get_logger(),
    )


async def test_transient_errors_then_success_returns_result_after_backoff() -> None:
    clock = FakeClock()
    fn = Flaky(TransientError("a", status=500), VenueUnavailable("b", status=425))
    assert await call(fn, clock) == "ok"
    assert fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]


async def test_backoff_grows_exponentially_and_caps_at_max_delay() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=6, base_delay_s=1.0, max_delay_s=5.0, jitter=0.0)
    fn = Flaky(*[TransientError("x") for _ in range(5)])
    assert await call(fn, clock, policy) == "ok"
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_attempts_exhausted_reraises_last_error() -> None:
    clock = FakeClock()
    last = RateLimited("third", status=429)
    fn = Flaky(TransientError("first"), TransientError("second"), last, TransientError("x"))
    policy = RetryPolicy(attempts=3, base_delay_s=1.0, max_delay_s=8.0, jitter=0.0)
    with pytest.raises(RateLimited) as info:
        await call(fn, clock, policy)
    assert info.value is last
    assert fn.calls == 3
    assert len(clock.sleeps) == 2


async def test_single_attempt_policy_never_sleeps() -> None:
    clock = FakeClock()
    fn = Flaky(TransientError("x"))
    with pytest.raises(TransientError):
        await call(fn, clock, RetryPolicy(attempts=1))
    assert fn.calls == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        OrderRejected("tick size", source="venue", status=400),
        OutcomeUnknown("timeout after send", order_id="0xabc"),
        ValueError("not in retry_on"),
        PolydError("base class is not retryable"),
    ],
)
async def test_non_retryable_error_raises_at_once(error: BaseException) -> None:
    clock = FakeClock()
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        await call(fn, clock)
    assert info.value is error
    assert fn.calls == 1
    assert clock.sleeps == []


async def test_broad_retry_on_still_excludes_rejected_and_unknown() -> None:
    clock = FakeClock()
    for error in (OrderRejected("no"), OutcomeUnknown("maybe")):
        fn = Flaky(error)
        with pytest.raises(type(error)):
            await retry_call(
                NO_JITTER,
                fn,
                retry_on=(PolydError,),
                clock=clock,
                log_event="test_retry",
                logger=structlog.get_logger(),
            )
        assert fn.calls == 1


@pytest.mark.parametrize("forbidden", [OrderRejected, OutcomeUnknown, asyncio.CancelledError])
def test_forbidden_class_in_retry_on_refused_at_build(forbidden: type[BaseException]) -> None:
    with pytest.raises(ValueError, match=forbidden.__name__):
        async_retrying(
            NO_JITTER,
            retry_on=(TransientError, forbidden),
            clock=FakeClock(),
            log_event="x",
            logger=structlog.get_logger(),
        )


async def test_cancelled_error_from_call_propagates_without_retry() -> None:
    clock = FakeClock()
    fn = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry_call(
            NO_JITTER,
            fn,
            retry_on=(BaseException,),
            clock=clock,
            log_event="x",
            logger=structlog.get_logger(),
        )
    assert fn.calls == 1


async def test_retry_after_longer_than_backoff_is_honoured() -> None:
    clock = FakeClock()
    fn = Flaky(RateLimited("slow down", status=429, retry_after=7.5))
    assert await call(fn, clock) == "ok"
    assert clock.sleeps == [7.5]


async def test_retry_after_shorter_than_backoff_keeps_backoff() -> None:
    clock = FakeClock()
    fn = Flaky(TransientError("a"), RateLimited("b", status=429, retry_after=0.1))
    assert await call(fn, clock) == "ok"
    assert clock.sleeps == [1.0, 2.0]


async def test_retry_after_beyond_cap_is_capped() -> None:
    clock = FakeClock()
    policy = RetryPolicy(
        attempts=2, base_delay_s=1.0, max_delay_s=8.0, jitter=0.0, max_retry_after_s=30.0
    )
    fn = Flaky(VenueUnavailable("post-only", status=503, retry_after=3600.0))
    assert await call(fn, clock, policy) == "ok"
    assert clock.sleeps == [30.0]


async def test_cancel_mid_backoff_propagates_immediately() -> None:
    class BlockingClock(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()

        async def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            self.entered.set()
            await asyncio.Event().wait()  # only cancellation gets us out

    clock = BlockingClock()
    fn = Flaky(TransientError("a"), TransientError("b"))
    task = asyncio.create_task(
        retry_call(
            NO_JITTER,
            fn,
            retry_on=(TransientError,),
            clock=clock,
            log_event="x",
            logger=structlog.get_logger(),
        )
    )
    await clock.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1
    assert clock.sleeps == [1.0]


async def test_before_sleep_logs_class_and_status_but_not_message() -> None:
    clock = FakeClock()
    fn = Flaky(RateLimited("api_secret=hunter2 leaked", status=429, retry_after=2.0))
    with capture_logs() as logs:
        await call(fn, clock)
    assert logs == [
        {
            "event": "test_retry",
            "log_level": "warning",
            "attempt": 1,
            "max_attempts": 4,
            "delay_s": 2.0,
            "error": "RateLimited",
            "status": 429,
        }
    ]
    assert "hunter2" not in repr(logs)


async def test_async_retrying_iterator_form_retries() -> None:
    clock = FakeClock()
    fn = Flaky(TransientError("a"))
    retrying = async_retrying(
        NO_JITTER,
        retry_on=(TransientError,),
        clock=clock,
        log_event="x",
        logger=structlog.get_logger(),
    )
    result = None
    async for attempt in retrying:
        with attempt:
            result = await fn()
    assert result == "ok"
    assert clock.sleeps == [1.0]


@given(
    retry_number=st.integers(min_value=1, max_value=50),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_backoff_stays_within_bounds(retry_number: int, jitter: float, seed: int) -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=10.0, jitter=jitter)
    base = min(10.0, 0.5 * 2 ** (retry_number - 1))
    delay = policy.backoff_s(retry_number, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= min(10.0, base * (1 + jitter)) + 1e-9


def test_jitter_spreads_delays() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=1.0, max_delay_s=10.0, jitter=0.2)
    rng = random.Random(7)
    delays = {policy.backoff_s(1, rng) for _ in range(20)}
    assert len(delays) > 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"base_delay_s": -1.0},
        {"base_delay_s": 5.0, "max_delay_s": 1.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"max_retry_after_s": -1.0},
    ],
)
def test_invalid_policy_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RetryPolicy(**kwargs)


async def test_first_attempt_that_succeeds_builds_no_retry_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resilience.retry as retry_mod

    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError("tenacity built for a call that never failed")

    monkeypatch.setattr(retry_mod, "async_retrying", refuse)
    fn = Flaky()
    assert await call(fn, FakeClock()) == "ok"
    assert fn.calls == 1


async def test_forbidden_class_in_retry_on_refused_even_when_the_call_succeeds() -> None:
    fn = Flaky()
    with pytest.raises(ValueError, match="OutcomeUnknown"):
        await retry_call(
            NO_JITTER,
            fn,
            retry_on=(TransientError, OutcomeUnknown),
            clock=FakeClock(),
            log_event="x",
            logger=structlog.get_logger(),
        )
    assert fn.calls == 0


async def test_retries_after_a_bare_first_attempt_log_and_count_from_attempt_one() -> None:
    clock = FakeClock()
    fn = Flaky(TransientError("a", status=502), TransientError("b", status=503))
    with capture_logs() as logs:
        assert await call(fn, clock) == "ok"
    assert fn.calls == 3  # the first failure is not re-run: tenacity replays it
    assert [(e["attempt"], e["status"]) for e in logs] == [(1, 502), (2, 503)]
    assert clock.sleeps == [1.0, 2.0]
