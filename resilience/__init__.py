"""Building blocks for surviving a flaky venue: retries, a circuit breaker, rate limits, backoff.

Everything takes its clock (and any metrics hook) as a keyword-only argument, holds no
module-level state and imports no metrics library: the orchestrator wires hooks to Prometheus.
"""

from resilience.backoff import Backoff
from resilience.breaker import BreakerState, CircuitBreaker, StateChangeHook
from resilience.clock import Clock, FakeClock, SystemClock
from resilience.rate_limit import (
    RateLimiter,
    TokenBucket,
    WaitHook,
    acquire_all,
    documented_limits,
    polymarket_limits,
)
from resilience.retry import (
    NEVER_RETRIED,
    EventLogger,
    RetryPolicy,
    async_retrying,
    is_retryable,
    retry_call,
)

__all__ = [
    "NEVER_RETRIED",
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "EventLogger",
    "FakeClock",
    "RateLimiter",
    "RetryPolicy",
    "StateChangeHook",
    "SystemClock",
    "TokenBucket",
    "WaitHook",
    "acquire_all",
    "async_retrying",
    "documented_limits",
    "is_retryable",
    "polymarket_limits",
    "retry_call",
]
