"""`max_entries = 1` means one entry for the life of the rule, across restarts and `kill -9`.

The daemon runs as `python -m orchestrator` live against the simulator (a real subprocess), with
one sniper rule over a market whose ask sits inside the rule's band with depth to spare: every
run of the daemon sees the opportunity at once. The venue's ledger is the judge: it must hold one
BUY from us, however many times the daemon was stopped, restarted or killed.

The kill lands at the worst moment: the venue has matched the BUY but holds its answer
(`late_response`), so the PENDING row (and the entry written with it) is on disk while the daemon
never learned the outcome.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DaemonProcess, SimProcess, wait_until

MAKER = "0x" + "5e" * 20


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with SimProcess(workdir=tmp_path, seed=23, scenario=None) as s:
        yield s


def sniper_daemon(sim: SimProcess, tmp_path: Path) -> tuple[DaemonProcess, str]:
    m = sim.add_market("Will the sniper buy once?", "sniper-once")
    token = m["token_ids"][0]
    sim.fund(MAKER, collateral=Decimal("1000"), token_id=token, shares=Decimal("5000"))
    sim.seed_orders(
        [{"maker": MAKER, "token_id": token, "side": "SELL", "price": "0.93", "size": "2000"}]
    )
    rules = tmp_path / "sniper.toml"
    rules.write_text(
        '[[rules]]\nname = "once"\n'
        f'select = {{ token_ids = ["{token}"] }}\n'
        'min_price = "0.90"\nmax_price = "0.95"\nmin_size = "5"\nmax_notional = "6"\n'
        "max_entries = 1\ncooldown_s = 0\n"
    )
    d = DaemonProcess(sim, tmp_path, SNIPER_ENABLED="true", SNIPER_RULES_PATH=rules)
    return d, token


def buys(sim: SimProcess, token: str) -> list[dict[str, Any]]:
    return [o for o in sim.ledger()["orders"] if o["token_id"] == token and o["side"] == "BUY"]


def decided_with_stored_state(d: DaemonProcess) -> None:
    """Wait until this run's sniper read its slot back (it watches the token), then give it
    time to act on the book it subscribed to."""
    wait_until(
        lambda: {"sniper_slots_loaded", "sniper_fired"} & set(d.event_names(d.runs)),
        30,
        what="the sniper to load its stored slot (or, had it none, to fire)",
    )
    time.sleep(3.0)


def test_max_entries_1_across_three_restarts_buys_once(sim: SimProcess, tmp_path: Path) -> None:
    d, token = sniper_daemon(sim, tmp_path)
    try:
        d.start()
        d.wait_ready()
        wait_until(lambda: buys(sim, token), 30, what="the first (and only) entry")
        assert d.sigterm() == 0
        for _ in range(2):
            d.start()
            d.wait_ready()
            decided_with_stored_state(d)
            assert d.sigterm() == 0
    finally:
        d.stop()
    assert len(buys(sim, token)) == 1
    (row,) = d.rows("SELECT entries FROM sniper_slots WHERE rule = 'once'")
    assert row["entries"] == 1


def test_max_entries_1_across_kill9_mid_submission_buys_once(
    sim: SimProcess, tmp_path: Path
) -> None:
    d, token = sniper_daemon(sim, tmp_path)
    # Matched at the venue at once, answered 30 s later: the kill lands in between.
    sim.fault(kind="late_response", route="POST /order", seconds=30)
    try:
        d.start()
        d.wait_ready()
        wait_until(
            lambda: (
                buys(sim, token)
                and d.rows("SELECT 1 FROM orders WHERE strategy = 'sniper' AND status = 'PENDING'")
            ),
            30,
            what="the BUY matched at the venue with its journal row PENDING",
        )
        d.kill9()
        sim.clear_faults()
        for _ in range(2):
            d.start()
            d.wait_ready()
            decided_with_stored_state(d)
            d.kill9()
        d.start()
        d.wait_ready()
        wait_until(
            lambda: not d.rows("SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN')"),
            30,
            what="the killed run's order to be reconciled",
        )
        assert d.sigterm() == 0
    finally:
        d.stop()
    assert len(buys(sim, token)) == 1
    (row,) = d.rows("SELECT entries FROM sniper_slots WHERE rule = 'once'")
    assert row["entries"] == 1
