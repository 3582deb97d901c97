"""Settings: validation, one clear line per problem, exit code 2, and no secret ever echoed."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from config import Settings, env_file_warnings, load_settings
from errors import ConfigError
from tests.helpers import ROOT, TEST_PRIVATE_KEY, clean_env, make_settings, run_cli

SECRET_PASSPHRASE = "pass-phrase-that-must-never-print"
SECRET_API = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1wcmludA=="


def test_defaults_are_paper_on_loopback(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert s.mode == "paper"
    assert s.http_host == "127.0.0.1"
    assert s.clob_host == "https://clob.polymarket.com"
    assert s.chain_id == 137
    assert s.risk_max_order_notional == Decimal("50")
    assert s.feed_stale_after_s <= 15
    # Stable across restarts: a restarted daemon reconciles the orders it journaled before.
    assert (s.daemon_id, s.lease_ttl_s) == ("default", 30.0)
    assert make_settings(tmp_path, daemon_id=" east-1.a_b ").daemon_id == "east-1.a_b"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"mode": "yolo"}, "MODE:"),
        ({"mode": "live"}, "PRIVATE_KEY: required when MODE=live"),
        ({"private_key": "0x1234"}, "PRIVATE_KEY: must be 64 hex"),
        ({"funder_address": "0xnothex"}, "FUNDER_ADDRESS: must be an address"),
        ({"signature_type": 2}, "FUNDER_ADDRESS: required when SIGNATURE_TYPE"),
        ({"signature_type": 9}, "SIGNATURE_TYPE:"),
        ({"http_port": 70000}, "HTTP_PORT:"),
        ({"http_port": -1}, "HTTP_PORT:"),
        ({"chain_id": 1}, "CHAIN_ID: must be 137"),
        ({"clob_host": "ftp://x"}, "CLOB_HOST: must be a URL"),
        ({"market_ws_url": "https://x"}, "MARKET_WS_URL: must be a URL starting with wss://"),
        ({"risk_max_order_notional": "NaN"}, "RISK_MAX_ORDER_NOTIONAL: must be a finite number"),
        ({"risk_max_order_notional": "-5"}, "RISK_MAX_ORDER_NOTIONAL: must be greater than 0"),
        ({"clob_api_key": "k"}, "set all three or none"),
        ({"db_path": "/etc/passwd/polyd.db"}, "DB_PATH:"),
        ({"daemon_id": ""}, "DAEMON_ID: must be 1 to 64 letters"),
        ({"daemon_id": "east one"}, "DAEMON_ID: must be 1 to 64 letters"),
        ({"daemon_id": "-east"}, "DAEMON_ID: must be 1 to 64 letters"),
        ({"daemon_id": "x" * 65}, "DAEMON_ID: must be 1 to 64 letters"),
        ({"lease_ttl_s": 1}, "LEASE_TTL_S:"),
        ({"lease_ttl_s": 3600}, "LEASE_TTL_S:"),
        ({"account_shared": True}, "ACCOUNT_SHARED: needs DATABASE_URL"),
    ],
)
def test_bad_setting_raises_config_error_naming_it(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, mode="nope", http_port=99999, private_key="zz")
    joined = "\n".join(info.value.problems)
    assert "MODE:" in joined
    assert "HTTP_PORT:" in joined
    assert "PRIVATE_KEY:" in joined


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        s.mode = "live"  # type: ignore[misc]  # the point of the test


def test_private_key_is_normalised_and_never_shown(tmp_path: Path) -> None:
    s = make_settings(tmp_path, mode="live", private_key=TEST_PRIVATE_KEY[2:].upper())
    assert s.private_key is not None
    assert s.private_key.get_secret_value() == TEST_PRIVATE_KEY
    shown = "\n".join(f"{k}={v}" for k, v in s.redacted().items()) + repr(s) + str(s)
    assert TEST_PRIVATE_KEY[2:] not in shown
    assert TEST_PRIVATE_KEY[2:].upper() not in shown
    assert TEST_PRIVATE_KEY[2:] in s.secret_values()


def test_env_example_lists_every_setting_and_loads_as_is() -> None:
    text = (ROOT / ".env.example").read_text()
    keys = set(re.findall(r"^([A-Z_0-9]+)=", text, re.M))
    fields = {n.upper() for n in Settings.model_fields} - {"NOTIFY_SOCKET", "WATCHDOG_USEC"}
    assert fields == keys
    for key in keys:  # every key carries a comment line right above its block
        assert re.search(rf"#[^\n]*\n(?:[A-Z_0-9]+=[^\n]*\n)*{key}=", text), key
    s = load_settings(env_file=ROOT / ".env.example")
    assert s.mode == "paper"
    assert s.kill_switch_path is None  # empty values mean "default", not Path("")


def test_env_file_readable_by_others_draws_a_warning(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MODE=paper\n")
    env.chmod(0o644)
    assert env_file_warnings(env)
    env.chmod(0o600)
    assert env_file_warnings(env) == []


def test_cli_bad_config_exits_2_with_one_line_per_problem_and_no_secret(tmp_path: Path) -> None:
    env = clean_env(
        MODE="live",
        PRIVATE_KEY="0xnot-a-key-" + SECRET_PASSPHRASE,
        CLOB_API_SECRET=SECRET_API,
        CLOB_API_PASSPHRASE=SECRET_PASSPHRASE,
        HTTP_PORT="123456",
        DB_PATH=str(tmp_path / "x.db"),
    )
    res = run_cli("--env-file", "none", "--check-config", env=env)
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    assert SECRET_PASSPHRASE not in out
    assert SECRET_API not in out
    problems = [ln.strip() for ln in res.stderr.splitlines() if ln.startswith("  ")]
    assert any(p.startswith("PRIVATE_KEY:") for p in problems)
    assert any(p.startswith("HTTP_PORT:") for p in problems)


def test_cli_check_config_prints_redacted_settings(tmp_path: Path) -> None:
    env = clean_env(
        MODE="live",
        PRIVATE_KEY=TEST_PRIVATE_KEY,
        CLOB_API_KEY="00000000-0000-0000-0000-000000000000",
        CLOB_API_SECRET=SECRET_API,
        CLOB_API_PASSPHRASE=SECRET_PASSPHRASE,
        DB_PATH=str(tmp_path / "x.db"),
    )
    res = run_cli("--env-file", "none", "--check-config", env=env)
    assert res.returncode == 0, res.stderr
    assert "MODE=live" in res.stdout
    assert "PRIVATE_KEY=**********" in res.stdout
    for secret in (TEST_PRIVATE_KEY, TEST_PRIVATE_KEY[2:], SECRET_API, SECRET_PASSPHRASE):
        assert secret not in res.stdout + res.stderr


def test_cli_version_and_help() -> None:
    assert run_cli("--version", env=clean_env()).stdout.startswith("polyd ")
    res = run_cli("--help", env=clean_env())
    assert res.returncode == 0
    assert "--demo" in res.stdout
    assert "--check-config" in res.stdout


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"user_feed_pong_timeout_s": 0}, "USER_FEED_PONG_TIMEOUT_S:"),
        ({"user_feed_pong_timeout_s": 61}, "USER_FEED_PONG_TIMEOUT_S:"),
        ({"user_feed_stale_after_s": -1}, "USER_FEED_STALE_AFTER_S:"),
        (
            {"user_feed_stale_after_s": 10, "feed_ping_interval_s": 10},
            "USER_FEED_STALE_AFTER_S: must be greater than FEED_PING_INTERVAL_S",
        ),
    ],
)
def test_user_feed_liveness_windows_are_validated(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    assert any(expected in line for line in info.value.problems), info.value.problems
    s = make_settings(tmp_path)
    assert (s.user_feed_pong_timeout_s, s.user_feed_stale_after_s) == (5.0, 30.0)


# Each: the settings file's bytes (None: a folder in its place) and what its one line says.
BAD_ENV_FILES: dict[str, tuple[bytes | None, str]] = {
    "folder": (None, "is a folder, not a file"),
    "huge": (b"MODE=paper\n# " + b"x" * (2 << 20) + b"\n", "is larger than 1 MiB"),
    "nul": (b"MODE=paper\nHTTP_PORT=80\x0080\n", "has a NUL byte on line 2"),
    "latin1": (b"MODE=paper\nNOTIFY_TELEGRAM_CHAT_ID=caf\xe9\n", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENV_FILES))
def test_bad_settings_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    content, says = BAD_ENV_FILES[case]
    path = tmp_path / "polyd.env"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as bad:
        load_settings(env_file=path, db_path=tmp_path / "polyd.db")
    (line,) = bad.value.problems
    assert line.startswith(f"settings file {path}: {says}"), line


def test_named_settings_file_that_is_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(env_file=tmp_path / "polyd.env", db_path=tmp_path / "polyd.db")
    # The default `.env` is optional: without one, the environment and defaults apply.
    assert load_settings(env_file=tmp_path / ".env", db_path=tmp_path / "polyd.db").mode == "paper"


def test_empty_settings_file_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "polyd.env"
    path.write_bytes(b"")
    assert load_settings(env_file=path, db_path=tmp_path / "polyd.db").mode == "paper"


def test_cli_bad_settings_file_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "polyd.env"
    path.write_bytes(b"MODE=\xff\xfe\n")
    res = run_cli("--env-file", str(path), "--check-config", env=clean_env())
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "polyd: configuration error:",
        f"  settings file {path}: is not UTF-8 text (byte 0xff on line 1)",
    ]


def test_config_error_lines_are_bounded_however_long_the_input() -> None:
    e = ConfigError(["X: " + "y" * 1_000_000, "two\nlines", *[f"p{i}" for i in range(500)]])
    assert len(e.problems) == ConfigError.MAX_LINES + 1
    assert all(len(p) <= ConfigError.MAX_LINE for p in e.problems)
    assert e.problems[1] == "two lines"
    assert e.problems[-1] == f"({502 - ConfigError.MAX_LINES} more problems not shown)"
