"""The executor inside the real daemon process: control routes over HTTP, cancel on shutdown.

The daemon runs as `python -m orchestrator` (live) against the simulator as a subprocess; orders
that rest at the venue are placed with the daemon's own key through the real SDK, and the
simulator's ledger says what was canceled.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, PartialCreateOrderOptions

from tests.harness import DaemonProcess, SimProcess, _http


def place_resting(sim: SimProcess, key: str, token: str, prices: list[str]) -> list[str]:
    """Rest BUY orders at the venue under `key` (the daemon's account) with the real SDK."""
    client = ClobClient(sim.clob_url, 137, key=key)
    client.set_api_creds(client.create_or_derive_api_key())
    ids = []
    for p in prices:
        order = client.create_order(
            OrderArgsV2(token_id=token, price=float(p), size=10.0, side="BUY"),
            PartialCreateOrderOptions(tick_size="0.01", neg_risk=False),
        )
        res: dict[str, Any] = client.post_order(order)
        assert res["success"] and res["status"] == "live", res
        ids.append(res["orderID"])
    return ids


def ledger_status(sim: SimProcess, ids: list[str]) -> list[str]:
    by_id = {o["id"]: o["status"] for o in sim.ledger()["orders"]}
    return [by_id[i] for i in ids]


def test_control_routes_over_http_and_cancel_on_shutdown(tmp_path: Path) -> None:
    with SimProcess(workdir=tmp_path, seed=31, scenario=None, settle_delay_s=0.01) as sim:
        token = sim.add_market("Control?", "control")["token_ids"][0]
        d = DaemonProcess(sim, tmp_path, CANCEL_ON_SHUTDOWN="true")
        first = place_resting(sim, d.private_key, token, ["0.30", "0.31"])
        with d:
            d.wait_ready()
            url = f"{d.base_url}/halt"
            assert _http("POST", url, {})[0] == 401  # no token
            assert _http("POST", url, {}, headers={"Authorization": "Bearer nope"})[0] == 401
            assert d.health()[1]["checks"]["executor"]["ok"] is True

            status, body = d.control("halt", reason="operator test")
            assert status == 200 and body["trading_state"] == "HALTED", body
            _, health = d.health()
            assert health["checks"]["executor"]["detail"]["trading_state"] == "HALTED"
            assert health["checks"]["executor"]["detail"]["reason"] == "operator test"

            status, body = d.control("reduce")
            assert status == 200 and body["trading_state"] == "REDUCING", body
            status, body = d.control("resume")
            assert status == 200 and body["trading_state"] == "ACTIVE", body

            status, body = d.control("cancel-all")
            assert status == 200 and body["canceled"] == 2, body
            assert ledger_status(sim, first) == ["CANCELED", "CANCELED"]

            second = place_resting(sim, d.private_key, token, ["0.20", "0.21", "0.22"])
            assert ledger_status(sim, second) == ["LIVE"] * 3
            assert d.sigterm() == 0
        # CANCEL_ON_SHUTDOWN: what rested when SIGTERM came is canceled at the venue.
        assert ledger_status(sim, second) == ["CANCELED"] * 3
        names = d.event_names()
        assert names.index("canceled_on_shutdown") < names.index("daemon_stopped")
        conn = sqlite3.connect(d.db_path)
        try:
            moves = [
                json.loads(r[0])["to"]
                for r in conn.execute(
                    "SELECT detail FROM audit_log WHERE event = 'trading_state' ORDER BY id"
                )
            ]
            cancels = [
                json.loads(r[0])["canceled"]
                for r in conn.execute(
                    "SELECT detail FROM audit_log WHERE event = 'cancel_all' ORDER BY id"
                )
            ]
        finally:
            conn.close()
        assert moves == ["HALTED", "REDUCING", "ACTIVE"]
        assert cancels == [2, 3]


def test_the_daemon_process_freezes_its_heap_and_checkpoints_on_its_own_thread(
    tmp_path: Path,
) -> None:
    # `python -m orchestrator` is the entry point that freezes (daemons inside tests do not):
    # the start-up heap leaves garbage collection before the daemon says it is ready, and the
    # database's WAL checkpoints run on their own thread every 0.5 s (storage.wal).
    with SimProcess(workdir=tmp_path, seed=32, scenario=None, settle_delay_s=0.01) as sim:
        d = DaemonProcess(sim, tmp_path)
        with d:
            d.wait_ready()
            assert d.metric("polyd_gc_frozen_objects") > 50_000
            names = d.event_names()
            assert names.index("heap_frozen") < names.index("daemon_ready")
            # the freeze's own full collection, timed by the pause histogram
            assert d.metric("polyd_gc_pause_seconds_count", generation="2") >= 1
            deadline = time.monotonic() + 10
            while d.metric("polyd_db_checkpoint_seconds_count") < 2:
                assert time.monotonic() < deadline, "no WAL checkpoint in 10 s"
                time.sleep(0.1)
            assert d.metric("polyd_db_checkpoint_failures_total") == 0
            assert d.sigterm() == 0
