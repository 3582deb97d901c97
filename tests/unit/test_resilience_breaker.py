"""Circuit breaker: every state transition, driven by a fake clock."""

from __future__ import annotations

import pytest

from resilience.breaker import BreakerState, CircuitBreaker
from resilience.clock import FakeClock

Change = tuple[str, BreakerState, BreakerState]


def make(
    clock: FakeClock,
    changes: list[Change] | None = None,
    *,
    threshold: int = 3,
    timeout: float = 10.0,
    probes: int = 1,
) -> CircuitBreaker:
    def hook(name: str, old: BreakerState, new: BreakerState) -> None:
        if changes is not None:
            changes.append((name, old, new))

    return CircuitBreaker(
        "clob",
        failure_threshold=threshold,
        reset_timeout_s=timeout,
        half_open_max_calls=probes,
        clock=clock,
        on_state_change=hook,
    )


def assert_state(breaker: CircuitBreaker, expected: BreakerState) -> None:
    # A function, not an inline `is`: mypy would narrow `breaker.state` across calls.
    assert breaker.state is expected


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def test_new_breaker_is_closed_and_allows() -> None:
    breaker = make(FakeClock())
    assert_state(breaker, BreakerState.CLOSED)
    assert breaker.allow()
    assert breaker.consecutive_failures == 0
    assert breaker.opened_at is None


def test_failures_below_threshold_stay_closed() -> None:
    breaker = make(FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    assert_state(breaker, BreakerState.CLOSED)
    assert breaker.consecutive_failures == 2
    assert breaker.allow()


def test_success_clears_failure_run() -> None:
    breaker = make(FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.consecutive_failures == 1
    assert_state(breaker, BreakerState.CLOSED)


def test_threshold_failures_open_and_refuse() -> None:
    clock = FakeClock(start=50.0)
    changes: list[Change] = []
    breaker = make(clock, changes)
    trip(breaker)
    assert_state(breaker, BreakerState.OPEN)
    assert breaker.opened_at == 50.0
    assert breaker.reason == "failures"
    assert not breaker.allow()
    assert changes == [("clob", BreakerState.CLOSED, BreakerState.OPEN)]


def test_open_before_timeout_keeps_refusing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(9.999)
    assert not breaker.allow()
    assert_state(breaker, BreakerState.OPEN)


def test_open_after_timeout_moves_to_half_open_and_admits_one_probe() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()
    assert_state(breaker, BreakerState.HALF_OPEN)
    assert not breaker.allow()
    assert changes[-1] == ("clob", BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_half_open_admits_up_to_max_probes() -> None:
    clock = FakeClock()
    breaker = make(clock, probes=3)
    trip(breaker)
    clock.advance(10.0)
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]


def test_half_open_success_closes() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_success()
    assert_state(breaker, BreakerState.CLOSED)
    assert breaker.consecutive_failures == 0
    assert breaker.allow()
    assert [new for _, _, new in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_half_open_needs_every_probe_to_succeed_before_closing() -> None:
    clock = FakeClock()
    breaker = make(clock, probes=2)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()
    assert breaker.allow()
    breaker.record_success()
    assert_state(breaker, BreakerState.HALF_OPEN)
    breaker.record_success()
    assert_state(breaker, BreakerState.CLOSED)


def test_half_open_failure_reopens_with_fresh_timer() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()
    clock.advance(2.0)
    breaker.record_failure()
    assert_state(breaker, BreakerState.OPEN)
    assert breaker.opened_at == 12.0
    clock.advance(9.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert changes[-2:] == [
        ("clob", BreakerState.HALF_OPEN, BreakerState.OPEN),
        ("clob", BreakerState.OPEN, BreakerState.HALF_OPEN),
    ]


def test_late_failure_while_open_does_not_extend_timer() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    breaker.record_failure()
    assert breaker.opened_at == 0.0
    clock.advance(5.0)
    assert breaker.allow()


def test_late_success_while_open_does_not_close() -> None:
    breaker = make(FakeClock())
    trip(breaker)
    breaker.record_success()
    assert_state(breaker, BreakerState.OPEN)
    assert not breaker.allow()


def test_lost_probe_is_replaced_after_another_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow()  # this probe is cancelled and never reports back
    clock.advance(9.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert_state(breaker, BreakerState.HALF_OPEN)


def test_force_open_without_duration_holds_until_reset() -> None:
    clock = FakeClock(start=3.0)
    changes: list[Change] = []
    breaker = make(clock, changes)
    breaker.force_open("cancel_only")
    assert_state(breaker, BreakerState.OPEN)
    assert breaker.reason == "cancel_only"
    assert breaker.opened_at == 3.0
    clock.advance(1_000_000.0)
    assert not breaker.allow()
    breaker.reset()
    assert_state(breaker, BreakerState.CLOSED)
    assert breaker.allow()
    assert [new for _, _, new in changes] == [BreakerState.OPEN, BreakerState.CLOSED]


def test_force_open_for_duration_probes_after_it() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.force_open("post_only", for_s=79.0)
    clock.advance(78.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    assert_state(breaker, BreakerState.HALF_OPEN)


def test_force_open_while_open_restarts_timer_without_duplicate_event() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    trip(breaker)
    clock.advance(8.0)
    breaker.force_open("operator")
    assert breaker.opened_at == 8.0
    assert changes == [("clob", BreakerState.CLOSED, BreakerState.OPEN)]


def test_reset_clears_failures_and_closes_from_half_open() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(10.0)
    breaker.allow()
    breaker.reset()
    assert_state(breaker, BreakerState.CLOSED)
    assert breaker.consecutive_failures == 0
    trip(breaker)
    assert_state(breaker, BreakerState.OPEN)


def test_reset_when_closed_emits_no_event() -> None:
    changes: list[Change] = []
    breaker = make(FakeClock(), changes)
    breaker.reset()
    assert changes == []


def test_works_without_state_change_hook() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    breaker.record_failure()
    assert_state(breaker, BreakerState.OPEN)


def test_state_values_are_strings_for_labels() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert str(BreakerState.HALF_OPEN) == "half_open"


@pytest.mark.parametrize(
    ("threshold", "timeout", "probes"), [(0, 1.0, 1), (1, -1.0, 1), (1, 1.0, 0)]
)
def test_invalid_arguments_raise_value_error(threshold: int, timeout: float, probes: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        make(FakeClock(), threshold=threshold, timeout=timeout, probes=probes)


def test_negative_force_open_duration_raises_value_error() -> None:
    with pytest.raises(ValueError, match="for_s"):
        make(FakeClock()).force_open("x", for_s=-1.0)
