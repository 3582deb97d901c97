"""Security guarantees at the process level (secrets never leave: no log line, metric, health body,
exception or database row holds one) and the sidecar's promises.

One live daemon (subprocess, `tests/harness.py`) trades with both strategies against the simulator
with known secrets: a private key, configured CLOB API credentials and a control token. Then every
place a secret could leak is scanned: log output (exception texts included), `/metrics`,
`/health`, every column of every table of its database (and the raw database files), and the
operator CLI's `status|orders|positions --json` output. Each secret is looked for as given, and
the key also without `0x`, upper- and lower-case.

Also: the sidecar listens on loopback only; control routes refuse a missing or wrong bearer token
with 401 (compared with `hmac.compare_digest`); a group/world-readable `.env` draws a warning at
start-up; the audit log refuses UPDATE and DELETE on the daemon's real database.
"""

from __future__ import annotations

import ast
import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, SimProcess, demo_rules
from tests.helpers import ROOT, clean_env, free_port, run_cli

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_security")

RUN_S = 25.0


@dataclass
class Run:
    sim: SimProcess
    daemon: DaemonProcess
    secrets: dict[str, str]
    metrics: list[str]
    health: list[str]
    cli: dict[str, str]
    control: dict[str, tuple[int, str]]
    listen_addresses: list[str]


def _derive_creds(clob_url: str, key: str) -> tuple[str, str, str]:
    from py_clob_client_v2.client import ClobClient

    c = ClobClient(clob_url, 137, key=key).create_or_derive_api_key()
    return str(c.api_key), str(c.api_secret), str(c.api_passphrase)


