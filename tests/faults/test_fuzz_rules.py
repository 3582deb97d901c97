"""Fuzz the strategies' rule loaders: a bad sniper or copy rules file is a `ConfigError` whose
lines name the rule and the field (the daemon exits 2), never a traceback; a good one loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from errors import ConfigError
from strategies import copy_trader, sniper
from tests.faults.fuzzing import FAST, SLOW
from tests.harness import DaemonProcess, SimProcess

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
@example("name", "\n", [])  # named as '\n' in the problem, not as a space
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


LOADERS = [(sniper.load_rules, "SNIPER_RULES_PATH"), (copy_trader.load_rules, "COPY_RULES_PATH")]


@FAST
@given(st.binary(max_size=200), st.sampled_from([".toml", ".json"]))
def test_fuzzed_rule_file_bytes_are_a_config_error_or_rules(raw: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rules{suffix}"
        path.write_bytes(raw)
        for load, setting in LOADERS:
            _, problems = _refusal(load, path)
            assert problems is None or problems
            for line in problems or []:
                assert line.startswith(f"{setting} {path}: "), line


DEEP = 100_000
# Each: the file's bytes (None: a folder in its place) and what its one line says.
HOSTILE: dict[str, tuple[bytes | None, str]] = {
    "deep-arrays.toml": (b"x = " + b"[" * DEEP + b"]" * DEEP + b"\n", "nests"),
    "deep-tables.toml": (b"x = " + b"{a=" * DEEP + b"1" + b"}" * DEEP + b"\n", "nests"),
    "deep.json": (b"[" * DEEP + b"]" * DEEP, "nests"),
    "deep-objects.json": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nests"),
    "huge.toml": (b"# " + b"x" * (2 << 20) + b"\n", "larger than 1 MiB"),
    "empty.toml": (b"", "is empty"),
    "blank.json": (b" \n\t\n", "is empty"),
    "nul.toml": (b'[[rules]]\nname = "a\x00"\n', "NUL byte on line 2"),
    "latin1.toml": (b'[[rules]]\nname = "caf\xe9"\n', "not UTF-8 text (byte 0xe9 on line 2)"),
    "number.json": (b"5", "table"),
    "string.json": (b'"rules"', "table"),
    "null.json": (b"null", "table"),
    "nan.json": (b'{"rules": [{"min_price": NaN}]}', "NaN is not a number JSON allows"),
    "digits.toml": (b"x = " + b"9" * 5000 + b"\n", "not valid TOML"),
    "folder.toml": (None, "is a folder, not a file"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize(("load", "setting"), LOADERS, ids=["sniper", "copy"])
def test_hostile_rules_file_is_one_short_line_naming_the_file(
    tmp_path: Path, name: str, load: Any, setting: str
) -> None:
    content, says = HOSTILE[name]
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if name in ("number.json", "string.json", "null.json") and setting == "SNIPER_RULES_PATH":
        says = "expected a table"
    _, problems = _refusal(load, path)
    assert problems is not None, f"{name} loaded"
    (line,) = problems
    assert line.startswith(f"{setting} {path}: "), line
    assert says in line, line
    assert len(line) < 300, line


def test_comment_only_rules_file_is_no_rules_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("# every rule switched off for now\n")
    assert sniper.load_rules(path) == []
    assert copy_trader.load_rules(path).wallets == ()


def test_echoed_input_in_a_rules_error_is_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    name = "n" * 100_000
    path.write_text(json.dumps({"rules": [{**SNIPER_OK, "name": name, name: 1}]}))
    _, problems = _refusal(sniper.load_rules, path)
    assert problems and all(len(line) <= 300 for line in problems), problems
    path.write_text(json.dumps({"wallets": [{**COPY_OK, "label": name, name: 1}], name: 1}))
    _, problems = _refusal(copy_trader.load_rules, path)
    assert problems and all(len(line) <= 300 for line in problems), problems


def test_many_bad_rules_are_reported_in_a_bounded_list(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"name": f"r{i}"} for i in range(1000)]}))
    _, problems = _refusal(sniper.load_rules, path)
    assert problems is not None and len(problems) == ConfigError.MAX_LINES + 1
    assert problems[-1].startswith(f"SNIPER_RULES_PATH {path}: (")
    assert "more problems not shown" in problems[-1]


def _as_unprivileged(fn: Any) -> str:
    """Run `fn` where file permissions apply: in this process if it is not root, else in a
    forked child that has dropped to `nobody` (root reads every file). Returns its problems."""
    if os.geteuid() != 0:
        _, problems = _refusal(fn)
        return "\n".join(problems or ["LOADED"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                fn()
                out = "LOADED"
            except ConfigError as e:
                out = "\n".join(e.problems)
            except BaseException as e:
                out = f"CRASHED {type(e).__name__}: {e}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.mark.parametrize(("load", "setting"), LOADERS, ids=["sniper", "copy"])
def test_unreadable_rules_file_is_one_line_naming_the_file(load: Any, setting: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="polyd-unreadable-"))  # reachable by `nobody`
    try:
        folder.chmod(0o755)
        path = folder / "rules.toml"
        path.write_text('[[rules]]\nname = "r"\n')
        path.chmod(0)
        out = _as_unprivileged(lambda: load(path))
        assert out == f"{setting} {path}: cannot read it: Permission denied", out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("setting", "enabled", "name", "content"),
    [
        ("SNIPER_RULES_PATH", "SNIPER_ENABLED", "deep.toml", HOSTILE["deep-arrays.toml"][0]),
        ("COPY_RULES_PATH", "COPY_ENABLED", "deep.json", HOSTILE["deep.json"][0]),
    ],
)
def test_daemon_with_a_100000_deep_rules_file_exits_2_naming_it(
    tmp_path: Path, setting: str, enabled: str, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with SimProcess(workdir=tmp_path, seed=5, scenario=None) as sim:
        d = DaemonProcess(sim, tmp_path, extra={enabled: "true", setting: path})
        try:
            d.start()
            assert d.proc is not None
            code = d.proc.wait(timeout=60)
        finally:
            d.stop()
    out = d.stderr()
    assert code == 2, out[-3000:]
    assert "Traceback" not in out and "RecursionError" not in out
    assert len(out) < 20_000  # a few log lines, not megabytes
    problems = [e["problem"] for e in d.log_events() if e.get("event") == "config_error"]
    assert problems == [f"{setting} {path}: nests tables or lists more than 32 deep"], out[-3000:]


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
