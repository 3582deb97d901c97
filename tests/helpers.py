"""Helpers shared by tests: settings without a developer's .env, free ports, subprocess runs."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from config import Settings, load_settings
from models import Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side
from storage.journal import JournalRow

ROOT = Path(__file__).resolve().parent.parent
# Payloads captured from the real venue are kept outside the repository, beside the checkout.
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


T = TypeVar("T")
LOCKED_RETRY_S = 30.0


def retry_while_locked(read: Callable[[], T], limit_s: float = LOCKED_RETRY_S) -> T:
    """Run `read` (a test's read of a running daemon's SQLite database) again while SQLite says
    "database is locked", for up to `limit_s`; then raise, saying so.

    A WAL reader is shut out only while another connection holds the whole file (a daemon's
    checkpoint as it closes its last connection, or the WAL index being rebuilt while a writer
    holds the write lock); on 2 loaded cores that can outlast one busy timeout, which each
    attempt has already waited. Any other error is raised at once.
    """
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return read()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"{e} (still, after {limit_s:g}s of retries)") from e
        time.sleep(0.1)


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_LOW = 20_000
_PORT_HIGH = min(_ephemeral_low(), 32_768)
# Each process walks the range from its own starting point (set by its pid), so two pytest
# workers (or a suite and a mutation run beside it) rarely try the same port, and one process
# never hands out the same port twice in a row.
_port_cursor = _PORT_LOW + (os.getpid() * 7919) % max(1, _PORT_HIGH - _PORT_LOW)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """A port (the first of `count` consecutive ones) nothing on 127.0.0.1 listens on, for a
    server a test starts later.

    Ports come from below the kernel's ephemeral range. A port from that range (what binding
    port 0 gives) can be taken by any outgoing connection (to PostgreSQL, to a simulator) in the
    time between this call and the server's bind: under load a daemon then found its sidecar
    port "in use by another process" and exited 3. Outside the range only another test's server
    can take it.
    """
    global _port_cursor
    if _PORT_HIGH - _PORT_LOW < 1000:  # an unusual kernel range: fall back to the kernel's pick
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _port_cursor
        _port_cursor += count
        if _port_cursor + count > _PORT_HIGH:
            _port_cursor = _PORT_LOW
        if port + count <= _PORT_HIGH and all(_bindable(port + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} free consecutive ports in {_PORT_LOW}-{_PORT_HIGH}")


def make_fill(trade: str, venue: str, side: str, price: str, size: str, **kw: object) -> Fill:
    """A fill of `TOKEN` from wire-like text fields; `kw` sets any other field."""
    args: dict[str, object] = {
        "trade_id": trade,
        "venue_order_id": venue,
        "token_id": TOKEN,
        "side": side,
        "price": price,
        "size": size,
    }
    args.update(kw)
    return Fill.model_validate(args)


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


def journal_row(**overrides: Any) -> JournalRow:
    """A journal row as the journal reads it back: a FILLED GTC BUY of 10 @ 0.5 by the sniper,
    matched in full, with no venue id, times or account; `overrides` replace any field."""
    fields: dict[str, Any] = {
        "client_order_id": "c",
        "strategy": "sniper",
        "token_id": TOKEN,
        "side": Side.BUY,
        "price": Decimal("0.5"),
        "size": Decimal("10"),
        "order_type": OrderType.GTC,
        "expiration": None,
        "post_only": False,
        "reason": "",
        "status": OrderStatus.FILLED,
        "venue_order_id": None,
        "payload_hash": None,
        "size_matched": Decimal("10"),
        "avg_price": None,
        "detail": "",
        "created_at": "",
        "updated_at": "",
    }
    fields.update(overrides)
    return JournalRow(**fields)


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


def require_sdk() -> Any:
    """Return the official Polymarket SDK (`polymarket`).

    `polymarket-client` is a locked dependency (its websockets / eth-* caps overridden at lock
    time: requirements-overrides.txt, docs/venue-client.md), so a missing SDK is a broken
    environment and fails the test rather than skipping it.
    """
    try:
        return importlib.import_module("polymarket")
    except ImportError as e:
        pytest.fail(f"the official Polymarket SDK (polymarket-client) does not import: {e}")


# --------------------------------------------------------------------------------------------
# Exactly once: what the venue received against what the journal signed
# --------------------------------------------------------------------------------------------

JOURNAL_SIGNED_SQL = (
    "SELECT client_order_id, status, venue_order_id, payload_hash, signed_order FROM orders"
)
"""The journal columns `exactly_once` reads (one mapping per row)."""


@dataclass
class ExactlyOnce:
    """What the venue received of ours, held against the signed orders the journal kept.

    `sends` counts, per client order id, the order bodies the venue received for that row (a
    retry or a re-send counts again, and must be the same bytes). `problems` is empty when every
    body the venue received is one journaled before it was sent, byte for byte.
    """

    received: int = 0
    sends: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"received {self.received} orders of ours, sends {dict(self.sends)}"
        return head + ("\n  " + "\n  ".join(self.problems[:40]) if self.problems else "")


def _canonical(signed: Mapping[str, object]) -> str:
    """One spelling of a signed order (salt, amounts, signature, order type...), owner left out:
    the journal keeps it without the API key id."""
    return json.dumps(
        {k: v for k, v in signed.items() if k != "owner"}, sort_keys=True, separators=(",", ":")
    )


def exactly_once(
    received: Iterable[Mapping[str, object]],
    journal: Iterable[Mapping[str, object]],
    *,
    address: str,
    complete: bool = True,
) -> ExactlyOnce:
    """Check every order body the venue received from `address` against the journal.

    `received` holds the venue's record of order bodies (`path`, `body` text, `order_id` the
    venue computed), as `simulator.clob.ReceivedOrder.as_json()` gives them; `journal` the rows
    of `JOURNAL_SIGNED_SQL`; `complete` is False if the venue dropped the oldest bodies. Each
    body must be the signed order of exactly one journal row (same salt, signature, amounts,
    order type), with the journaled payload hash over its bytes and the journaled order hash as
    the venue's order id. An order signed again on a retry (new salt, new hash) is a body no row
    holds; a row whose venue order id was rewritten after the send names an order the venue
    never received.
    """
    me = address.lower()
    report = ExactlyOnce()
    if not complete:
        report.problems.append("the venue's record of order bodies is incomplete")
    rows: dict[str, list[Mapping[str, object]]] = {}
    for row in journal:
        signed = row.get("signed_order")
        if isinstance(signed, str):
            rows.setdefault(_canonical(json.loads(signed)), []).append(row)
    for r in received:
        body = str(r["body"])
        try:
            parsed = json.loads(body)
        except ValueError:
            continue  # not an order of anyone's
        order = parsed.get("order") if isinstance(parsed, dict) else None
        if not isinstance(order, dict) or str(order.get("maker", "")).lower() != me:
            continue
        report.received += 1
        salt, venue_id = order.get("salt"), r.get("order_id")
        matches = rows.get(_canonical(parsed), [])
        if len(matches) != 1:
            report.problems.append(
                f"{r['path']}: the venue received order {venue_id} (salt {salt}), which "
                f"{len(matches)} journal rows hold: signed again, or sent without its row"
            )
            continue
        row = matches[0]
        coid = str(row["client_order_id"])
        report.sends[coid] += 1
        if hashlib.sha256(body.encode()).hexdigest() != row["payload_hash"]:
            report.problems.append(f"{coid}: the bytes the venue received are not the journaled")
        if venue_id != row["venue_order_id"]:
            report.problems.append(
                f"{coid}: the venue calls its order {venue_id}, the journal {row['venue_order_id']}"
            )
    return report


async def open_user_feed(url: str, creds: Any, *markets: str) -> ClientConnection:
    """A user-channel websocket subscribed with an SDK client's API credentials to `markets`,
    answered a PING (so the subscription is in place). Close it, or use it in `async with`."""
    ws = await websockets.connect(url)
    auth = {"apiKey": creds.api_key, "secret": creds.api_secret, "passphrase": creds.api_passphrase}
    await ws.send(json.dumps({"auth": auth, "markets": list(markets), "type": "user"}))
    await ws.send("PING")
    assert await ws.recv() == "PONG"
    return ws


# A copy-trading rule file following LEADER. backfill_s: the leader may trade as soon as the
# daemon is ready, which may be before the wallet's first start (a new wallet starts from now);
# a 30 s backfill still copies that trade.
COPY_LEADER = "0x" + "5e" * 20
COPY_RULES = f"""
[[wallets]]
address = "{COPY_LEADER}"
label = "leader"
ratio = "0.1"
max_slippage = "0.02"
backfill_s = 30
max_trade_notional = "20"
"""

NEAR_CLOSE_SNIPER_RULES = """
[[rules]]
name = "near-close"
outcome = "Yes"
min_price = "0.90"
max_price = "0.95"
min_size = "10"
max_notional = "19"
ends_within_minutes = 20
[rules.select]
ends_within_minutes = 30
tags = ["crypto"]
"""
"""One sniper rule buying a crypto market's Yes at 0.90-0.95 within 20 minutes of its end: the
rule the daemon tests against the simulator share (tests edit it with `str.replace`)."""


def identity_of(client: Any) -> Any:
    """polyd's `ClobIdentity` for a trader made by `simulator.testing.new_trader` (a
    py-clob-client-v2 client: the independent "real client" the simulator's tests drive)."""
    from venue.clob import ClobIdentity, Credentials, LocalSigner

    c = client.creds
    return ClobIdentity(
        signer=LocalSigner(client.signer.private_key),
        chain_id=int(client.signer.get_chain_id()),
        signature_type=int(client.builder.signature_type),
        funder=str(client.builder.funder),
        creds=Credentials(c.api_key, c.api_secret, c.api_passphrase),
    )


def database_before(path: Path, migration: str) -> sqlite3.Connection:
    """A SQLite database at `path` with every migration before the one whose name ends with
    `migration` applied, as a daemon of that time left it (to test the migration on it)."""
    from storage import load_migrations

    every = load_migrations()
    upto = next(i for i, m in enumerate(every) if m.name.endswith(migration))
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL);"
    )
    for m in every[:upto]:
        conn.executescript(m.sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'then')", (m.version, m.name))
    conn.commit()
    return conn
