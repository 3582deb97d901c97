"""Process-level test harness: the simulator and the daemon as real subprocesses.

`SimProcess` runs `python -m simulator` and drives its admin routes; `DaemonProcess` runs
`python -m orchestrator --env-file none` against it with an explicit environment and a database in
a temporary directory; `compare` checks the daemon's journal against the simulator's ledger (the
authoritative record of what reached the venue). `TcpProxy` sits between the daemon and a
simulator server so a test can refuse connections on a port the daemon already knows.

Everything here is synchronous (tests drive processes, not coroutines), bounded in time, and
cleans up after itself: every process started is killed in a `finally` / `__exit__`.

    with SimProcess(seed=7, scenario="demo", workdir=tmp_path) as sim:
        with DaemonProcess(sim, tmp_path, **demo_rules(sim, tmp_path)) as d:
            d.wait_ready()
            ...
        report = compare(sim.ledger(), d.db_path, address=d.address)
        assert report.ok, report
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

from eth_account import Account

from tests.helpers import (
    JOURNAL_SIGNED_SQL,
    PYTHON,
    ROOT,
    ExactlyOnce,
    clean_env,
    exactly_once,
    free_port,
    retry_while_locked,
)

Json = dict[str, Any]

TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})
SIM_READY_TIMEOUT_S = 30.0
DAEMON_READY_TIMEOUT_S = 60.0
DEMO_LIVING_SLUGS = ("btc-above-100k", "fed-cut-december", "team-a-final")
DEMO_ENDING_SLUGS = ("eth-window-0", "eth-window-1")
WHALE_ADDRESS = "0xdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef"


def read_db(
    db_path: Path, database_url: str | None = None, timeout: int = 10
) -> sqlite3.Connection:
    """A read-only connection to a daemon's database, rows by index and by name: the SQLite file
    at `db_path`, or `database_url`'s PostgreSQL database (`storage.engine.open_read_only`,
    which speaks the same `?`-parameter SQL)."""
    if database_url:
        from storage.engine import open_read_only

        return open_read_only(db_path=db_path, database_url=database_url)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=timeout)
    conn.row_factory = sqlite3.Row
    return conn


class HarnessError(RuntimeError):
    """A process did not start, answer or stop as expected (the message says which)."""


def _http(
    method: str,
    url: str,
    body: object | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One loopback HTTP request; returns (status, body) for any HTTP answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def wait_until(
    pred: Callable[[], object], timeout: float, *, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll `pred` until it returns something truthy (returned) or `timeout` passes (raises)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, HarnessError, sqlite3.Error, ValueError) as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what} ({last_exc})")
        time.sleep(interval)


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return proc.wait(timeout=10)
    return int(proc.returncode)


def _drain(pipe: IO[bytes], path: Path) -> None:
    """Copy a child's output into `path` line by line until the pipe closes."""
    with path.open("ab") as out, contextlib.suppress(OSError, ValueError):
        for line in iter(pipe.readline, b""):
            out.write(line)
            out.flush()
    with contextlib.suppress(OSError):
        pipe.close()


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class SimProcess:
    """`python -m simulator --seed N [--scenario demo]` as a subprocess, with admin helpers.

    `settle_delay_s=None` leaves `--settle-delay` off the command line (the simulator's default);
    `extra_args` go on the end of it (e.g. `--replay DIR`).
    """

    def __init__(
        self,
        *,
        workdir: Path,
        seed: int = 7,
        scenario: str | None = "demo",
        settle_delay_s: float | None = 0.05,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        self.seed = seed
        self.scenario = scenario
        self.settle_delay_s = settle_delay_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}
        self._out = workdir / f"sim-{seed}.out"
        self._err = workdir / f"sim-{seed}.err"

    # life cycle ------------------------------------------------------------------------------
    def start(self, timeout: float = SIM_READY_TIMEOUT_S) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [PYTHON, "-m", "simulator", "--seed", str(self.seed)]
        if self.settle_delay_s is not None:
            args += ["--settle-delay", str(self.settle_delay_s)]
        if self.scenario:
            args += ["--scenario", self.scenario]
        args += self.extra_args
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=clean_env(), stdout=out, stderr=err, start_new_session=True
            )
        try:
            self.urls = wait_until(self._read_urls, timeout, what="the simulator's URL line")
        except BaseException:
            self.stop()
            raise
        return self

    def _read_urls(self) -> dict[str, str] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise HarnessError(f"simulator exited {self.proc.returncode}: {self.stderr()[-2000:]}")
        line = self._out.read_text().partition("\n")
        if not line[1]:
            return None
        urls: dict[str, str] = json.loads(line[0])
        return urls

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (exit 0 expected), SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        return _stop_process(self.proc, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stderr(self) -> str:
        return self._err.read_text(errors="replace") if self._err.exists() else ""

    def pause(self) -> None:
        """SIGSTOP: every socket stays open and nothing answers (a frozen venue)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    # URLs ------------------------------------------------------------------------------------
    @property
    def clob_url(self) -> str:
        return self.urls["clob_url"]

    @property
    def gamma_url(self) -> str:
        return self.urls["gamma_url"]

    @property
    def data_url(self) -> str:
        return self.urls["data_url"]

    @property
    def market_ws_url(self) -> str:
        return self.urls["market_ws_url"]

    @property
    def user_ws_url(self) -> str:
        return self.urls["user_ws_url"]

    # admin routes ----------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: object | None = None) -> Any:
        status, raw = _http(method, self.clob_url + path, body, timeout=10)
        if status != 200:
            raise HarnessError(f"{method} {path} -> {status}: {raw[:300]!r}")
        return json.loads(raw)

    def fund(
        self,
        address: str,
        collateral: Decimal | str | None = None,
        *,
        token_id: str | None = None,
        shares: Decimal | str | None = None,
    ) -> None:
        """Credit pUSD and/or outcome tokens (`POST /_sim/fund`)."""
        body: Json = {"address": address}
        if collateral is not None:
            body["collateral"] = str(collateral)
        if token_id is not None:
            body["token_id"], body["shares"] = token_id, str(shares)
        self._admin("POST", "/_sim/fund", body)

    def fault(self, **spec: Any) -> None:
        """Register a fault (`POST /_sim/fault`), e.g. `fault(kind="status", status=500)`."""
        self._admin("POST", "/_sim/fault", spec)

    def clear_faults(self) -> None:
        self._admin("POST", "/_sim/fault", {"kind": "clear"})

    def ledger(self) -> Json:
        """Every order, trade and balance the venue holds (`GET /_sim/ledger`)."""
        ledger: Json = self._admin("GET", "/_sim/ledger")
        return ledger

    def add_market(
        self,
        question: str,
        slug: str,
        *,
        tick_size: str = "0.01",
        min_size: str = "5",
        neg_risk: bool = False,
    ) -> Json:
        """List a market (`POST /_sim/market`); returns `condition_id` and `token_ids`."""
        body = {
            "question": question,
            "slug": slug,
            "tick_size": tick_size,
            "min_size": min_size,
            "neg_risk": neg_risk,
        }
        market: Json = self._admin("POST", "/_sim/market", body)
        return market

    def received_orders(self) -> Json:
        """Every order body the venue received (`GET /_sim/received_orders`): `orders`, with
        `total` and `kept` request counts (they differ once the oldest were dropped)."""
        received: Json = self._admin("GET", "/_sim/received_orders")
        return received

    def seed_orders(self, orders: list[Json]) -> list[str]:
        """Rest orders from simulated makers (`POST /_sim/seed_orders`)."""
        ids: list[str] = self._admin("POST", "/_sim/seed_orders", orders)["order_ids"]
        return ids

    def book(self, token_id: str) -> Json:
        status, raw = _http("GET", f"{self.clob_url}/book?token_id={token_id}")
        if status != 200:
            raise HarnessError(f"/book -> {status}")
        book: Json = json.loads(raw)
        return book

    def markets(self) -> list[Json]:
        """Gamma's market rows (slug, clobTokenIds, ...)."""
        status, raw = _http("GET", f"{self.gamma_url}/markets?limit=500")
        if status != 200:
            raise HarnessError(f"gamma /markets -> {status}")
        rows: list[Json] = json.loads(raw)
        return rows


# --------------------------------------------------------------------------------------------
# A TCP proxy that can refuse connections on a fixed port
# --------------------------------------------------------------------------------------------


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target`; `refuse()` closes the port, `accept()` reopens it.

    While refusing, new connections get ECONNREFUSED and established ones are reset: what a
    venue behind a dead load balancer looks like. Threads are daemonic and bounded by sockets.
    """

    def __init__(self, target_url: str) -> None:
        hostport = target_url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        self.target = (host, int(port))
        self.port = free_port()
        scheme, rest = target_url.split("://", 1)
        path = rest.split("/", 1)[1] if "/" in rest else ""
        self.url = f"{scheme}://127.0.0.1:{self.port}" + (f"/{path}" if path else "")
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self.accept()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.refuse()

    def accept(self) -> None:
        if self._listener is not None:
            return
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        th = threading.Thread(target=self._serve, args=(s,), daemon=True, name="proxy:accept")
        th.start()
        self._threads.append(th)

    def refuse(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            with contextlib.suppress(OSError):
                c.close()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------

# Short timeouts so a fault test takes seconds; the values are still inside each setting's range.
FAST_SETTINGS: dict[str, str] = {
    "HTTP_TIMEOUT_S": "1.0",
    "RETRY_ATTEMPTS": "3",
    "RETRY_BASE_DELAY_S": "0.05",
    "RETRY_MAX_DELAY_S": "0.5",
    "ORDER_LOOKUP_GRACE_S": "2",
    "BREAKER_FAILURE_THRESHOLD": "5",
    "BREAKER_RESET_TIMEOUT_S": "1",
    "RECONCILE_INTERVAL_S": "2",
    "SHUTDOWN_TIMEOUT_S": "5",
    "DRAIN_TIMEOUT_S": "3",
    "HEARTBEAT_INTERVAL_S": "2",
    "DISCOVERY_INTERVAL_S": "5",
    "COPY_POLL_INTERVAL_S": "0.5",
    "DB_BUSY_TIMEOUT_MS": "1000",
}


class Venue(Protocol):
    """What `DaemonProcess` needs of a simulator: its URLs and a way to fund a wallet.

    A `SimProcess`, or an in-process `simulator.Simulator` when a test drives the venue from its
    own event loop (wait on the daemon there with async polling, not `wait_ready`).
    """

    @property
    def clob_url(self) -> str: ...
    @property
    def gamma_url(self) -> str: ...
    @property
    def data_url(self) -> str: ...
    @property
    def market_ws_url(self) -> str: ...
    @property
    def user_ws_url(self) -> str: ...
    def fund(self, address: str, collateral: Decimal | None = None) -> None: ...


class DaemonProcess:
    """`python -m orchestrator --env-file none` live against a `SimProcess` (or any `Venue`).

    A fresh key is generated and funded at the simulator unless `private_key` is given. Extra
    settings are passed as keyword arguments (or in `extra`) by their env name
    (`RISK_MAX_OPEN_ORDERS="5"`) or lower-case field name (`sniper_rules_path=path`); None drops
    a setting. `fast=False` leaves out FAST_SETTINGS: the daemon's own timeouts and intervals.
    With `env_file`, the settings are written to that file (mode 0600) instead of the
    environment and the daemon reads it (`--env-file`), as under systemd: a reload re-reads it.
    """

    def __init__(
        self,
        sim: Venue,
        workdir: Path,
        *,
        private_key: str | None = None,
        collateral: Decimal | str | None = "5000",
        fast: bool = True,
        clob_url: str | None = None,
        user_ws_url: str | None = None,
        market_ws_url: str | None = None,
        data_url: str | None = None,
        name: str = "daemon",
        extra: Mapping[str, object] | None = None,
        env_file: Path | None = None,
        **settings: object,
    ) -> None:
        self.sim = sim
        self.workdir = workdir
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        acct = Account.from_key(private_key) if private_key else Account.create()
        self.private_key = "0x" + bytes(acct.key).hex()
        self.address: str = acct.address
        if collateral is not None:
            sim.fund(self.address, collateral=Decimal(collateral))
        self.db_path = workdir / f"{name}.db"
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        env: dict[str, str] = {
            "MODE": "live",
            "CLOB_HOST": clob_url or sim.clob_url,
            "GAMMA_API_URL": sim.gamma_url,
            "DATA_API_URL": data_url or sim.data_url,
            "MARKET_WS_URL": market_ws_url or sim.market_ws_url,
            "USER_WS_URL": user_ws_url or sim.user_ws_url,
            "PRIVATE_KEY": self.private_key,
            "SIGNATURE_TYPE": "0",
            "DB_PATH": str(self.db_path),
            "HTTP_PORT": str(self.port),
            "CONTROL_TOKEN": self.token,
            "LOG_FORMAT": "json",
            "SNIPER_ENABLED": "false",
            "COPY_ENABLED": "false",
            **(FAST_SETTINGS if fast else {}),
        }
        for k, v in {**(extra or {}), **settings}.items():
            if v is None:
                env.pop(k.upper(), None)
            else:
                env[k.upper()] = str(v)
        self.database_url = env.get("DATABASE_URL")  # PostgreSQL instead of db_path, when set
        self.env_file = env_file
        self.file_settings: dict[str, str] = {}
        if env_file is not None:
            self.file_settings = dict(env)
            self.write_env_file(env)
            env = {}
        self.env = clean_env(**env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.exit_codes: list[int] = []
        self._drains: list[threading.Thread] = []

    def write_env_file(self, values: Mapping[str, str]) -> None:
        """Write the settings file (`env_file`) with `values`, mode 0600."""
        assert self.env_file is not None
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.env_file.chmod(0o600)

    # life cycle ------------------------------------------------------------------------------
    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.runs}.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.runs}.err"

    def start(self) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError("daemon already running")
        self.runs += 1
        # Output goes through pipes drained into files by this process, so a file-size limit
        # set on the daemon (the disk-full test) hits its database, not its log lines.
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "orchestrator", "--env-file", str(self.env_file or "none")],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for pipe, path in (
            (self.proc.stdout, self.stdout_path),
            (self.proc.stderr, self.stderr_path),
        ):
            assert pipe is not None
            th = threading.Thread(
                target=_drain, args=(pipe, path), daemon=True, name=f"drain:{path.name}"
            )
            th.start()
            self._drains.append(th)
        return self

    def _join_drains(self) -> None:
        for th in self._drains:
            th.join(timeout=3)
        self._drains.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> int | None:
        """Make sure the process is gone (SIGTERM, then SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        code = _stop_process(self.proc, timeout)
        self._join_drains()
        self.exit_codes.append(code)
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self, timeout: float = 15.0) -> int:
        """Ask for a graceful stop; return the exit code (SIGKILL and raise after `timeout`)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise HarnessError(f"daemon did not stop within {timeout:g}s of SIGTERM") from e
        self._join_drains()
        self.exit_codes.append(code)
        return code

    def kill9(self) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        code = self.proc.wait(timeout=10)
        self._join_drains()
        self.exit_codes.append(code)
        return code

    def restart(self, *, ready: bool = True) -> Self:
        """Start again with the same environment and database (stopping first if running)."""
        self.stop()
        self.start()
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = DAEMON_READY_TIMEOUT_S) -> Json:
        """Poll `/health` until it answers 200 (raises with the daemon's stderr on failure)."""

        def ready() -> Json | None:
            if not self.alive():
                raise HarnessError(f"daemon exited early: {self.proc and self.proc.returncode}")
            status, body = self.health()
            return body if status == 200 else None

        try:
            body: Json = wait_until(ready, timeout, interval=0.2, what="/health 200")
        except HarnessError as e:
            raise HarnessError(f"{e}\n--- daemon stderr (tail) ---\n{self.stderr()[-4000:]}") from e
        return body

    # sidecar ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self, timeout: float = 3.0) -> tuple[int, Json]:
        """(status code, body) of `GET /health`."""
        status, raw = _http("GET", self.base_url + "/health", timeout=timeout)
        body: Json = json.loads(raw) if raw else {}
        return status, body

    def metrics_text(self) -> str:
        status, raw = _http("GET", self.base_url + "/metrics")
        if status != 200:
            raise HarnessError(f"/metrics -> {status}")
        return raw.decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric_name = head.split("{", 1)[0]
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def control(self, action: str, **body: object) -> tuple[int, Json]:
        """`POST /<action>` with the control token (halt, resume, cancel-all)."""
        status, raw = _http(
            "POST",
            f"{self.base_url}/{action}",
            body,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            parsed: Json = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return status, parsed

    # records ---------------------------------------------------------------------------------
    def db(self) -> sqlite3.Connection:
        """A read-only connection to the daemon's database (close it when done)."""
        return read_db(self.db_path, self.database_url, timeout=5)

    def rows(self, sql: str, *args: object) -> list[sqlite3.Row]:
        def read() -> list[sqlite3.Row]:
            conn = self.db()
            try:
                return list(conn.execute(sql, args).fetchall())
            finally:
                conn.close()

        return retry_while_locked(read)

    def order_count(self) -> int:
        """Journal rows that reached the venue path (signed: they carry a venue order id)."""
        if self.database_url is None and not self.db_path.exists():
            return 0
        try:
            return int(
                self.rows("SELECT count(*) FROM orders WHERE venue_order_id IS NOT NULL")[0][0]
            )
        except sqlite3.DatabaseError:  # not migrated yet (PostgreSQL's error is this class)
            return 0

    def stderr(self, run: int | None = None) -> str:
        runs = [run] if run is not None else range(1, self.runs + 1)
        out = []
        for r in runs:
            for p in (
                self.workdir / f"{self.name}.{r}.out",
                self.workdir / f"{self.name}.{r}.err",
            ):
                if p.exists():
                    out.append(p.read_text(errors="replace"))
        return "".join(out)

    def log_events(self, run: int | None = None) -> list[Json]:
        """Parsed JSON log lines of run `run` (default: every run so far, in order)."""
        events: list[Json] = []
        for line in self.stderr(run).splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    def event_names(self, run: int | None = None) -> list[str]:
        return [str(e.get("event")) for e in self.log_events(run)]


# --------------------------------------------------------------------------------------------
# Strategy rules that trade continuously against the demo scenario
# --------------------------------------------------------------------------------------------


class _ScenarioShim:
    whale_address = WHALE_ADDRESS


class _SimShim:
    """What a `demo.RULE_WRITERS` entry reads from an in-process Simulator."""

    scenario = _ScenarioShim()

    def __init__(self, sim: SimProcess) -> None:
        self.clob_url, self.gamma_url = sim.clob_url, sim.gamma_url


def copy_rules(sim: SimProcess, workdir: Path) -> dict[str, object]:
    """Settings for the copy trader following the demo whale (`demo.write_copy_rules`)."""
    from demo import write_copy_rules as write_demo_rules

    return dict(write_demo_rules(_SimShim(sim), workdir))


def sniper_rules(sim: SimProcess, workdir: Path) -> dict[str, object]:
    """Settings for a sniper that fires again and again on the demo's living books.

    Narrow price bands tile 0.05-0.95: as a book's fair price drifts, its best ask leaves one band
    (re-arming that rule) and enters another, so FAK BUYs go out every few seconds. Small
    notional keeps the account funded for minutes.
    """
    rules = []
    lo = Decimal("0.05")
    width = Decimal("0.03")
    while lo < Decimal("0.95"):
        hi = lo + width - Decimal("0.01")
        rules.append(
            "[[rules]]\n"
            f'name = "band-{lo}"\n'
            f'min_price = "{lo}"\n'
            f'max_price = "{hi}"\n'
            'min_size = "5"\n'
            'max_notional = "3"\n'
            'order_type = "FAK"\n'
            "max_entries = 1000\n"
            "cooldown_s = 1\n"
            "[rules.select]\n"
            f"slugs = {json.dumps(list(DEMO_LIVING_SLUGS))}\n"
        )
        lo += width
    path = workdir / "sniper-rules.toml"
    path.write_text("# written by tests/harness.py\n" + "\n".join(rules))
    return {"sniper_enabled": True, "sniper_rules_path": path}


def demo_rules(sim: SimProcess, workdir: Path) -> dict[str, object]:
    """Both strategies trading continuously against the demo scenario."""
    return {**sniper_rules(sim, workdir), **copy_rules(sim, workdir)}


# --------------------------------------------------------------------------------------------
# Ledger vs journal
# --------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """How the daemon's database agrees with the venue's ledger (all counts should be 0)."""

    venue_orders: int = 0
    journal_rows: int = 0
    journal_signed: int = 0
    duplicates: int = 0
    lost: int = 0
    orphans: int = 0
    unsettled: int = 0
    status_mismatches: int = 0
    fill_mismatches: int = 0
    position_mismatches: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.lost
            or self.orphans
            or self.unsettled
            or self.status_mismatches
            or self.fill_mismatches
            or self.position_mismatches
        )

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int) and k != "details"}

    def __str__(self) -> str:
        head = json.dumps(self.counts())
        return head + ("\n  " + "\n  ".join(self.details[:40]) if self.details else "")


def expected_status(order: Json, order_type: str, journal_size: Decimal) -> set[str]:
    """The journal statuses that agree with a venue order (see execution.ports.journal_status).

    A marketable BUY is signed as a dollar amount the SDK rounds to cents, so the venue's order
    can be a little smaller than the request (5.17 asked, 5.1551 signed): fully matched at the
    venue, the journal calls it CANCELED (remainder killed) against the requested size. Both
    are terminal with the same size matched (a FAK BUY is signed as a cent-rounded amount).
    """
    size, matched = Decimal(str(order["original_size"])), Decimal(str(order["size_matched"]))
    status = str(order["status"])
    rests = order_type in ("GTC", "GTD")
    if matched >= size and matched > 0:
        return {"FILLED"} if rests or journal_size <= size else {"FILLED", "CANCELED"}
    if status == "CANCELED":
        return {"CANCELED"}
    if status == "EXPIRED":
        return {"EXPIRED"}
    if status in ("MATCHED", "UNMATCHED") and not rests:
        return {"CANCELED"}
    return {"PARTIALLY_FILLED"} if matched > 0 else {"LIVE"}


def compare(
    ledger: Json,
    db_path: Path,
    *,
    address: str,
    settled: bool = True,
    check_positions: bool = True,
    database_url: str | None = None,
) -> Comparison:
    """Compare the venue's ledger with the daemon's journal, fills and positions.

    * duplicate: two journal rows for one venue order (or one request), or two venue orders
      for one journal row's request (same strategy, token, side, price, size, created together
      is not enough to tell: the venue order id *is* the signed payload's hash, so a re-signed
      order shows up as a venue order no journal row names, counted as lost);
    * lost: a venue order of ours with no journal row;
    * orphan: a journal row (not REJECTED) naming a venue id the venue does not know, or a
      REJECTED row whose order the venue does hold;
    * unsettled (when `settled`): a row still PENDING or UNKNOWN;
    * status mismatch: the row's status disagrees with the venue's (or its size matched does);
    * fill mismatch: a venue trade of ours missing from `fills`, or a fill the venue lacks;
    * position mismatch: a token whose position differs from the venue's share balance.
    """
    me = address.lower()
    ours = {o["id"]: o for o in ledger["orders"] if str(o.get("maker", "")).lower() == me}
    c = Comparison(venue_orders=len(ours))

    def read() -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row]]:
        conn = read_db(db_path, database_url)
        try:
            return (
                conn.execute(
                    "SELECT client_order_id, status, venue_order_id, size_matched, order_type,"
                    " size FROM orders"
                ).fetchall(),
                conn.execute("SELECT trade_id, venue_order_id, side, size FROM fills").fetchall(),
                conn.execute("SELECT token_id, size FROM positions").fetchall(),
            )
        finally:
            conn.close()

    rows, fills, held = retry_while_locked(read)
    positions: dict[str, Decimal] = {}  # the account's holding: every strategy's summed
    for r in held:
        positions[r["token_id"]] = positions.get(r["token_id"], Decimal(0)) + Decimal(r["size"])
    c.journal_rows = len(rows)
    by_venue: dict[str, list[sqlite3.Row]] = {}
    for r in rows:
        if r["venue_order_id"]:
            by_venue.setdefault(r["venue_order_id"], []).append(r)
    c.journal_signed = sum(len(v) for v in by_venue.values())
    for vid, rs in by_venue.items():
        if len(rs) > 1:
            c.duplicates += len(rs) - 1
            c.details.append(f"duplicate journal rows for venue order {vid[:12]}")
    for vid in ours:
        if vid not in by_venue:
            c.lost += 1
            c.details.append(f"lost: venue order {vid[:12]} has no journal row")
    for vid, rs in by_venue.items():
        r = rs[0]
        status = str(r["status"])
        if settled and status in ("PENDING", "UNKNOWN"):
            c.unsettled += 1
            c.details.append(f"unsettled: {r['client_order_id']} is {status}")
            continue
        o = ours.get(vid)
        if o is None:
            if status != "REJECTED" and status not in ("PENDING", "UNKNOWN"):
                c.orphans += 1
                c.details.append(f"orphan: {r['client_order_id']} {status} {vid[:12]}")
            continue
        if status == "REJECTED":
            c.orphans += 1
            c.details.append(f"orphan: {r['client_order_id']} REJECTED but the venue has it")
            continue
        if status in ("PENDING", "UNKNOWN"):
            continue
        want = expected_status(o, str(r["order_type"]), Decimal(r["size"]))
        if status not in want or Decimal(r["size_matched"]) != Decimal(str(o["size_matched"])):
            c.status_mismatches += 1
            c.details.append(
                f"status: {r['client_order_id']} journal {status}/{r['size_matched']} vs venue "
                f"{o['status']}/{o['size_matched']} (want {sorted(want)})"
            )
    # fills: one row per (trade, our order) the venue matched
    venue_fills: Counter[tuple[str, str]] = Counter()
    # The ledger has a row per (trade, maker order); a taker with several makers in one trade
    # has one fill of that trade, so each (trade, order) pair counts once.
    pairs = {
        (t["id"], oid)
        for t in ledger["trades"]
        for oid in (t["taker_order_id"], t["maker_order_id"])
        if oid in ours
    }
    for key in pairs:
        venue_fills[key] += 1
    journal_fills: Counter[tuple[str, str]] = Counter(
        (f["trade_id"], f["venue_order_id"]) for f in fills
    )
    for key in venue_fills.keys() | journal_fills.keys():
        if venue_fills[key] != journal_fills[key]:
            c.fill_mismatches += 1
            c.details.append(
                f"fill {key[0][:12]}/{key[1][:12]}: venue {venue_fills[key]}"
                f" journal {journal_fills[key]}"
            )
    if check_positions:
        balances = {k.lower(): v for k, v in ledger["balances"].items()}
        tokens = {t: Decimal(str(v)) for t, v in balances.get(me, {}).get("tokens", {}).items()}
        for tok in tokens.keys() | positions.keys():
            venue, mine = tokens.get(tok, Decimal(0)), positions.get(tok, Decimal(0))
            if venue != mine:
                c.position_mismatches += 1
                c.details.append(f"position {tok[:12]}: venue {venue} journal {mine}")
    return c


def check_exactly_once(
    sim: SimProcess, db_path: Path, *, address: str, database_url: str | None = None
) -> ExactlyOnce:
    """`tests.helpers.exactly_once` over the simulator's received bodies and the journal."""
    received = sim.received_orders()

    def read() -> list[dict[str, Any]]:
        conn = read_db(db_path, database_url)
        try:
            return [dict(r) for r in conn.execute(JOURNAL_SIGNED_SQL).fetchall()]
        finally:
            conn.close()

    rows = retry_while_locked(read)
    return exactly_once(
        received["orders"], rows, address=address, complete=received["total"] == received["kept"]
    )


@contextlib.contextmanager
def sim_and_daemon(
    workdir: Path, *, seed: int = 7, scenario: str | None = "demo", **settings: object
) -> Iterator[tuple[SimProcess, DaemonProcess]]:
    """A simulator and a daemon against it, both stopped on exit (the daemon first)."""
    with SimProcess(workdir=workdir, seed=seed, scenario=scenario) as sim:
        d = DaemonProcess(sim, workdir, extra=settings)
        try:
            d.start()
            yield sim, d
        finally:
            d.stop()
