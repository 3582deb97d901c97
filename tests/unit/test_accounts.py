"""Per-account caps over several daemons on one PostgreSQL database (`storage/accounts.py`):
each daemon's PENDING row is written under the account's advisory lock and refused if the
account's commitments, every daemon counted, would pass a cap, if the account is halted, or if
its daemons' PnL of the day, summed, is at the daily loss limit. Two daemons racing for the last
room on the account never both get it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from decimal import Decimal

import pytest

from errors import AccountHalted, AccountLimitReached
from execution.risk import RiskEngine, RiskLimits
from models import OrderRequest, OrderStatus, Position, Side, utc_day
from storage.accounts import AccountRepository
from storage.audit import AuditLog
from storage.db import Database
from storage.fills import upsert_position
from storage.journal import OrderJournal
from storage.pg import PgDatabase
from tests.helpers import make_order
from tests.pg import PgServer

D = Decimal
ACCOUNT = "0x" + "Ab" * 20
OTHER = "0x" + "cd" * 20


def engine(**limits: object) -> RiskEngine:
    base: dict[str, object] = {
        "max_order_notional": D("50"),
        "max_position_notional": D("200"),
        "max_total_exposure": D("1000"),
        "max_open_orders": 50,
    }
    return RiskEngine(limits=RiskLimits(**{**base, **limits}))  # type: ignore[arg-type]


def journal(db: Database, daemon: str, risk: RiskEngine, account: str = ACCOUNT) -> OrderJournal:
    j = OrderJournal(db=db, daemon_id=daemon)
    j.for_account(account)
    j.share_account(risk.account_refusal)
    return j


async def journaled(j: OrderJournal, req: OrderRequest, *, audited: bool = False) -> bool:
    try:
        await j.record(req, audit=("order_journaled", {}) if audited else None)
    except AccountLimitReached:
        return False
    return True


async def test_two_daemons_racing_for_the_accounts_last_open_orders_never_pass_its_cap(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    risk = engine(max_open_orders=7)
    async with PgDatabase(url) as a_db, PgDatabase(url) as b_db:
        a, b = journal(a_db, "a", risk), journal(b_db, "b", risk)
        # A third daemon on another account: its orders count towards its own account only.
        other = journal(a_db, "c", risk, account=OTHER)
        assert await journaled(other, make_order(strategy="c"))
        # 2 x 30 orders at once, each daemon's writes batched by its own group-commit writer.
        reqs = [(a, make_order(strategy="a")) for _ in range(30)]
        reqs += [(b, make_order(strategy="b")) for _ in range(30)]
        got = await asyncio.gather(*(journaled(j, r) for j, r in reqs))
        assert sum(got) == 7
        rows = await a_db.fetchall(
            "SELECT daemon_id, account, status FROM orders WHERE daemon_id <> 'c'"
        )
        assert len(rows) == 7  # refused rows were rolled back whole
        assert {r[1] for r in rows} == {ACCOUNT.lower()}
        assert {r[2] for r in rows} == {"PENDING"}
        assert {r[0] for r in rows} <= {"a", "b"}
        seen = await AccountRepository(db=b_db).commitments(ACCOUNT)
        assert seen.open_orders == 7
        # A terminal order frees its room for either daemon.
        first = (await a.non_terminal()) or (await b.non_terminal())
        owner = a if first[0].daemon_id == "a" else b
        await owner.transition(first[0].client_order_id, OrderStatus.CANCELED)
        assert await journaled(b, make_order(strategy="b"))
        assert not await journaled(a, make_order(strategy="a"))


async def test_the_accounts_exposure_counts_every_daemons_open_buys_and_registered_positions(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    risk = engine(max_total_exposure=D("30"), max_position_notional=D("25"))
    async with PgDatabase(url) as db:
        accounts = AccountRepository(db=db)
        await accounts.register(ACCOUNT, ["held", "a"])
        await accounts.register(OTHER, ["held"])  # first registration wins
        # Daemon "b"'s strategy holds 10 x 0.60 = 6 of token 22 on the account (its fills
        # recorded); another account's strategy holds more, which does not count.
        await db.write(
            lambda c: upsert_position(
                c, Position(token_id="22", strategy="held", size=D("10"), avg_cost=D("0.60"))
            )
        )
        await db.write(
            lambda c: upsert_position(
                c, Position(token_id="22", strategy="else", size=D("900"), avg_cost=D("0.50"))
            )
        )
        a, b = journal(db, "a", risk), journal(db, "b", risk)
        # b rests a BUY of 20 x 0.50 = 10 on 11; a SELL commits nothing.
        assert await journaled(
            b, make_order(strategy="b", token_id="11", price=D("0.5"), size=D("20"))
        )
        assert await journaled(b, _sell("b", "11"))
        now = await accounts.commitments(ACCOUNT, "11")
        assert (now.open_orders, now.open_buy_notional, now.positions_cost) == (2, D("10"), D("6"))
        # a: 6 held + 10 resting + 14 = 30: at the cap, allowed; one cent more is not.
        assert await journaled(
            a, make_order(strategy="a", token_id="33", price=D("0.5"), size=D("28"))
        )
        why = ""
        try:
            await a.record(make_order(strategy="a", token_id="33", price=D("0.01"), size=D("1")))
        except AccountLimitReached as e:
            why = str(e)
        assert why.startswith(
            "total exposure of the account, every daemon counted, would reach 30.01"
        )
        # Per token: 22 holds 6; a BUY of 20 more on 22 passes 25.
        await b.transition((await b.non_terminal())[0].client_order_id, OrderStatus.CANCELED)
        try:
            await a.record(make_order(strategy="a", token_id="22", price=D("0.5"), size=D("40")))
        except AccountLimitReached as e:
            why = str(e)
        assert why.startswith(
            "position in token on the account, every daemon counted, would reach 26"
        )


async def test_orders_name_their_account_and_are_not_capped_unless_the_account_is_shared(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    async with PgDatabase(url) as db:
        j = OrderJournal(db=db, daemon_id="a")
        j.for_account(ACCOUNT)  # named, not shared: the daemon's own book is the only check
        for _ in range(3):
            await j.record(make_order(strategy="a"))
        assert (await AccountRepository(db=db).commitments(ACCOUNT)).open_orders == 3
        (row, *_) = await j.non_terminal()
        assert (row.account, row.daemon_id) == (ACCOUNT.lower(), "a")
        j.share_account(engine(max_open_orders=3).account_refusal)
        assert not await journaled(j, make_order(strategy="a"))


def _sell(strategy: str, token: str) -> OrderRequest:
    return make_order(
        strategy=strategy, token_id=token, side=Side.SELL, price=D("0.9"), size=D("5")
    )


async def test_a_refused_order_takes_the_strategy_state_written_with_it_back(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    async with PgDatabase(url) as db:
        j = journal(db, "a", engine(max_open_orders=1))

        def consumed(key: str) -> Callable[[sqlite3.Connection], None]:
            def write(c: sqlite3.Connection) -> None:  # what a sniper entry would write
                c.execute(
                    "INSERT INTO daemon_state (key, value, updated_at) VALUES (?, 'x', 'now')",
                    (key,),
                )

            return write

        await j.record(make_order(strategy="a"), also=consumed("first"))
        with pytest.raises(AccountLimitReached):
            await j.record(make_order(strategy="a"), also=consumed("second"))
        keys = [r[0] for r in await db.fetchall("SELECT key FROM daemon_state ORDER BY key")]
        assert "first" in keys and "second" not in keys
        assert len(await j.non_terminal()) == 1


async def test_a_halt_committed_by_one_daemon_refuses_every_later_order_on_the_account(
    pg_server: PgServer,
) -> None:
    url = pg_server.fresh_url()
    risk = engine()
    async with PgDatabase(url) as a_db, PgDatabase(url) as b_db:
        a, b = journal(a_db, "a", risk), journal(b_db, "b", risk)
        other = journal(b_db, "c", risk, account=OTHER)
        assert await journaled(b, make_order(strategy="b"))
        await AccountRepository(db=a_db).halt(ACCOUNT.lower(), "a", "operator")
        req = make_order(strategy="b")
        with pytest.raises(AccountHalted) as refused:
            await b.record(req)
        assert str(refused.value) == "trading is halted: account halted by daemon a: operator"
        assert await b.get(req.client_order_id) is None  # rolled back: never journaled
        assert not await journaled(a, make_order(strategy="a"))  # the halting daemon's too
        assert await journaled(other, make_order(strategy="c"))  # another account is not halted
        # A second halt keeps the first one's reason; a resume by any daemon clears it.
        await AccountRepository(db=b_db).halt(ACCOUNT.lower(), "b", "kill-switch file present")
        seen = await AccountRepository(db=b_db).commitments(ACCOUNT)
        assert (seen.halted_by, seen.halt_reason) == ("a", "operator")
        await AccountRepository(db=b_db).resume(ACCOUNT.lower(), "b")
        assert await journaled(b, make_order(strategy="b"))
        events = [
            (e.event, e.detail)
            for e in reversed(await AuditLog(db=a_db).tail())
            if e.event.startswith("account_")
        ]
        assert events == [
            ("account_halted", {"account": ACCOUNT.lower(), "daemon": "a", "reason": "operator"}),
            (
                "account_halted",
                {"account": ACCOUNT.lower(), "daemon": "b", "reason": "kill-switch file present"},
            ),
            ("account_resumed", {"account": ACCOUNT.lower(), "daemon": "b"}),
        ]


@pytest.mark.parametrize(
    ("b_pnl", "admitted"), [("-59.99", True), ("-60", False), ("-60.01", False)]
)
async def test_the_daily_loss_limit_applies_to_the_accounts_daemons_summed(
    pg_server: PgServer, b_pnl: str, admitted: bool
) -> None:
    """Daemon a lost 40 today, b as parametrized: the account's limit of 100 is reached at a sum
    of -100, whatever either daemon lost alone. Yesterday's and another account's rows do not
    count."""
    url = pg_server.fresh_url()
    async with PgDatabase(url) as db:
        accounts = AccountRepository(db=db)
        acct = ACCOUNT.lower()
        await accounts.record_pnl(acct, utc_day(), "a", D("-40"), D("0"))
        await accounts.record_pnl(acct, utc_day(), "b", D(b_pnl), D("12.5"))
        await accounts.record_pnl(acct, "2000-01-01", "b", D("-500"), D("0"))
        await accounts.record_pnl(OTHER, utc_day(), "c", D("-500"), D("0"))
        a = journal(db, "a", engine(daily_loss_limit=D("100")))
        why = ""
        try:
            await a.record(make_order(strategy="a"))
        except AccountLimitReached as e:
            why = str(e)
        total = D("-40") + D(b_pnl)
        assert why == (
            ""
            if admitted
            else f"daily loss limit of the account reached, every daemon counted ({total} <= -100)"
        )
        seen = await accounts.view(acct, utc_day(), "a")
        assert (seen.others_pnl, seen.own_baseline) == (D(b_pnl), D("0"))


async def test_no_order_racing_a_halt_is_journaled_after_it(pg_server: PgServer) -> None:
    """b journals orders from 4 tasks at once, each until one is refused, while a halts the
    account (once b has journaled a few). The halt takes the account's lock, so it is ordered
    with the PENDING checks: every order journaled was checked before the halt was written (its
    audit entry, written after its check, comes first), and every order after it was refused and
    rolled back. (Without the lock in the halt's transaction this fails in some runs.)"""
    url = pg_server.fresh_url()
    risk = engine(max_open_orders=1000)
    async with PgDatabase(url) as a_db, PgDatabase(url) as b_db:
        b = journal(b_db, "b", risk)
        results: list[bool] = []
        some = asyncio.Event()

        async def orders() -> None:  # until the halt refuses one (at most 100 each)
            for _ in range(100):
                results.append(await journaled(b, make_order(strategy="b"), audited=True))
                if len(results) >= 3:
                    some.set()
                if not results[-1]:
                    return

        async def halt() -> None:
            await some.wait()
            await AccountRepository(db=a_db).halt(ACCOUNT.lower(), "a", "operator")

        await asyncio.gather(*(orders() for _ in range(4)), halt())
        admitted = results.count(True)
        assert admitted >= 3 and results.count(False) == 4  # the halt came between b's orders
        ids = await a_db.fetchall(
            "SELECT id, event FROM audit_log WHERE event IN ('order_journaled', 'account_halted')"
            " ORDER BY id"
        )
        events = [str(r[1]) for r in ids]
        assert events == ["order_journaled"] * admitted + ["account_halted"]
        assert len(await b.non_terminal()) == admitted
