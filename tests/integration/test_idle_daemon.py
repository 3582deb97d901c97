"""A daemon with no strategy enabled says so as it starts and in `/health`, and a misspelled
setting in its environment is logged as it starts: neither is silent."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import PYTHON, ROOT, clean_env, free_port


def test_no_strategy_is_a_start_warning_and_a_health_detail(tmp_path: Path) -> None:
    port = free_port()
    nowhere = "127.0.0.1:9"
    env = clean_env(
        DB_PATH=str(tmp_path / "polyd.db"),
        HTTP_PORT=str(port),
        LOG_FORMAT="json",
        CLOB_HOST=f"http://{nowhere}",
        GAMMA_API_URL=f"http://{nowhere}",
        MARKET_WS_URL=f"ws://{nowhere}/ws/market",
        RISK_DAILY_LOSS_LIMT="50",
    )
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    body = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert body is not None, err[-2000:]
    assert body["status"] == "ok"
    idle = body["checks"]["strategies"]
    assert idle["ok"] is True
    assert idle["detail"].startswith("no strategy is enabled (SNIPER_RULES_PATH unset, "), idle
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    warned = [(e["event"], e.get("detail")) for e in events if e.get("level") == "warning"]
    assert ("no_strategy_enabled", idle["detail"]) in warned
    assert (
        "unknown_setting",
        "environment: unknown key RISK_DAILY_LOSS_LIMT (did you mean RISK_DAILY_LOSS_LIMIT?)",
    ) in warned
