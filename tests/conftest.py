"""Shared pytest configuration: the repository root is importable; no developer `.env` leaks in."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pg import PgServer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The captured venue payloads sit beside the checkout; CI must have them (tests that read them
# skip locally without them, which CI must never do silently).
if os.environ.get("CI") and not (ROOT.parent / "shared" / "fixtures").is_dir():
    raise RuntimeError(f"CI needs the shared fixtures at {ROOT.parent / 'shared' / 'fixtures'}")

# Settings read the environment; tests build Settings explicitly and must never pick up a
# developer's shell variables or .env file.
for _name in list(os.environ):
    if _name in {"MODE", "PRIVATE_KEY", "CLOB_API_KEY", "CLOB_API_SECRET", "CLOB_API_PASSPHRASE"}:
        del os.environ[_name]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL database for the whole test session (a schema per test from
    `fresh_url()`), dropped after it; PostgreSQL tests fail, never skip, if it does not answer."""
    from tests.pg import PgServer  # after ROOT is importable

    server = PgServer()
    try:
        yield server
    finally:
        server.drop()
