"""The daemon's imports leave out what it seldom or never needs.

`eth_account` alone is about half a second of imports (eth-keyfile, py_ecc's BLS tables): the
daemon derives addresses with `venue.clob.auth.LocalSigner` and imports it only to sign a chain
transaction (`venue.chain.signing`). tenacity is imported when a first retry is built
(`resilience.retry`). The vendor SDKs and the simulator are never on the daemon's path. Checked
in a fresh interpreter (`python -c`), whose `sys.modules` is what the daemon's start-up imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What `python -m orchestrator` imports before and while it builds its stages.
DAEMON_MODULES = (
    "orchestrator",
    "executor",
    "venue.order_book",
    "wiring.execution",
    "wiring.market_data",
    "wiring.copy_trading",
    "wiring.redemption",
)

NOT_AT_START = (
    "eth_account",
    "eth_keyfile",
    "py_ecc",
    "tenacity",
    "py_clob_client_v2",
    "polymarket",
    "opentelemetry.sdk",
    "simulator",
)


def _loaded_after(imports: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(imports)!r}: importlib.import_module(m)\n"
        f"print(json.dumps([w for w in {list(watched)!r} if w in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_daemon_start_up_does_not_import_heavy_or_foreign_modules() -> None:
    assert _loaded_after(DAEMON_MODULES, NOT_AT_START) == []


def test_the_check_sees_a_module_that_is_imported() -> None:
    # The same probe reports eth_account once something does import it (a chain signature).
    loaded = _loaded_after(("venue.chain.signing",), ("eth_account",))
    assert loaded == []
    code = "import venue.chain.signing as s; s._eth_account()"
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print('eth_account' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True"
