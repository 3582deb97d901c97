"""The trading guard's money decisions that `test_trading_guard.py` does not reach: the daily
loss limit at, just under and just over its boundary (halt text, the one warning a day and
its audit entry), today's PnL baseline persisted and restored only for today, the kill switch
leaving an existing halt's reason alone, a storage failure halting in memory, the breaker
metrics operators alert on, and a Retry-After that holds orders only when the venue gave one.

Each assertion is on what an operator or the executor sees: the refusal text, the audit
entries, the persisted rows, the Prometheus samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from errors import TransientError, VenueUnavailable
from execution import positions as positions_module
from execution.guard import DAY_KEY, STATE_KEY, TradingGuard
from execution.positions import PositionBook
from execution.risk import TradingState
from observability.metrics import Metrics
from resilience import BreakerState, CircuitBreaker
from resilience.clock import FakeClock
from storage import Repositories


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def make(
    repos: Repositories,
    tmp_path: Path,
    *,
    limit: str = "100",
    warn: float = 0.8,
    kill_switch: bool = True,
) -> tuple[TradingGuard, Metrics, FakeClock]:
    clock, metrics = FakeClock(1000), Metrics()
    hooks: list[Callable[[str, BreakerState, BreakerState], None]] = []
    breaker = CircuitBreaker(
        "venue",
        failure_threshold=2,
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
        kill_switch_path=tmp_path / "KILL" if kill_switch else None,
        daily_loss_limit=Decimal(limit),
        daily_loss_warn_fraction=warn,
    )
    hooks.append(guard.on_breaker_change)  # as the executor wires it
    return guard, metrics, clock


def lose(guard: TradingGuard, amount: str) -> None:
    """Today's PnL becomes -amount: nothing realized or held, a baseline of +amount."""
    guard.positions.set_day_baseline(today(), Decimal(amount))


async def warnings(repos: Repositories) -> list[dict[str, object]]:
    return [e.detail for e in reversed(await repos.audit.tail(event="daily_loss_warning"))]


@pytest.mark.parametrize(
    ("loss", "halted"),
    [("99.99", False), ("100", True), ("100.01", True)],
    ids=["just-under", "at", "over"],
)
async def test_the_daily_loss_limit_halts_at_its_boundary_with_the_amounts_in_the_reason(
    repos: Repositories, tmp_path: Path, loss: str, halted: bool
) -> None:
    guard, metrics, _ = make(repos, tmp_path)
    lose(guard, loss)
    await guard.check()
    if halted:
        reason = f"daily loss limit reached (-{loss} <= -100)"
        assert (guard.state, guard.reason) == (TradingState.HALTED, reason)
        assert guard.refusal(rests=False) == f"trading is halted: {reason}"
        (entry,) = await repos.audit.tail(event="trading_state")
        assert entry.detail == {"from": "ACTIVE", "to": "HALTED", "reason": reason}
        assert metrics.registry.get_sample_value("polyd_trading_state") == 2
        assert await warnings(repos) == []  # the halt is the news, not a warning as well
    else:
        assert guard.state is TradingState.ACTIVE
        assert guard.refusal(rests=False) is None
        assert await warnings(repos) == [{"pnl": "-99.99", "limit": "100"}]


