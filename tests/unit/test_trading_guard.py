"""The trading guard on its own: every state move persisted and audited with who asked, the
kill switch halting and blocking a resume, resting orders held and released with the reason
an order is refused, and the venue breaker's view (forced open for a venue's Retry-After).

These decide whether money goes out at all; the executor tests reach the guard only through a
submission, so its reasons and audit entries are pinned here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from errors import OrderRejected, RefusalSource, TransientError, VenueUnavailable
from execution.guard import STATE_KEY, TradingGuard
from execution.positions import PositionBook
from execution.risk import TradingState
from observability.metrics import Metrics
from resilience import BreakerState, CircuitBreaker
from resilience.clock import FakeClock
from storage import Repositories


def make(repos: Repositories, tmp_path: Path) -> tuple[TradingGuard, Metrics, FakeClock]:
    clock, metrics = FakeClock(1000), Metrics()
    hooks: list[Callable[[str, BreakerState, BreakerState], None]] = []
    breaker = CircuitBreaker(
        "venue",
        failure_threshold=3,
        reset_timeout_s=30,
        clock=clock,
        on_state_change=lambda name, old, new: hooks[0](name, old, new),
    )
    guard = TradingGuard(
        repos=repos,
        positions=PositionBook(),
        metrics=metrics,
        breaker=breaker,
        clock=clock,
        kill_switch_path=tmp_path / "KILL",
    )
    hooks.append(guard.on_breaker_change)  # as the executor wires it
    return guard, metrics, clock


async def test_a_state_move_is_persisted_and_audited_with_who_asked_once(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, metrics, _ = make(repos, tmp_path)
    await guard.set_state(TradingState.REDUCING, "operator", actor="http")
    await guard.set_state(TradingState.REDUCING, "operator", actor="http")  # no change: no entry
    await guard.set_state(TradingState.REDUCING, "another reason")
    await guard.set_state(TradingState.HALTED, "another reason")
    entries = [e.detail for e in reversed(await repos.audit.tail(event="trading_state"))]
    assert entries == [
        {"from": "ACTIVE", "to": "REDUCING", "reason": "operator", "actor": "http"},
        {"from": "REDUCING", "to": "REDUCING", "reason": "another reason"},
        {"from": "REDUCING", "to": "HALTED", "reason": "another reason"},
    ]
    saved = await repos.state.get(STATE_KEY)
    assert saved is not None
    assert orjson.loads(saved) == {"state": "HALTED", "reason": "another reason"}
    assert metrics.registry.get_sample_value("polyd_trading_state") == 2
    fresh, _, _ = make(repos, tmp_path)
    await fresh.load()  # a restart keeps the halt
    assert (fresh.state, fresh.reason) == (TradingState.HALTED, "another reason")


async def test_the_kill_switch_halts_and_blocks_a_resume_until_removed(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    (tmp_path / "KILL").touch()
    await guard.check()
    assert (guard.state, guard.reason) == (TradingState.HALTED, "kill-switch file present")
    assert guard.refusal(rests=False) == "trading is halted: kill-switch file present"
    with pytest.raises(OrderRejected) as e:
        await guard.resume("go", actor="telegram:1")
    assert (e.value.reason, e.value.source) == (
        "kill-switch file is present; remove it first",
        RefusalSource.HALTED,
    )
    (tmp_path / "KILL").unlink()
    guard.breaker.force_open("venue unavailable")
    await guard.resume("go", actor="telegram:1")
    assert (guard.state, guard.reason) == (TradingState.ACTIVE, "go")
    assert guard.breaker.state is BreakerState.CLOSED  # a resume starts with a fresh breaker
    (last,) = await repos.audit.tail(event="trading_state", limit=1)
    assert last.detail == {"from": "HALTED", "to": "ACTIVE", "reason": "go", "actor": "telegram:1"}


def test_resting_orders_are_held_with_the_reason_and_others_still_go(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    assert guard.refusal(rests=True) is None
    guard.hold_resting("heartbeats lapsed")
    assert guard.refuses_resting(True) == "heartbeats lapsed"
    assert guard.refuses_resting(False) is None
    assert guard.refusal(rests=True) == "new resting orders are held: heartbeats lapsed"
    assert guard.refusal(rests=False) is None  # marketable orders still go
    guard.hold_resting("still lapsed")
    assert guard.refuses_resting(True) == "still lapsed"
    guard.release_resting()
    assert guard.refusal(rests=True) is None
    guard.release_resting()  # released twice: still nothing held
    assert guard.resting_hold is None


def test_a_venue_unavailable_with_retry_after_opens_the_breaker_for_that_long(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, metrics, clock = make(repos, tmp_path)
    guard.venue_failed(VenueUnavailable("503 cancel-only", retry_after=12.0))
    assert guard.breaker_state() is BreakerState.OPEN
    clock.advance(11.9)
    assert guard.breaker_state() is BreakerState.OPEN
    clock.advance(0.1)
    assert guard.breaker_state() is BreakerState.HALF_OPEN
    errors = metrics.registry.get_sample_value(
        "polyd_venue_errors_total", {"endpoint": "post_order", "kind": "VenueUnavailable"}
    )
    assert errors == 1
    assert metrics.registry.get_sample_value("polyd_breaker_state", {"breaker": "venue"}) == 2
    assert (
        metrics.registry.get_sample_value("polyd_breaker_opened_total", {"breaker": "venue"}) == 1
    )


def test_plain_venue_errors_open_the_breaker_only_at_its_threshold(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, clock = make(repos, tmp_path)
    guard.venue_failed(TransientError("500", status=500, retry_after=5.0))  # not a 503/425
    guard.venue_failed(TransientError("500", status=500))
    assert guard.breaker_state() is BreakerState.CLOSED
    guard.venue_failed(TransientError("500", status=500))
    assert guard.breaker_state() is BreakerState.OPEN
    clock.advance(30)
    assert guard.breaker_state() is BreakerState.HALF_OPEN
