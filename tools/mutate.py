"""Mutation testing of the money-critical code: `make mutate` (or `python -m tools.mutate`).

Each group in `tools/mutation.toml` names the modules to mutate and the test files that guard
them. For each group this copies the working tree into a scratch directory, configures mutmut
there (so the checkout is never modified), runs it, and reads its verdicts. It prints one JSON
document: per module, how many mutants were killed, timed out, survived or had no covering
test, the kill rate, and every surviving mutant that `tools/mutation.toml` does not explain
(`[accepted]`: mutant name → one-line reason it is equivalent or accepted).

Kill rate = (killed + timed out) / (all mutants − accepted survivors). A mutant with no
covering test counts as a survivor: no test would notice it.

One class of survivor is recognised as equivalent by rule, not by name (`sql_case_equivalent`):
mutmut upper- or lower-cases string literals, and SQLite treats SQL keywords and identifiers, and
`sqlite3.Row` keys, without regard to case. A survivor whose only change is the case of a string
that is SQL text holding no quoted literal (`'FILLED'` compares with case), or of a key read from
a row named `r`/`row`, behaves exactly like the original. It is reported as accepted and counted
under `equivalent_by_rule`.

    python -m tools.mutate                   # every group
    python -m tools.mutate --group risk      # one group
    python -m tools.mutate --group executor  # `executor` and every `executor-…` part
    python -m tools.mutate --smoke           # the smoke group (small; fits a CI run)
    python -m tools.mutate --keep            # keep the scratch copy for `mutmut show NAME`
    python -m tools.mutate --group feed-staleness --budget-s 1200   # a sample, in 20 minutes
    python -m tools.mutate --group copy --recheck /tmp/polyd-mutate-copy-XXXX  # survivors only
    python -m tools.mutate --group feed-staleness --recheck DIR --unreached  # and the rest
    python -m tools.mutate --group storage --only 'storage.journal.xǁOrderJournalǁtake_over__*'

`--only` runs the mutants of the functions a change touched, the rest of the module's verdicts
standing from the last whole run: a function left as it was keeps its mutants (mutmut names
them by function and index), and tests only added cannot let a killed mutant live.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tools" / "mutation.toml"

# mutmut's verdicts (`mutmut results --all True`), folded into the four classes reported here;
# every other verdict ("survived", "suspicious", "skipped", "not checked", …) counts as survived.
KILLED = {"killed", "caught by type check", "segfault"}
TIMEOUT = {"timeout"}
NO_TESTS = {"no tests"}
# Not run: the group's time budget (`--budget-s`) ran out first. Not scored.
UNCHECKED = {"not checked"}


@dataclass(frozen=True)
class Group:
    name: str
    modules: list[str]
    tests: list[str]
    smoke: bool = False


@dataclass
class ModuleResult:
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    unchecked: int = 0
    accepted: int = 0
    equivalent_by_rule: int = 0
    unexplained: list[str] = field(default_factory=list)

    @property
    def kill_rate(self) -> float | None:
        scored = self.mutants - self.accepted - self.unchecked
        return None if scored <= 0 else round((self.killed + self.timeout) / scored, 4)

    def as_json(self) -> dict[str, Any]:
        return {
            "mutants": self.mutants,
            "killed": self.killed,
            "timeout": self.timeout,
            "survived": self.survived,
            "no_tests": self.no_tests,
            "unchecked": self.unchecked,
            "accepted": self.accepted,
            "equivalent_by_rule": self.equivalent_by_rule,
            "kill_rate": self.kill_rate,
            "unexplained_survivors": sorted(self.unexplained),
        }


def load_config(path: Path = CONFIG) -> tuple[list[Group], dict[str, str]]:
    """Read the groups and the accepted survivors; a malformed file names its problem."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"{path}: {e}") from None
    groups: list[Group] = []
    for i, raw in enumerate(data.get("group", [])):
        try:
            g = Group(
                name=str(raw["name"]),
                modules=[str(m) for m in raw["modules"]],
                tests=[str(t) for t in raw["tests"]],
                smoke=bool(raw.get("smoke", False)),
            )
        except (KeyError, TypeError) as e:
            raise SystemExit(f"{path}: group #{i + 1}: missing or bad field {e}") from None
        for p in [*g.modules, *g.tests]:
            if not (ROOT / p).exists():
                raise SystemExit(f"{path}: group {g.name!r}: {p} does not exist")
        groups.append(g)
    accepted = {str(k): str(v) for k, v in data.get("accepted", {}).items()}
    return groups, accepted


