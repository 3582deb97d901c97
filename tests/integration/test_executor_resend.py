"""A crash between the durable PENDING row and the POST: reconciliation re-sends the journaled
signed order (the same bytes, never re-signed) while it is young, and the venue's duplicate check
makes that idempotent. Real SDK, real sockets, the simulator's ledger as the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
            assert second.ex.position(second.token).size == Decimal("10")
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
        settings: dict[str, Any] = {"order_lookup_grace_s": 1.0, "order_resend_window_s": 0.2}
        first = await make_live(tmp_path, sim, **settings)
        coid = await crash_before_post(first)
        key = first.key
        await close_live(first)
        await asyncio.sleep(0.3)  # past the resend window, inside the grace

        second = await make_live(tmp_path, sim, key=key, **settings)
        try:
            counts = await second.ex.reconcile()
            assert counts["resent"] == 0 and counts["pending"] == 1
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.UNKNOWN
            await asyncio.sleep(0.8)
            await second.ex.settle_unknowns()
            row = await second.repos.orders.get(coid)
            assert row is not None and row.status is OrderStatus.REJECTED
            assert second.posts() == 0 and second.our_orders() == []
            assert "order_resent" not in await audit_events(second, coid)
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
            creds = live.broker.client.creds
            assert creds is not None
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
    # A submission slower than the lookup grace (bugs-found B1): the reconcile must neither
    # reject nor re-send it; its own send settles it.
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
