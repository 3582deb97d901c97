"""`tools.rss_soak`: the slope it fits and what it measures of a real child process."""

from __future__ import annotations

import sys

import pytest

from tools.rss_soak import measure, slope_per_hour


def test_slope_is_least_squares_in_mb_per_hour() -> None:
    assert slope_per_hour([(0.0, 100.0), (1800.0, 150.0), (3600.0, 200.0)]) == pytest.approx(100)
    # sxy / sxx = 20 / 500 MB per second; one sample has no slope.
    assert slope_per_hour([(0.0, 10.0), (10.0, 12.0), (20.0, 10.0), (30.0, 12.0)]) == (
        pytest.approx(144)
    )
    assert slope_per_hour([(5.0, 1.0)]) == 0.0


def test_measure_samples_a_growing_child_and_reports_its_exit() -> None:
    # The child holds 40 MB more every 0.2 s, five times, then exits 3.
    grow = "import time\nb=[]\nfor _ in range(5):\n    b.append(b'x' * (40<<20)); time.sleep(0.2)\n"
    soak = measure(
        [sys.executable, "-c", grow + "raise SystemExit(3)"],
        seconds=30,
        warmup_s=0,
        interval_s=0.05,
    )
    assert soak.exit_code == 3
    assert soak.rss_mb_peak - soak.samples[0][1] >= 150
    assert soak.slope_mb_per_hour > 0
    with pytest.raises(ValueError, match="warm-up"):
        measure([sys.executable, "-c", "pass"], seconds=1, warmup_s=5)
