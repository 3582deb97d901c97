"""A crash between the durable PENDING row and the POST: reconciliation re-sends the journaled
signed order (the same bytes, never re-signed) while it is young, and the venue's duplicate check
makes that idempotent. Real SDK, real sockets, the simulator's ledger as the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from execution.ports import Prepared, StoredOrderMismatch, VenueOrder
from models import OrderStatus, OrderType
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live, seed_asks


async def crash_before_post(live: Live, **req: Any) -> str:
    """Submit an order and kill the submission after its PENDING row is durable, before the
    POST leaves (the task is cancelled inside `send`); return its client order id."""
    entered = asyncio.Event()

    async def never_sends(prepared: Prepared) -> Any:
        entered.set()
        await asyncio.Event().wait()  # the process dies here

    live.broker.send = never_sends  # type: ignore[method-assign]  # the crash point
    task = asyncio.create_task(live.ex.submit(live.req(**req)))
    await entered.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    rows = await live.repos.orders.non_terminal()
    assert [r.status for r in rows] == [OrderStatus.PENDING]
    return rows[0].client_order_id


async def crash_mid_submission(live: Live, *, after_post: bool, **req: Any) -> str:
    """Submit an order and kill the submission once its PENDING row is durable: before the POST
    leaves, or (`after_post`) once the venue has taken it but before its answer is read; return
    its client order id."""
    request = live.req(**req)
    entered = asyncio.Event()
    real_send = live.broker.send

    async def dies(prepared: Prepared) -> Any:
        if after_post:
            await real_send(prepared)
        entered.set()
        await asyncio.Event().wait()  # the process dies here

    live.broker.send = dies  # type: ignore[method-assign]  # the crash point
    task = asyncio.create_task(live.ex.submit(request))
    await entered.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    live.broker.send = real_send  # type: ignore[method-assign]
    row = await live.repos.orders.get(request.client_order_id)
    assert row is not None and row.status is OrderStatus.PENDING
    return request.client_order_id


async def backdate(live: Live, coid: str, seconds: float) -> None:
    """Make the journal row of `coid` `seconds` older than it is (as if journaled then)."""
    row = await live.repos.orders.get(coid)
    assert row is not None
    then = (datetime.fromisoformat(row.created_at) - timedelta(seconds=seconds)).isoformat(
        timespec="microseconds"
    )
    await live.db.write(
        lambda c: c.execute(
            "UPDATE orders SET created_at = ? WHERE client_order_id = ?", (then, coid)
        )
    )


async def audit_events(live: Live, coid: str) -> list[str]:
    rows = await live.db.fetchall(
        "SELECT event FROM audit_log WHERE client_order_id = ? ORDER BY id", (coid,)
    )
    return [r[0] for r in rows]


async def test_crash_before_post_restart_resends_same_order_once(tmp_path: Path) -> None:
    async with Simulator(seed=21, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim, order_lookup_grace_s=10.0)
        seed_asks(first)
        coid = await crash_before_post(first, order_type=OrderType.FOK)
        assert first.posts() == 0 and first.our_orders() == []
        key = first.key
        await close_live(first)

        second = await make_live(tmp_path, sim, key=key, order_lookup_grace_s=10.0)
        try:
            counts = await second.ex.reconcile()
            assert counts["resent"] == 1 and counts["settled"] == 1
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.FILLED
            assert row.size_matched == Decimal("10")
            # The venue's order id is the journaled EIP-712 hash: the very order signed before
            # the crash (its salt and timestamp are in the hash), not a new signature.
            assert [o["id"] for o in second.our_orders()] == [row.venue_order_id]
            assert second.posts() == 1
            assert "order_resent" in await audit_events(second, coid)
            assert second.ex.position(second.token, strategy="test").size == Decimal("10")
            await second.assert_journal_matches_ledger()
            # A later reconcile has nothing left to send.
            again = await second.ex.reconcile()
            assert again["resent"] == 0 and second.posts() == 1
        finally:
            await close_live(second)


async def test_crash_resend_of_order_already_at_venue_gets_duplicated_settles_once(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=22, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim, order_lookup_grace_s=10.0)
        meta = await first.ex.rules.ensure(first.token)
        assert meta is not None
        # Journaled and sent (it rests), then the process died before the answer.
        prepared = await first.broker.prepare(first.req(price=Decimal("0.30")), meta)
        await first.ex._journal_pending(prepared)
        await first.broker.send(prepared)
        key = first.key
        await close_live(first)

        second = await make_live(tmp_path, sim, key=key, order_lookup_grace_s=10.0)
        real_lookup = second.broker.lookup
        misses = 0

        async def lookup_misses_once(venue_order_id: str) -> VenueOrder | None:
            # The venue read the crashed run's request only after this first lookup.
            nonlocal misses
            if misses == 0:
                misses += 1
                return None
            return await real_lookup(venue_order_id)

        real_open = second.broker.open_orders

        async def open_orders_before_the_venue_read_it() -> list[VenueOrder]:
            return [vo for vo in await real_open() if vo.venue_order_id != prepared.venue_order_id]

        second.broker.lookup = lookup_misses_once  # type: ignore[method-assign]  # the race
        second.broker.open_orders = open_orders_before_the_venue_read_it  # type: ignore[method-assign]
        try:
            counts = await second.ex.reconcile()
            assert counts["resent"] == 1
            coid = prepared.request.client_order_id
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.LIVE, row
            assert row.detail == "re-sent: venue already had it"
            assert [o["id"] for o in second.our_orders()] == [prepared.venue_order_id]
            duplicate = [r for r in sim.request_log if r.path == "/order" and r.method == "POST"]
            assert [r.status for r in duplicate] == [200, 400]  # the re-send was refused
            await second.assert_journal_matches_ledger()
        finally:
            await close_live(second)


async def test_pending_row_older_than_resend_window_not_resent_rejected_after_grace(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=23, settle_delay_s=0.01) as sim:
        settings: dict[str, Any] = {"order_lookup_grace_s": 30.0, "order_resend_window_s": 20.0}
        first = await make_live(tmp_path, sim, **settings)
        coid = await crash_before_post(first)
        key = first.key
        await close_live(first)

        second = await make_live(tmp_path, sim, key=key, **settings)
        try:
            await backdate(second, coid, 25)  # past the resend window, inside the grace
            counts = await second.ex.reconcile()
            assert counts["resent"] == 0 and counts["pending"] == 1
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.UNKNOWN
            await backdate(second, coid, 6)  # past the grace
            await second.ex.reconcile()
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.REJECTED
            assert second.posts() == 0 and second.our_orders() == []
            assert "order_resent" not in await audit_events(second, coid)
        finally:
            await close_live(second)


async def test_resend_window_resends_a_young_order_as_its_journaled_bytes_and_no_older_one(
    tmp_path: Path,
) -> None:
    # Three submissions die mid-way: one before its POST, one after the venue took it, one more
    # before its POST. Restarted, the daemon finds the last two 25 s old (past the 20 s resend
    # window, inside the 30 s lookup grace).
    async with Simulator(seed=28, settle_delay_s=0.01) as sim:
        settings: dict[str, Any] = {"order_lookup_grace_s": 30.0, "order_resend_window_s": 20.0}
        first = await make_live(tmp_path, sim, **settings)
        young = await crash_mid_submission(first, after_post=False, price=Decimal("0.30"))
        old_sent = await crash_mid_submission(first, after_post=True, price=Decimal("0.31"))
        old_unsent = await crash_mid_submission(first, after_post=False, price=Decimal("0.32"))
        assert first.posts() == 1
        key = first.key
        await close_live(first)

        second = await make_live(tmp_path, sim, key=key, **settings)
        try:
            await backdate(second, old_sent, 25)
            await backdate(second, old_unsent, 25)
            counts = await second.ex.reconcile()
            assert counts["resent"] == 1 and counts["pending"] == 1, counts
            # The young one went out once, as the very bytes journaled before the crash; the old
            # one the venue holds was looked up, not sent again; the old unsent one stayed home.
            sent = await second.assert_sent_as_journaled()
            assert sent.sends == {young: 1, old_sent: 1}
            assert second.posts() == 2 and len(second.our_orders()) == 2
            get = second.repos.orders.get
            r_young, r_sent, r_unsent = await get(young), await get(old_sent), await get(old_unsent)
            assert r_young is not None and r_young.status is OrderStatus.LIVE
            assert r_sent is not None and r_sent.status is OrderStatus.LIVE
            assert r_sent.detail == "reconciled"
            assert r_unsent is not None and r_unsent.status is OrderStatus.UNKNOWN
            assert "order_resent" in await audit_events(second, young)
            for coid in (old_sent, old_unsent):
                assert "order_resent" not in await audit_events(second, coid)
            await second.assert_journal_matches_ledger()
            # Past the grace the order the venue never saw is rejected, still never sent.
            await backdate(second, old_unsent, 6)
            await second.ex.reconcile()
            r_unsent = await get(old_unsent)
            assert r_unsent is not None and r_unsent.status is OrderStatus.REJECTED
            assert r_unsent.detail == "venue: not found at the venue"
            assert second.posts() == 2
            await second.assert_journal_matches_ledger()
        finally:
            await close_live(second)


async def test_halted_daemon_does_not_resend(tmp_path: Path) -> None:
    async with Simulator(seed=24, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim, order_lookup_grace_s=10.0)
        coid = await crash_before_post(first)
        await first.ex.halt("operator stop")
        key = first.key
        await close_live(first)

        second = await make_live(tmp_path, sim, key=key, order_lookup_grace_s=10.0)
        try:
            counts = await second.ex.reconcile()
            assert counts["resent"] == 0 and second.posts() == 0
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.UNKNOWN
        finally:
            await close_live(second)


async def test_stored_signed_order_has_no_credentials_and_restores_to_same_bytes(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=25, settle_delay_s=0.01) as sim:
        live = await make_live(tmp_path, sim)
        try:
            res = await live.ex.submit(live.req(price=Decimal("0.30")))
            assert res.status is OrderStatus.LIVE
            creds = live.broker.identity.creds
            secrets = [
                creds.api_key,
                creds.api_secret,
                creds.api_passphrase,
                live.key,
                live.key.removeprefix("0x"),
            ]
            rows = await live.db.fetchall("SELECT * FROM orders")
            assert len(rows) == 1
            text = "\n".join(str(v) for v in tuple(rows[0]))
            for s in secrets:
                assert s not in text
            stored = await live.repos.orders.signed_order(res.client_order_id)
            assert stored is not None
            body = json.loads(stored)
            assert set(body) == {"order", "orderType", "deferExec", "postOnly"}
            assert body["order"]["signature"].startswith("0x")
            row = await live.repos.orders.get(res.client_order_id)
            assert row is not None and row.venue_order_id and row.payload_hash
            meta = await live.ex.rules.ensure(live.token)
            assert meta is not None
            req = live.req(price=Decimal("0.30"))
            again = live.broker.restore(
                req,
                venue_order_id=row.venue_order_id,
                payload_hash=row.payload_hash,
                signed_order=stored,
            )
            assert again.venue_order_id == row.venue_order_id
            assert json.loads(again.payload)["owner"] == creds.api_key
        finally:
            await close_live(live)


@pytest.mark.parametrize("tamper", ["makerAmount", "owner", "garbage"])
async def test_tampered_stored_order_is_refused_not_resent(tmp_path: Path, tamper: str) -> None:
    async with Simulator(seed=26, settle_delay_s=0.01) as sim:
        first = await make_live(tmp_path, sim, order_lookup_grace_s=10.0)
        coid = await crash_before_post(first)
        key = first.key
        await close_live(first)
        row = await _row(tmp_path, coid)
        stored = json.loads(row["signed_order"])
        if tamper == "makerAmount":
            stored["order"]["makerAmount"] = str(int(stored["order"]["makerAmount"]) * 2)
            text = json.dumps(stored, separators=(",", ":"))
        elif tamper == "owner":
            text = row["signed_order"]
        else:
            text = "{not json"
        await _set_signed(tmp_path, coid, text)

        second = await make_live(tmp_path, sim, key=key, order_lookup_grace_s=10.0)
        try:
            if tamper == "owner":
                # Same signed order, but the payload hash no longer matches what is re-sent.
                await second.db.write(
                    lambda c: c.execute(
                        "UPDATE orders SET payload_hash = ? WHERE client_order_id = ?",
                        ("0" * 64, coid),
                    )
                )
            r = await second.repos.orders.get(coid)
            assert r is not None and r.venue_order_id and r.payload_hash
            signed = await second.repos.orders.signed_order(coid)
            assert signed is not None
            with pytest.raises(StoredOrderMismatch):
                second.broker.restore(
                    second.req(),
                    venue_order_id=r.venue_order_id,
                    payload_hash=r.payload_hash,
                    signed_order=signed,
                )
            counts = await second.ex.reconcile()
            assert counts["resent"] == 0 and second.posts() == 0
            assert "order_resend_refused" in await audit_events(second, coid)
        finally:
            await close_live(second)


async def _row(tmp_path: Path, coid: str) -> dict[str, Any]:
    import sqlite3

    con = sqlite3.connect(tmp_path / "polyd.db")
    con.row_factory = sqlite3.Row
    try:
        r = con.execute("SELECT * FROM orders WHERE client_order_id = ?", (coid,)).fetchone()
        return dict(r)
    finally:
        con.close()


async def _set_signed(tmp_path: Path, coid: str, text: str) -> None:
    import sqlite3

    con = sqlite3.connect(tmp_path / "polyd.db")
    try:
        con.execute("UPDATE orders SET signed_order = ? WHERE client_order_id = ?", (text, coid))
        con.commit()
    finally:
        con.close()


async def test_periodic_reconcile_leaves_in_flight_send_alone(tmp_path: Path) -> None:
    # A submission slower than the lookup grace (the reconcile once rejected such a send as
    # unknown at the venue; fixed in 30b89a0): the reconcile must neither reject nor re-send it;
    # its own send settles it.
    async with Simulator(seed=27, settle_delay_s=0.01) as sim:
        live = await make_live(
            tmp_path, sim, http_timeout_s=3.0, order_lookup_grace_s=0.5, order_resend_window_s=0.4
        )
        try:
            sim.faults.add(kind="latency", route="POST /order", seconds=1.0)
            task = asyncio.create_task(live.ex.submit(live.req(price=Decimal("0.30"))))
            await asyncio.sleep(0.7)  # older than the grace, still on the wire
            counts = await live.ex.reconcile()
            assert counts["settled"] == 0 and counts["resent"] == 0
            res = await task
            assert res.status is OrderStatus.LIVE
            assert len(live.our_orders()) == 1 and live.posts() == 1
            await live.assert_journal_matches_ledger()
        finally:
            await close_live(live)
