"""`tests.helpers.retry_while_locked`: a test's read of a running daemon's database is tried again
while SQLite says "database is locked", within a bound; any other error is raised at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from tests.helpers import retry_while_locked


def _failing(errors: list[str], value: str = "rows") -> tuple[list[int], Callable[[], str]]:
    calls = [0]

    def read() -> str:
        calls[0] += 1
        if errors:
            raise sqlite3.OperationalError(errors.pop(0))
        return value

    return calls, read


def test_a_locked_read_is_tried_again_until_it_answers() -> None:
    calls, read = _failing(["database is locked", "database is locked"])
    assert retry_while_locked(read) == "rows"
    assert calls == [3]


def test_another_error_is_raised_at_once() -> None:
    calls, read = _failing(["no such table: orders"])
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_while_locked(read)
    assert calls == [1]


def test_a_lock_past_the_bound_is_raised_saying_so() -> None:
    calls, read = _failing(["database is locked"] * 3)
    with pytest.raises(sqlite3.OperationalError, match=r"locked \(still, after 0s of retries\)"):
        retry_while_locked(read, limit_s=0)
    assert calls == [1]