async def test_an_already_halted_guard_is_not_halted_again_by_the_loss_limit(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    await guard.set_state(TradingState.HALTED, "operator")
    lose(guard, "150")
    await guard.check()
    assert guard.reason == "operator"  # the operator's reason is kept
    assert len(await repos.audit.tail(event="trading_state")) == 1


@pytest.mark.parametrize(
    ("loss", "warned"),
    [("79.99", False), ("80", True), ("80.01", True)],
    ids=["just-under", "at", "over"],
)
async def test_the_loss_warning_fires_at_its_fraction_of_the_limit_once_a_day(
    repos: Repositories, tmp_path: Path, loss: str, warned: bool
) -> None:
    guard, _, _ = make(repos, tmp_path)
    lose(guard, loss)
    with capture_logs() as logs:
        await guard.check()
        await guard.check()  # the same day: no second warning
    want = [{"pnl": f"-{loss}", "limit": "100"}] if warned else []
    assert await warnings(repos) == want
    events = [e for e in logs if e["event"] == "daily_loss_warning"]
    assert events == (
        [{"event": "daily_loss_warning", "log_level": "warning", **want[0]}] if warned else []
    )
    assert guard.state is TradingState.ACTIVE


async def test_the_loss_warning_comes_again_on_a_new_day(
    repos: Repositories, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = iter(["2026-03-01", "2026-03-01", "2026-03-02", "2026-03-02"])

    monkeypatch.setattr(positions_module, "utc_day", lambda now=None: next(days))
    guard, _, _ = make(repos, tmp_path)
    guard.positions.set_day_baseline("2026-03-01", Decimal("90"))
    await guard.check()
    await guard.check()
    assert await warnings(repos) == [{"pnl": "-90", "limit": "100"}]
    await guard.check()  # a new day: its PnL starts from zero, no warning
    assert await warnings(repos) == [{"pnl": "-90", "limit": "100"}]
    guard.positions.set_day_baseline("2026-03-02", Decimal("85"))
    await guard.check()  # the new day's own loss warns again
    assert await warnings(repos) == [
        {"pnl": "-90", "limit": "100"},
        {"pnl": "-85", "limit": "100"},
    ]


async def test_the_warning_fraction_is_the_configured_one(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path, limit="200", warn=0.5)
    lose(guard, "99.99")
    await guard.check()
    assert await warnings(repos) == []
    lose(guard, "100")
    await guard.check()
    assert await warnings(repos) == [{"pnl": "-100", "limit": "200"}]


async def test_todays_baseline_is_persisted_when_it_changes_and_restored_after_a_restart(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    lose(guard, "12.5")
    await guard.check()
    saved = await repos.state.get(DAY_KEY)
    assert saved is not None
    assert orjson.loads(saved) == {"day": today(), "baseline": "12.5"}
    # unchanged: not written again (the row keeps its text even if written behind our back)
    await repos.state.set(DAY_KEY, "sentinel")
    await guard.check()
    assert await repos.state.get(DAY_KEY) == "sentinel"
    await repos.state.set(DAY_KEY, saved)

    fresh, _, _ = make(repos, tmp_path)
    await fresh.load()
    assert fresh.positions.day == (today(), Decimal("12.5"))
    assert fresh.positions.daily_pnl() == Decimal("-12.5")  # the loss survives the restart
    await fresh.check()
    assert await repos.state.get(DAY_KEY) == saved  # restored as persisted: nothing to write


async def test_yesterdays_baseline_is_not_restored(repos: Repositories, tmp_path: Path) -> None:
    await repos.state.set(DAY_KEY, orjson.dumps({"day": "2000-01-01", "baseline": "50"}).decode())
    guard, _, _ = make(repos, tmp_path)
    await guard.load()
    assert guard.positions.day == (None, Decimal(0))
    await guard.check()  # today starts from today's PnL, and is persisted
    saved = await repos.state.get(DAY_KEY)
    assert saved is not None
    assert orjson.loads(saved) == {"day": today(), "baseline": "0"}


async def test_nothing_persisted_loads_as_active(repos: Repositories, tmp_path: Path) -> None:
    guard, _, _ = make(repos, tmp_path)
    await guard.load()
    assert (guard.state, guard.reason) == (TradingState.ACTIVE, "")
    assert guard.positions.day == (None, Decimal(0))
    await repos.state.set(STATE_KEY, "{}")  # a row without fields: the defaults
    await guard.load()
    assert (guard.state, guard.reason) == (TradingState.ACTIVE, "")
    await repos.state.set(STATE_KEY, '{"state": "REDUCING"}')
    await guard.load()
    assert (guard.state, guard.reason) == (TradingState.REDUCING, "")


async def test_the_kill_switch_keeps_an_existing_halts_reason(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    await guard.set_state(TradingState.HALTED, "operator")
    (tmp_path / "KILL").touch()
    await guard.check()
    assert guard.reason == "operator"
    assert len(await repos.audit.tail(event="trading_state")) == 1


async def test_without_a_kill_switch_path_the_switch_is_off(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path, kill_switch=False)
    (tmp_path / "KILL").touch()
    assert guard.kill_switch_on() is False
    await guard.check()
    assert guard.state is TradingState.ACTIVE
    await guard.set_state(TradingState.HALTED, "operator")
    await guard.resume("go")
    assert guard.state is TradingState.ACTIVE


async def test_a_storage_failure_halts_in_memory_until_resumed(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, metrics, _ = make(repos, tmp_path)
    guard.storage_failed()
    assert (guard.state, guard.reason) == (TradingState.HALTED, "storage error")
    assert guard.refusal(rests=False) == "trading is halted: storage error"
    assert metrics.registry.get_sample_value("polyd_trading_state") == 2
    assert await repos.state.get(STATE_KEY) is None  # nothing written: the database failed
    await guard.resume("storage back", actor="http")
    assert guard.state is TradingState.ACTIVE
    assert metrics.registry.get_sample_value("polyd_trading_state") == 0


async def test_the_trading_state_metric_follows_each_state(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, metrics, _ = make(repos, tmp_path)
    with capture_logs() as logs:
        for state, value in [
            (TradingState.REDUCING, 1),
            (TradingState.HALTED, 2),
            (TradingState.ACTIVE, 0),
        ]:
            await guard.set_state(state, f"to {state.value}")
            assert metrics.registry.get_sample_value("polyd_trading_state") == value
    moves = [
        (e["old"], e["new"], e["reason"]) for e in logs if e["event"] == "trading_state_changed"
    ]
    assert moves == [
        (TradingState.ACTIVE, TradingState.REDUCING, "to REDUCING"),
        (TradingState.REDUCING, TradingState.HALTED, "to HALTED"),
        (TradingState.HALTED, TradingState.ACTIVE, "to ACTIVE"),
    ]


def test_a_hold_and_its_release_are_logged_once_each(repos: Repositories, tmp_path: Path) -> None:
    guard, _, _ = make(repos, tmp_path)
    with capture_logs() as logs:
        guard.release_resting()  # nothing held: nothing to say
        guard.hold_resting("heartbeats lapsed")
        guard.hold_resting("still lapsed")
        guard.release_resting()
        guard.release_resting()
    assert [(e["event"], e.get("reason")) for e in logs] == [
        ("resting_orders_held", "heartbeats lapsed"),
        ("resting_orders_allowed", None),
    ]


def test_a_halt_is_the_refusal_even_while_resting_orders_are_held(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    guard.hold_resting("heartbeats lapsed")
    guard.storage_failed()
    assert guard.refusal(rests=True) == "trading is halted: storage error"


@pytest.mark.parametrize("retry_after", [None, 0.0], ids=["none", "zero"])
def test_a_venue_unavailable_without_a_wait_counts_as_a_plain_failure(
    repos: Repositories, tmp_path: Path, retry_after: float | None
) -> None:
    guard, metrics, _ = make(repos, tmp_path)
    guard.venue_failed(VenueUnavailable("503", status=503, retry_after=retry_after))
    assert guard.breaker_state() is BreakerState.CLOSED  # one failure of two
    assert guard.breaker.consecutive_failures == 1
    guard.venue_failed(VenueUnavailable("503", status=503, retry_after=retry_after))
    assert guard.breaker_state() is BreakerState.OPEN
    assert guard.breaker.reason == "failures"
    sample = metrics.registry.get_sample_value(
        "polyd_venue_errors_total", {"endpoint": "post_order", "kind": "VenueUnavailable"}
    )
    assert sample == 2


def test_a_forced_open_breaker_waits_its_retry_after_not_its_reset_timeout(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, metrics, clock = make(repos, tmp_path)
    guard.venue_failed(VenueUnavailable("425 restarting", status=425, retry_after=45.0))
    assert guard.breaker.reason == "venue unavailable"
    assert guard.breaker.consecutive_failures == 1  # counted as well
    clock.advance(30)  # the breaker's own reset timeout: not enough
    assert guard.breaker_state() is BreakerState.OPEN
    clock.advance(15)
    assert guard.breaker_state() is BreakerState.HALF_OPEN
    assert guard.breaker.state is BreakerState.OPEN  # read, not moved: the probe slot is kept
    assert guard.breaker.allow()  # the next order is the probe
    assert guard.breaker_state() is BreakerState.HALF_OPEN
    assert metrics.registry.get_sample_value("polyd_breaker_state", {"breaker": "venue"}) == 1
    guard.breaker.record_success()
    assert guard.breaker_state() is BreakerState.CLOSED
    assert metrics.registry.get_sample_value("polyd_breaker_state", {"breaker": "venue"}) == 0
    # opened once in all: HALF_OPEN and CLOSED are not openings
    opened = metrics.registry.get_sample_value("polyd_breaker_opened_total", {"breaker": "venue"})
    assert opened == 1


def test_a_breaker_forced_open_without_a_wait_stays_open(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, clock = make(repos, tmp_path)
    guard.breaker.force_open("operator")
    clock.advance(10_000)
    assert guard.breaker_state() is BreakerState.OPEN


def test_breaker_changes_are_logged_with_the_breaker_and_both_states(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    with capture_logs() as logs:
        guard.venue_failed(TransientError("500", status=500))
        guard.venue_failed(TransientError("500", status=500))
    changes = [e for e in logs if e["event"] == "breaker_state_changed"]
    assert [(e["breaker"], e["old"], e["new"]) for e in changes] == [("venue", "closed", "open")]


async def test_the_default_warning_is_at_eighty_percent_of_the_default_limit(
    repos: Repositories, tmp_path: Path
) -> None:
    guard = TradingGuard(
        repos=repos,
        positions=PositionBook(),
        metrics=Metrics(),
        breaker=CircuitBreaker("venue", failure_threshold=2, reset_timeout_s=30, clock=FakeClock()),
        clock=FakeClock(),
    )
    lose(guard, "79.99")
    await guard.check()
    assert await warnings(repos) == []
    lose(guard, "80")
    await guard.check()
    assert await warnings(repos) == [{"pnl": "-80", "limit": "100"}]
    lose(guard, "100")
    await guard.check()
    assert guard.reason == "daily loss limit reached (-100 <= -100)"


async def test_a_resume_by_the_daemon_itself_names_no_actor(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    await guard.set_state(TradingState.HALTED, "storage error")
    await guard.resume("storage back")
    (last,) = await repos.audit.tail(event="trading_state", limit=1)
    assert last.detail == {"from": "HALTED", "to": "ACTIVE", "reason": "storage back"}


async def test_a_restored_baseline_is_not_written_back_on_the_next_check(
    repos: Repositories, tmp_path: Path
) -> None:
    guard, _, _ = make(repos, tmp_path)
    lose(guard, "7")
    await guard.check()
    fresh, _, _ = make(repos, tmp_path)
    await fresh.load()
    await repos.state.set(DAY_KEY, "sentinel")  # a write by check() would replace it
    await fresh.check()
    assert await repos.state.get(DAY_KEY) == "sentinel"


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The machine's zone set to one whose date differs from UTC's date right now."""
    zone = "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-14"
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        yield zone
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_the_day_of_the_baseline_is_the_utc_day_whatever_the_machines_zone(
    repos: Repositories, tmp_path: Path, far_from_utc: str
) -> None:
    assert datetime.now().strftime("%Y-%m-%d") != today()  # the zone took effect
    await repos.state.set(DAY_KEY, orjson.dumps({"day": today(), "baseline": "25"}).decode())
    guard, _, _ = make(repos, tmp_path)
    await guard.load()
    assert guard.positions.day == (today(), Decimal("25"))
