"""Batch sends (`Executor.submit_many`, `POST /orders`) against the simulator, one outcome each:
the breaker open, the whole batch refused, the batch failing in transit with or without the
venue taking it, and one order of a batch refused while the others rest.

A batch is never re-sent; each order in it ends with the verdict its own evidence supports: the
venue's refusal (REJECTED, source `venue`), the breaker's (REJECTED, source `breaker`, nothing
sent), or a lookup by hash when the answer was lost. What the breaker counts is checked too: a
refusal is an answer (the venue is up), a transport failure is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from errors import OutcomeUnknown
from execution.ports import BatchItem, Prepared
from models import OrderStatus
from simulator import Simulator
from tests.integration.test_executor_live import Live, close_live, make_live
from tests.pg import PgServer
from tests.unit.test_executor_shared_account import pair

D = Decimal


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with Simulator(seed=53, settle_delay_s=0.01) as sim:
        lv = await make_live(tmp_path, sim)
        try:
            yield lv
        finally:
            await close_live(lv)


async def rejections(live: Live) -> list[dict[str, object]]:
    return [e.detail for e in reversed(await live.repos.audit.tail(event="order_rejected"))]


async def unknowns(live: Live) -> list[dict[str, object]]:
    return [e.detail for e in reversed(await live.repos.audit.tail(event="order_outcome_unknown"))]


async def journal(live: Live, coids: list[str]) -> list[OrderStatus]:
    out = []
    for c in coids:
        row = await live.repos.orders.get(c)
        assert row is not None
        out.append(row.status)
    return out


async def test_an_open_breaker_refuses_every_order_of_the_batch_without_sending(
    live: Live,
) -> None:
    live.ex.breaker.force_open("test")
    reqs = [live.req(price=D("0.30")) for _ in range(3)]
    results = await live.ex.submit_many(reqs)
    assert [(r.status, r.reason) for r in results] == [
        (OrderStatus.REJECTED, "breaker: circuit breaker open")
    ] * 3
    assert [r.client_order_id for r in results] == [r.client_order_id for r in reqs]
    assert await rejections(live) == [{"source": "breaker", "reason": "circuit breaker open"}] * 3
    assert await journal(live, [r.client_order_id for r in reqs]) == [OrderStatus.REJECTED] * 3
    refused = live.metrics.registry.get_sample_value(
        "polyd_order_rejections_total", {"strategy": "test", "source": "breaker"}
    )
    assert refused == 3
    assert live.posts("/orders") == 0 and live.our_orders() == []


async def test_a_batch_the_venue_refuses_whole_rejects_each_order_and_counts_no_failure(
    live: Live,
) -> None:
    live.sim.faults.add(kind="status", route="POST /orders", status=400, count=1)
    reqs = [live.req(price=D("0.30")) for _ in range(2)]
    results = await live.ex.submit_many(reqs)
    assert [(r.status, r.reason) for r in results] == [
        (OrderStatus.REJECTED, "venue: simulated fault")
    ] * 2
    assert await rejections(live) == [{"source": "venue", "reason": "simulated fault"}] * 2
    assert live.ex.breaker.consecutive_failures == 0  # the venue answered: it is up
    assert live.posts("/orders") == 1 and live.our_orders() == []
    await live.assert_journal_matches_ledger()


async def test_a_batch_lost_to_a_5xx_is_not_resent_and_each_order_is_looked_up(
    live: Live,
) -> None:
    live.sim.faults.add(kind="status", route="POST /orders", status=500, count=1)
    reqs = [live.req(price=D("0.30")) for _ in range(2)]
    results = await live.ex.submit_many(reqs)
    # the venue does not hold them (the lookups said so): refused, with the error that ended it
    reason = "TransientError: could not run the execution"
    assert [(r.status, r.reason) for r in results] == [
        (OrderStatus.REJECTED, f"venue: {reason}")
    ] * 2
    assert await rejections(live) == [{"source": "venue", "reason": reason}] * 2
    assert live.ex.breaker.consecutive_failures == 1  # one failed call, not one per order
    assert live.posts("/orders") == 1 and live.our_orders() == []
    await live.assert_journal_matches_ledger()


async def test_a_batch_whose_answer_came_too_late_is_settled_by_lookup(live: Live) -> None:
    live.sim.faults.add(kind="late_response", route="POST /orders", seconds=2, count=1)
    reqs = [live.req(price=D("0.30")) for _ in range(2)]
    results = await live.ex.submit_many(reqs)
    assert [(r.status, r.reason) for r in results] == [
        (OrderStatus.LIVE, "looked up by order hash")
    ] * 2
    assert sorted(r.venue_order_id or "" for r in results) == sorted(
        o["id"] for o in live.our_orders()
    )
    assert live.ex.breaker.consecutive_failures == 1
    assert await rejections(live) == []
    # both went UNKNOWN first, each saying why (the client's read timed out)
    assert await unknowns(live) == [{"why": "no answer (SocketTimeoutError)"}] * 2
    await live.assert_journal_matches_ledger()
    sent = await live.assert_sent_as_journaled()
    assert sent.sends == {r.client_order_id: 1 for r in reqs}


async def test_one_refused_order_of_a_batch_is_rejected_and_the_others_rest(live: Live) -> None:
    # In the venue's post-only window (after a matching-engine restart) a batch is answered
    # order by order: the post-only ones rest, the others are refused with the venue's text.
    live.sim.faults.add(kind="engine_restart", seconds=0, post_only_s=30)
    reqs = [
        live.req(price=D("0.30"), post_only=True),
        live.req(price=D("0.31")),
        live.req(price=D("0.32"), post_only=True),
    ]
    results = await live.ex.submit_many(reqs)
    text = "post-only mode: only post-only orders and cancels are allowed"
    assert [(r.client_order_id, r.status) for r in results] == [
        (reqs[0].client_order_id, OrderStatus.LIVE),
        (reqs[1].client_order_id, OrderStatus.REJECTED),
        (reqs[2].client_order_id, OrderStatus.LIVE),
    ]
    assert results[1].reason == f"venue: {text}"
    assert await rejections(live) == [{"source": "venue", "reason": text}]
    assert live.ex.breaker.consecutive_failures == 0
    assert len(live.our_orders()) == 2
    await live.assert_journal_matches_ledger()


async def test_an_unreadable_answer_for_one_order_of_a_batch_is_settled_by_lookup(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No simulator route garbles one entry of a batch answer, so the real answer is read and
    # its second entry replaced by what `order_answer` makes of an unreadable one.
    real = live.broker.send_batch

    async def garbled(batch: Sequence[Prepared]) -> list[BatchItem]:
        items = await real(batch)
        items[1] = OutcomeUnknown("unreadable answer: test", order_id=batch[1].venue_order_id)
        return items

    monkeypatch.setattr(live.broker, "send_batch", garbled)
    reqs = [live.req(price=D("0.30")) for _ in range(3)]
    results = await live.ex.submit_many(reqs)
    assert [(r.status, r.reason) for r in results] == [
        (OrderStatus.LIVE, ""),
        (OrderStatus.LIVE, "looked up by order hash"),
        (OrderStatus.LIVE, ""),
    ]
    assert len(live.our_orders()) == 3
    assert await unknowns(live) == [{"why": "unreadable answer: test"}]  # the one, and why
    await live.assert_journal_matches_ledger()


async def test_a_batch_on_a_shared_account_sends_only_the_orders_the_account_has_room_for(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """Two daemons on one account capped at 3 open orders: east rests one, west batches three.
    Their PENDING rows are written at once; the one the account has no room for is refused
    (source risk, nothing sent, nothing reserved) and the other two are sent and rest."""
    async with Simulator(seed=41, settle_delay_s=0.01) as sim:
        p = await pair(tmp_path, sim, pg_server.fresh_url(), shared=True, risk_max_open_orders=3)
        try:
            assert (await p.east.ex.submit(p.east.req(price=D("0.20")))).status is OrderStatus.LIVE
            reqs = [p.west.req(price=D(price)) for price in ("0.30", "0.31", "0.32")]
            results = await p.west.ex.submit_many(reqs)
            assert [r.client_order_id for r in results] == [r.client_order_id for r in reqs]
            refused = [r for r in results if r.status is OrderStatus.REJECTED]
            assert len(refused) == 1 and refused[0].reason.startswith("risk: open orders")
            assert "every daemon counted" in refused[0].reason
            assert sorted(r.status for r in results if r not in refused) == [OrderStatus.LIVE] * 2
            row = await p.west.repos.orders.get(refused[0].client_order_id)
            assert row is not None and row.status is OrderStatus.REJECTED
            assert len(p.west.our_orders()) == 3  # on the account: east's one and west's two
            assert p.west.ex.positions.open_count == 2
        finally:
            await close_live(p.east)
            await close_live(p.west)
