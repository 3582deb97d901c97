"""`python -m orchestrator --demo`: live against the in-process simulator, healthy, clean exit,
and its books equal the simulator's ledger: fills (token, side, price, size, fee), fees and
positions (`ledger_check`; the taker fee per leg, https://docs.polymarket.com/trading/fees)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

from tests.helpers import PYTHON, ROOT, TEST_PRIVATE_KEY, clean_env, free_port


def test_demo_runs_healthy_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    # A real-looking key in the environment must not leak into the demo: it makes its own.
    env = clean_env(HTTP_PORT=str(port), LOG_FORMAT="json", PRIVATE_KEY=TEST_PRIVATE_KEY)
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--demo", "--duration", "20", "--speed", "3"],
        cwd=tmp_path,  # the demo writes data/demo/ under the working directory
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    statuses: list[str] = []
    try:
        deadline = time.monotonic() + 18
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    statuses.append(json.loads(r.read())["status"])
            except urllib.error.HTTPError as e:
                statuses.append(json.loads(e.read())["status"])
            except OSError:
                pass
            time.sleep(0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "ok" in statuses, statuses
    banner = json.loads(out.splitlines()[0])
    assert banner["demo"].startswith("polyd live")
    assert f"http://127.0.0.1:{port}/health" in out
    assert "=== polyd demo summary ===" in out
    assert TEST_PRIVATE_KEY[2:] not in out + err
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert any(e.get("event") == "daemon_ready" for e in events)
    assert (tmp_path / "data" / "demo" / "polyd-demo.db").exists()
    # The demo's fee markets charged our taker fills, and the daemon booked exactly that.
    check = re.search(
        r"^ledger check: (\d+) fills, fees ([0-9.]+) pUSD, positions (\d+) tokens — (.*)$",
        out,
        re.MULTILINE,
    )
    assert check is not None, out[-3000:]
    assert check.group(4) == "match", check.group(0)
    assert int(check.group(1)) > 0 and Decimal(check.group(2)) > 0, check.group(0)
