"""Deploy files: the systemd unit verifies and is hardened; the Dockerfile keeps its promises."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import ROOT, require_tool

UNIT = ROOT / "deploy" / "polyd.service"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
INSTALL_DIR = "/opt/polyd"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    # verify checks that ExecStart exists: point the install path at this checkout's .venv.
    unit = tmp_path / "polyd.service"
    unit.write_text(UNIT.read_text().replace(INSTALL_DIR, str(ROOT)))
    assert (ROOT / ".venv" / "bin" / "python").exists()
    res = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_unit_is_a_notify_service_with_a_watchdog_and_hardening() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) >= 10
    # The daemon reads the settings file itself, so SIGHUP (`systemctl reload`) re-reads it;
    # an EnvironmentFile= would be read by systemd at start only.
    assert s["ExecStart"] == [
        f"{INSTALL_DIR}/.venv/bin/python -m orchestrator --env-file /etc/polyd/polyd.env"
    ]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "EnvironmentFile" not in s
    assert s["User"] == ["polyd"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/var/lib/polyd",
    }.items():
        assert s[key] == [value], key
    assert "DB_PATH=/var/lib/polyd/polyd.db" in s["Environment"]
    # Not retried: bad configuration (2), the database or the port held by another process (3).
    assert s["RestartPreventExitStatus"] == ["2 3"]


def test_dockerfile_is_slim_non_root_hash_pinned_with_a_healthcheck_and_a_volume() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    assert "--require-hashes" in text and "requirements.lock" in text
    assert "\nUSER polyd\n" in text
    assert 'VOLUME ["/data"]' in text and "DB_PATH=/data/polyd.db" in text
    assert "HEALTHCHECK" in text and "/health" in text
    assert "HTTP_HOST=0.0.0.0" in text and "-p 127.0.0.1:8787:8787" in text
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".env", ".venv", "data", ".git"} <= set(ignore)
