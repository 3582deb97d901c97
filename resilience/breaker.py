"""A circuit breaker that holds back new orders while the venue keeps failing."""

from __future__ import annotations

import enum
from collections.abc import Callable

from resilience.clock import Clock


class BreakerState(enum.StrEnum):
    """Where a breaker is: letting calls through, refusing them, or probing."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateChangeHook = Callable[[str, BreakerState, BreakerState], None]
"""Called as `hook(name, old_state, new_state)` after every transition."""


class CircuitBreaker:
    """Trip after consecutive failures, refuse calls for a while, then probe before closing.

    Ask `allow()` before each call and report the outcome with `record_success()` or
    `record_failure()`. `failure_threshold` consecutive failures open the breaker; after
    `reset_timeout_s` the next `allow()` moves it to HALF_OPEN and admits up to
    `half_open_max_calls` probes. It closes once that many probes succeed; any probe failure
    re-opens it with a fresh timer. Probes that never report back (e.g. cancelled) are
    forgotten after another `reset_timeout_s`, so the breaker cannot stick half-open.

    Meant for one event loop; not thread-safe.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        half_open_max_calls: int = 1,
        clock: Clock,
        on_state_change: StateChangeHook | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must be >= 0")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._open_for_s: float | None = reset_timeout_s
        self._reason: str | None = None
        self._probes_admitted = 0
        self._probe_successes = 0
        self._probes_started_at = 0.0

    @property
    def state(self) -> BreakerState:
        """Return the current state (does not advance OPEN to HALF_OPEN; `allow()` does)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Return failures recorded since the last success or reset."""
        return self._consecutive_failures

    @property
    def opened_at(self) -> float | None:
        """Return the clock time the breaker last opened, or None while it has not."""
        return self._opened_at

    @property
    def reason(self) -> str | None:
        """Return why the breaker last opened (`"failures"` or the `force_open` reason)."""
        return self._reason

    def allow(self) -> bool:
        """Return True if a call may go ahead now; in HALF_OPEN this uses up a probe slot."""
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock.monotonic()
        if self._state is BreakerState.OPEN:
            if not self._open_expired(now):
                return False
            self._transition(BreakerState.HALF_OPEN)
            self._start_probe_round(now)
            self._probe_successes = 0
        if (
            self._probes_admitted >= self.half_open_max_calls
            and now - self._probes_started_at >= self.reset_timeout_s
        ):
            self._start_probe_round(now)
        if self._probes_admitted < self.half_open_max_calls:
            self._probes_admitted += 1
            return True
        return False

    def record_success(self) -> None:
        """Report a successful call: clear the failure run; in HALF_OPEN, count a good probe."""
        if self._state is BreakerState.OPEN:
            # A call admitted before the trip finished late; it says nothing about recovery.
            return
        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.half_open_max_calls:
                self._close()

    def record_failure(self) -> None:
        """Report a failed call: open at the threshold; in HALF_OPEN, re-open with a new timer."""
        self._consecutive_failures += 1
        tripped = (
            self._state is BreakerState.CLOSED
            and self._consecutive_failures >= self.failure_threshold
        )
        if tripped or self._state is BreakerState.HALF_OPEN:
            self._open("failures", self.reset_timeout_s)
        # Already OPEN: late failures from calls admitted earlier must not extend the timer.

    def force_open(self, reason: str, *, for_s: float | None = None) -> None:
        """Open now because of `reason` (e.g. venue in cancel-only mode).

        With `for_s=None` the breaker stays open until `reset()`; otherwise it starts probing
        after `for_s` seconds, as if it had tripped on failures.
        """
        if for_s is not None and for_s < 0:
            raise ValueError("for_s must be >= 0")
        self._open(reason, for_s)

    def reset(self) -> None:
        """Close the breaker and forget all failures (operator action or after a reconcile)."""
        self._consecutive_failures = 0
        self._close()

    def _open_expired(self, now: float) -> bool:
        if self._open_for_s is None or self._opened_at is None:
            return False
        return now - self._opened_at >= self._open_for_s

    def _start_probe_round(self, now: float) -> None:
        self._probes_admitted = 0
        self._probes_started_at = now

    def _open(self, reason: str, open_for_s: float | None) -> None:
        self._opened_at = self._clock.monotonic()
        self._open_for_s = open_for_s
        self._reason = reason
        self._transition(BreakerState.OPEN)

    def _close(self) -> None:
        self._probes_admitted = 0
        self._probe_successes = 0
        self._transition(BreakerState.CLOSED)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        if self._on_state_change is not None:
            self._on_state_change(self.name, old, new)
