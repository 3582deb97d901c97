"""Strategy instances (`SNIPER_NAME`, `COPY_NAME`) on both engines: each copy trader keeps its
own ledger and each sniper its own state, however their wallets, leader trades and rule names
meet; a database written before instances had names keeps its rows under the default names;
the settings refuse a bad or repeated name, naming the key."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from errors import ConfigError
from storage import Database, Repositories, load_migrations
from storage.copy_intents import CopyIntent
from strategies.copy_trader.state import client_order_id_for
from tests.helpers import database_before, make_order, make_settings
from wiring.reload import refusals

WALLET = "0x" + "ab" * 20
YES = "111"
AUDIT = ("copy_intent", {"why": "test"})


def intent(strategy: str, key: str) -> CopyIntent:
    req = make_order(strategy=strategy, client_order_id=client_order_id_for(key, strategy))
    return CopyIntent(request=req, wallet=WALLET, dedupe_key=key, leader_ts=1_700_000_000)


async def test_two_copy_traders_following_one_leader_each_copy_its_trade_once(
    repos: Repositories,
) -> None:
    a = repos.copy_intents  # the default instance, "copy"
    b = repos.copy_intents.scoped("copy-b")
    ia, ib = intent("copy", "k1"), intent("copy-b", "k1")
    assert ia.request.client_order_id != ib.request.client_order_id
    assert await a.handle(WALLET, "k1", 100, audit=AUDIT, intent=ia)
    assert await b.handle(WALLET, "k1", 100, audit=AUDIT, intent=ib)  # not "seen" by a's copy
    assert not await b.handle(WALLET, "k1", 100, audit=AUDIT, intent=ib)  # but by its own
    assert [i.request.strategy for i in await a.pending()] == ["copy"]
    assert [i.request.strategy for i in await b.pending()] == ["copy-b"]
    assert await b.handle(WALLET, "k2", 300, audit=AUDIT)
    assert (await a.cursor(WALLET), await b.cursor(WALLET)) == (100, 300)
    assert await a.seen_among(WALLET, ["k1", "k2"]) == {"k1"}
    # Each closes only its own intents; each audit entry names its instance.
    await b.close(ia.request.client_order_id, "copy_unfilled", {})
    await a.close(ia.request.client_order_id, "copy_unfilled", {})
    assert await a.pending() == [] and len(await b.pending()) == 1
    audited = await repos.db.fetchall("SELECT DISTINCT strategy FROM audit_log ORDER BY 1")
    assert [r[0] for r in audited] == ["copy", "copy-b"]


def test_the_default_copy_trader_keeps_its_sources_and_client_order_ids(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "unopened.db")
    default = Repositories.over(db).copy_intents
    assert default.source(WALLET) == f"copy:{WALLET}"
    assert default.scoped("copy-b").source(WALLET) == f"copy:copy-b:{WALLET}"
    assert client_order_id_for("k1") == client_order_id_for("k1", "copy")
    assert client_order_id_for("k1", "copy-b") != client_order_id_for("k1")


async def test_two_snipers_with_a_rule_of_the_same_name_keep_their_own_state(
    repos: Repositories,
) -> None:
    a = repos.sniper_state  # the default instance, "sniper"
    b = repos.sniper_state.scoped("sniper-b")
    await repos.db.write(a.fired("r1", YES, "a-1", 1.0))
    await repos.db.write(b.fired("r1", YES, "b-1", 2.0))
    await repos.db.write(b.fired("r1", YES, "b-2", 3.0))
    got_a, got_b = await a.load([("r1", YES)]), await b.load([("r1", YES)])
    assert (got_a[("r1", YES)].entries, got_b[("r1", YES)].entries) == (1, 2)
    assert await a.rule_names() == {"r1": 1} and await b.rule_names() == {"r1": 2}
    # A refusal gives back only its own sniper's entry; a re-arm touches only its own slot.
    assert not await a.give_back("r1", YES, "b-2", "refused")
    assert await b.give_back("r1", YES, "b-2", "refused")
    await a.rearm([("r1", YES)])
    assert (await a.load([("r1", YES)]))[("r1", YES)].armed
    assert not (await b.load([("r1", YES)]))[("r1", YES)].armed
    # Take-profits and pruning are each sniper's own.
    sell = make_order(strategy="sniper-b", side="SELL")
    await b.store_take_profit("r1", YES, "b-1", sell)
    assert await a.take_profits({"r1"}) == []
    assert [tp.request.client_order_id for tp in await b.take_profits({"r1"})] == [
        sell.client_order_id
    ]
    await a.drop_take_profit(sell.client_order_id, "not a's")
    assert len(await b.take_profits({"r1"})) == 1
    later = time.time() + 31 * 86_400
    assert await a.prune_absent([], now=later) == 1
    assert await b.rule_names() == {"r1": 1} and await a.rule_names() == {}


async def test_rows_written_before_instances_belong_to_the_default_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = database_before(path, "_strategy_instances")
    old = [intent("copy", f"k{i}") for i in range(3)]
    conn.executemany(
        "INSERT INTO copy_intents (client_order_id, wallet, dedupe_key, leader_ts, request,"
        " created_at) VALUES (?,?,?,?,?,'then')",
        [
            (i.request.client_order_id, WALLET, i.dedupe_key, 1, i.request.model_dump_json())
            for i in reversed(old)  # stored newest first: the order must survive the rebuild
        ],
    )
    conn.execute(
        "INSERT INTO sniper_slots (rule, token_id, entries, armed, last_fire_at, last_order_id,"
        " updated_at) VALUES ('r1', ?, 2, 0, 1.0, 'o-2', 'then')",
        (YES,),
    )
    sell = make_order(side="SELL")
    conn.execute(
        "INSERT INTO sniper_take_profits (client_order_id, rule, token_id, entry_order_id,"
        " request, created_at) VALUES (?, 'r1', ?, 'o-1', ?, 'then')",
        (sell.client_order_id, YES, sell.model_dump_json()),
    )
    conn.commit()
    conn.close()
    async with Database(path) as db:
        assert await db.schema_version() == len(load_migrations())
        repos = Repositories.over(db)
        pending = await repos.copy_intents.pending()
        assert [p.dedupe_key for p in pending] == ["k2", "k1", "k0"]
        assert await repos.copy_intents.scoped("copy-b").pending() == []
        assert (await repos.sniper_state.load([("r1", YES)]))[("r1", YES)].entries == 2
        assert [tp.rule for tp in await repos.sniper_state.take_profits({"r1"})] == ["r1"]
        other = repos.sniper_state.scoped("sniper-b")
        assert await other.rule_names() == {} and await other.take_profits({"r1"}) == []
        # The dedupe key is unique per instance, no longer across the table.
        again = intent("copy", "k0")
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute(
                "INSERT INTO copy_intents (client_order_id, strategy, wallet, dedupe_key,"
                " leader_ts, request, created_at) VALUES ('x', 'copy', ?, 'k0', 1, ?, 'now')",
                (WALLET, again.request.model_dump_json()),
            )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sniper_name": "Sniper"}, "SNIPER_NAME: must be 1 to 40 lower-case letters"),
        ({"sniper_name": "1st"}, "SNIPER_NAME: must be 1 to 40 lower-case letters"),
        ({"copy_name": "copy:b"}, "COPY_NAME: must be 1 to 40 lower-case letters"),
        ({"copy_name": "c" * 41}, "COPY_NAME: must be 1 to 40 lower-case letters"),
        ({"copy_name": ""}, "COPY_NAME: must be 1 to 40 lower-case letters"),
        ({"copy_name": "unattributed"}, "COPY_NAME: 'unattributed' names the holdings"),
        ({"copy_name": "sniper"}, "COPY_NAME: must differ from SNIPER_NAME ('sniper')"),
        ({"sniper_name": "alpha", "copy_name": "alpha"}, "COPY_NAME: must differ"),
        (
            {"copy_name": "whales", "risk_strategy_budgets": {"copy": "50"}},
            "RISK_STRATEGY_BUDGETS: 'copy' names no strategy of this daemon (SNIPER_NAME="
            "'sniper', COPY_NAME='whales'): its budget would cap nothing",
        ),
    ],
)
def test_a_bad_or_repeated_strategy_name_is_refused_naming_the_key(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_strategy_names_default_to_the_fixed_names_and_accept_a_slug(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert (s.sniper_name, s.copy_name) == ("sniper", "copy")
    s = make_settings(
        tmp_path,
        sniper_name=" snipe-2 ",
        copy_name="copy_acct_b",
        risk_strategy_budgets={"copy_acct_b": "50"},
    )
    assert (s.sniper_name, s.copy_name) == ("snipe-2", "copy_acct_b")
    assert s.risk_strategy_budgets == {"copy_acct_b": Decimal("50")}


def test_a_reload_refuses_a_new_name_or_rules_file_naming_the_leases() -> None:
    lines = refusals(["copy_name", "sniper_rules_path", "log_level"])
    assert lines == [
        "COPY_NAME: cannot change while running (the copy trader's orders, positions, ledger and"
        " lease are under its name); restart to apply",
        "SNIPER_RULES_PATH: cannot change while running (the rules are read at start-up, and"
        " each rule's lease taken then); restart to apply",
    ]
