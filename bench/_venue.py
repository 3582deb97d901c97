"""The venue simulator in a subprocess, for benchmarks that want it on its own core.

`python -m simulator --seed N` prints one JSON line of URLs on stdout, then serves until SIGTERM;
markets and balances are set up over its admin routes. Not a benchmark itself: the runner lists
only modules whose name does not start with `_`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TIMEOUT_S = 10.0


def simulator_argv(seed: int) -> list[str]:
    """The simulator's command line (run it with `cwd=ROOT` and stdout piped)."""
    return [sys.executable, "-m", "simulator", "--seed", str(seed)]


def read_urls(proc: subprocess.Popen[Any]) -> dict[str, str]:
    """Block until the simulator prints its first stdout line; return the URLs it names."""
    assert proc.stdout is not None
    urls: dict[str, str] = json.loads(proc.stdout.readline())
    return urls


def add_market(clob_url: str, question: str, slug: str) -> list[str]:
    """List a market (`POST /_sim/market`); return its token ids (Yes first)."""
    r = httpx.post(
        clob_url + "/_sim/market",
        json={"question": question, "slug": slug},
        timeout=ADMIN_TIMEOUT_S,
    )
    r.raise_for_status()
    token_ids: list[str] = r.json()["token_ids"]
    return token_ids


def fund(
    clob_url: str,
    address: str,
    collateral: Decimal | str,
    *,
    token_id: str | None = None,
    shares: Decimal | str | None = None,
) -> None:
    """Credit `address` with pUSD and, with `token_id`, outcome shares (`POST /_sim/fund`)."""
    body: dict[str, str] = {"address": address, "collateral": str(collateral)}
    if token_id is not None:
        body["token_id"], body["shares"] = token_id, str(shares)
    r = httpx.post(clob_url + "/_sim/fund", json=body, timeout=ADMIN_TIMEOUT_S)
    r.raise_for_status()


@contextlib.contextmanager
def simulator(seed: int) -> Iterator[dict[str, str]]:
    """Run the simulator for the `with` block; yield its URLs. Stopped with SIGTERM on exit.

    Start-up and shutdown block: call it in set-up, before any clock starts.
    """
    proc = subprocess.Popen(simulator_argv(seed), cwd=ROOT, stdout=subprocess.PIPE)
    try:
        yield read_urls(proc)
    finally:
        proc.terminate()
        proc.wait(10)
