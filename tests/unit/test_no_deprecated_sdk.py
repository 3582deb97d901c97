"""The daemon, the demo and the CLI import nothing from the deprecated py-clob-client-v2.

It stays in the `dev` extra for the simulator's tests only (pyproject.toml, docs/venue-client.md);
this holds the daemon's side of that line, in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ("orchestrator", "demo", "cli", "doctor", "credentials", "wiring.execution", "venue.clob")
DEPRECATED = ("py_clob_client_v2", "py_order_utils", "poly_eip712_structs")


def test_no_daemon_entry_point_imports_the_deprecated_sdk() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in ENTRY)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {DEPRECATED!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
