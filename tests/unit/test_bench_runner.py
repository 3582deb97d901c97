"""`python -m bench <name>` prints exactly one JSON line on stdout, whatever the code logs."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

from tests.helpers import ROOT
from tests.pg import ADMIN_URL


def test_storage_bench_stdout_is_one_json_line() -> None:
    # The storage bench opens databases, whose migrations log at info level: those lines must
    # go to stderr, or `python -m bench storage | jq` breaks.
    out = subprocess.run(
        [sys.executable, "-m", "bench", "storage", "--seconds", "0.2", "--writers", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    figures = json.loads(lines[0])
    assert figures["bench"] == "storage"
    assert figures["group_commit_writes_per_s"] > 0 and figures["naive_writes_per_s"] > 0
    assert "migration_applied" in out.stderr


def test_storage_bench_on_postgres_writes_the_journal_and_drops_its_database() -> None:
    args = ["storage", "--engine", "postgres", "--seconds", "0.2", "--writers", "8"]
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--url", ADMIN_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["engine"] == "postgres"
    for key in ("group_commit", "one_tx_per_write", "naive"):
        assert figures[f"{key}_writes_per_s"] > 0, key
    assert "engine=postgres" in out.stderr  # the daemon's own migrations ran
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        left = c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'polyd_bench_%'")
        assert left.fetchall() == []


def test_unknown_bench_is_refused_with_usage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert "usage: python -m bench {" in out.stderr and "storage" in out.stderr


def test_orderpath_bench_measures_polyd_and_says_whether_the_sdk_was_measured() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "orderpath", "--orders", "5", "--warmup", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    figures = json.loads(lines[0])
    assert 0 < figures["polyd_sign_p50_ms"] <= figures["polyd_order_p50_ms"]
    if str(figures["sdk"]).startswith("not measured"):
        assert "polymarket-client" in figures["sdk"] and "sdk_order_p50_ms" not in figures
    else:
        assert 0 < figures["sdk_sign_p50_ms"] <= figures["sdk_order_p50_ms"]
