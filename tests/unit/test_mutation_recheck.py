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
    main,
    merge_recheck,
    only,
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


def test_only_keeps_the_verdicts_of_the_mutants_named_and_nothing_without_a_pattern() -> None:
    verdicts = {
        "storage.journal.xǁOrderJournalǁtake_over__mutmut_1": "killed",
        "storage.journal.xǁOrderJournalǁtake_over__mutmut_12": "not checked",
        "storage.journal.xǁOrderJournalǁtake_overall__mutmut_1": "not checked",
        "storage.journal.xǁOrderJournalǁrecord__mutmut_1": "not checked",
    }
    assert only(verdicts, ["storage.journal.xǁOrderJournalǁtake_over__mutmut_*"]) == {
        "storage.journal.xǁOrderJournalǁtake_over__mutmut_1": "killed",
        "storage.journal.xǁOrderJournalǁtake_over__mutmut_12": "not checked",
    }
    assert only(verdicts, ["*record__*", "*take_over__mutmut_1"]) == {
        "storage.journal.xǁOrderJournalǁtake_over__mutmut_1": "killed",
        "storage.journal.xǁOrderJournalǁrecord__mutmut_1": "not checked",
    }
    assert only(verdicts, []) == verdicts


def test_only_needs_one_group_and_no_recheck(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "x*"]) == 2
    assert main(["--group", "risk", "--group", "fees", "--only", "x*"]) == 2
    assert main(["--group", "risk", "--only", "x*", "--recheck", "/nowhere"]) == 2
    assert capsys.readouterr().err.count("--only needs exactly one --group, and no --recheck") == 3
