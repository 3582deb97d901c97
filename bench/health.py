"""`python -m bench health`: `/health` latency while the daemon is under order and feed load.

Three processes besides this one, all on loopback, all killed in a `finally`:

* the venue simulator (`python -m simulator`) with a few plain markets listed over its admin route;
* a market-websocket *blaster* (`python -m bench.health blaster`) that answers the daemon's
  subscription with book snapshots and then sends `price_change` events at a steady rate
  (`--feed-per-s` events a second, `--batch` events per frame as a JSON array, the venue's own
  array framing); best bid/ask stay consistent and the book never crosses;
* the daemon (`python -m bench.health daemon`): the real `orchestrator.run` in live mode against
  the simulator, its market feed pointed at the blaster, a sniper watching the blasted tokens (its
  band never fires), plus a test-only **load strategy** that submits FAK BUYs through the real
  executor (journal, risk, signing, POST /order) at `--orders-per-min`. The simulator's books for
  those tokens are empty, so every order is answered and killed unfilled: steady work, no funds.

Meanwhile this process GETs `/health` at `--health-hz` (bounded: duration x rate requests) over one
keep-alive connection and samples the daemon's RSS from `/proc/<pid>/status`. Figures:
`health_p99_ms_under_load`, `health_p50_ms`, `health_requests`, the load applied and achieved,
`errors`, `rss_growth_pct`, and `rss_slope_mb_per_hour` (least-squares through the RSS sampled
once a second, `tools.rss_soak.slope_per_hour`: the daemon-only memory figure). `--warmup S` fits
that slope only to the samples taken S seconds or more into the run (counted in `--duration`), as
`tools.rss_soak` does for the demo soak: the first minutes carry caches filling, not growth.
Then SIGUSR1 stops both sources (the load strategy drains what it has in flight; the blaster
prints how many events it sent) and the counts are read once the daemon has caught up (bounded):
`orders_submitted`/`orders_answered`, `feed_sent`/`feed_counted`, `health_requests`/`health_200`,
and `journal_orders`, the load strategy's rows in the daemon's journal after it exits.

`--engine postgres` journals to a throwaway PostgreSQL database (`DATABASE_URL`) created on the
server named by `--url` (default `$POLYD_BENCH_PG_URL` or the local server) and dropped after;
the default is the SQLite file in the run's temporary directory. The output says which (`engine`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.health_blaster import blast
from bench.storage import add_engine_arguments, throwaway_pg_database
from tools.rss_soak import slope_per_hour

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
N_MARKETS = 4  # 8 tokens: the load strategy trades them, the blaster moves their books


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _journal_orders(db_path: Path, database_url: str | None) -> int:
    """The load strategy's rows in the daemon's journal (read after the daemon has exited)."""
    sql = "SELECT count(*) FROM orders WHERE strategy = 'load'"
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as c:
            row = c.execute(sql).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(db_path)) as s:
            row = s.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


# ----------------------------------------------------------------------------------------------
# The daemon with a test-only load strategy
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    submitted: int = 0
    results: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    late_ms_max: float = 0.0
    first_at: float = 0.0  # time.monotonic() (system-wide on Linux) of the first and last submit
    last_at: float = 0.0
    drained: bool = False  # stopped submitting (SIGUSR1) and every submission has returned


class LoadStrategy:
    """Submit FAK BUYs at a steady rate through the daemon's own executor (an `OrderSink`).

    `stop` ends the submitting; `run` then waits for every submission to return and writes the
    report with `drained` set, so the driver compares whole counts, none left in flight.
    """

    name = "load"

    def __init__(self, sink: Any, tokens: list[str], per_min: float, report: Path) -> None:
        self._sink = sink
        self._tokens = tokens
        self._interval = 60.0 / per_min if per_min > 0 else 0.0
        self._report_path = report
        self.report = LoadReport()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop submitting (from a signal handler); `run` drains what is in flight."""
        self._stopping.set()

    async def _one(self, token: str) -> None:
        from models import OrderRequest

        try:
            req = OrderRequest(
                strategy="load",
                token_id=token,
                side="BUY",
                price=Decimal("0.50"),
                size=Decimal("10"),
                order_type="FAK",
                reason="bench load",
            )
            res = await self._sink.submit(req)
            key = f"{res.status.value}:{res.reason[:40]}" if res.reason else res.status.value
            self.report.results[key] = self.report.results.get(key, 0) + 1
        except Exception as e:  # counted: the point of the load test is that there are none
            self.report.errors.append(f"{type(e).__name__}: {str(e)[:200]}")

    async def run(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        i = 0
        try:
            while self._interval > 0 and not self._stopping.is_set():
                due = start + i * self._interval
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                    if self._stopping.is_set():
                        break
                else:
                    self.report.late_ms_max = max(self.report.late_ms_max, -delay * 1000)
                t = asyncio.create_task(self._one(self._tokens[i % len(self._tokens)]))
                pending.add(t)
                t.add_done_callback(pending.discard)
                self.report.submitted += 1
                self.report.last_at = time.monotonic()
                if i == 0:
                    self.report.first_at = self.report.last_at
                i += 1
                if i % 50 == 0:
                    self._write()
            if pending:
                await asyncio.wait(pending)
            self.report.drained = True
            self._write()
            await asyncio.Event().wait()  # a strategy runs until the daemon stops
        finally:
            for t in pending:
                t.cancel()
            self._write()

    def _write(self) -> None:
        # Whole or not at all: the driver reads the report while this runs.
        tmp = self._report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.report)))
        tmp.replace(self._report_path)


