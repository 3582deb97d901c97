"""Fuzz the strategies' rule loaders: a bad sniper or copy rules file is a `ConfigError` whose
lines name the rule and the field (the daemon exits 2), never a traceback; a good one loads.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import ConfigError
from strategies import copy_trader, sniper
from tests.faults.fuzzing import FAST, SLOW

TOKEN = "7" * 70
CID = "0x" + "ab" * 32
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.sampled_from(["NaN", "inf", "-1", "0", "0.5", "1", "1e999", "FAK", "BUY", "", "ratio"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

SNIPER_OK: dict[str, Any] = {
    "name": "r1",
    "min_price": "0.90",
    "max_price": "0.98",
    "min_size": "5",
    "max_notional": "20",
    "select": {"token_ids": [TOKEN]},
}
SNIPER_FIELDS = [
    *SNIPER_OK,
    "order_type",
    "max_entries",
    "cooldown_s",
    "ends_within_minutes",
    "take_profit",
    "max_book_age_s",
    "enabled",
    "outcome",
    "unknown_field",
]
COPY_OK: dict[str, Any] = {"address": "0x" + "cd" * 20, "label": "whale", "ratio": "0.1"}
COPY_FIELDS = [
    *COPY_OK,
    "sizing",
    "fixed_notional",
    "percent",
    "max_trade_notional",
    "max_market_exposure",
    "sides",
    "max_slippage",
    "order_type",
    "max_trade_age_s",
    "poll_interval_s",
    "allow_slugs",
    "enabled",
    "unknown_field",
]


def _refusal(fn: Any, *args: Any) -> tuple[Any, list[str] | None]:
    """Return (result, None), or (None, problems) for a ConfigError; anything else fails."""
    try:
        return fn(*args), None
    except ConfigError as e:
        return None, e.problems
    except Exception as e:  # the bug this fuzzer looks for: a traceback, not a clear error
        raise AssertionError(f"{type(e).__name__}: {e}") from e


def check_sniper(fields: dict[str, Any], extra_rules: list[Any]) -> None:
    rules, problems = _refusal(sniper.parse_rules, {"rules": [fields, *extra_rules]})
    if problems is not None:
        assert problems
        for line in problems:
            assert line.startswith("SNIPER_RULES_PATH:"), line
        if extra_rules == [] and isinstance(fields.get("name"), str) and fields["name"]:
            # A problem with the one rule names it and the field (a cross-field rule such as
            # "min_price must not exceed max_price" names the fields in its message).
            named = f"rule {fields['name']!r}"
            assert any(
                named in ln and ("field " in ln or any(f in ln for f in SNIPER_FIELDS))
                for ln in problems
            ), problems
        return
    for r in rules:
        assert 0 < r.min_price <= r.max_price < 1
        assert r.min_size > 0 and r.max_notional > 0


def check_copy(fields: dict[str, Any], defaults: dict[str, Any]) -> None:
    rules, problems = _refusal(copy_trader.parse_rules, {"defaults": defaults, "wallets": [fields]})
    if problems is not None:
        assert problems
        for line in problems:
            assert line.startswith("COPY_RULES"), line
            assert "wallet" in line or "defaults" in line or "unknown" in line, line
        return
    for w in rules.wallets:
        assert w.max_trade_notional > 0 and 0 <= w.max_slippage < 1


@FAST
@given(st.sampled_from(SNIPER_FIELDS), junk, st.lists(junk, max_size=2))
def test_fuzzed_sniper_rules_load_or_name_the_rule_and_field(
    field: str, value: Any, extra: list[Any]
) -> None:
    check_sniper({**SNIPER_OK, field: value}, extra)


@pytest.mark.slow
@SLOW
@given(st.sampled_from(SNIPER_FIELDS), junk, st.lists(junk, max_size=2))
def test_fuzzed_sniper_rules_load_or_name_the_rule_and_field_10k(
    field: str, value: Any, extra: list[Any]
) -> None:
    check_sniper({**SNIPER_OK, field: value}, extra)


@FAST
@given(st.sampled_from(COPY_FIELDS), junk, st.dictionaries(st.sampled_from(COPY_FIELDS), junk))
def test_fuzzed_copy_rules_load_or_name_the_wallet_and_field(
    field: str, value: Any, defaults: dict[str, Any]
) -> None:
    check_copy({**COPY_OK, field: value}, defaults)


@pytest.mark.slow
@SLOW
@given(st.sampled_from(COPY_FIELDS), junk, st.dictionaries(st.sampled_from(COPY_FIELDS), junk))
def test_fuzzed_copy_rules_load_or_name_the_wallet_and_field_10k(
    field: str, value: Any, defaults: dict[str, Any]
) -> None:
    check_copy({**COPY_OK, field: value}, defaults)


@FAST
@given(st.binary(max_size=200), st.sampled_from([".toml", ".json"]))
def test_fuzzed_rule_file_bytes_are_a_config_error_or_rules(raw: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rules{suffix}"
        path.write_bytes(raw)
        for load in (sniper.load_rules, copy_trader.load_rules):
            _, problems = _refusal(load, path)
            assert problems is None or problems


def test_infinite_sniper_window_is_refused_at_load() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rules.toml"
        path.write_text(
            '[[rules]]\nname = "r"\nmin_price = "0.9"\nmax_price = "0.98"\nmin_size = "5"\n'
            'max_notional = "20"\n[rules.select]\nends_within_minutes = inf\n'
        )
        with pytest.raises(ConfigError):
            sniper.load_rules(path)


def test_json_rule_files_round_trip() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rules.json"
        path.write_text(json.dumps({"rules": [SNIPER_OK]}))
        assert [r.name for r in sniper.load_rules(path)] == ["r1"]
