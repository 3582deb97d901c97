"""Settlement: how an order's outcome is written down.

Every outcome an order can have (refused here, refused by the venue, acknowledged, or found at
the venue by a lookup, a listing or an order event) becomes a journal row or transition with its
audit entry, the counters that go with it, and the `OrderResult` the strategy gets. The executor
and the reconciler decide which outcome an order has; this module is the one place that records
it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import structlog

from errors import AccountHalted, AccountLimitReached, RefusalSource, StorageError
from execution.market_rules import fillable_size
from execution.ports import Ack, VenueOrder, VenueStatus, journal_status
from execution.tracker import OrderTracker, StorageFailed
from models import ZERO, OrderRequest, OrderResult, OrderStatus
from observability.metrics import Metrics
from storage import Repositories

log = structlog.get_logger("executor")
Answer = asyncio.Future[OrderResult]
"""What a strategy waiting in `Executor.submit` gets: set at the venue's ack, or at the end."""


def status_of(req: OrderRequest, status: VenueStatus, matched: Decimal) -> OrderStatus:
    """The journal status of `req` given the venue's status and matched size; the order is
    filled once it matched its size after the venue's rounding (`fillable_size`)."""
    return journal_status(
        status, size=fillable_size(req), matched=matched, order_type=req.order_type
    )