def _tree_files() -> list[str]:
    """Tracked and new (not ignored) files of the working tree, as they are on disk now."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def _copy_tree(dest: Path) -> list[str]:
    """Copy the working tree to `dest`; return its top-level entries (tests read data files
    such as the deploy examples, so everything is copied, not only Python packages)."""
    tops: set[str] = set()
    for rel in _tree_files():
        src = ROOT / rel
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        tops.add(rel.split("/", 1)[0])
    return sorted(tops)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _results(work: Path, env: dict[str, str]) -> dict[str, str]:
    """{mutant name: verdict} as mutmut recorded them in the scratch copy `work`."""
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "True"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    verdicts: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            verdicts[name] = status
    return verdicts


def _refresh_tests(g: Group, work: Path) -> dict[str, str]:
    """Copy the checkout's tests into the kept scratch copy `work` (beside the mutants and in
    mutmut's own copy), point the group's test selection at them, and return the earlier
    run's verdicts (its survivors are what `--recheck` runs again)."""
    for rel in _tree_files():
        if rel.startswith("tests/"):
            for dest in (work / rel, work / "mutants" / rel):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest)
    pyproject = work / "pyproject.toml"
    lines = pyproject.read_text("utf-8").splitlines()
    key = "pytest_add_cli_args_test_selection = "
    lines = [f"{key}{_toml_list(g.tests)}" if ln.startswith(key) else ln for ln in lines]
    pyproject.write_text("\n".join(lines) + "\n", "utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return _results(work, env)


def merge_recheck(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """The verdicts after a recheck. mutmut forgets the verdicts of mutants whose functions
    new tests cover ("not checked"), but a mutant killed before stays killed when tests are
    only added: keep the earlier verdict wherever the recheck did not reach the mutant."""
    return {name: before.get(name, v) if v in UNCHECKED else v for name, v in after.items()}


VERDICTS_FILE = "polyd-verdicts.json"


def _saved_verdicts(work: Path) -> dict[str, str]:
    """The verdicts saved in the kept scratch copy `work` by the last run or recheck ({} if
    none: a copy kept by an older version of this tool)."""
    try:
        data = json.loads((work / VERDICTS_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SystemExit(f"{work / VERDICTS_FILE}: {e}") from None
    return {str(k): str(v) for k, v in data.items()}


def _save_verdicts(work: Path, verdicts: dict[str, str]) -> None:
    (work / VERDICTS_FILE).write_text(json.dumps(verdicts, indent=1, ensure_ascii=False), "utf-8")


def only(verdicts: dict[str, str], patterns: Collection[str]) -> dict[str, str]:
    """The verdicts of the mutants `patterns` name (mutmut's globs: `*` matches anything)."""
    if not patterns:
        return verdicts
    return {n: v for n, v in verdicts.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def recheck_names(before: dict[str, str], unreached: bool = False) -> list[str]:
    """The mutants a recheck runs: the survivors, and with `unreached` also the mutants an
    earlier run's budget never reached."""
    done = KILLED | TIMEOUT if unreached else KILLED | TIMEOUT | UNCHECKED
    return [n for n, v in before.items() if v not in done]


def run_group(
    g: Group,
    jobs: int,
    keep: bool,
    budget_s: float | None = None,
    recheck: Path | None = None,
    unreached: bool = False,
    patterns: Collection[str] = (),
) -> tuple[dict[str, str], set[str], Path]:
    """Run mutmut for one group in a scratch copy; return {mutant name: verdict}, the survivors
    equivalent by rule, and the scratch directory. With `recheck` (a scratch copy kept by an
    earlier run), only that run's survivors are run again, against the checkout's tests now.
    With `patterns`, a first run runs and reports only the mutants they name (`only`)."""
    if recheck is not None:
        work = recheck
        # mutmut forgets verdicts once the tests change, so an earlier recheck's kills are
        # read back from the verdicts this tool saved beside the mutants.
        before = merge_recheck(_saved_verdicts(work), _refresh_tests(g, work))
        names = recheck_names(before, unreached)
        if not names:
            raise SystemExit(f"[{g.name}] {work}: no survivors to recheck")
        verdicts, _, _ = _mutmut(g, work, jobs, True, budget_s, names)
        verdicts = merge_recheck(before, verdicts)
        _save_verdicts(work, verdicts)
        survivors = [n for n, v in verdicts.items() if v not in KILLED | TIMEOUT]
        return verdicts, equivalent_by_rule(work, survivors), work
    work = Path(tempfile.mkdtemp(prefix=f"polyd-mutate-{g.name}-"))
    tops = _copy_tree(work)
    # Tests read the venue payloads captured beside the checkout (`../shared/fixtures`); mutmut
    # runs them from `<scratch>/mutants`, so the scratch gets the same neighbour.
    captured = ROOT.parent / "shared"
    if captured.is_dir():
        (work / "shared").symlink_to(captured, target_is_directory=True)
    also_copy = [t for t in tops if t not in g.modules and t != "pyproject.toml"]
    with (work / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(
            "\n[tool.mutmut]\n"
            f"source_paths = {_toml_list(g.modules)}\n"
            f"also_copy = {_toml_list(also_copy)}\n"
            f"pytest_add_cli_args_test_selection = {_toml_list(g.tests)}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        )
    return _mutmut(g, work, jobs, keep, budget_s, list(patterns), first=True)


def _mutmut(
    g: Group,
    work: Path,
    jobs: int,
    keep: bool,
    budget_s: float | None,
    names: list[str],
    *,
    first: bool = False,
) -> tuple[dict[str, str], set[str], Path]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    log_path = work / "mutmut-run.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        # Its own process group, so a spent budget stops mutmut and every test it started.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            rc = 0  # what ran is recorded; the rest is "not checked"
            print(f"[{g.name}] budget of {budget_s:.0f}s spent: stopped", file=sys.stderr)
    print(
        f"[{g.name}] mutmut run exit {rc} in {time.monotonic() - started:.0f}s (log {log_path})",
        file=sys.stderr,
    )
    if rc != 0:
        tail = log_path.read_text("utf-8", "replace")[-3000:]
        raise SystemExit(
            f"[{g.name}] mutmut failed (exit {rc}): the guarding tests must pass on the unmutated"
            f" code first. End of its log ({log_path}):\n{tail}"
        )
    verdicts = only(_results(work, env), names if first else ())
    if not verdicts:
        tail = log_path.read_text("utf-8", "replace")[-2000:]
        raise SystemExit(f"[{g.name}] mutmut produced no verdicts; end of its log:\n{tail}")
    survivors = [n for n, v in verdicts.items() if v not in KILLED | TIMEOUT]
    equivalent = equivalent_by_rule(work, survivors)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    elif first:  # a first run kept for `--recheck` (a recheck saves its merged verdicts)
        _save_verdicts(work, verdicts)
    return verdicts, equivalent, work


_SQL_WORD = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|VALUES|FROM|WHERE|SET|INTO|ORDER BY|GROUP BY|LIMIT"
    r"|CONFLICT|EXCLUDED|INDEXED BY|CAST|AS INTEGER|AND|NOT IN)\b",
    re.IGNORECASE,
)
_ROW_NAMES = {"r", "row"}


def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _body(f: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return ast.dump(ast.Module(body=list(f.body), type_ignores=[]))


def sql_case_equivalent(original: ast.AST, mutant: ast.AST) -> bool:
    """True if `mutant` differs from `original` only in the letter case of one string literal
    that SQLite reads without regard to case (see the module docstring)."""
    a, b = list(ast.walk(original)), list(ast.walk(mutant))
    if len(a) != len(b):
        return False
    changed: list[tuple[ast.Constant, ast.Constant]] = []
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y):
            return False
        if isinstance(x, ast.Constant) and isinstance(y, ast.Constant) and x.value != y.value:
            changed.append((x, y))
    if len(changed) != 1:
        return False
    x, y = changed[0]
    if not (isinstance(x.value, str) and isinstance(y.value, str)):
        return False
    if x.value.casefold() != y.value.casefold():
        return False
    # everything else identical (names, operators, structure), apart from the function's name
    saved = y.value
    y.value = x.value
    try:
        if not isinstance(original, ast.FunctionDef | ast.AsyncFunctionDef) or not isinstance(
            mutant, ast.FunctionDef | ast.AsyncFunctionDef
        ):
            return False
        same = _body(original) == _body(mutant) and ast.dump(original.args) == ast.dump(mutant.args)
    finally:
        y.value = saved
    if not same:
        return False
    text = x.value
    if "'" not in text and _SQL_WORD.search(text):
        return True
    for node in ast.walk(original):
        if (
            isinstance(node, ast.Subscript)
            and node.slice is x
            and isinstance(node.value, ast.Name)
            and node.value.id in _ROW_NAMES
        ):
            return True
    return False


def equivalent_by_rule(work: Path, names: list[str]) -> set[str]:
    """The survivors in `names` that `sql_case_equivalent` explains, read from mutmut's
    `mutants/` copy of each module (which holds every mutant and the original side by side)."""
    out: set[str] = set()
    trees: dict[Path, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    for name in names:
        module, _, func = name.partition(".x")
        if not func:
            continue
        # `storage.fills.xǁFillRepositoryǁrecord__mutmut_7` → storage/fills.py, function
        # `xǁFillRepositoryǁrecord__mutmut_7` beside `xǁFillRepositoryǁrecord__mutmut_orig`
        path = work / "mutants" / (module.replace(".", "/") + ".py")
        if path not in trees:
            try:
                trees[path] = _functions(ast.parse(path.read_text("utf-8")))
            except (OSError, SyntaxError):
                trees[path] = {}
        funcs = trees[path]
        mutant_name = "x" + func
        original_name = mutant_name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
        if (
            mutant_name in funcs
            and original_name in funcs
            and sql_case_equivalent(funcs[original_name], funcs[mutant_name])
        ):
            out.add(name)
    return out


def module_of(mutant: str, modules: list[str]) -> str:
    """`execution.risk.xǁRiskEngineǁcheck__mutmut_3` → `execution/risk.py` (longest match)."""
    best, best_len = "?", -1
    for m in modules:
        dotted = m.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if mutant.startswith(dotted + ".") and len(dotted) > best_len:
            best, best_len = m, len(dotted)
    return best


def summarise(
    verdicts: dict[str, str],
    modules: list[str],
    accepted: dict[str, str],
    equivalent: Collection[str] = (),
) -> dict[str, ModuleResult]:
    out: dict[str, ModuleResult] = {m: ModuleResult() for m in modules}
    for name, status in sorted(verdicts.items()):
        r = out.setdefault(module_of(name, modules), ModuleResult())
        r.mutants += 1
        if status in KILLED:
            r.killed += 1
        elif status in TIMEOUT:
            r.timeout += 1
        elif status in UNCHECKED:
            r.unchecked += 1
        else:
            if status in NO_TESTS:
                r.no_tests += 1
            else:
                r.survived += 1
            if name in accepted:
                r.accepted += 1
            elif name in equivalent:
                r.accepted += 1
                r.equivalent_by_rule += 1
            else:
                r.unexplained.append(name)
    return out


def selects(wanted: str, name: str) -> bool:
    """`--group executor` selects the group `executor` and its parts `executor-guard`, …"""
    return name == wanted or name.startswith(wanted + "-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__.split("\n")[0])
    ap.add_argument("--group", action="append", default=[], help="run only this group")
    ap.add_argument("--smoke", action="store_true", help="run only groups marked smoke = true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop each group after this many seconds; mutants not reached are reported"
        " as unchecked and left out of the kill rate",
    )
    ap.add_argument(
        "--recheck",
        type=Path,
        default=None,
        metavar="SCRATCH",
        help="with one --group: run again only the survivors in SCRATCH (kept by --keep),"
        " against the checkout's tests as they are now",
    )
    ap.add_argument(
        "--unreached",
        action="store_true",
        help="with --recheck: also run the mutants the earlier run's budget did not reach",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GLOB",
        help="with one --group: run and report only the mutants this names (mutmut's names,"
        " `*` matching anything), e.g. the functions a change touched",
    )
    ap.add_argument("--min-kill-rate", type=float, default=None, help="exit 1 below this rate")
    args = ap.parse_args(argv)
    groups, accepted = load_config()
    if args.recheck is not None and len(args.group) != 1:
        print("--recheck needs exactly one --group (the one SCRATCH was made for)", file=sys.stderr)
        return 2
    if args.only and (len(args.group) != 1 or args.recheck is not None):
        print("--only needs exactly one --group, and no --recheck", file=sys.stderr)
        return 2
    known = {g.name for g in groups}
    unknown = [n for n in args.group if not any(selects(n, k) for k in known)]
    if unknown:
        print(f"unknown group(s) {unknown}; known: {sorted(known)}", file=sys.stderr)
        return 2
    chosen = [
        g
        for g in groups
        if (not args.group or any(selects(n, g.name) for n in args.group))
        and (not args.smoke or g.smoke)
    ]
    report: dict[str, Any] = {}
    low: list[str] = []
    failed: list[str] = []
    for g in chosen:
        started = time.monotonic()
        try:
            verdicts, equivalent, work = run_group(
                g, args.jobs, args.keep, args.budget_s, args.recheck, args.unreached, args.only
            )
        except SystemExit as e:
            print(e, file=sys.stderr)
            report[g.name] = {"error": "the group's tests fail on the unmutated code (see stderr)"}
            failed.append(g.name)
            continue
        modules = summarise(verdicts, g.modules, accepted, equivalent)
        report[g.name] = {
            "modules": {m: r.as_json() for m, r in modules.items()},
            "verdicts": dict(Counter(verdicts.values())),
            "seconds": round(time.monotonic() - started),
            **({"scratch": str(work)} if args.keep else {}),
        }
        for m, r in modules.items():
            rate = r.kill_rate
            if args.min_kill_rate is not None and rate is not None and rate < args.min_kill_rate:
                low.append(f"{m}: {rate:.1%}")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if low:
        print("below the kill-rate floor: " + ", ".join(low), file=sys.stderr)
    if failed:
        print("groups that could not run: " + ", ".join(failed), file=sys.stderr)
    return 1 if low or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
