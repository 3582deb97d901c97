"""The demo can be operated: the commands it prints work as printed from a second terminal
(`status`, `positions`, `orders`, `trades`, `pnl`, `halt`, `resume`, and the `--demo`
shorthand), the printed web console answers with the printed token, the views name every market
and show the daemon's account, `doctor --demo` passes against it, a Ctrl-C then stops it
cleanly; `python -m simulator --port N` serves on fixed ports."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.harness import HarnessError, wait_until
from tests.helpers import PYTHON, ROOT, clean_env, free_port

HEAD = "=== operate this demo from a second terminal, in "
VIEW_SETTLE_S = 30.0  # per view: a loaded machine stretches discovery and the first snapshots


def read_block(proc: subprocess.Popen[str], limit_s: float = 60) -> list[str]:
    """The demo's stdout from its operating block's heading to its `(or, ...)` line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + limit_s
    block: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(HEAD) or block:
            block.append(line.rstrip("\n"))
        if line.startswith("(or, without the export: "):
            return block
    raise AssertionError(f"no operating block in the demo's output: {block}")


def assert_console_answers(url: str, token: str) -> None:
    """The printed console address serves the page, and its data with the printed token."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert b"<title>polyd console</title>" in r.read()
    req = urllib.request.Request(url + "api/board", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        board = json.loads(r.read())
    assert board["status"]["trading_state"] in ("ACTIVE", "HALTED")
    assert "positions" in board and "trades" in board


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_printed_commands_operate_the_demo_unchanged(tmp_path: Path) -> None:
    port = free_port()
    # As in a fresh terminal: nothing of polyd's in the environment; the checkout importable.
    env = {**clean_env(HTTP_PORT=str(port)), "PYTHONPATH": str(ROOT)}
    demo = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--demo", "--duration", "120"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        block = read_block(demo)
        assert demo.stdout is not None
        console = demo.stdout.readline().strip()
        folder = Path(block[0].removeprefix(HEAD).removesuffix(" ===").strip("'"))
        export, commands = block[1], block[2:-1]
        assert folder == tmp_path
        assert export.startswith("export DB_PATH=")
        assert f"HTTP_PORT={port} " in export and "CONTROL_TOKEN=" in export
        names = [c.rsplit(" ", 1)[1] for c in commands]
        url = f"http://127.0.0.1:{port}/ui/"
        assert console.startswith(f"web console: {url} "), console
        token = export.split("CONTROL_TOKEN=", 1)[1].split()[0].strip("'")
        assert_console_answers(url, token)
        assert {"status", "positions", "orders", "trades", "pnl", "halt", "resume"} <= set(names)
        second = {**clean_env(), "PYTHONPATH": str(ROOT)}  # the second terminal
        results = {}
        for command in commands:
            res = shell(f"{export}\n{command}", folder, second)
            results[command.rsplit(" ", 1)[1]] = res
            assert res.returncode == 0, (command, res.stdout, res.stderr)
        assert "daemon:        ok (HTTP 200)" in results["status"].stdout
        assert "trading state is now HALTED" in results["halt"].stdout
        assert "trading state is now ACTIVE" in results["resume"].stdout
        shorthand = block[-1].removeprefix("(or, without the export: ").removesuffix(")")
        res = shell(shorthand, folder, second)
        assert res.returncode == 0, res.stderr
        assert "daemon:        ok (HTTP 200)" in res.stdout
        assert_views_name_the_markets(shorthand, folder, second)
        # The demo's account at the simulator passes every doctor check.
        doctor = shell(shorthand.replace(" status --demo", " doctor --demo"), folder, second)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert doctor.stdout.splitlines()[-1] == "all checks passed"
        assert "✔ rule demo-near-close: " in doctor.stdout
        as_json = shell(shorthand + " --json", folder, second)
        assert json.loads(as_json.stdout)["db_path"] == str(tmp_path / "data/demo/polyd-demo.db")
        demo.send_signal(signal.SIGINT)  # Ctrl-C in the demo's terminal
        out, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out[-2000:]
    assert "=== polyd demo summary ===" in out
    # Once the demo has stopped, `--demo` still reads its database and says it is not running.
    after = shell(shorthand, folder, second)
    assert after.returncode == 3, after.stdout + after.stderr
    assert "daemon:        NOT RUNNING" in after.stdout


def assert_views_name_the_markets(shorthand: str, folder: Path, env: dict[str, str]) -> None:
    """Once the demo has traded, every trade and position names its market (discovery names the
    sniper's, the resolver looks up the copied ones on Gamma), and `status` has the daemon's
    account snapshot: today's PnL against the limit, exposure, balance. Each view is polled until
    it shows that (a copy made a moment ago is named and marked a moment later), up to
    `VIEW_SETTLE_S`; a failure shows what the view last answered."""

    def view(name: str) -> Any:
        res = shell(shorthand.replace(" status --demo", f" {name} --demo --json"), folder, env)
        assert res.returncode in (0, 1), res.stdout + res.stderr  # status: 1 while degraded
        return json.loads(res.stdout)

    def settled(name: str, ok: Callable[[Any], bool]) -> Any:
        seen: list[Any] = []

        def read() -> bool:
            seen.append(view(name))
            return ok(seen[-1])

        try:
            wait_until(read, VIEW_SETTLE_S, interval=1.0, what=f"the {name} view")
        except HarnessError as e:
            raise AssertionError(f"{e}; it last showed: {seen[-1:]}") from e
        return seen[-1]

    trades = settled(
        "trades", lambda ts: bool(ts) and all(t["market"] and t["outcome"] for t in ts)
    )
    # A position copied a moment ago has no name or mark until Gamma and its book's first
    # snapshot have answered.
    settled(
        "positions",
        lambda ps: (
            bool(ps)
            and all(p["market"] for p in ps)
            and all(p["mark"] is not None for p in ps if Decimal(p["size"]) > 0)
        ),
    )

    def account_ready(st: Any) -> bool:
        account = st.get("account") or {}  # none until the daemon's first snapshot
        keys = ("pnl_today", "daily_loss_limit", "exposure", "balance")
        return all(account.get(k) is not None for k in keys) and (
            account.get("feeds", {}).get("feed:market") is True
        )

    settled("status", account_ready)
    table = shell(shorthand.replace(" status --demo", " trades --demo"), folder, env).stdout
    assert trades[0]["market"][:20] in table


def test_demo_flag_without_a_demo_says_so(tmp_path: Path) -> None:
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [PYTHON, "-m", "orchestrator", "status", "--demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3
    assert res.stderr.strip() == (
        "polyd status: no demo has run from this folder (data/demo/operate.env is missing); "
        "start one with `python -m orchestrator --demo`"
    )


def test_simulator_serves_on_the_ports_asked_for(tmp_path: Path) -> None:
    port = free_port(count=5)  # the simulator listens on this one and the four after it
    sim = subprocess.Popen(
        [PYTHON, "-m", "simulator", "--port", str(port)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        urls = json.loads(sim.stdout.readline())
        clash = subprocess.run(
            [PYTHON, "-m", "simulator", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=30)
    finally:
        if sim.poll() is None:
            sim.kill()
    assert urls == {
        "clob_url": f"http://127.0.0.1:{port}",
        "gamma_url": f"http://127.0.0.1:{port + 1}",
        "geoblock_url": f"http://127.0.0.1:{port + 1}/api/geoblock",
        "data_url": f"http://127.0.0.1:{port + 2}",
        "market_ws_url": f"ws://127.0.0.1:{port + 3}/ws/market",
        "user_ws_url": f"ws://127.0.0.1:{port + 3}/ws/user",
        "rpc_url": f"http://127.0.0.1:{port + 4}",
        "relayer_url": f"http://127.0.0.1:{port + 4}/relayer",
    }
    assert sim.returncode == 0
    assert clash.returncode == 3, clash.stderr
    assert clash.stderr.startswith(f"simulator: cannot listen on ports {port}-{port + 3}: ")
    assert "Traceback" not in clash.stderr
