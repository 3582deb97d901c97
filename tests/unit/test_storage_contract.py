"""What each storage repository promises, field by field: what goes in comes back out.

The journal, cursors, daemon state, audit log and copy ledger are read back after restarts and
by reconciliation; a field stored wrongly or a row read from the wrong place is money attributed
wrongly. These tests write through the repositories and read back both through them and with
plain SQL, so a repository that stores one thing and reports another is caught.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from errors import IllegalTransition
from models import UNATTRIBUTED, LiquidityRole, OrderStatus, OrderType, Side, TradeStatus
from storage import Database, Repositories
from storage.audit import detail_json
from storage.copy_intents import CopyIntent
from storage.journal import OrderNotFound
from tests.helpers import TOKEN, journal_row, make_order
from tests.helpers import make_fill as _fill

D = Decimal
FAR_PAST = "2000-01-01T00:00:00.000000+00:00"
FAR_FUTURE = "2999-01-01T00:00:00.000000+00:00"


# -- the order journal --------------------------------------------------------------------------


async def test_record_keeps_every_field_of_the_request(repos: Repositories) -> None:
    r = make_order(
        side="SELL",
        price="0.37",
        size="12.5",
        order_type="GTD",
        expiration=4_102_444_800,
        post_only=True,
        reason="take profit",
        strategy="copy",
    )
    await repos.orders.record(
        r,
        status=OrderStatus.PENDING,
        venue_order_id="0xabc",
        payload_hash="hash-1",
        signed_order='{"salt": 1}',
        detail="first",
    )
    row = await repos.orders.get(r.client_order_id)
    assert row is not None
    assert (row.client_order_id, row.strategy, row.token_id) == (
        r.client_order_id,
        "copy",
        r.token_id,
    )
    assert (row.side, row.price, row.size) == (Side.SELL, D("0.37"), D("12.5"))
    assert (row.order_type, row.expiration, row.post_only) == (OrderType.GTD, 4_102_444_800, True)
    assert (row.reason, row.status, row.detail) == ("take profit", OrderStatus.PENDING, "first")
    assert (row.venue_order_id, row.payload_hash) == ("0xabc", "hash-1")
    assert row.size_matched == D("0") and row.avg_price is None
    assert row.remaining == D("12.5")
    assert row.created_at == row.updated_at and row.created_at.endswith("+00:00")
    assert await repos.orders.signed_order(r.client_order_id) == '{"salt": 1}'


async def test_record_defaults_and_a_local_refusal(repos: Repositories) -> None:
    plain = make_order()
    refused = make_order(price="0.2")
    await repos.orders.record(plain)
    await repos.orders.record(refused, status=OrderStatus.REJECTED, detail="risk: too big")
    row = await repos.orders.get(plain.client_order_id)
    assert row is not None
    assert row.status is OrderStatus.PENDING and row.post_only is False
    assert row.venue_order_id is None and row.payload_hash is None and row.detail == ""
    assert row.expiration is None
    assert await repos.orders.signed_order(plain.client_order_id) is None
    bad = await repos.orders.get(refused.client_order_id)
    assert bad is not None and bad.status is OrderStatus.REJECTED
    assert bad.detail == "risk: too big"


async def test_record_with_audit_writes_the_entry_in_the_same_write(repos: Repositories) -> None:
    r = make_order(strategy="copy")
    await repos.orders.record(r, audit=("order_journaled", {"why": "test", "n": 2}))
    [entry] = await repos.audit.tail(event="order_journaled")
    assert entry.strategy == "copy" and entry.client_order_id == r.client_order_id
    assert entry.detail == {"why": "test", "n": 2}
    await repos.orders.record(make_order())  # no audit asked: none written
    assert len(await repos.audit.tail()) == 1


async def test_transition_updates_only_what_it_is_given(repos: Repositories) -> None:
    r = make_order()
    await repos.orders.record(r, venue_order_id="0xv1", payload_hash="h")
    old = await repos.orders.transition(r.client_order_id, OrderStatus.LIVE, detail="resting")
    assert old is OrderStatus.PENDING
    row = await repos.orders.get(r.client_order_id)
    assert row is not None
    assert (row.status, row.venue_order_id, row.detail) == (OrderStatus.LIVE, "0xv1", "resting")
    assert row.size_matched == D("0") and row.avg_price is None

    old = await repos.orders.transition(
        r.client_order_id,
        OrderStatus.PARTIALLY_FILLED,
        size_matched=D("4"),
        avg_price=D("0.49"),
        venue_order_id="0xv2",
    )
    assert old is OrderStatus.LIVE
    row = await repos.orders.get(r.client_order_id)
    assert row is not None
    assert (row.size_matched, row.avg_price, row.venue_order_id) == (D("4"), D("0.49"), "0xv2")
    assert row.remaining == D("6")
    assert row.detail == ""  # detail is replaced, not kept

    # Omitted figures keep their values; the status and time move.
    await repos.orders.transition(r.client_order_id, OrderStatus.CANCELED)
    row = await repos.orders.get(r.client_order_id)
    assert row is not None
    assert row.status is OrderStatus.CANCELED
    assert (row.size_matched, row.avg_price, row.venue_order_id) == (D("4"), D("0.49"), "0xv2")
    assert row.updated_at >= row.created_at


async def test_transition_to_the_same_terminal_status_is_a_no_op(repos: Repositories) -> None:
    r = make_order()
    await repos.orders.record(r)
    await repos.orders.transition(r.client_order_id, OrderStatus.FILLED, size_matched=D("10"))
    events_before = await repos.orders.events(r.client_order_id)
    old = await repos.orders.transition(
        r.client_order_id, OrderStatus.FILLED, size_matched=D("3"), audit=("again", {})
    )
    assert old is OrderStatus.FILLED
    row = await repos.orders.get(r.client_order_id)
    assert row is not None and row.size_matched == D("10")
    assert await repos.orders.events(r.client_order_id) == events_before
    assert await repos.audit.tail(event="again") == []


async def test_transition_audit_names_the_strategy_and_order(repos: Repositories) -> None:
    r = make_order(strategy="copy")
    await repos.orders.record(r)
    await repos.orders.transition(
        r.client_order_id, OrderStatus.LIVE, audit=("order_live", {"venue": "0x1"})
    )
    [entry] = await repos.audit.tail(event="order_live")
    assert (entry.strategy, entry.client_order_id) == ("copy", r.client_order_id)
    assert entry.detail == {"venue": "0x1"}


async def test_forbidden_and_unknown_transitions(repos: Repositories) -> None:
    r = make_order()
    await repos.orders.record(r)
    await repos.orders.transition(r.client_order_id, OrderStatus.REJECTED)
    with pytest.raises(IllegalTransition, match=r"REJECTED.*LIVE"):
        await repos.orders.transition(r.client_order_id, OrderStatus.LIVE, audit=("x", {}))
    assert await repos.audit.tail(event="x") == []
    with pytest.raises(OrderNotFound, match="nope"):
        await repos.orders.transition("nope", OrderStatus.LIVE)


async def test_lookups_by_venue_id_and_open_orders(repos: Repositories) -> None:
    a, b, c, d = (make_order(price=p) for p in ("0.1", "0.2", "0.3", "0.4"))
    await repos.orders.record(a, venue_order_id="0xa")
    await repos.orders.record(b, venue_order_id="0xb")
    await repos.orders.record(c)
    await repos.orders.record(d, status=OrderStatus.REJECTED)
    await repos.orders.transition(b.client_order_id, OrderStatus.LIVE)
    await repos.orders.transition(a.client_order_id, OrderStatus.FILLED, size_matched=D("10"))

    found = await repos.orders.get_by_venue_id("0xb")
    assert found is not None and found.client_order_id == b.client_order_id
    assert await repos.orders.get_by_venue_id("0xmissing") is None
    assert await repos.orders.get("missing") is None

    open_ids = [row.client_order_id for row in await repos.orders.non_terminal()]
    assert open_ids == [b.client_order_id, c.client_order_id]  # journal order, terminal left out

    recent = [row.client_order_id for row in await repos.orders.recent()]
    assert recent == [d.client_order_id, c.client_order_id, b.client_order_id, a.client_order_id]
    assert [row.client_order_id for row in await repos.orders.recent(limit=2)] == recent[:2]
    open_recent = [row.client_order_id for row in await repos.orders.recent(open_only=True)]
    assert open_recent == [c.client_order_id, b.client_order_id]

    assert await repos.orders.counts_by_status() == {
        OrderStatus.FILLED: 1,
        OrderStatus.LIVE: 1,
        OrderStatus.PENDING: 1,
        OrderStatus.REJECTED: 1,
    }


async def test_events_carry_the_matched_size_and_detail(repos: Repositories) -> None:
    r = make_order()
    await repos.orders.record(r, detail="journaled")
    await repos.orders.transition(
        r.client_order_id, OrderStatus.PARTIALLY_FILLED, size_matched=D("2.5"), detail="part"
    )
    events = await repos.orders.events(r.client_order_id)
    assert [(e.to_status, e.size_matched, e.detail) for e in events] == [
        (OrderStatus.PENDING, D("0"), "journaled"),
        (OrderStatus.PARTIALLY_FILLED, D("2.5"), "part"),
    ]
    assert all(e.client_order_id == r.client_order_id for e in events)
    assert await repos.orders.events("other") == []


def test_remaining_never_goes_below_zero() -> None:
    # Surplus shares: matched beyond the asked size.
    row = journal_row(token_id="1", order_type=OrderType.FAK, size_matched=D("10.2"))
    assert row.remaining == D("0")


# -- cursors and seen ids -------------------------------------------------------------------------


async def test_cursor_values_are_per_source_and_replaced(repos: Repositories) -> None:
    assert await repos.cursors.get("a") is None
    assert await repos.cursors.advance("a", value="10") == 0
    await repos.cursors.advance("b", value="99")
    await repos.cursors.advance("a", value="5")  # a plain cursor may move either way
    assert await repos.cursors.get("a") == "5"
    assert await repos.cursors.get("b") == "99"


async def test_seen_ids_count_new_marks_per_source(repos: Repositories) -> None:
    assert await repos.cursors.advance("a", seen=["x", "y"]) == 2
    assert await repos.cursors.advance("a", seen=["y", "z"]) == 1
    assert await repos.cursors.advance("b", seen=["x"]) == 1  # other source, own set
    assert await repos.cursors.get("a") is None  # seen ids alone leave the cursor
    assert await repos.cursors.is_seen("a", "z")
    assert not await repos.cursors.is_seen("a", "w")
    assert not await repos.cursors.is_seen("c", "x")
    assert await repos.cursors.seen_among("a", ["x", "w", "z"]) == {"x", "z"}
    assert await repos.cursors.seen_among("a", []) == set()


async def test_seen_among_handles_more_ids_than_one_query_takes(repos: Repositories) -> None:
    ids = [f"id-{i}" for i in range(1_203)]
    await repos.cursors.advance("s", seen=ids[::2])
    found = await repos.cursors.seen_among("s", ids)
    assert found == set(ids[::2])


async def test_prune_seen_forgets_only_old_marks_of_one_source(repos: Repositories) -> None:
    await repos.cursors.advance("a", seen=["x", "y"])
    await repos.cursors.advance("b", seen=["x"])
    assert await repos.cursors.prune_seen("a", before_iso=FAR_PAST) == 0
    assert await repos.cursors.prune_seen("a", before_iso=FAR_FUTURE) == 2
    assert not await repos.cursors.is_seen("a", "x")
    assert await repos.cursors.is_seen("b", "x")


# -- daemon state -------------------------------------------------------------------------------


async def test_state_set_replaces_and_audits_together(repos: Repositories) -> None:
    assert await repos.state.get("k") is None
    await repos.state.set("k", "one")
    await repos.state.set("other", "x")
    await repos.state.set("k", "two", audit=("state_changed", {"to": "two"}))
    assert await repos.state.get("k") == "two"
    assert await repos.state.get("other") == "x"
    [entry] = await repos.audit.tail()
    assert entry.event == "state_changed" and entry.detail == {"to": "two"}
    assert entry.strategy is None and entry.client_order_id is None
    rows = await repos.db.fetchall("SELECT key, value FROM daemon_state ORDER BY key")
    assert [(r[0], r[1]) for r in rows] == [("k", "two"), ("other", "x")]


# -- the audit log ------------------------------------------------------------------------------


async def test_audit_tail_is_newest_first_filtered_and_limited(repos: Repositories) -> None:
    for i in range(5):
        await repos.audit.append("tick", strategy="sniper", n=i)
    await repos.audit.append("halt", client_order_id="c-1", why="operator", amount=D("1.50"))
    tail = await repos.audit.tail(limit=3)
    assert [e.event for e in tail] == ["halt", "tick", "tick"]
    assert tail[1].detail == {"n": 4} and tail[2].detail == {"n": 3}
    assert tail[0].id > tail[1].id > tail[2].id
    halt = tail[0]
    assert (halt.strategy, halt.client_order_id) == (None, "c-1")
    assert halt.detail == {"why": "operator", "amount": "1.50"}  # Decimal kept as exact text
    ticks = await repos.audit.tail(event="tick", limit=2)
    assert [e.detail["n"] for e in ticks] == [4, 3]
    assert all(e.strategy == "sniper" and e.at.endswith("+00:00") for e in ticks)
    assert await repos.audit.tail(event="none") == []
    assert len(await repos.audit.tail(event="tick")) == 5


async def test_audit_tail_and_recent_orders_default_to_the_last_hundred(
    repos: Repositories,
) -> None:
    for i in range(101):
        await repos.audit.append("tick", n=i)
        await repos.orders.record(make_order(client_order_id=f"coid-{i:04d}"))
    tail = await repos.audit.tail()
    assert len(tail) == 100 and tail[-1].detail == {"n": 1}
    recent = await repos.orders.recent()
    assert len(recent) == 100 and recent[-1].client_order_id == "coid-0001"


def test_detail_json_is_compact_and_exact() -> None:
    assert detail_json({"a": D("0.10"), "b": [1, "x"]}) == '{"a":"0.10","b":[1,"x"]}'


# -- the copy ledger ----------------------------------------------------------------------------


async def test_copy_ledger_round_trips_an_intent_and_keeps_sources_apart(
    repos: Repositories,
) -> None:
    ledger = repos.copy_intents
    req = make_order(strategy="copy", price="0.42", size="3.3")
    intent = CopyIntent(request=req, wallet="0xw1", dedupe_key="k1", leader_ts=1_700_000_100)
    assert await ledger.cursor("0xw1") is None
    assert await ledger.handle(
        "0xw1", "k1", 1_700_000_100, audit=("copy", {"leader": "0xw1"}), intent=intent
    )
    [back] = await ledger.pending()
    assert back == intent
    assert await ledger.cursor("0xw1") == 1_700_000_100
    assert await ledger.cursor("0xw2") is None
    assert await ledger.seen_among("0xw1", ["k1", "k2"]) == {"k1"}
    assert await ledger.seen_among("0xw2", ["k1"]) == set()
    assert await repos.cursors.is_seen("copy:0xw1", "k1")  # the documented source name
    [entry] = await repos.audit.tail(event="copy")
    assert (entry.strategy, entry.client_order_id) == ("copy", req.client_order_id)
    assert entry.detail == {"leader": "0xw1"}


async def test_copy_ledger_keeps_intents_in_order_and_closes_one(repos: Repositories) -> None:
    ledger = repos.copy_intents
    reqs = [make_order(strategy="copy", price=p) for p in ("0.3", "0.1", "0.2")]
    for i, r in enumerate(reqs):
        intent = CopyIntent(request=r, wallet="0xw", dedupe_key=f"k{i}", leader_ts=100 + i)
        assert await ledger.handle("0xw", f"k{i}", 100 + i, audit=("copy", {}), intent=intent)
    assert [i.request.client_order_id for i in await ledger.pending()] == [
        r.client_order_id for r in reqs
    ]
    await ledger.close(reqs[1].client_order_id, "copy_closed", {"status": "FILLED"})
    assert [i.dedupe_key for i in await ledger.pending()] == ["k0", "k2"]
    [entry] = await repos.audit.tail(event="copy_closed")
    assert entry.client_order_id == reqs[1].client_order_id and entry.strategy == "copy"
    assert entry.detail == {"status": "FILLED"}


async def test_copy_prune_forgets_only_that_wallets_old_keys(repos: Repositories) -> None:
    ledger = repos.copy_intents
    await ledger.handle("0xa", "k", 1, audit=("seen", {}))
    await ledger.handle("0xb", "k", 1, audit=("seen", {}))
    assert await ledger.prune_seen("0xa", before_iso=FAR_PAST) == 0
    assert await ledger.prune_seen("0xa", before_iso=FAR_FUTURE) == 1
    assert await ledger.seen_among("0xa", ["k"]) == set()
    assert await ledger.seen_among("0xb", ["k"]) == {"k"}


# -- fills and positions ------------------------------------------------------------------------

TOKEN_B = "1" * 70


async def test_fill_round_trips_every_field(repos: Repositories) -> None:
    ts = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    f = _fill(
        "t1",
        "0xa",
        "SELL",
        "0.615",
        "7.25",
        client_order_id="c-1",
        fee=D("0.10899"),
        role=LiquidityRole.MAKER,
        status=TradeStatus.MINED,
        ts=ts,
    )
    await repos.fills.record(_fill("t0", "0xz", "BUY", "0.5", "10"))
    await repos.fills.record(f)
    got = await repos.fills.for_order("c-1")
    assert got == [f]
    raw = await repos.db.fetchone(
        "SELECT trade_id, venue_order_id, client_order_id, token_id, side, price, size, fee,"
        " role, status, ts FROM fills WHERE trade_id = 't1'"
    )
    assert raw is not None
    assert tuple(raw) == (
        "t1",
        "0xa",
        "c-1",
        TOKEN,
        "SELL",
        "0.615",
        "7.25",
        "0.10899",
        "MAKER",
        "MINED",
        "2026-12-05T01:02:03.456789+00:00",
    )


async def test_fills_are_listed_by_time_and_limited(repos: Repositories) -> None:
    base = datetime(2026, 12, 5, tzinfo=UTC)
    late = _fill(
        "late", "0x1", "BUY", "0.4", "5", client_order_id="c", ts=base + timedelta(seconds=2)
    )
    early = _fill("early", "0x2", "BUY", "0.4", "5", client_order_id="c", ts=base)
    other = _fill(
        "other", "0x3", "BUY", "0.4", "5", client_order_id="d", ts=base + timedelta(seconds=1)
    )
    for f in (late, early, other):
        await repos.fills.record(f)
    assert [f.trade_id for f in await repos.fills.for_order("c")] == ["early", "late"]
    assert [f.trade_id for f in await repos.fills.all()] == ["early", "other", "late"]
    assert [f.trade_id for f in await repos.fills.all(limit=2)] == ["early", "other"]
    assert await repos.fills.for_order("nobody") == []


async def test_position_moves_with_price_size_and_fee(repos: Repositories) -> None:
    p1 = await repos.fills.record(_fill("t1", "0xa", "BUY", "0.40", "10", fee=D("0.1")))
    assert p1 is not None
    assert (p1.size, p1.avg_cost, p1.realized_pnl) == (D("10"), D("0.41"), D("0"))
    p2 = await repos.fills.record(_fill("t2", "0xb", "SELL", "0.60", "4", fee=D("0.02")))
    assert p2 is not None
    assert (p2.size, p2.avg_cost) == (D("6"), D("0.41"))
    assert p2.realized_pnl == D("0.74")  # (0.60 - 0.41) * 4 - 0.02
    stored = await repos.fills.position(TOKEN, strategy="unattributed")
    assert (stored.size, stored.avg_cost, stored.realized_pnl) == (p2.size, p2.avg_cost, D("0.74"))
    raw = await repos.db.fetchone(
        "SELECT size, avg_cost, realized_pnl FROM positions WHERE token_id = ?", (TOKEN,)
    )
    assert raw is not None and tuple(Decimal(x) for x in raw) == (D("6"), D("0.41"), D("0.74"))
    assert (await repos.fills.position(TOKEN_B, strategy="unattributed")).size == 0


async def test_a_repeated_fill_moves_its_position_once(repos: Repositories) -> None:
    f = _fill("t1", "0xa", "BUY", "0.5", "10")
    assert await repos.fills.record(f) is not None
    again = f.model_copy(update={"status": TradeStatus.CONFIRMED, "size": D("99")})
    assert await repos.fills.record(again) is None
    assert (await repos.fills.position(TOKEN, strategy="unattributed")).size == D("10")
    [stored] = await repos.fills.all()
    assert (stored.status, stored.size) == (TradeStatus.CONFIRMED, D("10"))
    # the same trade on another of our orders (both sides ours) is a separate fill
    assert await repos.fills.record(_fill("t1", "0xb", "BUY", "0.5", "1")) is not None
    assert (await repos.fills.position(TOKEN, strategy="unattributed")).size == D("11")


async def test_a_failed_trade_is_taken_out_and_restored(repos: Repositories) -> None:
    await repos.fills.record(
        _fill("t1", "0xa", "BUY", "0.40", "10", client_order_id="c1", fee=D("0.2"))
    )
    await repos.fills.record(_fill("t2", "0xb", "BUY", "0.60", "10", client_order_id="c2"))
    await repos.fills.record(_fill("t3", "0xc", "SELL", "0.70", "5", client_order_id="c3"))
    other = await repos.fills.record(
        _fill("x", "0xd", "BUY", "0.3", "2", token_id=TOKEN_B, client_order_id="c4")
    )
    assert other is not None
    failed = await repos.fills.record(
        _fill("t2", "0xb", "BUY", "0.60", "10", client_order_id="c2", status=TradeStatus.FAILED)
    )
    assert failed is not None
    # replay of t1 then t3: 10 @ 0.40 + 0.2 fee (avg 0.42), sell 5 @ 0.70
    assert (failed.size, failed.avg_cost, failed.realized_pnl) == (D("5"), D("0.42"), D("1.40"))
    assert await repos.fills.position(TOKEN, strategy="unattributed") == failed
    assert (await repos.fills.position(TOKEN_B, strategy="unattributed")).size == D("2")
    [entry] = await repos.audit.tail(event="fill_failed")
    assert entry.client_order_id == "c2"
    assert entry.detail == {
        "trade_id": "t2",
        "venue_order_id": "0xb",
        "strategy": "unattributed",
        "side": "BUY",
        "price": "0.60",
        "size": "10",
        "position_before": "15",
        "position_after": "5",
        "realized_pnl_after": "1.40",
    }
    # reported FAILED again: nothing moves, nothing audited
    assert (
        await repos.fills.record(_fill("t2", "0xb", "BUY", "0.60", "10", status=TradeStatus.FAILED))
        is None
    )
    assert len(await repos.audit.tail(event="fill_failed")) == 1
    restored = await repos.fills.record(
        _fill("t2", "0xb", "BUY", "0.60", "10", status=TradeStatus.CONFIRMED)
    )
    assert restored is not None
    assert (restored.size, restored.avg_cost) == (D("15"), D("0.51"))
    assert restored.realized_pnl == D("0.95")  # sell 5 @ 0.70 against avg (4.2 + 6) / 20
    [back] = await repos.audit.tail(event="fill_restored")
    assert (back.detail["position_before"], back.detail["position_after"]) == ("5", "15")


async def test_a_fill_first_seen_failed_is_kept_and_moves_nothing(repos: Repositories) -> None:
    f = _fill("t9", "0xa", "BUY", "0.5", "10", client_order_id="c9", status=TradeStatus.FAILED)
    assert await repos.fills.record(f) is None
    assert (await repos.fills.position(TOKEN, strategy="unattributed")).size == 0
    assert await repos.fills.for_order("c9") == [f]
    [entry] = await repos.audit.tail(event="fill_failed")
    assert entry.client_order_id == "c9"
    assert entry.detail == {"trade_id": "t9", "venue_order_id": "0xa", "first_seen_failed": True}


async def test_positions_lists_held_and_realized_tokens_in_order(repos: Repositories) -> None:
    await repos.fills.record(_fill("a", "0xa", "BUY", "0.5", "4", token_id=TOKEN_B))
    await repos.fills.record(_fill("b", "0xb", "BUY", "0.5", "4"))
    await repos.fills.record(_fill("c", "0xc", "SELL", "0.5", "4"))  # flat, zero PnL
    held = await repos.fills.positions()
    assert [(p.token_id, p.size) for p in held] == [(TOKEN_B, D("4"))]
    everything = await repos.fills.positions(include_flat=True)
    assert [p.token_id for p in everything] == sorted([TOKEN, TOKEN_B])
    await repos.fills.record(_fill("d", "0xd", "BUY", "0.4", "1"))
    await repos.fills.record(_fill("e", "0xe", "SELL", "0.6", "1"))  # flat, PnL 0.2
    realized = {p.token_id: p for p in await repos.fills.positions()}
    assert set(realized) == {TOKEN, TOKEN_B}
    assert (realized[TOKEN].size, realized[TOKEN].realized_pnl) == (D("0"), D("0.2"))
    assert (realized[TOKEN_B].avg_cost, realized[TOKEN_B].realized_pnl) == (D("0.5"), D("0"))


async def test_everything_written_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "polyd.db"
    r = make_order(strategy="copy")
    db = Database(path)
    await db.open()
    repos = Repositories.over(db)
    await repos.orders.record(r, venue_order_id="0xv", signed_order="{}")
    await repos.cursors.advance("src", value="7", seen=["a"])
    await repos.state.set("mode", "halted")
    await repos.copy_intents.handle(
        "0xw",
        "k",
        5,
        audit=("copy", {}),
        intent=CopyIntent(request=r, wallet="0xw", dedupe_key="k", leader_ts=5),
    )
    await db.close()

    db = Database(path)
    await db.open()
    try:
        again = Repositories.over(db)
        row = await again.orders.get(r.client_order_id)
        assert row is not None and row.venue_order_id == "0xv"
        assert await again.cursors.get("src") == "7"
        assert await again.cursors.is_seen("src", "a")
        assert await again.state.get("mode") == "halted"
        assert [i.request for i in await again.copy_intents.pending()] == [r]
        assert await again.copy_intents.cursor("0xw") == 5
    finally:
        await db.close()


# --- attribution ------------------------------------------------------------------------------


async def test_fills_move_the_position_of_the_strategy_whose_order_they_fill(
    repos: Repositories,
) -> None:
    sniper = make_order(strategy="sniper", token_id=TOKEN, price="0.40", size="10")
    copy = make_order(strategy="copy", token_id=TOKEN, price="0.50", size="4")
    await repos.orders.record(sniper, venue_order_id="0xs", payload_hash="hs")
    await repos.orders.record(copy, venue_order_id="0xc", payload_hash="hc")
    # By client order id, and by venue order id when the feed did not name ours.
    s = await repos.fills.record(
        _fill("t1", "0xs", "BUY", "0.40", "10", client_order_id=sniper.client_order_id)
    )
    c = await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4"))
    m = await repos.fills.record(_fill("t3", "0xm", "BUY", "0.30", "1"))  # no order of ours
    assert s is not None and c is not None and m is not None
    assert (s.strategy, s.size, c.strategy, c.size) == ("sniper", D("10"), "copy", D("4"))
    assert (m.strategy, m.size) == (UNATTRIBUTED, D("1"))
    by = {p.strategy: p.size for p in await repos.fills.positions_in(TOKEN)}
    assert by == {"sniper": D("10"), "copy": D("4"), UNATTRIBUTED: D("1")}


async def test_a_sale_outside_the_daemon_takes_unattributed_shares_first_then_the_largest(
    repos: Repositories,
) -> None:
    sniper = make_order(strategy="sniper", token_id=TOKEN, price="0.40", size="10")
    copy = make_order(strategy="copy", token_id=TOKEN, price="0.50", size="4")
    await repos.orders.record(sniper, venue_order_id="0xs", payload_hash="hs")
    await repos.orders.record(copy, venue_order_id="0xc", payload_hash="hc")
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "10"))
    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4"))
    await repos.fills.record(_fill("t3", "0xm", "BUY", "0.30", "1"))
    # 12 sold from the account by hand: 1 unattributed, then 10 of the sniper's, 1 of the copy's.
    await repos.fills.record(_fill("t4", "0xn", "SELL", "0.60", "12"))
    by = {p.strategy: p for p in await repos.fills.positions_in(TOKEN)}
    assert {k: p.size for k, p in by.items()} == {"sniper": 0, "copy": D("3"), UNATTRIBUTED: 0}
    assert by["sniper"].realized_pnl == D("2.00")  # 10 x (0.60 - 0.40), at the sale's price
    assert by["copy"].avg_cost == D("0.50") and by["copy"].realized_pnl == D("0.10")
    taken = await repos.audit.tail(event="unattributed_sell_took_from_strategy")
    assert sorted((e.strategy, e.detail["size"]) for e in taken) == [
        ("copy", "1"),
        ("sniper", "10"),
    ]


async def test_a_failed_sale_outside_the_daemon_gives_the_strategies_their_shares_back(
    repos: Repositories,
) -> None:
    sniper = make_order(strategy="sniper", token_id=TOKEN, price="0.40", size="10")
    await repos.orders.record(sniper, venue_order_id="0xs", payload_hash="hs")
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "10"))
    await repos.fills.record(_fill("t2", "0xn", "SELL", "0.60", "4"))  # by hand
    assert (await repos.fills.position(TOKEN, strategy="sniper")).size == D("6")
    await repos.fills.record(_fill("t2", "0xn", "SELL", "0.60", "4", status=TradeStatus.FAILED))
    back = await repos.fills.position(TOKEN, strategy="sniper")
    assert (back.size, back.avg_cost, back.realized_pnl) == (D("10"), D("0.40"), D("0"))
    await repos.fills.record(_fill("t2", "0xn", "SELL", "0.60", "4", status=TradeStatus.MINED))
    assert (await repos.fills.position(TOKEN, strategy="sniper")).size == D("6")
