"""Fuzz the settings: a random environment value for any key gives either `Settings` or a
`ConfigError` whose lines name keys — never a traceback, never a secret value echoed back.

Default run: a few hundred cases. `pytest -m slow`: 10,000+.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from config import Settings, load_settings
from errors import ConfigError
from tests.faults.fuzzing import FAST, SLOW

KEYS = sorted(n.upper() for n in Settings.model_fields)
SECRET_KEYS = [
    "PRIVATE_KEY",
    "CLOB_API_KEY",
    "CLOB_API_SECRET",
    "CLOB_API_PASSPHRASE",
    "CONTROL_TOKEN",
    "NOTIFY_WEBHOOK_URL",
]
# Paths are probed (exists/access) but never created; keep the fuzzer inside a scratch folder.
SCRATCH = Path("/tmp/polyd-fuzz-settings")

# Environment values: no NUL and no lone surrogates (the OS refuses both).
env_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=80,
)
env_values = st.one_of(
    env_text,
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "true",
            "false",
            "yes",
            "0",
            "-1",
            "NaN",
            "inf",
            "1e999999",
            "{}",
            "[]",
            "{not json",
            '{"a": "-5"}',
            '{"a": 1.5}',
            "null",
            "http://127.0.0.1:1",
            "ws://x",
            "0x" + "ab" * 32,
            "0x" + "cd" * 20,
            "live",
            "paper",
            "\u2603",
        ]
    ),
)
# Secret values long and distinctive enough that finding one in a message means it was echoed.
secret_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zs"], blacklist_characters="\x00\"'"),
    min_size=10,
    max_size=60,
).map(lambda s: "S3cr3t" + s)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@functools.cache
def _baseline() -> str:
    """What the default settings display: a "secret" found there proves nothing."""
    s = load_settings(env_file=None, db_path=SCRATCH / "polyd.db")
    return "\n".join(f"{k}={v}" for k, v in s.redacted().items()) + repr(s) + str(s)


def check(env: dict[str, str]) -> None:
    SCRATCH.mkdir(exist_ok=True)
    refused: ConfigError | None = None
    with environ(env), contextlib.chdir(SCRATCH):
        try:
            s = load_settings(env_file=None, db_path=SCRATCH / "polyd.db")
        except ConfigError as e:
            refused = e
        except Exception as e:  # the bug this fuzzer looks for: a traceback, not a clear error
            raise AssertionError(f"{env!r} raised {type(e).__name__}: {e}") from e
    public = {v.strip() for k, v in env.items() if k not in SECRET_KEYS}
    secrets = [
        v.strip()
        for k, v in env.items()
        if k in SECRET_KEYS
        and len(v.strip()) >= 6
        and not any(v.strip() in p for p in public)
        and v.strip() not in _baseline()
    ]
    if refused is not None:
        assert refused.problems, "a ConfigError must carry at least one line"
        for line in refused.problems:
            assert any(k in line for k in KEYS), f"line names no key: {line!r}"
        shown = "\n".join(refused.problems) + str(refused) + repr(refused)
    else:
        assert isinstance(s, Settings)
        shown = "\n".join(f"{k}={v}" for k, v in s.redacted().items()) + repr(s) + str(s)
    for value in secrets:
        assert value not in shown, f"a secret value was echoed: {shown!r}"


@FAST
@example({"RISK_STRATEGY_BUDGETS": "{not json"})
@given(st.dictionaries(st.sampled_from(KEYS), env_values, min_size=1, max_size=4))
def test_fuzzed_env_gives_settings_or_config_error_naming_keys(env: dict[str, str]) -> None:
    check(env)


@pytest.mark.slow
@SLOW
@given(st.dictionaries(st.sampled_from(KEYS), env_values, min_size=1, max_size=4))
def test_fuzzed_env_gives_settings_or_config_error_naming_keys_10k(env: dict[str, str]) -> None:
    check(env)


@FAST
@given(st.sampled_from(SECRET_KEYS), secret_values, st.booleans())
def test_fuzzed_secret_values_are_never_echoed(key: str, value: str, live: bool) -> None:
    check({key: value, "MODE": "live" if live else "paper"})


@pytest.mark.slow
@SLOW
@given(st.sampled_from(SECRET_KEYS), secret_values, st.booleans())
def test_fuzzed_secret_values_are_never_echoed_10k(key: str, value: str, live: bool) -> None:
    check({key: value, "MODE": "live" if live else "paper"})


def test_non_json_budgets_are_a_config_error_not_a_traceback() -> None:
    # Found by the fuzzer: pydantic-settings raised SettingsError (a traceback at start-up).
    with environ({"RISK_STRATEGY_BUDGETS": "sniper=100"}), pytest.raises(ConfigError) as info:
        load_settings(env_file=None, db_path=SCRATCH / "polyd.db")
    assert info.value.problems[0].startswith("RISK_STRATEGY_BUDGETS:")
    assert "sniper=100" not in str(info.value)
