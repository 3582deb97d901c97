"""The daemon on PostgreSQL, as a real process: `python -m orchestrator` with `DATABASE_URL` on a
throwaway database of the machine's server, live against the simulator's demo scenario with
both strategies trading.

It starts and reports the database healthy, trades (the journal and the fills land in
PostgreSQL, nothing in the SQLite file), exports the pool's metrics, answers `status` from the
same database, stops cleanly on SIGTERM, and a restart carries on from what it wrote. Then it
is killed (`kill -9`) while an order is held at the venue with its journal row unsettled; the
next start reconciles that row, and once trading is halted the database agrees with the venue's
ledger: every venue order has exactly one journal row in its final state, fills and positions
match, and every order body the venue received is one the journal signed. The URL carries a
password (trust auth ignores it) that must never be printed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.harness import (
    DaemonProcess,
    SimProcess,
    check_exactly_once,
    compare,
    demo_rules,
    wait_until,
)
from tests.helpers import PYTHON, ROOT, clean_env, free_port, run_cli
from tests.pg import PgServer

PASSWORD = "never-printed-7f3a9c"
UNSETTLED_SQL = "SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN')"


def with_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    assert PASSWORD in netloc
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def pg_count(url: str, sql: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=5) as c:
            row = c.execute(sql).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0  # not migrated yet
    return int(row[0]) if row else 0


def single_posts(sim: SimProcess) -> int:
    return sum(1 for r in sim.received_orders()["orders"] if r["path"] == "/order")


def status_json(d: DaemonProcess, url: str, tmp_path: Path) -> dict[str, Any]:
    res = run_cli(
        "status",
        "--json",
        "--env-file",
        "none",
        env=clean_env(DATABASE_URL=url, HTTP_PORT=str(d.port), DB_PATH=str(tmp_path / "absent.db")),
    )
    assert PASSWORD not in res.stdout + res.stderr
    body: dict[str, Any] = json.loads(res.stdout)
    return body


def test_the_daemon_trades_on_postgres_stops_restarts_and_survives_kill_9(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = with_password(pg_server.fresh_url())
    with SimProcess(workdir=tmp_path, seed=9, scenario="demo") as sim:
        d = DaemonProcess(
            sim,
            tmp_path,
            extra={**demo_rules(sim, tmp_path), "ORDER_LOOKUP_GRACE_S": "8"},
            DATABASE_URL=url,
        )
        try:
            d.start()
            body = d.wait_ready()
            assert body["checks"]["database"]["ok"] is True
            wait_until(
                lambda: pg_count(url, "SELECT count(*) FROM fills") >= 3,
                90,
                what="three fills journaled in PostgreSQL",
            )
            assert d.metric("polyd_db_pool_size") >= 1
            assert d.metric("polyd_db_query_seconds_count") > 0
            status = status_json(d, url, tmp_path)
            assert status["daemon"]["status"] == "ok"
            assert status["database"]["fills"] >= 3
            assert status["database_url"].startswith("postgresql://postgres:***@")

            # SIGTERM: a clean stop, then a restart that carries on from what it wrote.
            assert d.sigterm() == 0
            assert "daemon_stopped" in d.event_names(1)
            fills_before = pg_count(url, "SELECT count(*) FROM fills")
            journal_before = pg_count(url, "SELECT count(*) FROM orders")
            d.start()
            d.wait_ready()
            # What the first run wrote is where it was; the copy trader's intents and the
            # sniper's slots in it keep the restart from repeating an order (checked at the end:
            # no duplicates across the three runs).
            assert pg_count(url, "SELECT count(*) FROM orders") >= journal_before
            wait_until(
                lambda: pg_count(url, "SELECT count(*) FROM fills") > fills_before,
                90,
                what="a fill after the restart",
            )

            # kill -9 with an order held at the venue and its journal row unsettled.
            sim.fault(kind="latency", route="POST /order", seconds=3.0, count=1)
            before = single_posts(sim)
            wait_until(
                lambda: single_posts(sim) > before and d.rows(UNSETTLED_SQL),
                60,
                interval=0.05,
                what="an order held at the venue with its journal row unsettled",
            )
            d.kill9()
            assert d.rows(UNSETTLED_SQL), "the kill landed after the order settled"
            d.start()  # the writer lock went with the killed process's connection
            d.wait_ready()
            status_code, _ = d.control("halt", reason="settle and compare")
            assert status_code == 200
            wait_until(lambda: not d.rows(UNSETTLED_SQL), 60, what="every journal row settled")
            wait_until(
                lambda: compare(sim.ledger(), d.db_path, address=d.address, database_url=url).ok,
                30,
                interval=0.5,
                what="the journal agreeing with the venue's ledger",
            )
            assert d.sigterm() == 0
        finally:
            d.stop()
        c = compare(sim.ledger(), d.db_path, address=d.address, database_url=url)
        sent = check_exactly_once(sim, d.db_path, address=d.address, database_url=url)
    print("daemon on postgres:", json.dumps(c.counts()))
    assert c.ok, str(c)
    assert c.venue_orders >= 3 and c.duplicates == 0 and c.lost == 0
    assert sent.ok, str(sent)
    assert not d.db_path.exists()  # everything went to PostgreSQL
    assert PASSWORD not in d.stderr()
    assert d.exit_codes[:1] == [0] and -9 in d.exit_codes


def test_the_demo_runs_on_postgres_and_its_printed_commands_read_it(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """`--demo` with `DATABASE_URL`: a fresh `polyd_demo` schema, the summary and the ledger
    check read from PostgreSQL, and the printed export (which reads the URL back from the
    demo's 0600 file rather than printing its password) and the `--demo` shorthand both read
    the demo's database afterwards."""
    url = with_password(pg_server.url)
    env = {**clean_env(HTTP_PORT=str(free_port()), DATABASE_URL=url), "PYTHONPATH": str(ROOT)}
    demo = subprocess.run(
        [PYTHON, "-m", "orchestrator", "--demo", "--duration", "12", "--speed", "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = demo.stdout
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert PASSWORD not in out + demo.stderr
    assert json.loads(out.splitlines()[0])["db"].startswith("postgresql://postgres:***@")
    assert "=== polyd demo summary ===" in out
    check = re.search(r"^ledger check: (\d+) fills, .* — (.*)$", out, re.MULTILINE)
    assert check is not None and check.group(2) == "match" and int(check.group(1)) > 0, out
    assert not (tmp_path / "data" / "demo" / "polyd-demo.db").exists()
    fills = pg_count(
        pg_server.url + "?options=-csearch_path%3Dpolyd_demo", "SELECT count(*) FROM fills"
    )
    assert fills == int(check.group(1))

    lines = out.splitlines()
    export = next(line for line in lines if line.startswith("export DB_PATH="))
    shorthand = next(line for line in lines if line.startswith("(or, without the export: "))
    shorthand = shorthand.removeprefix("(or, without the export: ").removesuffix(")")
    second = {**clean_env(), "PYTHONPATH": str(ROOT)}  # a fresh terminal: no DATABASE_URL
    run = f"{PYTHON} -m orchestrator status"
    for command in (f"{export}\n{run}", shorthand):
        res = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=second, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert res.returncode == 3, res.stdout + res.stderr  # the demo has stopped
        assert "daemon:        NOT RUNNING" in res.stdout
        assert f"fills:         {fills} " in res.stdout
        assert "database:      postgresql://postgres:***@" in res.stdout
        assert PASSWORD not in res.stdout + res.stderr


def test_a_second_demo_on_the_same_database_is_refused_and_leaves_the_running_one_alone(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Two checkouts, one database: the second `--demo` exits 3 naming the running one, before
    it resets `polyd_demo` (it once emptied the running demo's tables)."""

    def start_demo(folder: str, duration: str) -> subprocess.Popen[str]:
        (tmp_path / folder).mkdir()
        env = {
            **clean_env(HTTP_PORT=str(free_port()), DATABASE_URL=pg_server.url),
            "PYTHONPATH": str(ROOT),
        }
        return subprocess.Popen(
            [PYTHON, "-m", "orchestrator", "--demo", "--duration", duration, "--speed", "3"],
            cwd=tmp_path / folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    demo_url = pg_server.url + "?options=-csearch_path%3Dpolyd_demo"
    with psycopg.connect(pg_server.url, autocommit=True) as c:  # no fills of an earlier demo
        c.execute("DROP SCHEMA IF EXISTS polyd_demo CASCADE")
    first = start_demo("a", "14")
    try:
        wait_until(
            lambda: pg_count(demo_url, "SELECT count(*) FROM fills") > 0,
            60,
            interval=0.3,
            what="the first demo trading",
        )
        second = start_demo("b", "3")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 3, out + err
        assert f"pid {first.pid} on " in out + err, out + err  # names the running demo
        assert pg_count(demo_url, "SELECT count(*) FROM fills") > 0  # not emptied
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err[-3000:]
    check = re.search(r"^ledger check: (\d+) fills, .* — (.*)$", out, re.MULTILINE)
    assert check is not None and check.group(2) == "match", out
    assert pg_count(demo_url, "SELECT count(*) FROM fills") == int(check.group(1))
