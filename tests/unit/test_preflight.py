"""`--check-config`: every problem in the settings, the rule files and the notification settings
reported together, one line each naming the file or the setting; unknown keys warned about; a
named settings file that is missing refused; no enabled strategy warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight import preflight, unknown_key_warnings
from tests.helpers import clean_env, run_cli

GOOD_SNIPER = """
[[rules]]
name = "near-close"
min_price = "0.90"
max_price = "0.97"
min_size = "5"
max_notional = "20"
[rules.select]
slugs = ["some-market"]
"""

BAD_SNIPER = """
[[rules]]
name = "neg"
min_price = "0.90"
max_price = "0.97"
min_size = "-5"
max_notional = "20"
max_entrys = 3
[rules.select]
slugs = ["x"]

[[rules]]
name = "noselect"
min_price = "0.90"
max_price = "0.97"
min_size = "5"
max_notional = "20"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_every_problem_class_is_reported_together(tmp_path: Path) -> None:
    sniper = write(tmp_path / "sniper.toml", BAD_SNIPER)
    copy = write(tmp_path / "copy.toml", "[[wallets]\naddress = ")  # not TOML
    env = write(
        tmp_path / "polyd.env",
        f"MODE=live\nHTTP_PORT=99999\nNOTIFY_KIND=telegram\nDB_PATH={tmp_path / 'p.db'}\n"
        "NOTIFY_WEBHOOK_URL=api.telegram.org/bot123:abc\n"
        "RISK_STRATEGY_BUDGETS={not json\n"
        f"SNIPER_RULES_PATH={sniper}\nCOPY_RULES_PATH={copy}\n",
    )
    res = run_cli("--env-file", str(env), "--check-config", env=clean_env(RETRY_ATTEMPTS="0"))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.startswith("  ")]
    expected = [
        # a value that must be JSON and is not: it stops pydantic-settings before validation
        f'RISK_STRATEGY_BUDGETS: must be JSON (e.g. {{}} or {{"sniper": "100"}}) (in {env})',
        # a value out of range, named with the file it came from
        f"HTTP_PORT: Input should be less than or equal to 65535 (in {env})",
        # from the environment, and it hides none of the others
        "RETRY_ATTEMPTS: Input should be greater than or equal to 1 (from the environment)",
        # cross-field checks run although fields above are bad
        "PRIVATE_KEY: required when MODE=live",
        "NOTIFY_TELEGRAM_CHAT_ID: required when NOTIFY_KIND=telegram (the chat the bot writes to)",
        f"NOTIFY_WEBHOOK_URL: must be a URL starting with https:// or http:// (in {env})",
        f"SNIPER_RULES_PATH {sniper}: rule 'neg' (#1) field min_size: must be greater than 0",
        f"SNIPER_RULES_PATH {sniper}: rule 'neg' (#1) field max_entrys: Extra inputs are not "
        "permitted",
        f"SNIPER_RULES_PATH {sniper}: rule 'noselect' (#2) field select: Field required",
    ]
    for line in expected:
        assert line in lines, (line, lines)
    assert any(ln.startswith(f"COPY_RULES_PATH {copy}: is not valid TOML") for ln in lines), lines
    assert len(lines) == len(expected) + 1, lines
    assert res.stdout == ""  # no settings are printed as "the" settings when any is wrong
    assert "bot123:abc" not in res.stderr  # the webhook URL is a secret: never echoed


def test_good_configuration_exits_0_naming_the_strategies(tmp_path: Path) -> None:
    sniper = write(tmp_path / "sniper.toml", GOOD_SNIPER)
    env = write(tmp_path / "polyd.env", f"SNIPER_RULES_PATH={sniper}\nDB_PATH={tmp_path}/p.db\n")
    res = run_cli("--env-file", str(env), "--check-config", env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["configuration ok (strategies: sniper)"]
    assert f"SNIPER_RULES_PATH={sniper}" in res.stdout


def test_misspelled_key_in_the_settings_file_is_warned_about(tmp_path: Path) -> None:
    sniper = write(tmp_path / "sniper.toml", GOOD_SNIPER)
    env = write(
        tmp_path / "polyd.env",
        f"RISK_DAILY_LOSS_LIMT=50\nFOO=1\nSIGNER_THREADS=2\nSNIPER_RULES_PATH={sniper}\n"
        f"DB_PATH={tmp_path}/p.db\n",
    )
    res = run_cli("--env-file", str(env), "--check-config", env=clean_env())
    assert res.returncode == 0, res.stderr  # a warning, not a refusal
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert warnings == [
        f"warning: settings file {env}: unknown key RISK_DAILY_LOSS_LIMT (did you mean "
        "RISK_DAILY_LOSS_LIMIT?)",
        f"warning: settings file {env}: unknown key FOO (ignored: not a setting)",
        f"warning: settings file {env}: unknown key SIGNER_THREADS (no longer used: orders are"
        " signed on the event loop; remove it)",
    ]
    assert "RISK_DAILY_LOSS_LIMIT=100" in res.stdout  # the default applies: hence the warning


def test_environment_variables_that_look_like_ours_are_warned_about() -> None:
    env = [
        "RISK_DAILY_LOSS_LIMT",  # a misspelling
        "POLYD_MODE",  # our prefix, no such setting
        "risk_max_open_order",  # settings are case-insensitive
        "MODE",  # a setting
        "HOME",
        "PATH",
        "HTTP_PROXY",  # like HTTP_PORT, but not close enough
        "OTEL_EXPORTER_OTLP_TIMEOUT",  # OpenTelemetry's, not ours
    ]
    assert unknown_key_warnings({}, env, path=None) == [
        "environment: unknown key POLYD_MODE (did you mean MODE?)",
        "environment: unknown key RISK_DAILY_LOSS_LIMT (did you mean RISK_DAILY_LOSS_LIMIT?)",
        "environment: unknown key RISK_MAX_OPEN_ORDER (did you mean RISK_MAX_OPEN_ORDERS?)",
    ]


@pytest.mark.parametrize("command", [["--check-config"], ["status"], []])
def test_named_settings_file_that_is_missing_exits_2(tmp_path: Path, command: list[str]) -> None:
    # Named `.env` too: only the default `.env`, not named on the command line, may be absent.
    missing = tmp_path / "etc" / ".env"
    res = run_cli("--env-file", str(missing), *command, env=clean_env(), timeout=30)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.splitlines() == [
        "polyd: configuration error:",
        f"  settings file {missing}: no such file",
    ]


def test_no_enabled_strategy_is_warned_about(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "sniper.toml",
        GOOD_SNIPER.replace('name = "near-close"', 'name = "x"\nenabled = false'),
    )
    env = write(tmp_path / "polyd.env", f"SNIPER_RULES_PATH={rules}\nCOPY_ENABLED=false\n")
    found = preflight(env, environment=[])
    assert found.ok, found.problems
    assert found.strategies == []
    assert found.warnings == [
        "no strategy is enabled (no enabled rule in SNIPER_RULES_PATH, COPY_ENABLED=false): "
        "the daemon trades nothing; set SNIPER_RULES_PATH or COPY_RULES_PATH to a rules file"
    ]
    good = write(tmp_path / "good.toml", GOOD_SNIPER)
    write(env, f"SNIPER_RULES_PATH={good}\n")
    found = preflight(env, environment=[])
    assert (found.strategies, found.warnings) == (["sniper"], [])
