"""SIGKILL the daemon (a real subprocess) while a copy is in flight; the restart copies it once.

The simulator runs in the test's event loop; the daemon runs as `python -m orchestrator` in its
own process, live against it. A `late_response` fault holds the copy's `POST /order` answer
after the venue has matched it, so the kill lands after the intent and the PENDING journal row
are durable but before the daemon learns the outcome: the worst moment for a duplicate. A
`latency` fault holds the request before the venue reads it, so the kill drops it on the wire:
the restart's reconciliation finds no order under the journaled hash and re-sends the journaled
signed order (the same bytes; the venue would refuse a second order with that hash).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator import SimMarket, Simulator
from tests.harness import DaemonProcess

D = Decimal
LEADER = "0x" + "3c" * 20
MAKER = "0x" + "6b" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    m = sim.add_market(question="Will the copy survive a kill?", slug="kill-9")
    sim.seed_order(MAKER, m.token_ids[0], "SELL", D("0.51"), D("500"))
    return m


def copy_daemon(sim: Simulator, tmp_path: Path) -> DaemonProcess:
    """The daemon, copying LEADER, with its own default timeouts (not the harness's fast ones)."""
    rules = tmp_path / "copy.toml"
    rules.write_text(
        f'[[wallets]]\naddress = "{LEADER}"\nlabel = "leader"\nratio = "0.1"\n'
        'max_slippage = "0.02"\nbackfill_s = 30\nmax_trade_notional = "20"\n'
    )
    return DaemonProcess(
        sim,
        tmp_path,
        collateral=D("1000"),
        fast=False,
        COPY_ENABLED=None,  # the default: on
        COPY_RULES_PATH=rules,
        COPY_POLL_INTERVAL_S="0.2",
        SHUTDOWN_TIMEOUT_S="3",
    )


async def until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:  # noqa: ASYNC109 -- a polling helper that names the condition that failed
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet
    finally:
        con.close()


async def healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def copies_at_venue(sim: Simulator, token: str) -> list[dict[str, Any]]:
    return [o for o in sim.ledger()["orders"] if o["token_id"] == token and o["side"] == "BUY"]


@pytest.mark.parametrize(
    "fault",
    [
        # Matched at the venue at once, answered 30 s later: the kill lands in between. The
        # hold outlasts the test, so however slow the machine, the daemon never sees the answer.
        {"kind": "late_response", "route": "POST /order", "seconds": 30},
        # Held 30 s *before* the venue acts on it: the kill lands while the order is on the
        # wire, and the restart reconciles and re-sends long before the held copy would reach
        # the engine (a shorter hold let a slow restart find the order already there).
        {"kind": "latency", "route": "POST /order", "seconds": 30},
    ],
    ids=["matched_unanswered", "on_the_wire"],
)
async def test_sigkill_with_copy_in_flight_restart_copies_exactly_once(
    sim: Simulator, market: SimMarket, tmp_path: Path, fault: dict[str, Any]
) -> None:
    d = copy_daemon(sim, tmp_path)
    token = market.token_ids[0]
    db = d.db_path

    d.start()
    try:
        await until(lambda: healthy(d.port), "the daemon to be ready")
        await sim.apply_fault(fault)
        sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("100"))
        await until(
            lambda: (
                query(db, "SELECT 1 FROM copy_intents")
                and query(db, "SELECT 1 FROM orders WHERE strategy = 'copy' AND status = 'PENDING'")
                and (fault["kind"] == "latency" or copies_at_venue(sim, token))
            ),
            "the intent and the PENDING journal row (and the order at the venue)",
        )
        assert d.kill9() == -signal.SIGKILL
    finally:
        if d.alive():
            d.kill9()
    assert query(db, "SELECT COUNT(*) FROM copy_intents") == [(1,)]  # died before settling

    d.start()  # the same key, database and port
    try:
        await until(lambda: healthy(d.port), "the restarted daemon to be ready")
        await until(
            lambda: query(db, "SELECT COUNT(*) FROM copy_intents") == [(0,)],
            "the restart to settle the intent",
        )
        await asyncio.sleep(1.0)  # several more polls see the same (young) leader trade again
        assert d.sigterm(timeout=15) == 0
    finally:
        if d.alive():
            d.kill9()
    err = d.stderr(run=2)

    venue = copies_at_venue(sim, token)
    journal = query(db, "SELECT client_order_id, status, size_matched FROM orders")
    events = [e for (e,) in query(db, "SELECT event FROM audit_log WHERE strategy = 'copy'")]
    assert events.count("copy_intent") == 1  # decided once, across both runs
    assert "copy_intent_in_journal" in events  # the restart left the order to the executor
    assert len(journal) == 1  # one copy order, one client order id, ever
    # Exactly once either way: one venue order, matched, and the journal agrees.
    # The copy is a FAK BUY of 10 at 0.52 (the leader's 0.50 plus 0.02 slippage) against the ask
    # at 0.51: its 5.20 pUSD buy 10.196078 shares (taking with surplus, py-clob-client-v2 #89).
    filled = D("10.196078")
    assert len(venue) == 1, venue
    assert D(venue[0]["size_matched"]) == filled
    assert venue[0]["id"] == query(db, "SELECT venue_order_id FROM orders")[0][0]
    assert journal[0][1] == "FILLED" and D(journal[0][2]) == filled
    if fault["kind"] == "late_response":
        # The venue matched it before the kill: the restart found it by hash, sent nothing.
        assert "order_resent" not in events
    else:
        # The kill dropped the request before the venue read it: the restart re-sent the
        # journaled signed order, its same bytes every time. Once, unless a re-send's answer
        # was lost (`order_resend_unsettled`, seen on a loaded machine): the next pass re-sends
        # the same bytes, which the venue takes once (one venue order, asserted above).
        resent = [ln for ln in err.splitlines() if "order_resen" in ln or "lookup" in ln]
        unsettled = sum('"order_resend_unsettled"' in ln for ln in resent)
        assert events.count("order_resent") == 1 + unsettled, (events, resent)
        (hash_journaled,) = query(db, "SELECT payload_hash FROM orders")[0]
        hashes = {
            json.loads(detail)["payload_hash"]
            for (detail,) in query(db, "SELECT detail FROM audit_log WHERE event = 'order_resent'")
        }
        assert hashes == {hash_journaled}, (hashes, hash_journaled)
    assert "Traceback" not in err