class Settlement:
    """Journal, audit and count an order's outcome, and return it as an `OrderResult`."""

    def __init__(
        self,
        *,
        repos: Repositories,
        tracker: OrderTracker,
        metrics: Metrics,
        on_storage_failure: StorageFailed,
    ) -> None:
        self.repos = repos
        self.tracker = tracker
        self.metrics = metrics
        self._storage_failed = on_storage_failure
        # Told of every acknowledged order the venue holds back (`delayed`): the reconciler
        # watches it until the feed or a lookup settles it.
        self.on_delayed: Callable[[OrderRequest, Ack], None] | None = None

    async def refused(
        self, req: OrderRequest, source: RefusalSource, reason: str, *, journal: bool = True
    ) -> OrderResult:
        """A local refusal: never sent; journaled as REJECTED with an audit entry, counted.

        If that write fails the refusal still stands (nothing was sent): trading halts and the
        strategy gets REJECTED "storage error: ..." rather than a `StorageError`.
        """
        self.metrics.order_rejections_total.labels(req.strategy, source).inc()
        self.metrics.orders_total.labels(req.strategy, req.side.value, "rejected").inc()
        log.info(
            "order_refused",
            client_order_id=req.client_order_id,
            token_id=req.token_id,
            source=source,
            reason=reason,
        )
        detail = {"source": source.value, "reason": reason}
        why = f"{source}: {reason}"
        try:
            if journal:
                await self.repos.orders.record(
                    req, status=OrderStatus.REJECTED, detail=why, audit=("order_refused", detail)
                )
            else:
                await self.repos.audit.append(
                    "order_refused",
                    strategy=req.strategy,
                    client_order_id=req.client_order_id,
                    **detail,
                )
        except StorageError:
            self._storage_failed("order_refusal_not_journaled", client_order_id=req.client_order_id)
            why = f"storage error: {why}"
        return OrderResult(
            client_order_id=req.client_order_id, status=OrderStatus.REJECTED, reason=why
        )

    async def over_account_cap(self, req: OrderRequest, e: AccountLimitReached) -> OrderResult:
        """The PENDING row was refused (and rolled back) by a per-account cap counted over every
        daemon on the account, or the account's halt: forget the admitted order and refuse it
        (source risk; halted for the halt)."""
        self.tracker.forget(req.client_order_id)
        source = RefusalSource.HALTED if isinstance(e, AccountHalted) else RefusalSource.RISK
        return await self.refused(req, source, str(e))

    async def rejected(self, req: OrderRequest, source: RefusalSource, reason: str) -> OrderResult:
        """A journaled order refused by the venue, held by the breaker, or never found."""
        self.metrics.order_rejections_total.labels(req.strategy, source).inc()
        await self.tracker.transition(
            req,
            OrderStatus.REJECTED,
            detail=f"{source}: {reason}",
            audit=("order_rejected", {"source": source.value, "reason": reason}),
        )
        log.info(
            "order_rejected",
            client_order_id=req.client_order_id,
            token_id=req.token_id,
            source=source,
            reason=reason,
        )
        return OrderResult(
            client_order_id=req.client_order_id,
            status=OrderStatus.REJECTED,
            reason=f"{source}: {reason}",
        )

    async def acknowledged(
        self, req: OrderRequest, ack: Ack, *, answer: Answer | None = None
    ) -> OrderResult:
        """The venue's answer to an accepted order.

        `delayed` is accepted and pending, neither filled nor refused: the row stays open (LIVE,
        detail DELAYED) with its full reservation, and is never re-sent.

        `answer`, if given, gets the result before the outcome row is written: the waiting
        strategy goes on while the row commits. The row is queued in the same loop turn, so any
        read of the database after that sees it (`Database.fetchall`), any write after it
        commits after it, and the tracker and open-order commitments already show it. Until it
        is durable the order stays marked as being sent, as during the POST.
        """
        status = status_of(req, ack.status, ack.size_matched)
        reason = ""
        if status is OrderStatus.CANCELED and ack.size_matched > 0:
            reason = "remainder killed (FAK)"
        delayed = ack.status is VenueStatus.DELAYED
        if delayed and self.on_delayed is not None:
            self.on_delayed(req, ack)
        # Every field is already checked (the request by its model, the answer by
        # `venue.clob.wire`): built without re-validating on the order path.
        result = OrderResult.model_construct(
            client_order_id=req.client_order_id,
            status=status,
            venue_order_id=ack.venue_order_id,
            filled_size=ack.size_matched,
            avg_price=ack.avg_price,
            reason=reason or ("delayed by the venue" if delayed else ""),
        )
        writing = self.tracker.transition(
            req,
            status,
            venue_order_id=ack.venue_order_id,
            size_matched=ack.size_matched,
            avg_price=ack.avg_price,
            detail=reason or ack.status.value,
            audit=(
                "order_acknowledged",
                {
                    "venue_status": ack.status.value,
                    "size_matched": str(ack.size_matched),
                    "trade_ids": list(ack.trade_ids),
                },
            ),
            mirror_first=answer is not None,
        )
        if answer is not None:
            # Handed over at the start of the next loop turn: by then awaiting `writing` below
            # has queued the row, so nothing the strategy does next comes before it.
            asyncio.get_running_loop().call_soon(_give, answer, result)
        await writing
        return result

    async def from_venue(self, req: OrderRequest, vo: VenueOrder, why: str) -> OrderResult:
        """What the venue says of an order (a lookup, its open-orders listing, an order event)."""
        status = status_of(req, vo.status, vo.size_matched)
        self.metrics.reconciled_total.labels(status.value).inc()
        await self.tracker.transition(
            req,
            status,
            venue_order_id=vo.venue_order_id,
            size_matched=vo.size_matched,
            detail=why,
            audit=(
                "order_reconciled",
                {"venue_status": vo.status.value, "size_matched": str(vo.size_matched), "why": why},
            ),
        )
        return OrderResult(
            client_order_id=req.client_order_id,
            status=status,
            venue_order_id=vo.venue_order_id,
            filled_size=vo.size_matched,
            reason=why,
        )

    async def filled(self, client_order_id: str) -> None:
        """A fill of a resting order was recorded: move it to PARTIALLY_FILLED or FILLED by the
        size its recorded fills add up to (the venue's order events say the rest)."""
        if self.tracker.status(client_order_id) not in (
            OrderStatus.LIVE,
            OrderStatus.PARTIALLY_FILLED,
        ):
            return
        req = await self.tracker.request_for(client_order_id)
        if req is None:
            return
        fills = await self.repos.fills.for_order(client_order_id)
        matched = sum((f.size for f in fills), ZERO)
        to = OrderStatus.FILLED if matched >= fillable_size(req) else OrderStatus.PARTIALLY_FILLED
        await self.tracker.transition(req, to, size_matched=min(matched, req.size), detail="fill")

    async def canceled(self, venue_order_ids: Sequence[str]) -> None:
        """The venue canceled these orders (a cancel or cancel-all answer)."""
        for vid in venue_order_ids:
            row = await self.repos.orders.get_by_venue_id(vid)
            if row is None or row.status.terminal or not self.repos.orders.owns(row):
                continue
            req = await self.tracker.request_for(row.client_order_id)
            if req is not None:
                await self.tracker.transition(
                    req, OrderStatus.CANCELED, detail="canceled", audit=("order_canceled", {})
                )


def _give(answer: Answer, result: OrderResult) -> None:
    if not answer.done():
        answer.set_result(result)


def hand_over(task: asyncio.Future[OrderResult], answer: Answer) -> None:
    """Done-callback of a submission: give its caller's `answer` what the task ended with,
    unless the caller was answered at the ack; then a failure after it (writing the outcome
    row) has nobody waiting for it and is logged here."""
    if answer.done():
        log_abandoned_failure(task)
    elif task.cancelled():
        answer.cancel()
    elif (e := task.exception()) is not None:
        answer.set_exception(e)
    else:
        answer.set_result(task.result())


def log_abandoned_failure(task: asyncio.Future[Any]) -> None:
    """Done-callback of a submission whose caller was cancelled: nobody else sees its error."""
    if task.cancelled():
        return
    e = task.exception()
    if e is not None:
        log.error("order_submission_failed", error=type(e).__name__, detail=str(e)[:200])
