"""CopyIntentRepository: one transaction per handled leader trade, and migration 2's carry-over."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from storage import Database, Repositories, load_migrations
from storage.copy_intents import CopyIntent
from tests.helpers import make_order

WALLET = "0x" + "ab" * 20
TOKEN = "1" * 77


def intent(coid: str = "cp" + "0" * 30, key: str = "0xtx:tok:BUY:10") -> CopyIntent:
    req = make_order(
        strategy="copy", token_id=TOKEN, price="0.52", order_type="FAK", client_order_id=coid
    )
    return CopyIntent(request=req, wallet=WALLET, dedupe_key=key, leader_ts=1_700_000_000)


async def test_handle_marks_seen_moves_cursor_stores_intent_and_audits_once(
    repos: Repositories,
) -> None:
    store = repos.copy_intents
    it = intent()
    audit = ("copy_intent", {"wallet": WALLET})
    assert await store.handle(WALLET, it.dedupe_key, 100, audit=audit, intent=it)
    assert not await store.handle(WALLET, it.dedupe_key, 100, audit=audit, intent=it)
    assert await store.cursor(WALLET) == 100
    assert await store.seen_among(WALLET, [it.dedupe_key, "other"]) == {it.dedupe_key}
    assert await store.pending() == [it]
    entries = await repos.audit.tail(event="copy_intent")
    assert len(entries) == 1 and entries[0].client_order_id == it.request.client_order_id
    assert entries[0].strategy == "copy"


async def test_cursor_never_moves_backwards_and_skips_store_no_intent(
    repos: Repositories,
) -> None:
    store = repos.copy_intents
    assert await store.handle(WALLET, "k1", 200, audit=("copy_skipped", {"reason": "too_old"}))
    assert await store.handle(WALLET, "k2", 150, audit=("copy_skipped", {"reason": "too_old"}))
    assert await store.cursor(WALLET) == 200
    assert await store.pending() == []


async def test_close_deletes_the_intent_and_audits_in_one_write(repos: Repositories) -> None:
    store = repos.copy_intents
    it = intent()
    await store.handle(WALLET, it.dedupe_key, 1, audit=("copy_intent", {}), intent=it)
    await store.close(it.request.client_order_id, "copy_sent", {"filled": "10"})
    assert await store.pending() == []
    (entry,) = await repos.audit.tail(event="copy_sent")
    assert entry.detail == {"filled": "10"}


async def test_migration_2_carries_over_intents_left_in_daemon_state(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first = load_migrations()[0]
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL);\n"
        + first.sql
        + f"\nINSERT INTO schema_migrations VALUES (1, '{first.name}', 'then');"
    )
    it = intent()
    legacy = {
        "request": it.request.model_dump(mode="json"),
        "wallet": it.wallet,
        "dedupe_key": it.dedupe_key,
        "leader_ts": it.leader_ts,
    }
    old.execute(
        "INSERT INTO daemon_state VALUES (?,?,?)",
        ("copy:intent:" + it.request.client_order_id, json.dumps(legacy), "2026-01-01"),
    )
    old.execute("INSERT INTO daemon_state VALUES ('trading_state','ACTIVE','2026-01-01')")
    old.commit()
    old.close()
    async with Database(path) as db:
        repos = Repositories.over(db)
        assert await repos.copy_intents.pending() == [it]
        assert await repos.state.get("trading_state") == "ACTIVE"
        assert await repos.state.get("copy:intent:" + it.request.client_order_id) is None
