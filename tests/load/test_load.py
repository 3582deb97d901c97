"""Load and soak: the daemon (a subprocess, live against the simulator) under order and feed load.

Driven by `bench/health.py` (the same code as `python -m bench health`): a test-only load strategy
submits FAK BUYs through the daemon's real executor at a steady rate, a local market-websocket
blaster sends `price_change` events at a steady rate, and this process GETs `/health` at 50 Hz
while sampling the daemon's RSS (`/proc/<pid>/status`, VmRSS).

The tests assert counts, never rates or latencies (the 2 cores are shared, and a busy neighbour
stretches every figure): zero errors (no exception from `submit`, no error-level log line, exit
code 0), every order submitted answered, every `price_change` the blaster sent counted by the
daemon (`polyd_feed_messages_total`), no malformed feed message, every `/health` answered 200.
The figures (rates achieved, `/health` p50/p99, RSS) are the bench's: each run appends them to
`FIGURES`, and `python -m bench health` prints them. The 10-minute soaks are `slow` and also bound
RSS growth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.health import run_load

FIGURES = Path("/tmp/polyd-load-figures.jsonl")


def _check(f: dict[str, Any], *, rss_pct: float | None = None) -> None:
    with FIGURES.open("a") as out:
        out.write(json.dumps(f) + "\n")
    assert f["errors"] == 0, f["error_samples"]
    assert f["daemon_exit_code"] == 0
    assert f["feed_malformed"] == 0, f
    assert f["health_requests"] > 0
    assert f["health_200"] == f["health_requests"], f
    if f["load_orders_per_min"]:
        assert f["orders_drained"], f
        assert f["orders_submitted"] > 0, f
        assert f["orders_answered"] == f["orders_submitted"], f
    if f["load_feed_msgs_per_s"]:
        assert f["feed_sent"] > 0, f
        assert f["feed_counted"] == f["feed_sent"], f
    if rss_pct is not None:
        assert f["rss_growth_pct"] < rss_pct, f


def test_short_order_and_feed_load_answers_every_order_counts_every_event_and_health(
    tmp_path: Path,
) -> None:
    f = run_load(
        duration_s=20, orders_per_min=1000, feed_per_s=20_000, health_hz=50, workdir=tmp_path
    )
    _check(f)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_1000_orders_per_minute_for_10_minutes(tmp_path: Path) -> None:
    f = run_load(
        duration_s=600, orders_per_min=1000, feed_per_s=200, health_hz=50, workdir=tmp_path
    )
    _check(f, rss_pct=10.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_20000_feed_messages_per_second_for_10_minutes(tmp_path: Path) -> None:
    f = run_load(
        duration_s=600, orders_per_min=0, feed_per_s=20_000, health_hz=50, workdir=tmp_path
    )
    _check(f, rss_pct=10.0)
