"""Crash-restart reconciliation: SIGKILL the daemon at random moments while both strategies trade.

The daemon runs live against the simulator's demo scenario with the sniper (price bands over the
living books) and the copy trader (following the whale) both trading continuously. It is killed
with SIGKILL at seeded random moments (some during start-up and its reconcile, others while an
order is in flight: every order is held 0.3 s at the venue before it matches) and restarted each
time on the same database. One kill in every run is not left to chance: it waits until the venue
has received an order it holds for 3 s, so it lands between the PENDING row and the answer. At
the end trading is halted, the journal is left to settle, and the database is compared with the
simulator's ledger: every venue order has exactly one journal row in the right final state,
fills and positions match, nothing is duplicated, lost or orphaned, and every order body the
venue received is one the journal signed, byte for byte.

Both runs are parametrised over the two engines, the SQLite file and a fresh schema of a
throwaway PostgreSQL database (`DATABASE_URL`), with the same assertions: the short run (5 kills)
is in the default suite, `pytest -m slow` runs 25 kills. `POLYD_CRASH_FIGURES=path` writes a
run's counts there as JSON (they are also printed: `-s`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.harness import (
    Comparison,
    DaemonProcess,
    HarnessError,
    SimProcess,
    check_exactly_once,
    compare,
    demo_rules,
    wait_until,
)

# A lookup grace well above a normal submission time (ms), so no healthy order is rejected.
CRASH_SETTINGS = {"ORDER_LOOKUP_GRACE_S": "8", "RECONCILE_INTERVAL_S": "5"}
UNSETTLED_SQL = "SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN')"


def single_posts(sim: SimProcess) -> int:
    """How many POST /order bodies the venue has received."""
    return sum(1 for r in sim.received_orders()["orders"] if r["path"] == "/order")


def hold_next_order(sim: SimProcess, seconds: float) -> int:
    """Hold the next POST /order `seconds` at the venue (the others 0.3 s, as before); return
    how many POST /order bodies the venue had received until now."""
    sim.clear_faults()
    sim.fault(kind="latency", route="POST /order", seconds=seconds, count=1)  # matched first
    sim.fault(kind="latency", route="POST /order", seconds=0.3, count=100_000)
    return single_posts(sim)


def kill_mid_submission(sim: SimProcess, d: DaemonProcess) -> None:
    """SIGKILL the daemon while an order is at the venue and its journal row is unsettled.

    The next order is held 3 s at the venue: past the daemon's 1 s client timeout its row turns
    UNKNOWN, and it cannot be found until the venue lets it through, so the row stays unsettled
    for seconds, whatever the polling below costs.
    """
    before = hold_next_order(sim, 3.0)
    wait_until(
        lambda: single_posts(sim) > before and d.rows(UNSETTLED_SQL),
        30,
        interval=0.05,
        what="an order held at the venue with its journal row unsettled",
    )
    d.kill9()
    assert d.rows(UNSETTLED_SQL), "the kill landed after the order settled"


def crash_restart_run(
    workdir: Path, *, kills: int, seed: int, database_url: str | None = None
) -> dict[str, int]:
    """Kill and restart the daemon `kills` times (on PostgreSQL if `database_url` is given);
    return the final counts."""
    rng = random.Random(seed)
    # On PostgreSQL a restart after `kill -9` waits out the killed run's strategy leases (a run
    # cut off from the database might still be trading until they expire): the shortest TTL
    # keeps that wait to 5 s per restart.
    engine = {"DATABASE_URL": database_url, "LEASE_TTL_S": "5"} if database_url else {}
    with SimProcess(workdir=workdir, seed=seed, scenario="demo") as sim:
        d = DaemonProcess(
            sim, workdir, extra={**demo_rules(sim, workdir), **CRASH_SETTINGS, **engine}
        )
        try:
            # Every order spends 0.3 s at the venue before it is matched (under the 1 s client
            # timeout), so a fair share of the kills land between the PENDING row and the answer.
            sim.fault(kind="latency", route="POST /order", seconds=0.3, count=100_000)
            d.start()
            d.wait_ready()
            mid_submission = 0
            for i in range(kills):
                if i == kills // 2:
                    kill_mid_submission(sim, d)  # at least this one lands mid-submission
                else:
                    time.sleep(rng.uniform(0.5, 4.0))  # from start: some in start-up/reconcile
                    d.kill9()
                mid_submission += bool(d.rows(UNSETTLED_SQL))
                d.start()
            d.wait_ready()
            time.sleep(2.0)
            status, _ = d.control("halt", reason="crash-restart run: settle and compare")
            assert status == 200
            wait_until(
                lambda: (
                    not d.rows(
                        "SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN') LIMIT 1"
                    )
                ),
                30,
                what="every journal row settled",
            )

            def settled_comparison() -> Comparison | None:
                c = compare(sim.ledger(), d.db_path, address=d.address, database_url=d.database_url)
                return c if c.ok else None

            # on a timeout, fall through to the final comparison, which reports the details
            with contextlib.suppress(HarnessError):
                wait_until(settled_comparison, 20, interval=0.5, what="ledger and journal agree")
            assert d.sigterm() == 0
            c = compare(sim.ledger(), d.db_path, address=d.address, database_url=d.database_url)
            sent = check_exactly_once(
                sim, d.db_path, address=d.address, database_url=d.database_url
            )
        finally:
            d.stop()
    counts = {"kills": kills, "seed": seed, **c.counts()}
    counts["postgres"] = int(database_url is not None)
    counts["kills_leaving_unsettled_rows"] = mid_submission
    counts["exit_codes_sigkill"] = sum(1 for x in d.exit_codes if x == -9)
    print("crash-restart:", json.dumps(counts))
    out = os.environ.get("POLYD_CRASH_FIGURES")
    if out:
        Path(out).write_text(json.dumps(counts, indent=2) + "\n")
    assert c.ok, str(c)
    assert c.venue_orders > 0 and c.duplicates == 0 and c.lost == 0 and c.orphans == 0
    # Whatever was re-sent after a kill went out as the bytes journaled before it.
    assert sent.ok, str(sent)
    assert mid_submission >= 1, counts
    return counts


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_crash_restart_5_kills_reconciles_every_order_once(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_server").fresh_url() if engine == "postgres" else None
    counts = crash_restart_run(tmp_path, kills=5, seed=8, database_url=url)
    assert counts["venue_orders"] >= 3


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_crash_restart_25_kills_reconciles_every_order_once(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_server").fresh_url() if engine == "postgres" else None
    counts = crash_restart_run(tmp_path, kills=25, seed=20, database_url=url)
    assert counts["venue_orders"] >= 20
