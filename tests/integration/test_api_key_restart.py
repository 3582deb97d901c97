"""A restart derives the API key it already has and never asks the venue to create it again.

Creating a key that exists is refused by the venue with HTTP 400 "Could not create api key"
(py-clob-client-v2 `create_or_derive_api_key` asks that first, and its HTTP helper logs the
refusal at ERROR on every restart). `build_client` derives first (`GET /auth/derive-api-key`)
and creates (`POST /auth/api-key`) only for a key that has none.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from demo import funded_key
from simulator import Simulator
from venue.clob import build_client


def start(sim: Simulator, key: str) -> str:
    """A daemon's start-up credential step (blocking): the API key it ends up with."""
    client = build_client(
        host=sim.clob_url,
        chain_id=137,
        private_key=key,
        creds=None,
        signature_type=0,
        funder=None,
    )
    return client.creds.api_key


async def test_a_restart_derives_the_key_without_a_refused_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Simulator(seed=3) as sim:
        key = funded_key(sim, Decimal("10"))

        with caplog.at_level(logging.DEBUG):
            first = await asyncio.to_thread(start, sim, key)
            second = await asyncio.to_thread(start, sim, key)
            third = await asyncio.to_thread(start, sim, key)
        auth = [(r.method, r.path, r.status) for r in sim.request_log if r.path.startswith("/auth")]
    assert first == second == third
    assert auth == [
        ("GET", "/auth/derive-api-key", 400),  # a brand-new key: nothing to derive yet
        ("POST", "/auth/api-key", 200),
        ("GET", "/auth/derive-api-key", 200),  # each restart: found at once
        ("GET", "/auth/derive-api-key", 200),
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Could not create api key" not in caplog.text


async def test_two_processes_of_one_key_starting_together_both_get_the_key() -> None:
    """Two daemons sharing an account start at once: both find no key, both ask to create it,
    the venue makes it for one and refuses the other with 400 "Could not create api key". The
    refused one derives the key the other made instead of failing its start (a CI run of the
    shared-account test lost a daemon this way)."""
    async with Simulator(seed=4) as sim:
        key = funded_key(sim, Decimal("10"))
        # Both creations wait long enough that both derivations come first (neither finds a key).
        sim.faults.add(kind="latency", route="POST /auth/api-key", seconds=0.5, count=2)

        one, two = await asyncio.gather(
            asyncio.to_thread(start, sim, key), asyncio.to_thread(start, sim, key)
        )
        auth = [(r.method, r.path, r.status) for r in sim.request_log if r.path.startswith("/auth")]
    assert one == two
    assert sorted(auth) == sorted(
        [
            ("GET", "/auth/derive-api-key", 400),
            ("GET", "/auth/derive-api-key", 400),
            ("POST", "/auth/api-key", 200),
            ("POST", "/auth/api-key", 400),  # the refusal the other start made, and
            ("GET", "/auth/derive-api-key", 200),  # the key it made, derived
        ]
    )
