"""The process's one venue budget (wiring/shared.py): every adapter takes from the same buckets,
and a capped caller (the copy trader's Gamma tag index) gets no more than its share alone."""

from __future__ import annotations

import math

import pytest

from config import load_settings
from observability.metrics import Metrics
from resilience.clock import FakeClock
from resilience.rate_limit import RateLimiter, polymarket_limits
from wiring.shared import VenueBudget, venue_budget

GAMMA = "gamma_events"


def make_budget(fraction: float, clock: FakeClock) -> VenueBudget:
    settings = load_settings(env_file=None, rate_limit_fraction=fraction)
    return venue_budget(settings, clock=clock, metrics=Metrics())


def admitted_now(limiter: RateLimiter, endpoint: str, *, cap: int = 100_000) -> int:
    n = 0
    while n < cap and limiter.try_acquire(endpoint):
        n += 1
    return n


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_a_capped_caller_alone_gets_its_share_of_the_burst_and_the_rate(fraction: float) -> None:
    clock = FakeClock()
    budget = make_budget(fraction, clock)
    capped = budget.capped(0.1)
    alone = polymarket_limits(0.1)[GAMMA]  # what a limiter of its own at 10% would hold
    rate_at_share, burst_at_share = alone
    assert admitted_now(capped, GAMMA) == math.floor(burst_at_share + 1e-9)
    clock.advance(10.0)
    assert admitted_now(capped, GAMMA) == math.floor(rate_at_share * 10.0 + 1e-9)


def test_a_capped_callers_calls_come_out_of_the_process_budget() -> None:
    clock = FakeClock()
    budget = make_budget(0.5, clock)
    full_burst = admitted_now(make_budget(0.5, FakeClock()).limiter, GAMMA)
    capped = budget.capped(0.1)
    taken = admitted_now(capped, GAMMA)
    assert taken > 0
    # Each capped call cost fraction / share = 5 tokens of the one shared bucket.
    assert admitted_now(budget.limiter, GAMMA) == full_burst - 5 * taken


def test_a_share_at_or_over_the_fraction_is_the_limiter_itself() -> None:
    budget = make_budget(0.05, FakeClock())
    assert budget.capped(0.1) is budget.limiter


def test_every_endpoint_of_the_venue_is_in_the_one_limiter() -> None:
    budget = make_budget(0.5, FakeClock())
    assert budget.limiter.endpoints == {k.partition(":")[0] for k in polymarket_limits(0.5)}
    assert budget.capped(0.1).endpoints == budget.limiter.endpoints
    assert budget.data_api.fraction == 0.5
