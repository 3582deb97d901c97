"""Ctrl-C (SIGINT) at any moment of `python -m orchestrator` ends it with exit 0 and no traceback:
while polyd's modules import (the first half second), while the daemon builds and reconciles,
once it runs, and while it stops."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PYTHON, ROOT, clean_env

SNIPER = """
[[rules]]
name = "idle"
min_price = "0.90"
max_price = "0.97"
min_size = "5"
max_notional = "20"
[rules.select]
token_ids = ["71321045679252212594626385532706912750332728571942532289631379312455583992563"]
"""


def start(tmp_path: Path) -> subprocess.Popen[str]:
    """The daemon in paper mode with an idle rule, its venue URLs pointed at a closed port, so
    it starts and runs without the network."""
    rules = tmp_path / "sniper.toml"
    rules.write_text(SNIPER)
    nowhere = "127.0.0.1:9"  # discard: nothing listens
    env = clean_env(
        DB_PATH=str(tmp_path / "polyd.db"),
        HTTP_PORT="0",
        LOG_FORMAT="json",
        SNIPER_RULES_PATH=str(rules),
        COPY_ENABLED="false",
        CLOB_HOST=f"http://{nowhere}",
        GAMMA_API_URL=f"http://{nowhere}",
        DATA_API_URL=f"http://{nowhere}",
        MARKET_WS_URL=f"ws://{nowhere}/ws/market",
        USER_WS_URL=f"ws://{nowhere}/ws/user",
        PYTHONFAULTHANDLER="1",  # a hung daemon's threads are dumped on SIGABRT
    )
    return subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def polyd_code_running(proc: subprocess.Popen[str], limit_s: float = 30) -> None:
    """Wait until the process runs polyd's own code: `orchestrator` takes SIGINT over and then
    imports asyncio, whose C part (`_asyncio`) shows in the process's memory map once loaded.
    Before that the interpreter starts up (site, runpy), which under load alone can take longer
    than 0.1 s, and a Ctrl-C there is Python's own KeyboardInterrupt, before any line of polyd."""
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "_asyncio" in maps.read_text():
                return
        except OSError:
            return  # no /proc here: count from the start
        time.sleep(0.002)


def interrupt(proc: subprocess.Popen[str], after_s: float) -> tuple[int, str]:
    polyd_code_running(proc)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # Still running 30 s after the Ctrl-C: show where it was (py-spy is not at hand, so
        # SIGABRT's faulthandler dump, enabled for the daemon by PYTHONFAULTHANDLER).
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"no exit 30 s after SIGINT; the daemon's stderr:\n{err[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


# Counted from polyd's first imports (`polyd_code_running`): the imports take most of half a
# second, then settings, storage and the sidecar follow.
@pytest.mark.parametrize("after_s", [0.0, 0.05, 0.2, 0.4, 0.7])
def test_ctrl_c_during_start_up_exits_0_without_a_traceback(tmp_path: Path, after_s: float) -> None:
    code, err = interrupt(start(tmp_path), after_s)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert "KeyboardInterrupt" not in err, err[-2000:]


def read_until(proc: subprocess.Popen[str], event: str, seen: list[str]) -> None:
    """Read the daemon's log lines into `seen` until one is `event` (30 s at most)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if f'"{event}"' in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"no {event} from the daemon: " + "".join(seen[-20:]))


def test_ctrl_c_once_running_stops_gracefully_with_exit_0(tmp_path: Path) -> None:
    proc = start(tmp_path)
    seen: list[str] = []
    read_until(proc, "daemon_ready", seen)
    code, err = interrupt(proc, 0.2)
    err = "".join(seen) + err
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    assert '"stop_requested"' in err and "SIGINT" in err
    assert '"daemon_stopped"' in err


def test_ctrl_c_twice_while_stopping_still_exits_0(tmp_path: Path) -> None:
    proc = start(tmp_path)
    seen: list[str] = []
    read_until(proc, "daemon_ready", seen)
    proc.send_signal(signal.SIGINT)
    read_until(proc, "stop_requested", seen)  # stopping now: the second Ctrl-C lands in it
    code, err = interrupt(proc, 0.0)
    err = "".join(seen) + err
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert '"daemon_stopped"' in err
