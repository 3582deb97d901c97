"""The mutation tool's equivalence rule accepts only case changes SQLite cannot see."""

from __future__ import annotations

import ast
import textwrap

from tools.mutate import merge_recheck, selects, sql_case_equivalent, summarise


def _pair(original: str, mutant: str) -> tuple[ast.AST, ast.AST]:
    def fn(src: str) -> ast.AST:
        return ast.parse(textwrap.dedent(src)).body[0]

    return fn(original), fn(mutant)


def test_case_of_sql_text_and_row_keys_is_equivalent() -> None:
    assert sql_case_equivalent(
        *_pair(
            'def f(c):\n    return c.execute("SELECT size FROM positions WHERE id = ?")',
            'def g(c):\n    return c.execute("select size from positions where id = ?")',
        )
    )
    assert sql_case_equivalent(
        *_pair('def f(r):\n    return r["trade_id"]', 'def g(r):\n    return r["TRADE_ID"]')
    )


def test_quoted_literals_values_and_other_changes_are_not() -> None:
    # a quoted SQL literal compares with case
    assert not sql_case_equivalent(
        *_pair(
            "def f(c):\n    return c.execute(\"SELECT * FROM o WHERE s = 'FILLED'\")",
            "def g(c):\n    return c.execute(\"select * from o where s = 'filled'\")",
        )
    )
    # a value that is not SQL: an audit event name
    assert not sql_case_equivalent(
        *_pair('def f(a):\n    a.append("fill_failed")', 'def g(a):\n    a.append("FILL_FAILED")')
    )
    # a key of something that is not a row
    assert not sql_case_equivalent(
        *_pair('def f(d):\n    return d["side"]', 'def g(d):\n    return d["SIDE"]')
    )
    # a case change plus another change
    assert not sql_case_equivalent(
        *_pair(
            'def f(c):\n    return c.execute("SELECT a FROM t LIMIT ?", (1,))',
            'def g(c):\n    return c.execute("select a from t limit ?", (2,))',
        )
    )
    # not a case change at all
    assert not sql_case_equivalent(
        *_pair(
            'def f(c):\n    return c.execute("SELECT a FROM t")',
            'def g(c):\n    return c.execute("XXSELECT a FROM tXX")',
        )
    )


def test_a_group_name_selects_itself_and_its_parts_only() -> None:
    assert selects("executor", "executor")
    assert selects("executor", "executor-guard")
    assert not selects("executor", "executors")
    assert not selects("executor-guard", "executor")
    assert not selects("copy", "copy_trader")


def test_mutants_a_spent_budget_left_unchecked_are_not_scored() -> None:
    verdicts = {
        "execution.risk.x_a__mutmut_1": "killed",
        "execution.risk.x_a__mutmut_2": "survived",
        "execution.risk.x_a__mutmut_3": "not checked",
        "execution.risk.x_a__mutmut_4": "not checked",
    }
    r = summarise(verdicts, ["execution/risk.py"], {})["execution/risk.py"]
    assert (r.mutants, r.killed, r.survived, r.unchecked) == (4, 1, 1, 2)
    assert r.kill_rate == 0.5
    assert r.unexplained == ["execution.risk.x_a__mutmut_2"]


def test_a_recheck_keeps_earlier_kills_mutmut_forgot_and_takes_what_it_ran() -> None:
    before = {
        "m.x_a__mutmut_1": "killed",
        "m.x_a__mutmut_2": "survived",
        "m.x_a__mutmut_3": "survived",
    }
    after = {
        "m.x_a__mutmut_1": "not checked",
        "m.x_a__mutmut_2": "killed",
        "m.x_a__mutmut_3": "not checked",
    }
    assert merge_recheck(before, after) == {
        "m.x_a__mutmut_1": "killed",
        "m.x_a__mutmut_2": "killed",
        "m.x_a__mutmut_3": "survived",  # not reached this time: still a survivor
    }
