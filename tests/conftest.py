"""Shared pytest configuration: the repository root is importable; no developer `.env` leaks in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
