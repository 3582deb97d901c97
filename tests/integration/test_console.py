"""The web console's HTTP surface over real sockets: security headers on every answer, every
`/ui/api` route refusing a missing or wrong bearer token, `UI_PUBLIC_READ` opening the reads and
never the controls, the event stream's bounds, and the exit-2 refusal of a sidecar bound beyond
loopback with no token; one daemon on SQLite reading what it read before the console was of
one daemon's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from errors import ConfigError
from models import Fill
from observability import console as console_mod
from observability.console import MAX_CLIENTS, QUEUE_SIZE, Console, _Client, exposure_problems
from observability.health import CheckResult
from observability.metrics import Metrics
from observability.sidecar import SECURITY_HEADERS, Health, Sidecar
from storage import Database, Repositories
from storage.market_names import MarketName
from storage.views import Views
from tests.helpers import clean_env, free_port, run_cli
from tests.integration.test_views_cli import RAIN, seed
from wiring.chat import DaemonDesk

# Its module-scoped fixture is built once: `make test` runs this file on one worker.
pytestmark = pytest.mark.xdist_group("test_console")

TOKEN = "console-token-for-tests-0123456789"
WRONG = {"Authorization": "Bearer not-the-token"}
GOOD = {"Authorization": f"Bearer {TOKEN}"}
READS = ("/ui/api/board", "/ui/api/events")
D100 = Decimal(100)


@dataclass
class Served:
    url: str
    calls: list[Mapping[str, Any]]
    console: Console
    sidecar: Sidecar


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console") / "polyd.db"
    asyncio.run(seed(path))
    return path


@contextlib.asynccontextmanager
async def serve(
    db_path: Path, *, token: str | None = TOKEN, public_read: bool = False
) -> AsyncIterator[Served]:
    health = Health(mode="paper", version="test")
    health.register("feed:market", lambda: CheckResult(True, "ok"))
    calls: list[Mapping[str, Any]] = []

    async def halt(body: Mapping[str, Any]) -> Mapping[str, Any]:
        calls.append(dict(body))
        return {"trading_state": "HALTED"}

    sc = Sidecar(host="127.0.0.1", port=0, health=health, metrics=Metrics(), control_token=token)
    sc.add_control("halt", halt)
    con = Console(
        sc, health=health, db_path=db_path, daily_loss_limit=Decimal(100),
        public_read=public_read, interval_s=0.05,
    )  # fmt: skip
    con.mount()
    await sc.start()
    try:
        yield Served(f"http://127.0.0.1:{sc.bound_port}", calls, con, sc)
    finally:
        await sc.stop()


async def first_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The first `board` event of a stream, decoded."""
    buf = b""
    while b"\n\n" not in buf:
        buf += await asyncio.wait_for(resp.content.readany(), 10)
    frame = buf.split(b"\n\n")[0]
    assert frame.startswith(b"event: board\ndata: "), frame[:80]
    data: dict[str, Any] = orjson.loads(frame.split(b"data: ", 1)[1])
    return data


