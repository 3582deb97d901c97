"""Several daemons on one PostgreSQL database: two daemon processes, each with its own venue
account and its own strategy (the sniper on one, the copy trader on the other), both trade
against the simulator through one database; a third daemon claiming a strategy already leased
exits 3 naming it, its holder and the lease's expiry; a clean stop releases the leases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from demo import funded_key, simulator_overrides
from simulator import Simulator
from storage.leases import LeaseRepository
from storage.pg import PgDatabase
from tests.helpers import (
    COPY_LEADER,
    COPY_RULES,
    NEAR_CLOSE_SNIPER_RULES,
    PYTHON,
    ROOT,
    clean_env,
    free_port,
)
from tests.pg import PgServer

D = Decimal
LEADER = COPY_LEADER
MAKER = "0x" + "6a" * 20


def daemon_env(sim: Simulator, tmp_path: Path, name: str, url: str, **extra: Any) -> dict[str, str]:
    """The environment of one daemon process: its own key (venue account), folder and port."""
    folder = tmp_path / name
    folder.mkdir()
    settings: dict[str, Any] = {
        **simulator_overrides(sim, funded_key(sim, D("1000"))),
        "database_url": url,
        "daemon_id": name,
        "lease_ttl_s": 6,
        "db_path": folder / "unused.db",
        "http_port": free_port(),
        "log_format": "json",
        "feed_ping_interval_s": 1.0,
        "shutdown_timeout_s": 3,
        "sniper_enabled": False,
        **extra,
    }
    return clean_env(**{k.upper(): str(v) for k, v in settings.items() if v is not None})


def east_west(
    sim: Simulator, tmp_path: Path, url: str, **extra: Any
) -> tuple[dict[str, str], dict[str, str]]:
    """The environments of "east" (the sniper, tmp_path/sniper.toml) and "west" (the copy
    trader, tmp_path/copy.toml), two daemons on the database at `url`."""
    east = daemon_env(
        sim,
        tmp_path,
        "east",
        url,
        sniper_enabled=True,
        sniper_rules_path=tmp_path / "sniper.toml",
        **extra,
    )
    west = daemon_env(
        sim,
        tmp_path,
        "west",
        url,
        copy_rules_path=tmp_path / "copy.toml",
        copy_poll_interval_s=0.25,
        **extra,
    )
    return east, west


class Daemon:
    """One daemon process; its log (JSON lines on stderr) goes to a file in its folder."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = int(env["HTTP_PORT"])
        self.log = Path(env["DB_PATH"]).with_name("daemon.log")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Daemon:
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                "orchestrator",
                "--env-file",
                "none",
                cwd=ROOT,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        return self

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


async def ready(d: Daemon, limit_s: float = 60) -> None:
    """Wait for the daemon's /health to say 200; fail at once if it exits instead."""
    assert d.proc is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while await asyncio.to_thread(_health, d.port) != 200:
        if d.proc.returncode is not None:
            pytest.fail(f"daemon exited {d.proc.returncode}: {d.lines()[-5:]}")
        assert loop.time() < deadline, "daemon not ready"
        await asyncio.sleep(0.2)


async def stop(d: Daemon, *, wait_s: float = 0) -> int:
    """SIGTERM the daemon (after `wait_s` for it to exit by itself); return its exit code."""
    assert d.proc is not None
    if wait_s:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(d.proc.wait(), wait_s)
    if d.proc.returncode is None:
        d.proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(d.proc.wait(), 30)
    except TimeoutError:
        d.proc.kill()
        await d.proc.wait()
        return -9


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return list(c.execute(sql).fetchall())


