"""The sd_notify protocol against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PYTHON, ROOT, clean_env, free_port, run_cli


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # A short path: unix socket paths are limited to 108 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn") as d:
        path = str(Path(d) / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        try:
            yield sock, path
        finally:
            sock.close()


def receive_until(
    sock: socket.socket, predicate: str, timeout: float, log: list[tuple[float, str]]
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        log.append((time.monotonic(), data))
        if predicate in data.splitlines():
            return True
    return False


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_daemon_under_fake_systemd_sends_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none"],
        cwd=ROOT,
        env=clean_env(
            MODE="paper",
            DB_PATH=str(tmp_path / "sd.db"),
            HTTP_PORT=str(port),
            LOG_FORMAT="json",
            NOTIFY_SOCKET=path,
            WATCHDOG_USEC="400000",  # pings every 0.2 s
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[tuple[float, str]] = []
    try:
        assert receive_until(sock, "READY=1", 30, log), log
        # READY=1 comes only once start-up is done: /health already says ok.
        status, body = health(port)
        assert status == 200 and body["status"] == "ok", body
        ready = next(m for _, m in log if "READY=1" in m.splitlines())
        assert any(line.startswith("STATUS=running") for line in ready.splitlines())
        # Watchdog pings began before READY (start-up is covered) and keep coming.
        assert any(m == "WATCHDOG=1" for _, m in log)
        t0 = time.monotonic()
        pings: list[tuple[float, str]] = []
        while time.monotonic() - t0 < 1.2:
            receive_until(sock, "WATCHDOG=1", 0.5, pings)
        count = sum(1 for _, m in pings if m == "WATCHDOG=1")
        assert 3 <= count <= 12, pings
        proc.send_signal(signal.SIGTERM)
        assert receive_until(sock, "STOPPING=1", 10, log), log
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_daemon_without_notify_socket_runs_as_before(tmp_path: Path) -> None:
    env = clean_env(MODE="paper", DB_PATH=str(tmp_path / "n.db"), HTTP_PORT="0", LOG_FORMAT="json")
    res = run_cli("--env-file", "none", "--duration", "1", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sd_notify_failed" not in res.stderr
    assert "sd_watchdog_started" not in res.stderr


def test_sigterm_stops_promptly_even_with_a_pending_duration_timer(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none", "--duration", "300"],
        cwd=ROOT,
        env=clean_env(
            MODE="paper",
            DB_PATH=str(tmp_path / "d.db"),
            HTTP_PORT="0",
            LOG_FORMAT="json",
            NOTIFY_SOCKET=path,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log: list[tuple[float, str]] = []
    try:
        assert receive_until(sock, "READY=1", 30, log), log
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
