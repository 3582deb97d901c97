"""One daemon per database, and a taken sidecar port, as an operator meets them: real daemon
processes (`tests.harness.DaemonProcess`) live against the simulator.

A second daemon on a database another one holds exits 3 at once with one line naming the
holder's pid and the database, and writes nothing; the first keeps trading, and the read-only
operator commands keep working beside it. The lock dies with its holder: after `kill -9` the
next daemon starts on the same database. A daemon whose `HTTP_PORT` is taken exits 3 with one
line naming the address, and no traceback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from tests.harness import DaemonProcess, SimProcess, sniper_rules, wait_until
from tests.helpers import PYTHON, ROOT, clean_env, run_cli

# Events the daemon logs only once it holds the database (storage, executor, strategies).
LATER_START_UP = ("migration_applied", "executor_started", "sniper_built", "copy_trader_built")


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _exit_within(d: DaemonProcess, timeout: float) -> tuple[int, float]:
    assert d.proc is not None
    t0 = time.monotonic()
    code = d.proc.wait(timeout=timeout)
    d.exit_codes.append(code)
    d.stop()  # joins the output drains
    return code, time.monotonic() - t0


def test_second_daemon_exits_3_naming_the_holder_and_the_first_keeps_trading(
    tmp_path: Path,
) -> None:
    with SimProcess(workdir=tmp_path, seed=11) as sim:
        rules = sniper_rules(sim, tmp_path)
        first = DaemonProcess(sim, tmp_path, name="first", extra=rules)
        # The same settings (key, database) on another port: a second daemon on the same database.
        second = DaemonProcess(
            sim,
            tmp_path,
            name="second",
            private_key=first.private_key,
            collateral=None,
            extra={**rules, "db_path": first.db_path},
        )
        second.db_path = first.db_path
        try:
            first.start().wait_ready()
            assert first.proc is not None
            wait_until(lambda: first.order_count() > 0, 60, what="the first daemon's orders")

            second.start()
            code, _ = _exit_within(second, 60)
            out = second.stderr(1)
            assert code == 3, out
            lines = _lines(out)
            assert len(lines) == 1, out
            event = json.loads(lines[0])
            assert event["event"] == "already_running"
            assert f"pid {first.proc.pid}" in event["error"]
            assert str(first.db_path) in event["error"]
            assert "Traceback" not in out

            # The first daemon keeps trading: its orders still reach the venue afterwards.
            before = first.order_count()
            wait_until(lambda: first.order_count() > before, 60, what="an order after the refusal")
            assert first.health()[0] == 200

            # Read-only operator commands work while the daemon runs (they take no lock).
            for cmd in ("positions", "orders", "status"):
                res = run_cli(cmd, "--json", "--env-file", "none", env=first.env)
                assert res.returncode == 0, (cmd, res.stdout, res.stderr)
            assert json.loads(
                run_cli("status", "--json", "--env-file", "none", env=first.env).stdout
            )["daemon"]["running"]

            # kill -9 leaves no stale lock: the refused daemon now starts on the same database.
            first.kill9()
            second.start()
            second.wait_ready()
            assert "already_running" not in second.event_names(2)
            wait_until(lambda: second.order_count() > before, 60, what="the next daemon's orders")
            assert second.sigterm() == 0
        finally:
            second.stop()
            first.stop()


def test_second_daemon_is_refused_before_any_venue_or_database_work(tmp_path: Path) -> None:
    """The refusal comes first: nothing of the later start-up (storage, executor, strategies)
    appears in the second daemon's log."""
    with SimProcess(workdir=tmp_path, seed=12, scenario=None) as sim:
        first = DaemonProcess(sim, tmp_path, name="first")
        second = DaemonProcess(sim, tmp_path, name="second", db_path=first.db_path)
        try:
            first.start().wait_ready()
            second.start()
            code, _ = _exit_within(second, 30)
            assert code == 3, second.stderr()
            log = second.stdout_path.read_text() + second.stderr()
            for later in LATER_START_UP:
                assert later not in log, f"{later} logged before the refusal"
            # The control: the first daemon's log does name them (so their absence means something).
            assert "executor_started" in first.stdout_path.read_text() + first.stderr()
        finally:
            second.stop()
            first.stop()


def test_taken_sidecar_port_exits_3_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = clean_env(
            MODE="paper",
            DB_PATH=str(tmp_path / "polyd.db"),
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            LOG_FORMAT="json",
            SNIPER_ENABLED="false",
            COPY_ENABLED="false",
        )
        res = subprocess.run(
            [PYTHON, "-m", "orchestrator", "--env-file", "none"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    errors = [e for e in map(json.loads, _lines(res.stderr)) if e.get("level") == "error"]
    assert [e["event"] for e in errors] == ["already_running"], res.stderr
    assert f"127.0.0.1:{port}" in errors[0]["error"]
    assert "HTTP_PORT" in errors[0]["error"]
