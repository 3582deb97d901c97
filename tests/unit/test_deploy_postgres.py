"""deploy/compose.postgres.yaml, layered over compose.yaml: the daemon's DATABASE_URL names the
postgres service, its user, database and password variable; the server is private (no published
port), keeps its data in a named volume, and the daemon starts once it is healthy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from config import Settings
from storage.pg import display_url
from tests.helpers import ROOT, require_tool

DEPLOY = ROOT / "deploy"
OVERLAY = DEPLOY / "compose.postgres.yaml"
PASSWORD_VAR = "${POLYD_PG_PASSWORD:?set POLYD_PG_PASSWORD}"


def overlay() -> Any:
    return yaml.safe_load(OVERLAY.read_text())


def test_the_daemon_url_names_the_postgres_service_its_user_database_and_password() -> None:
    services = overlay()["services"]
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert "polyd" in base and "postgres" not in base  # an overlay of the daemon's service
    url = services["polyd"]["environment"]["DATABASE_URL"]
    pg_env = services["postgres"]["environment"]
    assert pg_env["POSTGRES_PASSWORD"] == PASSWORD_VAR
    concrete = url.replace(PASSWORD_VAR, "s3cret-value")
    parts = urlsplit(concrete)
    assert (parts.hostname, parts.port) == ("postgres", 5432)
    assert parts.username == pg_env["POSTGRES_USER"]
    assert parts.path == "/" + pg_env["POSTGRES_DB"]
    assert parts.password == "s3cret-value"
    settings = Settings(_env_file=None, database_url=concrete)  # the daemon accepts it
    assert settings.database_url == concrete
    assert "s3cret-value" not in display_url(concrete)


def test_the_server_is_private_persistent_and_awaited_healthy() -> None:
    doc = overlay()
    pg = doc["services"]["postgres"]
    assert "ports" not in pg  # reached on the project's network only
    [volume] = pg["volumes"]
    name, _, target = volume.partition(":")
    assert name in doc["volumes"] and target == "/var/lib/postgresql/data"
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert doc["services"]["polyd"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_backup_units_verify_and_run_the_backup_script_daily(tmp_path: Path) -> None:
    """deploy/polyd-pg-backup.{service,timer}: `systemd-analyze verify` is clean (with the
    install path pointed at this checkout), the service runs the executable backup script with
    the daemon's settings file, and the timer fires it daily, catching up after downtime."""
    analyze = require_tool("systemd-analyze", "systemd")
    units = []
    for name in ("polyd-pg-backup.service", "polyd-pg-backup.timer"):
        unit = tmp_path / name
        unit.write_text((DEPLOY / name).read_text().replace("/opt/polyd", str(ROOT)))
        units.append(str(unit))
    res = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
    service = (DEPLOY / "polyd-pg-backup.service").read_text()
    assert "ExecStart=/opt/polyd/deploy/polyd-pg-backup.sh\n" in service
    assert "EnvironmentFile=/etc/polyd/polyd.env\n" in service
    assert os.access(DEPLOY / "polyd-pg-backup.sh", os.X_OK)
    assert os.access(DEPLOY / "polyd-pg-restore.sh", os.X_OK)
    timer = (DEPLOY / "polyd-pg-backup.timer").read_text()
    assert "OnCalendar=*-*-* 03:17:00 UTC\n" in timer and "Persistent=true\n" in timer