def _get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def _post(url: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def _listen_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                addr, _, hexport = parts[1].partition(":")
                if int(hexport, 16) == port and parts[3] == "0A":  # 0A = LISTEN
                    out.append(addr)
    return out


def _variants(secrets: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in secrets.items():
        out[name] = value
        if name == "PRIVATE_KEY":
            bare = value.removeprefix("0x")
            out["PRIVATE_KEY (no 0x)"] = bare.lower()
            out["PRIVATE_KEY (upper)"] = bare.upper()
    return out


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in _variants(secrets).items() if value in text]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("security")
    with SimProcess(seed=11, scenario="demo", workdir=tmp) as sim:
        from eth_account import Account

        key = "0x" + bytes(Account.create().key).hex()
        api_key, api_secret, passphrase = _derive_creds(sim.clob_url, key)
        with DaemonProcess(
            sim,
            tmp,
            private_key=key,
            extra={
                "CLOB_API_KEY": api_key,
                "CLOB_API_SECRET": api_secret,
                "CLOB_API_PASSPHRASE": passphrase,
                "LOG_LEVEL": "DEBUG",
                **demo_rules(sim, tmp),
            },
        ) as d:
            d.wait_ready()
            secrets = {
                "PRIVATE_KEY": key,
                "CLOB_API_KEY": api_key,
                "CLOB_API_SECRET": api_secret,
                "CLOB_API_PASSPHRASE": passphrase,
                "CONTROL_TOKEN": d.token,
            }
            listen = _listen_addresses(d.port)
            metrics: list[str] = []
            health: list[str] = []
            control: dict[str, tuple[int, str]] = {}
            base = d.base_url
            deadline = time.monotonic() + RUN_S
            while time.monotonic() < deadline:  # bounded: one scrape a second
                metrics.append(_get(f"{base}/metrics")[1])
                health.append(_get(f"{base}/health")[1])
                time.sleep(1.0)
            control["missing"] = _post(f"{base}/halt", {})
            control["wrong"] = _post(f"{base}/halt", {"Authorization": "Bearer nope"})
            control["prefix"] = _post(f"{base}/halt", {"Authorization": f"Bearer {d.token[:-1]}"})
            control["basic"] = _post(f"{base}/halt", {"Authorization": f"Basic {d.token}"})
            control["right"] = _post(f"{base}/halt", {"Authorization": f"Bearer {d.token}"})
            control["resume"] = _post(f"{base}/resume", {"Authorization": f"Bearer {d.token}"})
            cli: dict[str, str] = {}
            for cmd in ("status", "orders", "positions"):
                p = run_cli(cmd, "--json", "--env-file", "none", env=d.env)
                cli[cmd] = f"rc={p.returncode}\n{p.stdout}\n{p.stderr}"
            code = d.sigterm()
            assert code == 0, d.stderr()[-3000:]
        yield Run(sim, d, secrets, metrics, health, cli, control, listen)


def test_daemon_traded_with_both_strategies(run: Run) -> None:
    orders = run.daemon.rows("SELECT strategy, COUNT(*) AS n FROM orders GROUP BY strategy")
    by = {r["strategy"]: r["n"] for r in orders}
    # The scan below means little over an idle daemon: both strategies must have traded.
    assert len(by) >= 2 and "copy" in by, by


def test_secrets_never_appear_in_logs_or_exception_texts(run: Run) -> None:
    logs = run.daemon.stderr()
    assert logs.strip(), "no log output captured"
    assert not _leaks(logs, run.secrets)


def test_secrets_never_appear_in_metrics_or_health(run: Run) -> None:
    assert run.metrics and run.health
    assert not _leaks("\n".join(run.metrics), run.secrets)
    assert not _leaks("\n".join(run.health), run.secrets)


def test_secrets_never_appear_in_any_database_row(run: Run) -> None:
    db = sqlite3.connect(f"file:{run.daemon.db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "audit_log" in tables and "orders" in tables
        found: list[str] = []
        for t in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{t}")')]
            for row in db.execute(f'SELECT * FROM "{t}"'):
                for col, value in zip(cols, row, strict=True):
                    text = (
                        value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                    )
                    found += [f"{t}.{col}: {name}" for name in _leaks(text, run.secrets)]
    finally:
        db.close()
    assert not found, found
    for path in run.daemon.db_path.parent.glob(run.daemon.db_path.name + "*"):
        raw = path.read_bytes().decode("latin-1")
        assert not _leaks(raw, run.secrets), path.name


def test_secrets_never_appear_in_cli_output(run: Run) -> None:
    for cmd, out in run.cli.items():
        assert out.startswith("rc=0"), out[:2000]
        assert not _leaks(out, run.secrets), cmd


def test_sidecar_listens_on_loopback_only(run: Run) -> None:
    assert run.listen_addresses, "the sidecar's listening socket was not found"
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert set(run.listen_addresses) <= loopback, run.listen_addresses


def test_control_routes_refuse_missing_or_wrong_tokens(run: Run) -> None:
    for case in ("missing", "wrong", "prefix", "basic"):
        status, body = run.control[case]
        assert status == 401, (case, status, body)
        assert run.secrets["CONTROL_TOKEN"] not in body
    assert run.control["right"][0] == 200, run.control["right"]
    assert json.loads(run.control["right"][1])["trading_state"] == "HALTED"
    assert run.control["resume"][0] == 200, run.control["resume"]
    refused = [e for e in run.daemon.log_events() if e.get("event") == "control_refused"]
    assert len(refused) >= 4


def test_control_token_is_compared_in_constant_time() -> None:
    tree = ast.parse((ROOT / "observability" / "sidecar.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "compare_digest"
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "hmac"
    ]
    assert calls, "the bearer token must be checked with hmac.compare_digest"
    compares = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare)
        and any("token" in ast.unparse(x).lower() for x in [n.left, *n.comparators])
        and any(isinstance(op, ast.Eq | ast.NotEq) for op in n.ops)
    ]
    assert not compares, [ast.unparse(c) for c in compares]


def test_audit_log_refuses_update_and_delete_on_the_daemons_database(run: Run) -> None:
    db = sqlite3.connect(run.daemon.db_path)
    try:
        n = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
        assert n > 0
        # Matched on the trigger's words: "database is locked" is a DatabaseError too.
        with pytest.raises(sqlite3.DatabaseError, match="audit_log is append-only"):
            db.execute("UPDATE audit_log SET id = id")
        with pytest.raises(sqlite3.DatabaseError, match="audit_log is append-only"):
            db.execute("DELETE FROM audit_log")
        db.rollback()
        assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == n
    finally:
        db.close()


def test_group_readable_env_file_draws_a_warning_at_start_up(run: Run, tmp_path: Path) -> None:
    env_file = tmp_path / "polyd.env"
    sim = run.sim
    env_file.write_text(
        "\n".join(
            [
                "MODE=paper",
                f"CLOB_HOST={sim.clob_url}",
                f"GAMMA_API_URL={sim.gamma_url}",
                f"DATA_API_URL={sim.data_url}",
                f"MARKET_WS_URL={sim.market_ws_url}",
                f"USER_WS_URL={sim.user_ws_url}",
                f"DB_PATH={tmp_path / 'env.db'}",
                f"HTTP_PORT={free_port()}",
                "LOG_FORMAT=json",
                "SNIPER_ENABLED=false",
                "COPY_ENABLED=false",
                "CONTROL_TOKEN=env-file-token-never-printed",
            ]
        )
        + "\n"
    )
    env_file.chmod(0o644)
    p = run_cli("--env-file", str(env_file), "--duration", "2", env=clean_env())
    events = []
    for line in (p.stdout + p.stderr).splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    warned = [e for e in events if e.get("event") == "env_file_permissions"]
    assert warned, (p.returncode, p.stderr[-2000:])
    assert warned[0]["level"] == "warning"
    assert "chmod 600" in warned[0]["detail"]
    assert "env-file-token-never-printed" not in p.stdout + p.stderr
    env_file.chmod(0o600)
    p2 = run_cli("--env-file", str(env_file), "--duration", "1", env=clean_env())
    assert "env_file_permissions" not in p2.stderr, p2.stderr[-2000:]
    assert p2.returncode == 0, p2.stderr[-2000:]
