"""Hypothesis profiles shared by the fuzz tests: hundreds of cases by default, 10,000 when slow."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "polyd-fast",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("polyd-slow", settings.get_profile("polyd-fast"), max_examples=10_000)
FAST = settings.get_profile("polyd-fast")
SLOW = settings.get_profile("polyd-slow")