async def until(what: str, check: object, limit: int = 300) -> None:
    """Poll `check` (a query of the shared database, say) every 0.1 s; fail naming `what`."""
    assert callable(check)
    for _ in range(limit):
        if check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_two_daemons_trade_their_own_strategies_on_one_database(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    (tmp_path / "sniper.toml").write_text(NEAR_CLOSE_SNIPER_RULES)
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    async with Simulator(seed=23, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        snipe = sim.add_market(
            question="Close soon?", slug="close", tags=("crypto",), end_date=soon
        )
        tok = snipe.token_ids[0]
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        sim.seed_order(MAKER, copied.token_ids[0], "SELL", D("0.51"), D("500"))
        east_env, west_env = east_west(sim, tmp_path, url)
        east, west = await Daemon(east_env).start(), await Daemon(west_env).start()
        try:
            await ready(east)
            await ready(west)
            assert rows(url, "SELECT strategy, daemon_id FROM leases ORDER BY strategy") == [
                ("copy", "west"),
                ("sniper", "east"),
            ]
            # Both trade: the sniper's ask appears, the leader trades.
            sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
            sim.trade_as(
                wallet=LEADER,
                token_id=copied.token_ids[0],
                side="BUY",
                price=D("0.50"),
                size=D("100"),
            )
            sql = "SELECT strategy, daemon_id FROM orders WHERE status = 'FILLED' ORDER BY 1"
            for _ in range(300):
                if {r[0] for r in rows(url, sql)} == {"copy", "sniper"}:
                    break
                await asyncio.sleep(0.1)
            assert set(rows(url, sql)) == {("copy", "west"), ("sniper", "east")}
            # A third daemon asking for a leased strategy is refused with exit 3, one line.
            north_env = daemon_env(
                sim, tmp_path, "north", url, copy_rules_path=tmp_path / "copy.toml"
            )
            north = await Daemon(north_env).start()
            assert await stop(north, wait_s=60) == 3
            (refusal,) = [x for x in north.lines() if x.get("event") == "already_running"]
            assert refusal["error"].startswith("strategy copy is leased to daemon west until ")
            assert await asyncio.to_thread(_health, west.port) == 200  # west trades on
        finally:
            codes = await asyncio.gather(stop(east), stop(west))
        assert list(codes) == [0, 0]
        assert rows(url, "SELECT strategy FROM leases") == []  # released on a clean stop


async def test_a_daemon_whose_strategy_is_leased_elsewhere_exits_3_naming_it(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    # Another daemon, "west", holds the copy trader (its lease written as its daemon would).
    async with PgDatabase(url) as db:
        held = await LeaseRepository(db=db).claim("copy", "west", 600)
    async with Simulator(seed=29, settle_delay_s=0.02) as sim:
        env = daemon_env(sim, tmp_path, "north", url, copy_rules_path=tmp_path / "copy.toml")
        north = await Daemon(env).start()
        assert await stop(north, wait_s=60) == 3
    (refusal,) = [x for x in north.lines() if x.get("event") == "already_running"]
    until = held.expires_at.isoformat(timespec="seconds")
    assert refusal["error"].startswith(
        f"strategy copy is leased to daemon west until {until} (database time);"
        " this daemon (DAEMON_ID=north) must not trade it too"
    )
    assert rows(url, "SELECT strategy, daemon_id FROM leases") == [("copy", "west")]


async def test_a_killed_daemons_strategy_is_taken_over_after_its_lease_expires_copied_once(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """`kill -9` of the daemon holding the copy trader: while its lease lasts, another daemon
    asking for the strategy is refused (exit 3); once it has expired (LEASE_TTL_S, database
    time) the other daemon takes the strategy over. The leader trade the killed daemon copied is
    not copied again by its successor (the copy intents are in the shared database), the next
    one is copied by the successor (the dead daemon's copy position joined its book first), and
    the venue holds exactly one order per leader trade."""
    url = pg_server.fresh_url()
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    async with Simulator(seed=31, settle_delay_s=0.02) as sim:
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        token = copied.token_ids[0]
        sim.seed_order(MAKER, token, "SELL", D("0.51"), D("5000"))
        # A 20 s lease: the refused start below must reach its lease check before the dead
        # daemon's lease runs out. With 6 s (renewed every 2 s, so 4 to 6 s left at the kill)
        # a daemon starting beside a CPU-heavy process got there after it had expired.
        rules = {
            "copy_rules_path": tmp_path / "copy.toml",
            "copy_poll_interval_s": 0.25,
            "lease_ttl_s": 20,
        }
        west = await Daemon(daemon_env(sim, tmp_path, "west", url, **rules)).start()
        north_env = daemon_env(sim, tmp_path, "north", url, **rules)
        north: Daemon | None = None
        filled = "SELECT daemon_id FROM orders WHERE strategy = 'copy' AND status = 'FILLED'"

        async def until_filled(n: int) -> list[str]:
            for _ in range(300):
                got = [r[0] for r in rows(url, filled)]
                if len(got) >= n:
                    return got
                await asyncio.sleep(0.1)
            pytest.fail(f"{n} copies not filled: {rows(url, filled)}")

        try:
            await ready(west)
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("100"))
            assert await until_filled(1) == ["west"]
            # The order is FILLED on the venue's answer to the post; its fill (and the position)
            # is recorded from the trade event that follows. Kill after both: west and north
            # sign for different accounts, so a fill west had not booked is one north cannot
            # look up (it names the order, `orders_left_unsettled`). The same account's case,
            # killed between the two, is the next test.
            await until("west's fill recorded", lambda: rows(url, "SELECT 1 FROM fills"))
            assert west.proc is not None
            west.proc.kill()  # kill -9: the lease is left behind, unreleased
            await west.proc.wait()
            assert rows(url, "SELECT daemon_id FROM leases WHERE strategy = 'copy'") == [("west",)]
            # Still leased: the other daemon is refused, and names the dead holder.
            early = await Daemon(north_env).start()
            assert await stop(early, wait_s=60) == 3
            (refusal,) = [x for x in early.lines() if x.get("event") == "already_running"]
            assert refusal["error"].startswith("strategy copy is leased to daemon west until ")
            expired = "SELECT 1 FROM leases WHERE strategy = 'copy' AND expires_at < now()"
            # Up to 30 s: the lease ends within 20 s of the kill.
            await until("the killed daemon's lease to expire", lambda: rows(url, expired))
            north = await Daemon(north_env).start()  # its log file starts afresh
            await ready(north)
            assert rows(url, "SELECT daemon_id FROM leases WHERE strategy = 'copy'") == [("north",)]
            # West's copy position was another daemon's when north's book loaded; it joined the
            # book once north held the lease, before the copy trader started.
            adopted = [x for x in north.lines() if x.get("event") == "positions_adopted"]
            assert [(x["strategies"], x["positions"]) for x in adopted] == [(["copy"], 1)]
            # West left nothing unsettled: nothing to take over, nothing to name.
            takeover = ("orders_taken_over", "orders_left_unsettled")
            assert [x for x in north.lines() if x.get("event") in takeover] == []
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("80"))
            assert sorted(await until_filled(2)) == ["north", "west"]
            await asyncio.sleep(2.0)  # a late duplicate of the first trade would show by now
        finally:
            if north is not None:
                assert await stop(north) == 0
        assert sorted(r[0] for r in rows(url, filled)) == ["north", "west"]
        # The venue's word: one order per leader trade, across the kill and the takeover.
        ours = [o for o in sim.ledger()["orders"] if o["asset_id"] == token and o["side"] == "BUY"]
        ours = [o for o in ours if o["owner"] != MAKER]
        assert len(ours) == 2, ours


async def test_a_takeover_on_the_same_account_books_the_fill_the_killed_daemon_had_not(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """The window the test above steps around: the venue answers the copy's post FILLED, and the
    daemon is killed before the trade event that carries its fill (the user channel stalled,
    the trades listing failing) is booked. The daemon that takes the copy trader over on the
    same venue account, whose own fills checkpoint is past that trade (it ran before), makes
    that order its own (`orders_taken_over`), moves its checkpoint back to before it and books
    the fill to the copy trader's position, once, before the copy trader starts and before the
    position joins its book (so the fill is the gone daemon's day, not its own); the next
    leader trade is copied on top of it, and the venue holds one order per leader trade."""
    url = pg_server.fresh_url()
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    async with Simulator(seed=37, settle_delay_s=0.02) as sim:
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        token = copied.token_ids[0]
        sim.seed_order(MAKER, token, "SELL", D("0.51"), D("5000"))
        rules = {"copy_rules_path": tmp_path / "copy.toml", "copy_poll_interval_s": 0.25}
        west_env = daemon_env(sim, tmp_path, "west", url, **rules)
        # North signs for the same venue account (west's key): it can look west's orders up.
        north_env = daemon_env(
            sim, tmp_path, "north", url, private_key=west_env["PRIVATE_KEY"], **rules
        )
        west = await Daemon(west_env).start()
        north: Daemon | None = None
        copy_orders = (
            "SELECT client_order_id, daemon_id, status FROM orders WHERE strategy = 'copy'"
        )
        try:
            await ready(west)
            # The fill must not reach west: no trade event, no trades listing.
            sim.faults.add(kind="ws_stall", channel="user", seconds=4)
            sim.faults.add(kind="status", route="GET /data/trades", status=500, count=10_000)
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("100"))
            filled = copy_orders + " AND status = 'FILLED'"
            await until("west's copy FILLED", lambda: rows(url, filled))
            ((first, owner, _),) = rows(url, copy_orders)
            assert owner == "west"
            await asyncio.sleep(0.5)
            assert rows(url, "SELECT trade_id FROM fills") == []  # FILLED, its fill not booked
            assert west.proc is not None
            west.proc.kill()  # kill -9
            await west.proc.wait()
            sim.faults.clear()
            # North ran before: its fills checkpoint is two minutes past west's trade, so its
            # start-up fill sync (from the checkpoint less a minute) does not read that trade.
            ahead = str(int(datetime.now(UTC).timestamp()) + 120)
            with psycopg.connect(url) as c:
                c.execute(
                    "INSERT INTO cursors (source, value, updated_at)"
                    " VALUES ('venue:fills@north', %s, now())",
                    (ahead,),
                )
            expired = "SELECT 1 FROM leases WHERE strategy = 'copy' AND expires_at < now()"
            await until("the killed daemon's lease to expire", lambda: rows(url, expired))
            north = await Daemon(north_env).start()
            await ready(north)
            taken = [x for x in north.lines() if x.get("event") == "orders_taken_over"]
            assert [(x["orders"], x["daemons"]) for x in taken] == [([first], ["west"])]
            assert taken[0]["fills_checkpoint_was"] == int(ahead)
            assert taken[0]["fills_from"] < int(ahead) - 120
            assert rows(url, copy_orders) == [(first, "north", "FILLED")]
            # The fill west never booked was booked before north was ready (its copy trader
            # started), to west's order and the copy trader, and before the position joined
            # north's book: the book took it from the database.
            fills = "SELECT client_order_id, size FROM fills ORDER BY seq"
            assert len(rows(url, fills)) == 1
            adopted = [x for x in north.lines() if x.get("event") == "positions_adopted"]
            assert [(x["strategies"], x["positions"]) for x in adopted] == [(["copy"], 1)]
            matched = "SELECT size_matched FROM orders WHERE strategy = 'copy' ORDER BY created_at"
            ((size,),) = rows(url, matched)
            assert size > 0 and rows(url, fills) == [(first, size)]
            position = "SELECT size FROM positions WHERE strategy = 'copy'"
            assert rows(url, position) == [(size,)]
            sim.trade_as(wallet=LEADER, token_id=token, side="BUY", price=D("0.50"), size=D("80"))
            await until("the second copy booked", lambda: len(rows(url, fills)) == 2)
            await asyncio.sleep(2.0)  # a late duplicate would show by now
            sizes = [r[0] for r in rows(url, matched)]
            assert len(sizes) == 2 and sizes[1] > 0
            assert rows(url, position) == [(sizes[0] + sizes[1],)]
            assert [r[1] for r in rows(url, fills)] == sizes  # each fill booked once
        finally:
            if north is not None:
                assert await stop(north) == 0
            if west.proc is not None and west.proc.returncode is None:
                west.proc.kill()
        assert [r[1:] for r in rows(url, copy_orders)] == [("north", "FILLED")] * 2
        ours = [o for o in sim.ledger()["orders"] if o["asset_id"] == token and o["side"] == "BUY"]
        ours = [o for o in ours if o["owner"] != MAKER]
        assert len(ours) == 2, ours
        # The audit trail says whose the order was and who took it over.
        audit = rows(url, "SELECT detail FROM audit_log WHERE event = 'orders_taken_over'")
        assert [json.loads(d) if isinstance(d, str) else d for (d,) in audit] == [
            {"from_daemon": "west", "orders": [first], "to_daemon": "north"}
        ]
