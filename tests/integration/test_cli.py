"""The operator CLI against a running daemon (a subprocess, paper mode) and its database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from models import UNATTRIBUTED, Fill, OrderStatus, OrderType, Side
from storage import Database, Repositories
from tests.harness import SimProcess
from tests.helpers import PYTHON, ROOT, clean_env, free_port, make_order, run_cli

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_cli")

TOKEN = "cli-test-control-token-0123456789"
TOKEN_A, TOKEN_B = "7" * 20 + "11", "8" * 20 + "22"


async def seed(db_path: Path) -> dict[str, str]:
    """Journal three orders (filled, live, rejected), the filled one's fill and a manual fill."""
    async with Database(db_path) as db:
        repos = Repositories.over(db)
        filled = make_order(token_id=TOKEN_A, price="0.42", order_type=OrderType.FOK)
        live = make_order(strategy="copy", token_id=TOKEN_B, price="0.30", size="5")
        rejected = make_order(strategy="copy", token_id=TOKEN_B, price="0.31", size="5")
        await repos.orders.record(filled, venue_order_id="0xaaa1", payload_hash="h1")
        await repos.orders.transition(
            filled.client_order_id, OrderStatus.FILLED, size_matched=Decimal("10")
        )
        await repos.fills.record(
            Fill(
                trade_id="t1",
                venue_order_id="0xaaa1",
                client_order_id=filled.client_order_id,
                token_id=TOKEN_A,
                side=Side.BUY,
                price=Decimal("0.42"),
                size=Decimal("10"),
            )
        )
        # A trade made outside the daemon on the same account: no order of ours explains it.
        await repos.fills.record(
            Fill(
                trade_id="t9",
                venue_order_id="0xmanual",
                token_id=TOKEN_B,
                side=Side.BUY,
                price=Decimal("0.20"),
                size=Decimal("3"),
            )
        )
        await repos.orders.record(live, venue_order_id="0xbbb2", payload_hash="h2")
        await repos.orders.transition(live.client_order_id, OrderStatus.LIVE)
        await repos.orders.record(rejected, status=OrderStatus.REJECTED, detail="risk")
    return {
        "filled": filled.client_order_id,
        "live": live.client_order_id,
        "rejected": rejected.client_order_id,
    }


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Running:
    port: int
    db: Path
    ids: dict[str, str]
    hook: Webhook
    proc: subprocess.Popen[str]

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            "DB_PATH": str(self.db),
            "HTTP_PORT": str(self.port),
            "CONTROL_TOKEN": TOKEN,
        }
        base.update(extra)
        return clean_env(**{k: v for k, v in base.items() if v != ""})


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = run_cli(*args, "--env-file", "none", env=env, timeout=60)
    assert TOKEN not in res.stdout + res.stderr  # never print a secret
    return res


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("cli")
    db = folder / "polyd.db"
    ids = asyncio.run(seed(db))
    port = free_port()
    # The daemon's market feed watches every held token: give it a venue that answers.
    sim = SimProcess(workdir=folder, scenario=None).start()
    proc = subprocess.Popen(
        [PYTHON, "-m", "orchestrator", "--env-file", "none"],
        cwd=ROOT,
        env=clean_env(
            MODE="paper",
            DB_PATH=str(db),
            HTTP_PORT=str(port),
            LOG_FORMAT="json",
            CONTROL_TOKEN=TOKEN,
            NOTIFY_WEBHOOK_URL=webhook.url,
            NOTIFY_MIN_INTERVAL_S="0",
            CLOB_HOST=sim.clob_url,
            GAMMA_API_URL=sim.gamma_url,
            DATA_API_URL=sim.data_url,
            MARKET_WS_URL=sim.market_ws_url,
            USER_WS_URL=sim.user_ws_url,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Running(port=port, db=db, ids=ids, hook=webhook, proc=proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except urllib.error.HTTPError:
                pass
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "daemon did not answer /health"
            time.sleep(0.1)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        sim.stop()
        _, err = proc.communicate()
        assert TOKEN not in err


def test_status_prints_health_state_and_counts(daemon: Running) -> None:
    res = cli("status", env=daemon.env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "daemon:        ok (HTTP 200)" in res.stdout
    assert "FILLED=1, LIVE=1, REJECTED=1 (open 1" in res.stdout
    assert "fills:         2" in res.stdout
    assert "executor" in res.stdout  # the health checks table
    # Positions per strategy, the manual holding as unattributed, and what that means.
    lines = res.stdout.splitlines()
    assert any(line.split()[:2] == ["sniper", "1"] and "4.20" in line for line in lines)
    assert any(line.split()[:3] == [UNATTRIBUTED, "1", "0.60"] for line in lines)
    assert f"{UNATTRIBUTED}: holdings no order of ours explains" in res.stdout
    js = cli("status", "--json", env=daemon.env())
    body = json.loads(js.stdout)
    assert body["daemon"]["status"] == "ok"
    assert body["daemon"]["mode"] == "paper"
    assert body["database"]["orders_by_status"] == {"FILLED": 1, "LIVE": 1, "REJECTED": 1}
    assert body["database"]["open_orders"] == 1
    assert body["database"]["positions"] == 2
    assert body["database"]["by_strategy"] == {
        "sniper": {
            "positions": 1,
            "cost_basis": "4.20",
            "realized_pnl": "0",
            "fees_paid": "0",
            "redeemable": "0",
        },
        UNATTRIBUTED: {
            "positions": 1,
            "cost_basis": "0.60",
            "realized_pnl": "0",
            "fees_paid": "0",
            "redeemable": "0",
        },
    }


def test_positions_lists_the_filled_position(daemon: Running) -> None:
    res = cli("positions", env=daemon.env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split()[:5] == [
        "strategy",
        "market",
        "outcome",
        "size",
        "avg",
    ]
    assert f"token {TOKEN_A[:13]}…" in res.stdout  # no name learned for the seeded tokens
    assert "2 positions" in res.stdout
    assert f"realized PnL 0 pUSD (sniper 0, {UNATTRIBUTED} 0)" in res.stdout
    assert f"{UNATTRIBUTED}: holdings no order of ours explains" in res.stdout
    rows = json.loads(cli("positions", "--json", env=daemon.env()).stdout)
    assert rows == [
        {
            "strategy": "sniper",
            "token_id": TOKEN_A,
            "market": "",  # the daemon has learned no name for a token no venue lists
            "outcome": "",
            "slug": "",
            "size": "10",
            "avg_cost": "0.42",
            "cost_basis": "4.20",
            "mark": rows[0]["mark"],
            "value": rows[0]["value"],
            "unrealized_pnl": rows[0]["unrealized_pnl"],
            "realized_pnl": "0",
            "pnl": rows[0]["pnl"],
            "fees_paid": "0",  # the test's market charges no fee
            "payout": None,  # its market has not resolved
            "updated_at": rows[0]["updated_at"],
            "daemon": "default",  # the daemon that journaled the strategy's latest order
            "redeemable": "0",
        },
        {
            "strategy": UNATTRIBUTED,
            "token_id": TOKEN_B,
            "market": "",
            "outcome": "",
            "slug": "",
            "size": "3",
            "avg_cost": "0.20",
            "cost_basis": "0.60",
            "mark": rows[1]["mark"],
            "value": rows[1]["value"],
            "unrealized_pnl": rows[1]["unrealized_pnl"],
            "realized_pnl": "0",
            "pnl": rows[1]["pnl"],
            "fees_paid": "0",
            "payout": None,
            "updated_at": rows[1]["updated_at"],
            "daemon": None,  # the account's holdings, no daemon's
            "redeemable": "0",
        },
    ]


def test_orders_newest_first_open_only_and_limit(daemon: Running) -> None:
    res = cli("orders", env=daemon.env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["created", "strategy", "market"]
    assert [ln.split()[-1] for ln in lines[2:]] == ["REJECTED", "LIVE", "FILLED"]
    every = json.loads(cli("orders", "--json", env=daemon.env()).stdout)
    assert [o["client_order_id"] for o in every] == [
        daemon.ids["rejected"],
        daemon.ids["live"],
        daemon.ids["filled"],
    ]
    open_only = json.loads(cli("orders", "--open", "--json", env=daemon.env()).stdout)
    assert [o["client_order_id"] for o in open_only] == [daemon.ids["live"]]
    one = json.loads(cli("orders", "--limit", "1", "--json", env=daemon.env()).stdout)
    assert len(one) == 1
    sniper = json.loads(cli("orders", "--strategy", "sniper", "--json", env=daemon.env()).stdout)
    assert [o["strategy"] for o in sniper] == ["sniper"]


def test_halt_then_resume_through_the_control_routes(daemon: Running) -> None:
    res = cli("halt", "--reason", "operator test", env=daemon.env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "HALTED" in res.stdout
    status = cli("status", "--json", env=daemon.env())
    body = json.loads(status.stdout)
    assert status.returncode == 1  # halted: /health is degraded
    assert body["daemon"]["status"] == "degraded"
    assert body["database"]["trading_state"] == "HALTED"
    assert body["database"]["state_reason"] == "operator test"
    # The notifier watched the halt happen and told the webhook.
    deadline = time.monotonic() + 10
    while not any(m["kind"] == "halt" for m in daemon.hook.received):
        assert time.monotonic() < deadline, daemon.hook.received
        time.sleep(0.1)
    halt = next(m for m in daemon.hook.received if m["kind"] == "halt")
    assert halt["text"] == "trading halted: operator test"
    res = cli("resume", "--json", env=daemon.env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["trading_state"] == "ACTIVE"
    assert cli("status", env=daemon.env()).returncode == 0


def test_reduce_then_resume_through_the_control_routes(daemon: Running) -> None:
    res = cli("reduce", "--reason", "winding down", "--json", env=daemon.env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["trading_state"] == "REDUCING"
    body = json.loads(cli("status", "--json", env=daemon.env()).stdout)
    assert body["database"]["trading_state"] == "REDUCING"
    assert body["database"]["state_reason"] == "winding down"
    res = cli("resume", "--json", env=daemon.env())
    assert json.loads(res.stdout)["trading_state"] == "ACTIVE"


def test_cancel_all_reports_the_count(daemon: Running) -> None:
    res = cli("cancel-all", env=daemon.env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("cancel-all: canceled ")
    body = json.loads(cli("cancel-all", "--json", env=daemon.env()).stdout)
    assert isinstance(body["canceled"], int)


def test_wrong_token_is_refused_with_401_and_not_echoed(daemon: Running) -> None:
    wrong = "wrong-token-abcdefghijklmnop"
    res = cli("halt", env=daemon.env(CONTROL_TOKEN=wrong))
    assert res.returncode == 1
    assert "401" in res.stderr
    assert wrong not in res.stdout + res.stderr
    assert json.loads(cli("status", "--json", env=daemon.env()).stdout)["daemon"]["status"] == (
        "ok"
    )


def test_unset_token_is_a_configuration_error(daemon: Running) -> None:
    res = cli("resume", env=daemon.env(CONTROL_TOKEN=""))
    assert res.returncode == 2
    assert "CONTROL_TOKEN is not set" in res.stderr


def test_commands_say_when_the_daemon_is_not_running(daemon: Running) -> None:
    env = daemon.env(HTTP_PORT=str(free_port()))
    res = cli("halt", env=env)
    assert res.returncode == 3
    assert "not running" in res.stderr
    status = cli("status", env=env)
    assert status.returncode == 3
    assert "NOT RUNNING" in status.stdout
    assert "LIVE=1" in status.stdout  # the database part still answers
    assert cli("orders", env=env).returncode == 0  # reads need no daemon


def test_reads_never_create_or_write_the_database(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    env = clean_env(DB_PATH=str(missing), HTTP_PORT=str(free_port()))
    res = cli("orders", env=env)
    assert res.returncode == 4
    assert "no database" in res.stderr
    assert not missing.exists()
    db = tmp_path / "ro.db"
    asyncio.run(seed(db))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    env = clean_env(DB_PATH=str(db), HTTP_PORT=str(free_port()))
    for args in (("orders",), ("positions",), ("status", "--json")):
        cli(*args, env=env)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
