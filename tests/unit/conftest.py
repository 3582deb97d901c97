"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, Repositories


@pytest.fixture
async def repos(tmp_path: Path) -> AsyncIterator[Repositories]:
    """The repositories over a fresh, migrated SQLite database in the test's own folder."""
    db = Database(tmp_path / "polyd.db")
    await db.open()
    try:
        yield Repositories.over(db)
    finally:
        await db.close()
