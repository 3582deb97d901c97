"""Load and soak: the daemon (a subprocess, live against the simulator) under order and feed load.

Driven by `bench/health.py` (the same code as `python -m bench health`): a test-only load strategy
submits FAK BUYs through the daemon's real executor at a steady rate, a local market-websocket
blaster sends `price_change` events at a steady rate, and this process GETs `/health` at 50 Hz
while sampling the daemon's RSS (`/proc/<pid>/status`, VmRSS).

Properties, for every run: zero errors (no exception from `submit`, no error-level log line, exit
code 0), every order answered, no malformed feed message, `/health` always 200, the target rates
achieved, RSS growth and `/health` p99 within bounds. The default run is one short combined run;
the 10-minute soaks are `slow`. The 2 cores are shared: short-run latency bounds are looser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.health import run_load

FIGURES = Path("/tmp/polyd-load-figures.jsonl")


def _check(
    f: dict[str, Any], *, orders_per_min: float, feed_per_s: float, p99_ms: float, rss_pct: float
) -> None:
    with FIGURES.open("a") as out:
        out.write(json.dumps(f) + "\n")
    assert f["errors"] == 0, f["error_samples"]
    assert f["daemon_exit_code"] == 0
    assert f["health_not_200"] == 0
    assert f["feed_malformed"] == 0
    if orders_per_min:
        assert f["orders_per_min_achieved"] >= 0.9 * orders_per_min, f
        # In flight at the end are at most a handful (one submit takes milliseconds).
        assert f["orders_answered"] >= f["orders_submitted"] - 20, f
    if feed_per_s:
        assert f["feed_msgs_per_s_achieved"] >= 0.9 * feed_per_s, f
    assert f["rss_growth_pct"] < rss_pct, f
    assert f["health_p99_ms_under_load"] < p99_ms, f


def test_short_order_and_feed_load_has_no_errors_flat_rss_and_fast_health(
    tmp_path: Path,
) -> None:
    f = run_load(
        duration_s=20, orders_per_min=1000, feed_per_s=20_000, health_hz=50, workdir=tmp_path
    )
    # 20 s: RSS still settles after warm-up, and on 2 shared cores one busy neighbour moves a
    # p99 of 1,000 samples by tens of ms (seen: 5-26 ms); the 10-minute soaks hold 5 ms.
    _check(f, orders_per_min=1000, feed_per_s=20_000, p99_ms=50.0, rss_pct=15.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_1000_orders_per_minute_for_10_minutes(tmp_path: Path) -> None:
    f = run_load(
        duration_s=600, orders_per_min=1000, feed_per_s=200, health_hz=50, workdir=tmp_path
    )
    _check(f, orders_per_min=1000, feed_per_s=200, p99_ms=5.0, rss_pct=10.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_20000_feed_messages_per_second_for_10_minutes(tmp_path: Path) -> None:
    f = run_load(
        duration_s=600, orders_per_min=0, feed_per_s=20_000, health_hz=50, workdir=tmp_path
    )
    _check(f, orders_per_min=0, feed_per_s=20_000, p99_ms=5.0, rss_pct=10.0)
