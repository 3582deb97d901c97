"""The daemon as a subprocess: start, answer /health and /metrics, stop on SIGTERM with exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from observability.metrics import Metrics
from observability.sidecar import Health
from orchestrator import StrategySupervisor
from resilience.backoff import Backoff
from storage import load_migrations
from tests.helpers import PYTHON, ROOT, clean_env, free_port, run_cli


def wait_for_health(port: int, timeout: float = 30) -> tuple[int, dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 503 and time.monotonic() > deadline:
                return e.code, json.loads(e.read())
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("daemon did not answer /health")
        time.sleep(0.1)


def test_daemon_starts_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "life.db"
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none"],
        cwd=ROOT,
        env=clean_env(MODE="paper", DB_PATH=str(db), HTTP_PORT=str(port), LOG_FORMAT="json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status, body = wait_for_health(port)
        assert status == 200, body
        assert body["status"] == "ok"
        assert body["mode"] == "paper"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read()
        assert b"polyd_build_info" in text
        # States are exported from the start, not only after their first change.
        assert b'polyd_breaker_state{breaker="venue"} 0.0' in text
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert code == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    events = [json.loads(x)["event"] for x in err.splitlines() if x.startswith("{")]
    assert "daemon_ready" in events
    assert events[-1] == "daemon_stopped"
    applied = sqlite3.connect(db).execute("SELECT version FROM schema_migrations").fetchall()
    assert applied == [(m.version,) for m in load_migrations()]


def test_daemon_exits_1_on_a_fatal_start_up_error(tmp_path: Path) -> None:
    # A database file that is not a database: a human must look at it (a taken port is exit 3,
    # see test_single_writer.py). The daemon must exit, not hang on the connection's thread.
    db = tmp_path / "f.db"
    db.write_bytes(b"not a database; " * 64)
    env = clean_env(DB_PATH=str(db), HTTP_PORT=str(free_port()), LOG_FORMAT="json")
    res = run_cli("--env-file", "none", env=env, timeout=30)
    assert res.returncode == 1
    events = [json.loads(x) for x in res.stderr.splitlines() if x.startswith("{")]
    assert [e["event"] for e in events if e["level"] == "error"] == ["fatal_error"]
    assert f"cannot open the database {db}" in events[-1]["error"]


class Crasher:
    name = "crasher"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError("strategy bug")


async def no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


async def test_supervisor_restarts_a_crashed_strategy_and_counts_it() -> None:
    metrics, health = Metrics(), Health(mode="paper", version="0")
    sup = StrategySupervisor(
        metrics=metrics, health=health, max_restarts=5, window_s=60, sleep=no_sleep
    )
    strat = Crasher(crashes=2)
    await sup.run(strat)
    assert strat.runs == 3
    assert metrics.strategy_restarts_total.labels("crasher")._value.get() == 2
    health.phase = health.phase.RUNNING
    assert (await health.evaluate())[0] == "ok"


async def test_supervisor_halts_a_crash_looping_strategy_and_degrades_health() -> None:
    metrics, health = Metrics(), Health(mode="paper", version="0")
    sup = StrategySupervisor(
        metrics=metrics,
        health=health,
        max_restarts=3,
        window_s=60,
        sleep=no_sleep,
        backoff=lambda: Backoff(0.01, 0.02),
    )
    strat = Crasher(crashes=100)
    await sup.run(strat)
    assert strat.runs == 4
    assert sup.states["crasher"].halted
    health.phase = health.phase.RUNNING
    status, body = await health.evaluate()
    assert status == "degraded"
    assert body["checks"]["strategy:crasher"]["ok"] is False


async def test_supervisor_propagates_cancellation() -> None:
    class Forever:
        name = "forever"

        async def run(self) -> None:
            await asyncio.Event().wait()

    sup = StrategySupervisor(
        metrics=Metrics(), health=Health(mode="paper", version="0"), max_restarts=1, window_s=1
    )
    task = asyncio.create_task(sup.run(Forever()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.states["forever"].running is False
