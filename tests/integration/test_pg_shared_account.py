"""Two daemon processes on one PostgreSQL database and one venue account (the same key, the
same API key, `ACCOUNT_SHARED=true`): the sniper on one, the copy trader on the other. Each
sees the other's orders in the account's open orders, order events and fills; none of them is
an alarm, each fill is recorded once, by the daemon whose order it fills, and the journal (both
daemons' rows) agrees with the venue's ledger both ways. A per-account exposure cap that each
daemon's own book would let pass is enforced over both through the database, cancel-all
cancels only the asking daemon's orders, a halt of either halts both and a resume on either
clears it, and a third daemon on the account without `ACCOUNT_SHARED` exits 2."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account

from demo import funded_key
from models import OrderStatus
from simulator import Simulator
from storage.accounts import AccountRepository
from storage.journal import OrderJournal
from storage.pg import PgDatabase
from tests.harness import compare
from tests.helpers import COPY_LEADER, COPY_RULES, NEAR_CLOSE_SNIPER_RULES
from tests.integration.test_executor_live import close_live, make_live
from tests.integration.test_pg_several_daemons import (
    Daemon,
    daemon_env,
    east_west,
    ready,
    rows,
    stop,
    until,
)
from tests.pg import PgServer

D = Decimal
MAKER = "0x" + "6b" * 20
CAP = D("30")  # RISK_MAX_TOTAL_EXPOSURE of both daemons: per account
TOKEN = "shared-account-control-token"


def control(d: Daemon, action: str, body: bytes = b"{}") -> dict[str, Any]:
    """POST /<action> to the daemon's sidecar (what `python -m orchestrator <action>` does)."""
    req = urllib.request.Request(f"http://127.0.0.1:{d.port}/{action}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def cancel_all(d: Daemon) -> dict[str, Any]:
    return control(d, "cancel-all")


def trading(d: Daemon) -> tuple[str, str]:
    """The trading state and its reason in the daemon's /health (503 while halted)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/health", timeout=5) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
    detail = body["checks"]["executor"]["detail"]
    return str(detail["trading_state"]), str(detail["reason"])


def venue_status(ledger: dict[str, Any], venue_order_id: str) -> str:
    (order,) = [o for o in ledger["orders"] if o["id"] == venue_order_id]
    return str(order["status"])


async def test_two_daemons_on_one_account_settle_and_fill_only_their_own_and_share_its_caps(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.fresh_url()
    # A take-profit leaves a resting SELL of the sniper's daemon at the venue: the other
    # daemon sees it in the account's open orders and order events.
    sniper_rules = NEAR_CLOSE_SNIPER_RULES.replace(
        'max_notional = "19"', 'max_notional = "19"\ntake_profit = "0.05"'
    )
    (tmp_path / "sniper.toml").write_text(sniper_rules)
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    async with Simulator(seed=37, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        snipe = sim.add_market(
            question="Close soon?", slug="close", tags=("crypto",), end_date=soon
        )
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        ctok = copied.token_ids[0]
        sim.seed_order(MAKER, ctok, "SELL", D("0.51"), D("5000"))
        key = funded_key(sim, D("1000"))
        address = Account.from_key(key).address
        shared = {
            "private_key": key,
            "account_shared": "true",
            "risk_max_total_exposure": CAP,
            "reconcile_interval_s": 1,
            "control_token": TOKEN,
        }
        east_env, west_env = east_west(sim, tmp_path, url, **shared)
        east, west = await Daemon(east_env).start(), await Daemon(west_env).start()
        try:
            await ready(east)
            await ready(west)
            assert rows(url, "SELECT strategy, account FROM strategy_accounts ORDER BY 1") == [
                ("copy", address.lower()),
                ("sniper", address.lower()),
            ]
            # Both trade on the one account: the sniper's ask appears, the leader buys.
            sim.seed_order(MAKER, snipe.token_ids[0], "SELL", D("0.93"), D("100"))
            sim.trade_as(
                wallet=COPY_LEADER, token_id=ctok, side="BUY", price=D("0.50"), size=D("100")
            )
            filled = (
                "SELECT strategy, daemon_id FROM orders WHERE status = 'FILLED' AND side = 'BUY'"
            )
            await until("both daemons' BUYs filled", lambda: len(rows(url, filled)) == 2)
            assert set(rows(url, filled)) == {("copy", "west"), ("sniper", "east")}
            resting = (
                "SELECT 1 FROM orders WHERE daemon_id = 'east' AND side = 'SELL'"
                " AND status = 'LIVE'"
            )
            await until("the sniper's take-profit resting", lambda: rows(url, resting))

            # West's reconciles see east's resting order in the account's open orders: counted
            # as another daemon's, not raised as an order missing from the journal.
            def other_seen() -> bool:
                return any(
                    x.get("event") == "reconciled" and x.get("other_daemons", 0) >= 1
                    for x in west.lines()
                )

            await until("west reconciling east's open order", other_seen)

            # The cap: east's holding (about 19) and west's (5.1) leave 30 - 24 of room on the
            # account; west's own book (which has never seen east's fill) would let a 10.2 copy
            # pass, the account's commitments in the database do not.
            sim.trade_as(
                wallet=COPY_LEADER, token_id=ctok, side="BUY", price=D("0.50"), size=D("200")
            )
            refused = (
                "SELECT detail FROM orders WHERE daemon_id = 'west' AND status = 'REJECTED'"
                " AND detail LIKE '%every daemon counted%'"
            )
            await until("west's second copy refused by the account cap", lambda: rows(url, refused))
            # Cancel-all on a shared account cancels the asking daemon's orders only: west has
            # none resting, east's take-profit stays (at the venue and in the journal) until
            # east cancels it.
            assert (await asyncio.to_thread(cancel_all, west))["canceled"] == 0
            sell = "SELECT venue_order_id FROM orders WHERE daemon_id = 'east' AND side = 'SELL'"
            ((tp,),) = rows(url, sell)
            assert rows(url, resting) and venue_status(sim.ledger(), tp) == "LIVE"
            assert (await asyncio.to_thread(cancel_all, east))["canceled"] == 1
            assert venue_status(sim.ledger(), tp) == "CANCELED"
            await until("east's take-profit journaled CANCELED", lambda: not rows(url, resting))
            unsettled = "SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN')"
            await until("every row settled", lambda: not rows(url, unsettled))
            await until(
                "the journal agreeing with the venue",
                lambda: (
                    compare(
                        sim.ledger(), tmp_path / "none.db", address=address, database_url=url
                    ).ok
                ),
            )
            # A halt of west is the account's: east shows it (at its next sync), and a resume
            # on east clears it for both.
            halted = ("HALTED", "account halted by daemon west: checking both")
            await asyncio.to_thread(control, west, "halt", b'{"reason": "checking both"}')
            await until("east showing west's halt", lambda: trading(east) == halted)
            # A third daemon on the account without ACCOUNT_SHARED is refused: exit 2, one line.
            north_env = daemon_env(sim, tmp_path, "north", url, private_key=key)
            north = await Daemon(north_env).start()
            assert await stop(north, wait_s=60) == 2
            problems = [x["problem"] for x in north.lines() if x.get("event") == "config_error"]
            assert problems == [
                f"ACCOUNT_SHARED: daemons east, west trade venue account {address.lower()} with"
                " ACCOUNT_SHARED=true; this daemon (DAEMON_ID=north) has ACCOUNT_SHARED=false:"
                " set the same ACCOUNT_SHARED on every daemon trading one account"
            ]
            await asyncio.to_thread(control, east, "resume", b'{"reason": "checked"}')
            resumed = ("ACTIVE", "account resumed by another daemon")
            await until("west resumed by east's resume", lambda: trading(west) == resumed)
            assert trading(east) == ("ACTIVE", "checked")
        finally:
            codes = await asyncio.gather(stop(east), stop(west))
        assert list(codes) == [0, 0]
        ledger = sim.ledger()

    # No alarm either way, in the logs or the audit log.
    for d in (east, west):
        assert not [x for x in d.lines() if x.get("event") == "venue_order_not_in_journal"]
    assert rows(url, "SELECT 1 FROM audit_log WHERE event = 'venue_order_not_in_journal'") == []
    # Each fill recorded once, by the daemon whose order it fills, to that order's strategy.
    owner = {r[0]: r[1] for r in rows(url, "SELECT client_order_id, daemon_id FROM orders")}
    for d in (east, west):
        recorded = [x["client_order_id"] for x in d.lines() if x.get("event") == "fill_recorded"]
        assert recorded, f"{d.env['DAEMON_ID']} recorded no fill"
        assert {owner[c] for c in recorded} == {d.env["DAEMON_ID"]}
    misattributed = rows(
        url,
        "SELECT f.trade_id FROM fills f JOIN orders o ON o.venue_order_id = f.venue_order_id"
        " WHERE f.strategy <> o.strategy",
    )
    assert misattributed == []
    assert rows(url, "SELECT 1 FROM fills WHERE strategy = 'unattributed'") == []
    # Journal and venue agree both ways: no order lost, duplicated or orphaned, fills and
    # positions (the account's, both daemons' strategies summed) equal.
    c = compare(ledger, tmp_path / "none.db", address=address, database_url=url)
    assert c.ok, str(c)
    # The account never held more than the cap: what it committed, counted over both daemons.
    async with PgDatabase(url) as db:
        now = await AccountRepository(db=db).commitments(address)
    assert D("20") < now.exposure <= CAP
    ours = address.lower()
    copies = [o for o in ledger["orders"] if o["asset_id"] == ctok and o["maker"].lower() == ours]
    assert len(copies) == 1, copies  # the refused copy never reached the venue


async def test_the_executor_refuses_single_and_batched_orders_past_the_accounts_cap(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """One executor (live, against the simulator) with ACCOUNT_SHARED on a database where
    another daemon has two orders open on the same account: with RISK_MAX_OPEN_ORDERS=3 its own
    book (no open order) admits anything, the account admits one more; a refused order, single
    or in a batch, is never sent, and room given back by the other daemon is taken again."""
    url = pg_server.fresh_url()
    async with Simulator(seed=43, settle_delay_s=0.01) as sim:
        lv = await make_live(
            tmp_path, sim, database_url=url, account_shared=True, risk_max_open_orders=3
        )
        try:
            other = OrderJournal(db=lv.db, daemon_id="other")
            other.for_account(lv.address)
            theirs = [lv.req(strategy="other", price=D("0.20")) for _ in range(2)]
            for i, r in enumerate(theirs):
                await other.record(r, venue_order_id=f"0x{i:064x}", payload_hash="h")
            first = await lv.ex.submit(lv.req(price=D("0.30")))
            assert first.status is OrderStatus.LIVE
            over = await lv.ex.submit(lv.req(price=D("0.30")))
            assert over.status is OrderStatus.REJECTED
            assert over.reason == (
                "risk: open orders on the account, every daemon counted, at the limit (3)"
            )
            batch = await lv.ex.submit_many([lv.req(price=D("0.31")) for _ in range(2)])
            assert [r.status for r in batch] == [OrderStatus.REJECTED] * 2
            assert all("every daemon counted" in (r.reason or "") for r in batch)
            assert len(lv.our_orders()) == 1  # nothing refused reached the venue
            assert lv.ex.positions.open_count == 1  # refused orders are not tracked as open
            # The other daemon's order ends: its room is the account's again.
            await other.transition(theirs[0].client_order_id, OrderStatus.CANCELED)
            again = await lv.ex.submit(lv.req(price=D("0.30")))
            assert again.status is OrderStatus.LIVE
            rejected = await lv.db.fetchall(
                "SELECT COUNT(*) FROM orders WHERE daemon_id = 'default' AND status = 'REJECTED'"
            )
            assert rejected[0][0] == 3
        finally:
            await close_live(lv)
