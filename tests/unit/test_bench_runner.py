"""`python -m bench <name>` prints exactly one JSON line on stdout, whatever the code logs."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

from tests.helpers import ROOT
from tests.pg import ADMIN_URL


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m bench ARGS` from the checkout; a non-zero exit fails the test."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def databases_left(pattern: str) -> list[tuple[str]]:
    """Databases on the test server whose name is LIKE `pattern` (a bench must drop its own)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))
        return rows.fetchall()


def test_storage_bench_stdout_is_one_json_line() -> None:
    # The storage bench opens databases, whose migrations log at info level: those lines must
    # go to stderr, or `python -m bench storage | jq` breaks.
    out = run_bench("storage", "--seconds", "0.2", "--writers", "8")
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    figures = json.loads(lines[0])
    assert figures["bench"] == "storage"
    assert figures["group_commit_writes_per_s"] > 0 and figures["naive_writes_per_s"] > 0
    assert "migration_applied" in out.stderr


def test_storage_bench_on_postgres_writes_the_journal_and_drops_its_database() -> None:
    args = ["storage", "--engine", "postgres", "--seconds", "0.2", "--writers", "8"]
    out = run_bench(*args, "--url", ADMIN_URL)
    figures = json.loads(out.stdout)
    assert figures["engine"] == "postgres"
    for key in ("group_commit", "one_tx_per_write", "naive"):
        assert figures[f"{key}_writes_per_s"] > 0, key
    assert "engine=postgres" in out.stderr  # the daemon's own migrations ran
    assert databases_left("polyd_bench_storage_%") == []


def test_executor_bench_on_postgres_journals_there_and_drops_its_database() -> None:
    args = ["executor", "--engine", "postgres", "--latency-orders", "10"]
    args += ["--throughput-orders", "40", "--signing-orders", "10", "--url", ADMIN_URL]
    out = run_bench(*args, timeout=180)
    figures = json.loads(out.stdout)
    assert figures["engine"] == "postgres"
    assert figures["orders_per_s"] > 0 and figures["submit_p50_ms"] > 0
    assert databases_left("polyd_bench_executor_%") == []


def test_health_bench_on_postgres_runs_the_daemon_journaling_there_and_drops_its_database() -> None:
    # The whole daemon under a light load: every order the load strategy submitted is a row of
    # the PostgreSQL journal (read there after the daemon exits), and the database is dropped.
    args = ["health", "--engine", "postgres", "--duration", "3", "--orders-per-min", "600"]
    args += ["--feed-per-s", "200", "--health-hz", "10", "--url", ADMIN_URL]
    out = run_bench(*args, timeout=180)
    figures = json.loads(out.stdout)
    assert figures["engine"] == "postgres"
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["orders_submitted"] > 0
    assert figures["journal_orders"] == figures["orders_submitted"], figures
    assert databases_left("polyd_bench_health_%") == []


def test_unknown_bench_is_refused_with_usage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert "usage: python -m bench {" in out.stderr and "storage" in out.stderr


def test_orderpath_bench_compares_polyd_with_both_sdks_on_every_figure() -> None:
    argv = ["--rounds", "2", "--latency-orders", "4", "--throughput-orders", "8", "--gap-ms", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "bench", "orderpath", *argv, "--sign-orders", "2", "--warmup", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    figures = json.loads(lines[0])
    names = ("ack_p50_ms", "ack_p99_ms", "return_p50_ms", "orders_per_s", "cpu_us_per_order")
    for side in ("polyd", "sdk", "bare_v2"):
        assert all(figures[side][k] > 0 for k in (*names, "sign_p50_us")), figures[side]
        assert figures[side]["ack_p50_ms"] <= figures[side]["return_p50_ms"]
        # polyd answers before its outcome row is durable; the SDKs keep no record
        assert figures[side]["return_p50_ms"] <= figures[side]["durable_p50_ms"]
        assert len(figures["ack_p50_ms_by_round"][side]) == 2
    for other in ("sdk", "bare_v2"):
        ratio = figures["ratios"][f"polyd_vs_{other}"]["ack_p50_ms"]
        assert ratio == round(figures["polyd"]["ack_p50_ms"] / figures[other]["ack_p50_ms"], 3)
        assert set(figures["targets"][f"vs_{other}"]) == {
            "ack_p50_le_0.8",
            "ack_p99_le_0.9",
            "return_p50_le_1.0_of_sdk_ack",
            "orders_per_s_ge_1.5",
        }


def test_takeover_bench_finds_the_planted_orders_on_both_engines() -> None:
    # The search must find what a gone daemon left unsettled (FILLED unbooked and LIVE, two of
    # each) among the settled ones, and nothing of the daemon's own history: the bench exits
    # non-zero otherwise. On PostgreSQL its throwaway databases are dropped.
    for engine in ("sqlite", "postgres"):
        args = ["takeover", "--engine", engine, "--orders", "50,200", "--unsettled", "2"]
        out = run_bench(*args, "--repeat", "2", "--url", ADMIN_URL)
        figures = json.loads(out.stdout)
        assert figures["engine"] == engine
        assert [s["orders"] for s in figures["sizes"]] == [50, 200]
        for size in figures["sizes"]:
            assert size["gone_daemon"]["found"] == 4, size
            assert size["own_history"]["found"] == 0, size
            assert size["gone_daemon"]["search_ms"] > 0, size
    assert databases_left("polyd_bench_takeover_%") == []