def _daemon(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from config import load_settings
    from orchestrator import Context, run

    settings = load_settings(env_file=None)
    tokens = args.tokens.split(",")
    holder: list[LoadStrategy] = []

    def on_ready(ctx: Context) -> None:
        load = LoadStrategy(ctx.executor, tokens, args.orders_per_min, Path(args.report))
        holder.append(load)
        ctx.strategies.append(load)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, load.stop)

    return run(settings, duration_s=None, env_file=None, on_ready=on_ready)


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


@dataclass
class Procs:
    items: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, **kw)
        self.items.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.items):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _argv(role: str, **opts: object) -> list[str]:
    flags = [x for k, v in opts.items() for x in ("--" + k.replace("_", "-"), str(v))]
    return [PYTHON, "-m", "bench.health", role, *flags]


def _rate_per_min(load: dict[str, Any]) -> float:
    span = float(load.get("last_at", 0)) - float(load.get("first_at", 0))
    n = int(load.get("submitted", 0))
    return round((n - 1) / span * 60, 1) if span > 0 and n > 1 else 0.0


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            v = pred()
            if v:
                return v
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def run_load(
    *,
    duration_s: float,
    orders_per_min: float,
    feed_per_s: float,
    health_hz: float = 50.0,
    batch: int = 10,
    warmup_s: float = 3.0,
    rss_warmup_s: float = 0.0,
    settle_s: float = 60.0,
    workdir: Path | None = None,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Run the daemon under load for `duration_s`; return the figures (see module docstring).

    The daemon journals to `database_url` (PostgreSQL) if given, else to a SQLite file in
    `workdir`. `rss_warmup_s` (within `duration_s`) is left out of the RSS slope; raises
    ValueError if it leaves nothing to fit."""
    if not 0 <= rss_warmup_s < duration_s:
        raise ValueError(f"the warm-up ({rss_warmup_s} s) must be shorter than {duration_s} s")
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="polyd-bench-health-")
        workdir = Path(own_tmp.name)
    procs = Procs()
    try:
        from bench._venue import add_market, fund, read_urls, simulator_argv

        sim = procs.start(
            simulator_argv(seed=5),
            stdout=subprocess.PIPE,
            stderr=open(workdir / "sim.err", "wb"),  # noqa: SIM115  # closed with the process
        )
        urls = read_urls(sim)
        tokens: list[str] = []
        for i in range(N_MARKETS):
            tokens += add_market(urls["clob_url"], f"Load market {i}?", f"load-{i}")
        from eth_account import Account

        acct = Account.create()
        fund(urls["clob_url"], acct.address, "100000")
        blast_port = _free_port()
        blaster = procs.start(
            _argv("blaster", port=blast_port, feed_per_s=feed_per_s, batch=batch),
            stdout=subprocess.PIPE,
            stderr=open(workdir / "blaster.err", "wb"),  # noqa: SIM115  # closed with the process
        )
        assert blaster.stdout is not None
        if blaster.stdout.readline().strip() != b"ready":
            raise RuntimeError("the blaster did not start")
        rules = workdir / "sniper.toml"
        rules.write_text(
            '[[rules]]\nname = "never"\nmin_price = "0.01"\nmax_price = "0.02"\n'
            'min_size = "5"\nmax_notional = "1"\n[rules.select]\n'
            f"token_ids = {json.dumps(tokens)}\n"
        )
        port = _free_port()
        report = workdir / "load-report.json"
        db_path = workdir / "polyd.db"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.upper().startswith(
                ("CLOB_", "PRIVATE_KEY", "MODE", "DB_", "DATABASE_URL", "HTTP_")
            )
        }
        if database_url:
            env["DATABASE_URL"] = database_url
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "MODE": "live",
                "CLOB_HOST": urls["clob_url"],
                "GAMMA_API_URL": urls["gamma_url"],
                "DATA_API_URL": urls["data_url"],
                "MARKET_WS_URL": f"ws://127.0.0.1:{blast_port}/ws/market",
                "USER_WS_URL": urls["user_ws_url"],
                "PRIVATE_KEY": "0x" + bytes(acct.key).hex(),
                "DB_PATH": str(db_path),
                "HTTP_PORT": str(port),
                "CONTROL_TOKEN": secrets.token_urlsafe(16),
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "WARNING",
                "SNIPER_ENABLED": "true",
                "SNIPER_RULES_PATH": str(rules),
                "COPY_ENABLED": "false",
                "DISCOVERY_INTERVAL_S": "5",
                "RISK_MAX_OPEN_ORDERS": "1000",
                "RISK_MAX_TOTAL_EXPOSURE": "100000",
                "RISK_DAILY_LOSS_LIMIT": "100000",
            }
        )
        err_path = workdir / "daemon.err"
        daemon = procs.start(
            _argv("daemon", orders_per_min=orders_per_min, tokens=",".join(tokens), report=report),
            env=env,
            stdout=open(workdir / "daemon.out", "wb"),  # noqa: SIM115  # closed with the process
            stderr=open(err_path, "wb"),  # noqa: SIM115  # closed with the process
        )
        # A generous timeout: a slow answer is a figure, only a missing one is a failure.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def get(path: str) -> tuple[int, bytes]:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()

        def healthy() -> bool:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited: {err_path.read_text()[-2000:]}")
            try:
                return get("/health")[0] == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                raise

        _wait(healthy, 60, "/health 200")
        _wait(
            lambda: _metric(get("/metrics")[1].decode(), "polyd_feed_messages_total") > 0,
            30,
            "feed messages",
        )
        time.sleep(warmup_s)
        rss_start = _rss_kb(daemon.pid)
        msgs_start = _metric(
            get("/metrics")[1].decode(), "polyd_feed_messages_total", event_type="price_change"
        )
        lat: list[float] = []
        health_200 = 0
        t0 = time.monotonic()
        rss_samples = [(0.0, rss_start / 1024)]  # (seconds since t0, MB)
        n = int(duration_s * health_hz)
        for i in range(n):  # bounded: duration x rate requests
            due = t0 + i / health_hz
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            s = time.perf_counter()
            try:
                status, _ = get("/health")
            except (OSError, http.client.HTTPException):
                conn.close()  # counted as not answered; the next request reconnects
                continue
            lat.append((time.perf_counter() - s) * 1000)
            health_200 += status == 200
            if i % int(health_hz) == 0:
                rss_samples.append((time.monotonic() - t0, _rss_kb(daemon.pid) / 1024))
        elapsed = time.monotonic() - t0
        metrics = get("/metrics")[1].decode()
        msgs = _metric(metrics, "polyd_feed_messages_total", event_type="price_change") - msgs_start
        rss_end = _rss_kb(daemon.pid)
        rss_samples.append((elapsed, rss_end / 1024))
        fitted = [(t, mb) for t, mb in rss_samples if t >= rss_warmup_s]
        # The counts: stop both sources, then wait (bounded) for the daemon to answer every order
        # submitted and count every event sent; what it reached by then is the figure.
        daemon.send_signal(signal.SIGUSR1)
        blaster.send_signal(signal.SIGUSR1)
        said = blaster.stdout.readline().split()
        feed_sent = int(said[1]) if len(said) == 2 and said[0] == b"sent" else -1

        def counts() -> tuple[dict[str, Any], float]:
            done = json.loads(report.read_text()) if report.exists() else {}
            text = get("/metrics")[1].decode()
            return done, _metric(text, "polyd_feed_messages_total", event_type="price_change")

        settle_by = time.monotonic() + settle_s
        load, feed_counted = counts()
        while not (load.get("drained") and feed_counted >= feed_sent):
            if time.monotonic() > settle_by or daemon.poll() is not None:
                break
            time.sleep(0.2)
            load, feed_counted = counts()
        conn.close()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        load = json.loads(report.read_text()) if report.exists() else {}
        log_errors = []
        for line in err_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev.get("level") in ("error", "critical", "exception"):
                    log_errors.append(str(ev.get("event")))
        errors = len(load.get("errors", [])) + len(log_errors) + (code != 0)
        return {
            "engine": "postgres" if database_url else "sqlite",
            "health_p99_ms_under_load": round(_pct(lat, 99), 3),
            "health_p50_ms": round(_pct(lat, 50), 3),
            "health_max_ms": round(max(lat), 3) if lat else None,
            "health_requests": n,
            "health_200": health_200,
            "health_not_200": n - health_200,
            "duration_s": round(elapsed, 1),
            "load_orders_per_min": orders_per_min,
            "load_feed_msgs_per_s": feed_per_s,
            "orders_submitted": load.get("submitted", 0),
            "orders_per_min_achieved": _rate_per_min(load),
            "orders_answered": sum(load.get("results", {}).values()),
            "orders_drained": bool(load.get("drained")),
            "journal_orders": _journal_orders(db_path, database_url),
            "order_results": load.get("results", {}),
            "feed_msgs_per_s_achieved": round(msgs / elapsed, 1) if elapsed else 0,
            "feed_sent": feed_sent,
            "feed_counted": int(feed_counted),
            "feed_malformed": _metric(metrics, "polyd_feed_malformed_total"),
            "errors": errors,
            "error_samples": (load.get("errors", []) + log_errors)[:5],
            "daemon_exit_code": code,
            "rss_start_kb": rss_start,
            "rss_end_kb": rss_end,
            "rss_max_kb": max([*(round(mb * 1024) for _, mb in rss_samples), rss_end]),
            "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2)
            if rss_start
            else None,
            "rss_slope_mb_per_hour": round(slope_per_hour(fitted), 2),
            "rss_warmup_s": rss_warmup_s,
            "rss_mb_after_warmup": round(fitted[0][1], 2) if fitted else None,
            "note": "latencies depend on what else runs on the machine; compare quiet runs",
        }
    finally:
        procs.stop_all()
        if own_tmp is not None:
            own_tmp.cleanup()


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench health", description=__doc__)
    p.add_argument("--duration", type=float, default=30.0, help="seconds under load (30)")
    p.add_argument("--orders-per-min", type=float, default=1000.0)
    p.add_argument("--feed-per-s", type=float, default=20_000.0)
    p.add_argument("--health-hz", type=float, default=50.0)
    p.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="fit the RSS slope after S seconds under load, counted in --duration (0)",
    )
    add_engine_arguments(p)
    a = p.parse_args(argv)
    if not 0 <= a.warmup < a.duration:
        p.error("--warmup must be at least 0 and shorter than --duration")

    def run(database_url: str | None) -> dict[str, object]:
        return run_load(
            duration_s=a.duration,
            orders_per_min=a.orders_per_min,
            feed_per_s=a.feed_per_s,
            health_hz=a.health_hz,
            rss_warmup_s=a.warmup,
            database_url=database_url,
        )

    if a.engine == "sqlite":
        return run(None)
    with throwaway_pg_database(a.url, bench="health") as url:
        return run(url)


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.health")
    sub = p.add_subparsers(dest="role", required=True)
    b = sub.add_parser("blaster")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--feed-per-s", type=float, required=True)
    b.add_argument("--batch", type=int, default=10)
    d = sub.add_parser("daemon")
    d.add_argument("--orders-per-min", type=float, required=True)
    d.add_argument("--tokens", required=True)
    d.add_argument("--report", required=True)
    a = p.parse_args(argv)
    if a.role == "blaster":
        asyncio.run(blast(a.port, a.feed_per_s, a.batch))
        return 0
    return _daemon(a)


if __name__ == "__main__":
    raise SystemExit(_cli(sys.argv[1:]))
