"""Helpers shared by tests: settings without a developer's .env, free ports, subprocess runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from models import OrderRequest, OrderResult, OrderStatus

ROOT = Path(__file__).resolve().parent.parent
# Payloads captured from the real venue live in ../shared/fixtures, beside the checkout.
FIXTURES = ROOT.parent / "shared" / "fixtures"
PYTHON = sys.executable
# A real token id from a captured payload (77 decimal digits).
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
# A throwaway key used only by tests (it has never held funds).
TEST_PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Build Settings for a test: no .env, a database under `tmp_path`, an ephemeral port."""
    base: dict[str, Any] = {"db_path": tmp_path / "polyd.db", "http_port": 0}
    base.update(overrides)
    return load_settings(env_file=None, **base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment minus every polyd setting, plus `extra`."""
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m orchestrator ARGS` from the repository root and capture its output."""
    return subprocess.run(
        [PYTHON, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def until(cond: Callable[[], Any], limit_s: float = 5.0) -> float:
    """Poll `cond` every 5 ms until it is truthy; return the seconds that took.

    Fails the test (AssertionError) after `limit_s`.
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        if loop.time() - t0 > limit_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
    return loop.time() - t0


def make_order(**overrides: object) -> OrderRequest:
    """A valid GTC BUY of 10 @ 0.5 on TOKEN by the sniper; `overrides` replace any field."""
    fields: dict[str, object] = {
        "strategy": "sniper",
        "token_id": TOKEN,
        "side": "BUY",
        "price": "0.5",
        "size": "10",
        "order_type": "GTC",
    }
    fields.update(overrides)
    return OrderRequest.model_validate(fields)


def filled_in_full(request: OrderRequest) -> OrderResult:
    """What a fake executor answers for `request` filled in full at its limit price."""
    return OrderResult(
        client_order_id=request.client_order_id,
        status=OrderStatus.FILLED,
        filled_size=request.size,
        avg_price=request.price,
    )


def require_tool(name: str, package: str) -> str:
    """Return the path of command `name`; skip the test without it, but fail it under CI.

    CI installs every tool the tests need (.ci/run), so a missing one there is a defect, not a
    reason to skip silently.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI (Debian package {package})")
    pytest.skip(f"{name} not installed (apt-get install {package})")
