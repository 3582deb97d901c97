"""`backtest` options: bad input is one clear error; copy rules are refused with the reason (a
recording holds no leader trades); latency and `--fees none` change what the replay books."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backtest.replay_cli import NO_LEADER_TRADES, BacktestError, execute
from bench.backtest import RULES, synthesise
from cli import add_commands

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_backtest_cli")


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_commands(p)
    return p.parse_args(["backtest", *argv])


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("bt")
    synthesise(tmp / "rec", markets=3, seconds=300, rate=2.0, snapshot_s=60)
    rules = tmp / "rules.json"
    import json

    rules.write_text(json.dumps(RULES))
    return tmp / "rec", rules


def _run(rec: tuple[Path, Path], out: Path, *extra: str) -> dict[str, Any]:
    summary, page = execute(
        _args("--data", str(rec[0]), "--sniper-rules", str(rec[1]), "--out", str(out), *extra)
    )
    assert page.exists()
    return summary


def test_bad_input_is_one_clear_error(tmp_path: Path, recording: tuple[Path, Path]) -> None:
    data, rules = recording
    with pytest.raises(BacktestError, match="--from 'yesterday'"):
        execute(_args("--data", str(data), "--sniper-rules", str(rules), "--from", "yesterday"))
    with pytest.raises(BacktestError, match="--data"):
        execute(_args("--data", str(tmp_path), "--sniper-rules", str(rules)))
    with pytest.raises(BacktestError, match="--sniper-rules"):
        execute(_args("--data", str(data), "--sniper-rules", str(tmp_path / "missing.toml")))
    with pytest.raises(BacktestError, match="--latency-ms"):
        execute(_args("--data", str(data), "--sniper-rules", str(rules), "--latency-ms", "-1"))


def test_copy_rules_are_skipped_with_the_reason(
    tmp_path: Path, recording: tuple[Path, Path]
) -> None:
    copy = tmp_path / "copy.toml"
    copy.write_text("[[wallets]]\n")
    summary = _run(recording, tmp_path / "out", "--copy-rules", str(copy))
    assert summary["notes"][0] == NO_LEADER_TRADES


def test_the_replay_trades_and_fees_latency_and_window_change_it(
    tmp_path: Path, recording: tuple[Path, Path]
) -> None:
    base = _run(recording, tmp_path / "a")
    assert base["fills"] and Decimal(base["fees_paid"]) > 0
    assert base == _run(recording, tmp_path / "b")  # deterministic
    no_fees = _run(recording, tmp_path / "c", "--fees", "none")
    assert Decimal(no_fees["fees_paid"]) == 0
    assert Decimal(no_fees["pnl"]) > Decimal(base["pnl"])
    late = _run(recording, tmp_path / "d", "--latency-ms", "60000")
    # A minute late, the dips are gone before the orders arrive: fewer orders fill.
    late_filled = sum(1 for o in late["orders"] if Decimal(o["filled"]) > 0)
    assert late_filled < sum(1 for o in base["orders"] if Decimal(o["filled"]) > 0)
    first = base["replayed"]["first"]
    early = _run(recording, tmp_path / "e", "--to", first.replace("00:00:00", "00:01:00"))
    assert len(early["orders"]) < len(base["orders"])
