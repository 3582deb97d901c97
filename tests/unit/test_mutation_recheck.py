"""A second `--recheck` of a kept scratch copy keeps the first recheck's kills.

mutmut forgets a mutant's verdict once the tests covering it change ("not checked"), so after
one recheck the kills it found are no longer in mutmut's own results. The tool saves the merged
verdicts beside the mutants and reads them back before the next recheck.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.mutate import (
    VERDICTS_FILE,
    _save_verdicts,
    _saved_verdicts,
    merge_recheck,
    recheck_names,
)


def test_a_recheck_starts_from_the_saved_verdicts_where_mutmut_forgot_them(
    tmp_path: Path,
) -> None:
    first = {"m.x_a__mutmut_1": "killed", "m.x_a__mutmut_2": "survived"}
    recheck = merge_recheck(first, {"m.x_a__mutmut_1": "not checked", "m.x_a__mutmut_2": "killed"})
    _save_verdicts(tmp_path, recheck)
    # mutmut, after the tests changed again, has forgotten both
    forgotten = {"m.x_a__mutmut_1": "not checked", "m.x_a__mutmut_2": "not checked"}
    assert merge_recheck(_saved_verdicts(tmp_path), forgotten) == {
        "m.x_a__mutmut_1": "killed",
        "m.x_a__mutmut_2": "killed",
    }


def test_a_scratch_copy_without_saved_verdicts_has_none(tmp_path: Path) -> None:
    assert _saved_verdicts(tmp_path) == {}


def test_an_unreadable_verdicts_file_is_named(tmp_path: Path) -> None:
    (tmp_path / VERDICTS_FILE).write_text("{not json", "utf-8")
    with pytest.raises(SystemExit, match=VERDICTS_FILE):
        _saved_verdicts(tmp_path)


def test_a_recheck_runs_the_survivors_and_on_request_the_unreached_too() -> None:
    before = {
        "m.x_a__mutmut_1": "killed",
        "m.x_a__mutmut_2": "survived",
        "m.x_a__mutmut_3": "not checked",
        "m.x_a__mutmut_4": "timeout",
        "m.x_a__mutmut_5": "no tests",
    }
    assert recheck_names(before) == ["m.x_a__mutmut_2", "m.x_a__mutmut_5"]
    assert recheck_names(before, unreached=True) == [
        "m.x_a__mutmut_2",
        "m.x_a__mutmut_3",
        "m.x_a__mutmut_5",
    ]