async def test_every_answer_carries_the_security_headers_and_no_cookie(db_path: Path) -> None:
    async with serve(db_path) as srv, aiohttp.ClientSession() as s:
        for path, headers in [
            ("/ui/", {}),
            ("/ui/static/console.js", {}),
            ("/ui/static/uPlot.iife.min.js", {}),
            ("/health", {}),
            ("/ui/api/board", GOOD),
            ("/ui/api/board", {}),  # a refusal
            ("/ui/no-such-page", {}),  # a 404
            ("/ui/static/../../sidecar.py", {}),  # no way out of the static folder
        ]:
            async with s.get(srv.url + path, headers=headers) as r:
                for name, value in SECURITY_HEADERS.items():
                    assert r.headers.get(name) == value, (path, name)
                assert "Set-Cookie" not in r.headers, path
                if path.startswith("/ui/static/.."):
                    assert r.status in (403, 404), r.status
        async with s.get(srv.url + "/ui/api/events", headers=GOOD) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            await first_event(r)
        async with s.get(srv.url + "/ui", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/ui/")
        async with s.get(srv.url + "/ui/") as r:
            page = await r.text()
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP forbids it
    assert TOKEN not in page


async def test_every_api_route_refuses_a_missing_or_wrong_token(db_path: Path) -> None:
    async with serve(db_path) as srv, aiohttp.ClientSession() as s:
        for headers in ({}, WRONG, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
            for path in READS:
                async with s.get(srv.url + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
            async with s.post(srv.url + "/ui/api/control/halt", headers=headers) as r:
                assert r.status == 401, headers
        assert srv.calls == []
        async with s.get(srv.url + "/ui/api/access") as r:  # open, and holds no data
            assert await r.json() == {"public_read": False, "token": True}
        async with s.get(srv.url + "/ui/api/board", headers=GOOD) as r:
            assert r.status == 200
            board = await r.json()
        async with s.get(srv.url + "/ui/api/events", headers=GOOD) as r:
            assert r.status == 200
            event = await first_event(r)
        async with s.post(
            srv.url + "/ui/api/control/halt", headers=GOOD, json={"reason": "from the page"}
        ) as r:
            assert r.status == 200
            assert await r.json() == {"ok": True, "action": "halt", "trading_state": "HALTED"}
        async with s.post(srv.url + "/ui/api/control/reload", headers=GOOD) as r:
            assert r.status == 404  # the console's controls are the four trading ones
    # The control ran through the sidecar's path with the console as its actor (audited so).
    assert srv.calls == [{"reason": "from the page", "actor": "console"}]
    for got in (board, event):
        assert got["status"]["trading_state"] == "ACTIVE"
        assert got["health"]["checks"]["feed:market"]["ok"] is True
        rain = [p for p in got["positions"] if p["token_id"] == RAIN]
        assert rain and rain[0]["market"] == "Will it rain in Paris on Friday?"
        assert {t["trade_id"] for t in got["trades"]} >= {"r1", "r3", "b3"}
        assert len(got["pnl_days"]) == 7
        assert TOKEN not in orjson.dumps(got).decode()


async def test_public_read_opens_the_reads_but_never_the_controls(db_path: Path) -> None:
    async with serve(db_path, public_read=True) as srv, aiohttp.ClientSession() as s:
        async with s.get(srv.url + "/ui/api/board") as r:
            assert r.status == 200
        async with s.get(srv.url + "/ui/api/events") as r:
            assert r.status == 200
            await first_event(r)
        for headers in ({}, WRONG):
            async with s.post(srv.url + "/ui/api/control/halt", headers=headers) as r:
                assert r.status == 401
        # A page elsewhere that rebinds its own name to this address cannot read without it.
        port = srv.url.rsplit(":", 1)[1]
        for host, status in [(f"evil.example:{port}", 401), (f"localhost:{port}", 200),
                             (f"[::1]:{port}", 200), (f"127.0.0.1:{port}", 200)]:  # fmt: skip
            async with s.get(srv.url + "/ui/api/board", headers={"Host": host}) as r:
                assert r.status == status, host
        async with s.get(srv.url + "/ui/api/board", headers={"Host": "evil.example", **GOOD}) as r:
            assert r.status == 200  # with the token, any name
        assert srv.calls == []
        async with s.post(srv.url + "/ui/api/control/halt", headers=GOOD) as r:
            assert r.status == 200
    assert srv.calls == [{"actor": "console"}]


async def test_without_a_token_the_console_is_closed_unless_public_read(db_path: Path) -> None:
    async with serve(db_path, token=None) as srv, aiohttp.ClientSession() as s:
        for path in READS:
            async with s.get(srv.url + path, headers=GOOD) as r:
                assert r.status == 403
                assert "CONTROL_TOKEN" in (await r.json())["error"]
    async with serve(db_path, token=None, public_read=True) as srv, aiohttp.ClientSession() as s:
        async with s.get(srv.url + "/ui/api/board") as r:
            assert r.status == 200
        async with s.post(srv.url + "/ui/api/control/halt", headers=GOOD) as r:
            assert r.status == 403
    assert srv.calls == []


async def test_the_event_stream_takes_a_few_clients_and_drops_a_slow_one(db_path: Path) -> None:
    async with serve(db_path) as srv, aiohttp.ClientSession() as s:
        streams = [
            await s.get(srv.url + "/ui/api/events", headers=GOOD) for _ in range(MAX_CLIENTS)
        ]
        try:
            for r in streams:
                assert r.status == 200
                await first_event(r)
            async with s.get(srv.url + "/ui/api/events", headers=GOOD) as r:
                assert r.status == 503
            assert srv.console.clients == MAX_CLIENTS
        finally:
            for r in streams:
                r.close()
        await asyncio.sleep(0.3)  # the server sees the closed streams on its next write
        assert srv.console.clients == 0
        async with s.get(srv.url + "/ui/api/events", headers=GOOD) as r:
            assert r.status == 200  # room again
    # A client that does not read: once its queue is full it is dropped, not buffered for.
    c = _Client()
    for n in range(QUEUE_SIZE):
        c.offer(b"board %d" % n)
    assert not c.dropped
    c.offer(b"one too many")
    assert c.dropped and c.queue.qsize() == 1 and c.queue.get_nowait() == console_mod._END


def test_a_sidecar_beyond_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_problems(host, token_set=False) == []
    for host in ("0.0.0.0", "::", "192.0.2.1", "polyd.example"):
        (line,) = exposure_problems(host, token_set=False)
        assert (
            line.startswith(f"HTTP_HOST: {host} is not a loopback address")
            and "CONTROL_TOKEN" in line
        )
        assert exposure_problems(host, token_set=True) == []
    sc = Sidecar(
        host="0.0.0.0", port=0, health=Health(mode="paper", version="t"), metrics=Metrics()
    )
    con = Console(
        sc,
        health=Health(mode="paper", version="t"),
        db_path=Path("x.db"),
        daily_loss_limit=Decimal(1),
    )
    with pytest.raises(ConfigError):
        con.mount()


def test_the_daemon_exits_2_on_a_wildcard_bind_without_a_token(tmp_path: Path) -> None:
    env = clean_env(
        DB_PATH=str(tmp_path / "polyd.db"), HTTP_HOST="0.0.0.0", HTTP_PORT=str(free_port()),
        SNIPER_ENABLED="false", COPY_ENABLED="false", LOG_FORMAT="json",
    )  # fmt: skip
    (tmp_path / "empty.env").write_text("")
    done = run_cli("--env-file", str(tmp_path / "empty.env"), env=env, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    out = done.stdout + done.stderr
    assert "HTTP_HOST: 0.0.0.0 is not a loopback address and CONTROL_TOKEN is not set" in out


async def test_the_fills_part_is_rebuilt_only_when_the_fills_move(tmp_path: Path) -> None:
    db = tmp_path / "polyd.db"
    await seed(db)
    cache = console_mod._TradesCache()
    now = datetime.now(UTC)

    def read(mono: float) -> dict[str, Any]:
        with Views.open(db) as views:
            return console_mod.board(
                views, daily_loss_limit=D100, now=now, cache=cache, monotonic=mono
            )

    first = read(0.0)
    assert read(1.0)["trades"] is first["trades"]  # nothing moved: reused
    assert read(console_mod.TRADES_TTL_S + 1)["trades"] is not first["trades"]  # too old
    kept = read(console_mod.TRADES_TTL_S + 2)
    async with Database(db) as conn:
        await Repositories.over(conn).fills.record(
            Fill(trade_id="new-1", venue_order_id="0xnew", token_id=RAIN, side="BUY",
                 price=Decimal("0.5"), size=Decimal("2"), ts=now)
        )  # fmt: skip
    fresh = read(console_mod.TRADES_TTL_S + 3)
    assert fresh["trades"] is not kept["trades"]
    assert fresh["trades"][0]["trade_id"] == "new-1"
    assert read(console_mod.TRADES_TTL_S + 4)["trades"] is fresh["trades"]
    async with Database(db) as conn:  # a market named after its fills were shown
        await Repositories.over(conn).names.save([MarketName("999", "Named later?", "Yes", "", "")])
    assert read(console_mod.TRADES_TTL_S + 5)["trades"] is not fresh["trades"]


async def test_stopping_the_sidecar_ends_an_open_stream_at_once(db_path: Path) -> None:
    async with serve(db_path) as srv, aiohttp.ClientSession() as s:
        r = await s.get(srv.url + "/ui/api/events", headers=GOOD)
        await first_event(r)
        # The daemon's shutdown is not held by the page: the stop returns although the client
        # never closes its stream (a held stop would hit this generous guard).
        await asyncio.wait_for(srv.sidecar.stop(), 30)
        r.close()
    assert srv.console.clients == 0


async def test_one_daemon_on_sqlite_sees_what_it_saw_before_the_views_were_per_daemon(
    db_path: Path,
) -> None:
    """The console and chat read the daemon's own rows (DAEMON_ID, `default` alone on SQLite):
    on a database only the default daemon wrote, every row is its own, so the board and chat's
    answers equal the unscoped ones."""
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    health = Health(mode="paper", version="test")
    sc = Sidecar(host="127.0.0.1", port=0, health=health, metrics=Metrics())
    boards = []
    answers = []
    for daemon in ("default", None):
        con = Console(
            sc, health=health, db_path=db_path, daily_loss_limit=D100, daemon_id=daemon,
            now=lambda: now,
        )  # fmt: skip
        page = await con.board()
        assert page["positions"] and page["trades"], page  # the seed's rows are there
        page["status"].pop("daemon_snapshots")  # by daemon when unscoped: the same snapshot
        boards.append(page)
        desk = DaemonDesk(
            db_path=db_path, daily_loss_limit=D100, mode="paper", executor=lambda: None,
            run_control=None, daemon_id=daemon, now=lambda: now,
        )  # fmt: skip
        answers.append([await desk.report(r) for r in ("status", "positions", "pnl", "daily")])
    assert boards[0] == boards[1]
    assert answers[0] == answers[1]
