"""The fault matrix at process level: the daemon and the simulator as real subprocesses.

Each test injects one fault and checks the same invariants: no journal row lost, no order sent
twice (ledger vs database through `tests.harness.compare`), every order body the venue received
the signed order journaled before it was sent (`Rig.exactly_once`), the daemon's state and
`/health` as expected during the fault, and trading resuming once the fault clears. The
in-process executor tests (`tests/integration/test_executor_live.py`) cover the same faults
component by component; here the whole daemon (feeds, strategies, executor, storage, sidecar)
runs as `python -m orchestrator` and only its sockets, files and exit codes are observed.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import time

import pytest

from tests.faults.conftest import Rig, RigFactory
from tests.harness import wait_until
from tests.helpers import PYTHON


def _journal_statuses(rig: Rig) -> list[str]:
    return [str(r["status"]) for r in rig.journal()]


def _executor(rig: Rig) -> dict[str, object]:
    _, body = rig.d.health()
    detail: dict[str, object] = body["checks"]["executor"]["detail"]
    return detail


# --- HTTP status faults -----------------------------------------------------------------------


def test_clob_500s_are_retried_with_the_same_order_and_sent_once(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="status", route="POST /order", status=500, count=2)
    order = rig.trade_once()
    assert order["size_matched"] == "5"
    assert rig.d.metric("polyd_venue_retries_total") >= 2
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]
    # The venue received the one journaled order three times, the same bytes each time.
    assert list(rig.exactly_once().sends.values()) == [3]
    rig.wait_health(200)
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 2


def test_accepted_then_5xx_until_retries_run_out_is_settled_by_lookup_not_rejected(
    make_rig: RigFactory,
) -> None:
    # The venue's engine matches the order, then answers 500 to its POST and to every re-send
    # of it, until the daemon's retries (RETRY_ATTEMPTS=3) run out. The order is the venue's:
    # the daemon must find it by its hash and book the fill, not call it REJECTED.
    rig = make_rig()
    rig.sim.fault(kind="accept_then_status", route="POST /order", status=500)
    order = rig.trade_once()
    assert order["size_matched"] == "5"
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]
    assert c.fill_mismatches == 0 and c.position_mismatches == 0
    assert list(rig.exactly_once().sends.values()) == [3]
    rig.wait_health(200)
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 2


def test_429_burst_honours_retry_after_then_sends_once(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="status", route="POST /order", status=429, count=2, retry_after=1)
    started = time.monotonic()
    rig.trade_once()
    assert time.monotonic() - started >= 1.0  # waited as told, did not hammer the venue
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]
    assert any(e["event"] == "order_send_retry" for e in rig.d.log_events())
    assert list(rig.exactly_once().sends.values()) == [3]  # one order, sent as journaled
    rig.wait_health(200)
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 2


def test_425_engine_restart_then_post_only_window_then_trading_resumes(
    make_rig: RigFactory,
) -> None:
    # The post-only answer's Retry-After (4 s) outlasts the lookup grace (2 s): the periodic
    # reconcile must leave the in-flight order alone (it once rejected a send still on the wire
    # as unknown at the venue; fixed in 30b89a0).
    rig = make_rig()
    started = time.monotonic()
    rig.sim.fault(kind="engine_restart", seconds=1.0, post_only_s=4.0)
    rig.trigger()  # lands in the 425 window: retried, then refused; never at the venue
    wait_until(lambda: rig.terminal_rows(), 10, what="the 425 order settled")
    assert rig.our_orders() == []
    assert rig.terminal_rows()[0]["status"] == "REJECTED"
    rig.assert_consistent()
    time.sleep(max(0.0, started + 1.3 - time.monotonic()))
    rig.trigger()  # inside the post-only window: refused with Retry-After, re-sent after it
    wait_until(lambda: len(rig.journal()) >= 2, 10, what="the post-only order journaled")
    time.sleep(max(0.0, started + 4.5 - time.monotonic()))
    assert rig.our_orders() == []  # nothing taker-side got in during the window
    order = rig.wait_orders(1, timeout=15)[0]  # the same signed order, once the window ended
    assert order["size_matched"] == "5"
    rig.wait_settled()
    assert _journal_statuses(rig) == ["REJECTED", "FILLED"]
    rig.wait_health(200)
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders == 2 and c.journal_rows == 3


def test_503_cancel_only_opens_the_breaker_cancels_still_go_then_resumes(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(BREAKER_RESET_TIMEOUT_S="1")
    rig.sim.fault(kind="status", route="POST /order", status=503, count=50, retry_after=3)
    rig.trigger()
    rig.wait_health(
        503,
        timeout=10,
        until=lambda b: b["checks"]["executor"]["detail"]["breaker"] == "open",
        what="the breaker open",
    )
    assert rig.our_orders() == []
    status, _ = rig.d.control("cancel-all")  # cancels always go, even with the breaker open
    assert status == 200
    rig.wait_settled()
    rig.assert_consistent()
    rig.sim.clear_faults()
    # The breaker half-opens after its reset timeout; the next order is its probe and closes it.
    rig.trade_eventually()
    rig.wait_health(200, timeout=15)
    c = rig.assert_consistent()
    assert c.venue_orders == 1
    assert "REJECTED" in _journal_statuses(rig)


def test_403_html_page_is_refused_cleanly_then_trading_resumes(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="status", route="POST /order", status=403, count=50)
    rig.trigger()
    wait_until(lambda: rig.terminal_rows(), 10, what="the 403 order settled")
    row = rig.terminal_rows()[0]
    assert row["status"] == "REJECTED"
    assert row["detail"].startswith("venue: ")
    assert rig.d.alive()
    assert rig.our_orders() == []
    rig.sim.clear_faults()
    rig.trade_eventually()
    rig.wait_health(200, timeout=15)
    assert rig.assert_consistent().venue_orders == 1


def test_403_html_page_is_not_echoed_into_the_journal(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="status", route="POST /order", status=403, count=50)
    rig.trigger()
    wait_until(lambda: rig.terminal_rows(), 10, what="the 403 order settled")
    detail = rig.terminal_rows()[0]["detail"].lower()
    assert "<html" not in detail and "<!doctype" not in detail, detail


# --- transport faults -------------------------------------------------------------------------


def test_connection_refused_nothing_sent_then_resumes(make_rig: RigFactory) -> None:
    rig = make_rig(proxy=True)
    assert rig.proxy is not None
    rig.proxy.refuse()
    try:
        rig.trigger()
        # Not sent (the connection never opened). The lookup by hash cannot run either, so the
        # row waits UNKNOWN (or REJECTED) rather than guessing; nothing reaches the venue.
        rig.wait(
            lambda: [r for r in rig.journal() if r["status"] in ("UNKNOWN", "REJECTED")],
            30,
            what="the refused order parked",
        )
        assert rig.our_orders() == []
        assert rig.d.alive()
        time.sleep(1.0)
        assert rig.our_orders() == []
    finally:
        rig.proxy.accept()
    rig.wait_settled(timeout=20)
    assert _journal_statuses(rig) == ["REJECTED"]
    rig.trade_eventually()
    rig.wait_health(200, timeout=20)
    c = rig.assert_consistent()
    assert c.venue_orders == 1


def test_response_after_client_timeout_is_looked_up_not_resent(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="late_response", route="POST /order", seconds=2.5, count=1)
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders == 1  # matched at the venue once; never re-signed or re-sent
    assert _journal_statuses(rig) == ["FILLED"]
    assert list(rig.exactly_once().sends.values()) == [1]  # the venue received it once
    assert any(e["event"] == "order_outcome_unknown" for e in rig.d.log_events())
    rig.wait_health(200)
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 2


# --- market websocket -------------------------------------------------------------------------


def test_market_ws_drop_reconnects_resyncs_and_trades(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.trade_once()
    rig.sim.fault(kind="ws_drop", channel="market")
    wait_until(
        lambda: rig.d.event_names().count("feed_connected") >= 2, 15, what="feed reconnected"
    )
    rig.wait_health(200)
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders == 2


def test_market_ws_silent_stall_degrades_health_then_trades_on_a_fresh_snapshot(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(FEED_PING_INTERVAL_S="0.5", FEED_STALE_AFTER_S="2")
    rig.trade_once()
    rig.sim.fault(kind="ws_stall", channel="market", seconds=4)
    rig.wait_health(
        503,
        timeout=10,
        until=lambda b: b["checks"]["feed:market"]["ok"] is False,
        what="the market feed failing",
    )
    rig.trigger()  # the stalled socket cannot show it: only a reconnect's snapshot can
    wait_until(lambda: len(rig.our_orders()) == 2, 20, what="the trade after the stall")
    assert rig.d.event_names().count("feed_connected") >= 2  # the order followed a fresh snapshot
    rig.wait_health(200, timeout=20)
    rig.wait_settled()
    assert rig.assert_consistent().venue_orders == 2


def test_malformed_market_frames_are_skipped_and_trading_continues(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    rig.sim.fault(kind="ws_malformed", channel="market", count=10)
    rig.trade_once()
    rig.trade_once()
    status, body = rig.d.health()
    assert status == 200, body
    assert body["checks"]["strategy:sniper"]["detail"]["restarts"] == 0
    assert rig.assert_consistent().venue_orders == 2


# --- user websocket ---------------------------------------------------------------------------


def test_user_ws_stall_and_drop_during_fills_are_recovered_from_rest(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    rig.trade_once()
    fills_before = len(rig.d.rows("SELECT 1 FROM fills"))
    rig.sim.fault(kind="ws_stall", channel="user", seconds=3)  # trade events go nowhere
    rig.trigger()
    rig.wait_orders(2)
    rig.sim.fault(kind="ws_drop", channel="user")
    rig.trigger()
    rig.wait_orders(3)
    wait_until(
        lambda: len(rig.d.rows("SELECT 1 FROM fills")) >= fills_before + 2,
        20,
        what="the missed fills recorded from REST",
    )
    rig.wait_settled()
    wait_until(lambda: rig.compare().ok, 10, interval=0.5, what="fills and positions agree")
    c = rig.assert_consistent()
    assert c.venue_orders == 3 and c.fill_mismatches == 0 and c.position_mismatches == 0
    rig.wait_health(200)


# --- Data API ---------------------------------------------------------------------------------


def test_data_api_5xx_and_garbage_do_not_crash_the_copy_trader(make_rig: RigFactory) -> None:
    from tests.harness import copy_rules

    rig = make_rig(scenario="demo", sniper=False, ready=False)
    rig.d.stop()
    rig.d.env.update({k.upper(): str(v) for k, v in copy_rules(rig.sim, rig.workdir).items()})
    rig.d.start()
    rig.d.wait_ready()
    wait_until(lambda: "copy_copied" in rig.d.event_names(), 30, what="a first copy")
    rig.sim.fault(kind="data_api", status=500, count=8)
    rig.sim.fault(kind="data_api_garbage", count=4)
    time.sleep(4)
    _, body = rig.d.health()
    assert body["checks"]["strategy:copy"]["ok"] is True
    assert body["checks"]["strategy:copy"]["detail"]["restarts"] == 0
    assert rig.d.metric("polyd_data_api_errors_total") >= 1
    copies = rig.d.event_names().count("copy_copied")
    rig.sim.clear_faults()
    wait_until(
        lambda: rig.d.event_names().count("copy_copied") > copies, 30, what="copying resumed"
    )
    rig.d.control("halt", reason="test: settle before comparing")
    rig.wait_settled()
    rig.assert_consistent()


# --- storage ----------------------------------------------------------------------------------

LOCKER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""


@pytest.mark.sqlite_only  # a fault of the SQLite file
def test_database_locked_by_another_process_for_5s_loses_nothing(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.trade_once()
    time.sleep(0.5)  # let the feed show the taken ask, so the sniper does not fire again
    locker = subprocess.Popen(
        [PYTHON, "-c", LOCKER, str(rig.d.db_path), "5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        rig.trigger()
        time.sleep(1.5)
        # journal before send: the PENDING row cannot be written, so nothing leaves
        assert len(rig.our_orders()) == 1
        assert rig.d.alive()
        locker.wait(timeout=15)
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    wait_until(lambda: rig.d.health()[0] == 200, 20, what="/health 200 after the lock")
    wait_until(lambda: len(rig.our_orders()) == 2, 20, what="the order after the lock")
    rig.wait_settled()
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders == 3 and c.journal_signed == 3


def _fill_disk(rig: Rig) -> int:
    """Disk full, simulated with RLIMIT_FSIZE set on the running daemon.

    Every write(2) the daemon makes to a regular file past offset 1 fails with EFBIG (Python
    ignores SIGXFSZ), at exactly the call where ENOSPC would fail it: SQLite's write of the WAL
    (SQLite reports SQLITE_IOERR_WRITE instead of SQLITE_FULL; the daemon's storage layer treats
    both as a failed commit). Logs go through pipes, which the limit does not touch.
    """
    assert rig.d.proc is not None
    pid = rig.d.proc.pid
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    return pid


def _free_disk(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


@pytest.mark.sqlite_only  # a fault of the SQLite file
def test_disk_full_sends_nothing_unjournaled_and_loses_nothing(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.trade_once()
    pid = _fill_disk(rig)
    try:
        rig.trigger()
        wait_until(lambda: "storage_failed_halting" in rig.d.event_names(), 10, what="storage halt")
        time.sleep(1.0)
        rig.trigger()
        time.sleep(1.0)
        assert len(rig.our_orders()) == 1  # an order that could not be journaled never left
    finally:
        _free_disk(pid)
    # space is back: (re)start, reconcile, trade
    rig.d.restart()
    rig.trade_once()
    c = rig.assert_consistent()
    assert c.venue_orders >= 2  # the ask left on the book during the outage may be taken too


@pytest.mark.sqlite_only  # a fault of the SQLite file
def test_disk_full_daemon_stays_up_halted_with_health_503(make_rig: RigFactory) -> None:
    rig = make_rig(RECONCILE_INTERVAL_S="1")
    rig.trade_once()
    pid = _fill_disk(rig)
    try:
        rig.trigger()
        # The database check can fail (503) before the order's journal write halts trading.
        rig.wait_health(
            503,
            timeout=10,
            until=lambda b: b["checks"]["executor"]["detail"]["trading_state"] == "HALTED",
            what="trading HALTED",
        )
        assert "storage_failed_halting" in rig.d.event_names()
        time.sleep(3.0)
        assert rig.d.alive()
        status, body = rig.d.health()
        assert status == 503 and body["checks"]["database"]["ok"] is False
    finally:
        _free_disk(pid)


# --- signals ----------------------------------------------------------------------------------


def _wait_pending(rig: Rig) -> None:
    wait_until(
        lambda: rig.d.rows("SELECT 1 FROM orders WHERE status = 'PENDING'"),
        15,
        interval=0.05,
        what="a PENDING journal row",
    )


def test_sigterm_mid_submission_exits_0_and_a_restart_settles_it_once(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    rig.sim.fault(kind="latency", route="POST /order", seconds=0.8, count=1)
    rig.trigger()
    _wait_pending(rig)
    assert rig.d.sigterm(timeout=15) == 0
    assert rig.d.event_names()[-1] == "daemon_stopped"
    c = rig.compare(settled=False)  # nothing lost or doubled, whatever the row says
    assert c.lost == 0 and c.duplicates == 0 and c.orphans == 0, str(c)
    rig.d.restart()
    rig.wait_settled()
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]


def test_sigterm_mid_submission_leaves_the_journal_settled(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.sim.fault(kind="latency", route="POST /order", seconds=0.8, count=1)
    rig.trigger()
    _wait_pending(rig)
    assert rig.d.sigterm(timeout=15) == 0
    assert _journal_statuses(rig) == ["FILLED"]


def test_slow_submission_is_not_rejected_by_the_periodic_reconcile(
    make_rig: RigFactory,
) -> None:
    """A submission older than the lookup grace is still this process's own (fixed in 30b89a0)."""
    rig = make_rig(HTTP_TIMEOUT_S="8", ORDER_LOOKUP_GRACE_S="1", RECONCILE_INTERVAL_S="1")
    rig.sim.fault(kind="latency", route="POST /order", seconds=4, count=1)
    rig.trigger()
    rig.wait_orders(1, timeout=20)
    rig.wait_settled()
    time.sleep(1.0)
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]


def test_kill9_mid_submission_then_restart_reconciles_without_resending(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    rig.sim.fault(kind="late_response", route="POST /order", seconds=3, count=1)
    rig.trigger()
    _wait_pending(rig)
    wait_until(lambda: rig.our_orders(), 10, interval=0.05, what="the order at the venue")
    assert rig.d.kill9() == -signal.SIGKILL
    assert _journal_statuses(rig) == ["PENDING"]  # the answer never came back
    rig.d.restart()
    c = rig.assert_consistent()
    assert c.venue_orders == 1 and _journal_statuses(rig) == ["FILLED"]
    assert list(rig.exactly_once().sends.values()) == [1]  # looked up, not sent again
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 2
