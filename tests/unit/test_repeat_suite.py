"""`tools.repeat_suite`: how a run's result is read, and a series over a real git clone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tools import repeat_suite


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2575 passed, 10 skipped in 639.70s (0:10:39)", {"passed": 2575, "skipped": 10}),
        (
            "1 failed, 2458 passed, 10 skipped, 2 errors in 636.98s (0:10:36)",
            {"failed": 1, "passed": 2458, "skipped": 10, "errors": 2},
        ),
        ("3 passed, 1 error in 1.00s", {"passed": 3, "errors": 1}),
        ("no summary at all", {}),
    ],
)
def test_the_summary_line_is_counted_by_kind(line: str, expected: dict[str, int]) -> None:
    assert repeat_suite.counts(line) == expected


def test_the_last_summary_line_is_found_under_its_equals_signs() -> None:
    out = "....\n== 12 passed in 3.2s ==\nmake: leaving\n"
    assert repeat_suite.summary_line(out) == "12 passed in 3.2s"
    assert repeat_suite.summary_line("make: *** [test] Error 2\n") == ""


@pytest.mark.parametrize(
    ("code", "line", "ok"),
    [
        (0, "5 passed in 1.0s", True),
        (0, "5 passed, 2 skipped in 1.0s", True),
        (1, "1 failed, 4 passed in 1.0s", False),
        (0, "4 passed, 1 error in 1.0s", False),  # an error is not a pass, whatever make says
        (2, "5 passed in 1.0s", False),  # make failed after the tests (say, a missing tool)
        (0, "", False),  # pytest never printed its count
        (0, "5 skipped in 1.0s", False),  # nothing ran
    ],
)
def test_a_run_passes_only_with_exit_0_passes_and_no_failure(
    code: int, line: str, ok: bool
) -> None:
    assert repeat_suite.passed(code, line) is ok


def test_streaks_count_the_longest_and_the_last_run_of_passes() -> None:
    assert repeat_suite.streaks([]) == (0, 0)
    assert repeat_suite.streaks([True, True, False, True]) == (2, 1)
    assert repeat_suite.streaks([False, True, True, True]) == (3, 3)
    assert repeat_suite.streaks([True, False]) == (1, 0)


def _checkout(root: Path, test_recipe: str) -> Path:
    """A git checkout at root/repo whose `make test` runs `test_recipe`, shared/ beside it."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    (root / "shared" / "fixtures").mkdir(parents=True)
    (repo / "Makefile").write_text(f"test:\n\t{test_recipe}\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "Makefile"], ["commit", "-qm", "m"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    (repo / "uncommitted.txt").write_text("not in a clone")
    return repo


def test_a_series_clones_head_with_the_fixtures_beside_and_reports_each_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The recipe fails unless the clone has ../shared/fixtures and lacks the uncommitted file.
    recipe = (
        "@test -d ../shared/fixtures && test ! -e uncommitted.txt && echo '== 7 passed in 0.01s =='"
    )
    repo = _checkout(tmp_path / "src", recipe)
    logs = tmp_path / "logs"
    code = repeat_suite.main(["--runs", "2", "--source", str(repo), "--log-dir", str(logs)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(x["run"], x["passed"], x["summary"]) for x in lines[:2]] == [
        (1, True, "7 passed in 0.01s"),
        (2, True, "7 passed in 0.01s"),
    ]
    assert lines[2]["series"] == {
        "runs": 2,
        "passed": 2,
        "longest_in_a_row": 2,
        "in_a_row_at_the_end": 2,
        "hog": False,
    }
    assert (logs / "run2.log").read_text().strip() == "== 7 passed in 0.01s =="


def test_a_failing_run_fails_the_series_and_can_stop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _checkout(tmp_path / "src", "@echo '== 1 failed, 6 passed in 0.01s =='; exit 1")
    code = repeat_suite.main(["--runs", "3", "--source", str(repo), "--stop-on-failure"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [(x["passed"], x["exit_code"]) for x in lines[:-1]] == [(False, 2)]
    assert lines[-1]["series"]["runs"] == 1 and lines[-1]["series"]["longest_in_a_row"] == 0
