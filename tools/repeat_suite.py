"""Run the default suite over and over, each time in a fresh clone: `python -m tools.repeat_suite`.

The check behind "the suite passes ten times in a row, also beside a CPU-heavy process": each
run clones the checkout's HEAD into a scratch folder (so uncommitted files and stale builds play
no part), links the shared fixtures beside it as CI has them, and runs the README's test command
(`make test`) there. `--hog` keeps one `while True: pass` process busy for the whole series;
`--fresh-venv` builds each clone's `.venv` from `requirements.lock` as a new machine would,
otherwise the checkout's `.venv` is linked in (the same packages, without the minute it takes).

Prints one JSON line per run (run, commit, passed, exit code, seconds, load average, pytest's
summary line) and at the end the series: runs, passes, the longest run of passes in a row and the
one still going. Exits 0 only if every run passed.

    python -m tools.repeat_suite --runs 10 --hog --log-dir /tmp/polyd-repeat
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# pytest's last line: "1 failed, 2458 passed, 10 skipped, 2 errors in 636.98s (0:10:36)"
_SUMMARY = re.compile(r"^=*\s*(?P<body>(?:\d+ \w+(?:, )?)+) in [\d.]+s")
_COUNT = re.compile(r"(\d+) (\w+)")


@dataclass(frozen=True)
class Run:
    run: int
    commit: str
    passed: bool
    exit_code: int
    seconds: float
    load: str
    summary: str


def summary_line(output: str) -> str:
    """pytest's final count line in `output` ("" if it never got that far)."""
    for line in reversed(output.splitlines()):
        if _SUMMARY.match(line.strip()):
            return line.strip().strip("= ")
    return ""


def counts(summary: str) -> dict[str, int]:
    """{"passed": 2458, "failed": 1, ...} from a summary line; "error"/"errors" both as errors."""
    out: dict[str, int] = {}
    body = _SUMMARY.match(summary)
    if body is None:
        return out
    for n, kind in _COUNT.findall(body.group("body")):
        key = "errors" if kind in ("error", "errors") else kind
        out[key] = out.get(key, 0) + int(n)
    return out


def passed(exit_code: int, summary: str) -> bool:
    """A run passes when make exits 0 and pytest counted passes and no failure or error."""
    c = counts(summary)
    return exit_code == 0 and c.get("passed", 0) > 0 and not c.get("failed") and not c.get("errors")


def streaks(results: Sequence[bool]) -> tuple[int, int]:
    """(the longest run of passes in a row, the run of passes at the end)."""
    longest = current = 0
    for ok in results:
        current = current + 1 if ok else 0
        longest = max(longest, current)
    return longest, current


@contextmanager
def hog(enabled: bool) -> Iterator[None]:
    """One process spinning on a core for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def clone(source: Path, dest: Path, *, fresh_venv: bool) -> str:
    """Clone `source`'s HEAD into `dest` with the shared fixtures beside it; return the commit."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    shared = source.parent / "shared"
    if shared.is_dir() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared.resolve())
    if not fresh_venv and (source / ".venv").is_dir():
        (dest / ".venv").symlink_to((source / ".venv").resolve())
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=dest,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_once(
    n: int, source: Path, scratch: Path, *, fresh_venv: bool, make_args: str, log_dir: Path | None
) -> Run:
    work = scratch / f"run{n}"
    work.mkdir()
    try:
        commit = clone(source, work / "polyd", fresh_venv=fresh_venv)
        started = time.monotonic()
        # A linked .venv is older than the clone's requirements.lock: `-o` keeps make from
        # rebuilding it (the packages are the checkout's, installed from the same lock).
        keep = [] if fresh_venv else ["-o", ".venv/.installed"]
        # Not a sub-make of whatever make started this tool: its flags and level stay out.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        proc = subprocess.run(
            ["make", *keep, "test", f"ARGS={make_args}"],
            cwd=work / "polyd",
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = round(time.monotonic() - started, 1)
        output = proc.stdout + proc.stderr
        if log_dir is not None:
            (log_dir / f"run{n}.log").write_text(output)
        summary = summary_line(output)
        return Run(
            run=n,
            commit=commit,
            passed=passed(proc.returncode, summary),
            exit_code=proc.returncode,
            seconds=seconds,
            load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
            summary=summary,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hog", action="store_true", help="keep a CPU-heavy process running beside")
    ap.add_argument("--fresh-venv", action="store_true", help="build each clone's .venv anew")
    ap.add_argument("--stop-on-failure", action="store_true")
    ap.add_argument("--args", default="-p no:cacheprovider -q", help="ARGS for `make test`")
    ap.add_argument("--log-dir", type=Path, help="keep each run's output here as runN.log")
    ap.add_argument("--source", type=Path, default=ROOT, help="the checkout to clone")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if a.log_dir is not None:
        a.log_dir.mkdir(parents=True, exist_ok=True)
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="polyd-repeat-") as tmp, hog(a.hog):
        for n in range(1, a.runs + 1):
            r = run_once(
                n,
                a.source.resolve(),
                Path(tmp),
                fresh_venv=a.fresh_venv,
                make_args=a.args,
                log_dir=a.log_dir,
            )
            results.append(r.passed)
            print(json.dumps(asdict(r)), flush=True)
            if a.stop_on_failure and not r.passed:
                break
    longest, current = streaks(results)
    series = {
        "runs": len(results),
        "passed": sum(results),
        "longest_in_a_row": longest,
        "in_a_row_at_the_end": current,
        "hog": a.hog,
    }
    print(json.dumps({"series": series}), flush=True)
    return 0 if all(results) and len(results) == a.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
