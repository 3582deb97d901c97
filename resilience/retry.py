"""Bounded, jittered retries built on tenacity, honouring the venue's `retry_after` hint."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from errors import OrderRejected, OutcomeUnknown, TransientError
from resilience.backoff import exponential, jittered
from resilience.clock import Clock

if TYPE_CHECKING:  # imported where a retry is built: the daemon may never need one
    import tenacity

T = TypeVar("T")

# Retrying these would break the design's invariants: a rejection is final, and an order whose
# outcome is unknown must be looked up by its hash, never re-sent or re-signed. Cancellation
# must always propagate.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    OrderRejected,
    OutcomeUnknown,
    asyncio.CancelledError,
)


class EventLogger(Protocol):
    """The slice of a structlog logger that retries use."""

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        """Log `event` at warning level with key-value context."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Say how often and how patiently to retry.

    `attempts` counts the first call. Backoff before retry *k* (from 1) is
    `base_delay_s * 2**(k-1)`, spread by ±`jitter` and capped at `max_delay_s`. A
    `TransientError.retry_after` hint raises the wait to at least the hint, itself capped at
    `max_retry_after_s` so a bogus header cannot park a task for an hour.
    """

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    jitter: float = 0.2
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be a fraction in [0, 1)")
        if self.max_retry_after_s < 0:
            raise ValueError("max_retry_after_s must be >= 0")

    def backoff_s(self, retry_number: int, rng: random.Random) -> float:
        """Return the jittered backoff before retry `retry_number` (1 = first retry)."""
        base = exponential(self.base_delay_s, 2.0, retry_number - 1, self.max_delay_s)
        return jittered(base, self.jitter, self.max_delay_s, rng)

    def delay_s(self, retry_number: int, error: BaseException | None, rng: random.Random) -> float:
        """Return the wait before retry `retry_number` after `error`: max(backoff, retry_after)."""
        delay = self.backoff_s(retry_number, rng)
        if isinstance(error, TransientError) and error.retry_after is not None:
            delay = max(delay, min(max(error.retry_after, 0.0), self.max_retry_after_s))
        return delay


def is_retryable(error: BaseException, retry_on: tuple[type[BaseException], ...]) -> bool:
    """Return True if `error` is one of `retry_on` and not one of `NEVER_RETRIED`.

    Only `Exception`s qualify: KeyboardInterrupt, SystemExit and cancellation always propagate.
    """
    return (
        isinstance(error, Exception)
        and isinstance(error, retry_on)
        and not isinstance(error, NEVER_RETRIED)
    )


def _check_retry_on(retry_on: tuple[type[BaseException], ...]) -> None:
    forbidden = [c.__name__ for c in retry_on if issubclass(c, NEVER_RETRIED)]
    if forbidden:
        # Fail at wiring time rather than silently ignoring the caller's intent.
        raise ValueError(f"these errors are never retried: {', '.join(forbidden)}")


def async_retrying(
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...],
    clock: Clock,
    log_event: str,
    logger: EventLogger,
    rng: random.Random | None = None,
) -> tenacity.AsyncRetrying:
    """Build a `tenacity.AsyncRetrying` from `policy` that sleeps on `clock`.

    Retries only errors in `retry_on` (never `OrderRejected`, `OutcomeUnknown` or
    cancellation), stops after `policy.attempts` calls and re-raises the last error. Before
    each sleep it logs `log_event` with the attempt number, delay, error class and status —
    never the error's message, which may echo a request containing secrets.
    """
    _check_retry_on(retry_on)
    import tenacity

    jitter_rng = rng if rng is not None else random.Random()

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return policy.delay_s(state.attempt_number, error, jitter_rng)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            log_event,
            attempt=state.attempt_number,
            max_attempts=policy.attempts,
            delay_s=round(delay, 3),
            error=type(error).__name__,
            status=getattr(error, "status", None),
        )

    return tenacity.AsyncRetrying(
        sleep=clock.sleep,
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(lambda e: is_retryable(e, retry_on)),
        before_sleep=before_sleep,
        reraise=True,
    )


async def retry_call(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    clock: Clock,
    log_event: str,
    logger: EventLogger,
    rng: random.Random | None = None,
) -> T:
    """Await `fn()` under `policy`, retrying as `async_retrying` does; return its result.

    `fn` takes no arguments (use a closure or `functools.partial`) and is called afresh on
    each attempt. The first attempt is a bare call: the tenacity machinery (a retry state,
    wrapped callables, a coroutine per hook) is built only once it has failed with an error
    worth retrying, and then takes over from attempt 2 as if it had made the first call (same
    waits, log lines and attempt count).
    """
    _check_retry_on(retry_on)
    try:
        return await fn()
    except BaseException as e:
        if policy.attempts < 2 or not is_retryable(e, retry_on):
            raise
        first_error = e
    retrying = async_retrying(
        policy, retry_on=retry_on, clock=clock, log_event=log_event, logger=logger, rng=rng
    )
    replayed = False

    # tenacity awaits only what it detects as a coroutine function; a lambda returning a
    # coroutine would slip through un-awaited, so wrap it. Its first "attempt" hands it the
    # failure of the bare call above instead of calling `fn` again.
    async def attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_error
        return await fn()

    result: T = await retrying(attempt)
    return result
