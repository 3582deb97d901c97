"""The order tracker: the one in-memory mirror of the order journal.

One record per client order id the executor is working on: its request, journal status, venue
order id, whether a send of it is in progress in this process, and (while its outcome is unknown)
when to look it up next. Every journal transition the executor makes goes through
`OrderTracker.transition`, which writes the row and then moves the record and the position
book's open-order commitments together (an acknowledged order's record moves as its row is
queued: its strategy has the answer before the row is durable). A record leaves when its order
reaches a terminal status, so the tracker holds what is in flight or resting, never the history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from errors import IllegalTransition, StorageError
from execution.ports import Prepared
from execution.positions import OpenOrder, PositionBook
from models import OrderRequest, OrderStatus
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience import Backoff
from storage.journal import JournalRow, OrderJournal, StateWrite

log = structlog.get_logger("executor")

StorageFailed = Callable[..., None]
"""Called as `(event, **log_fields)` when a journal write failed (the executor halts)."""


@dataclass(slots=True)
class Lookup:
    """An order whose outcome is unknown: looked up by its hash at `due`, until the grace."""

    client_order_id: str
    venue_order_id: str
    since: float
    due: float
    backoff: Backoff


@dataclass(slots=True)
class TrackedOrder:
    """What the process knows of one order between admission and a terminal status."""

    request: OrderRequest | None = None
    status: OrderStatus | None = None  # None: admitted, not journaled yet
    venue_order_id: str | None = None
    sending: bool = False  # a send of it is in progress here: reconciliation leaves it alone
    lookup: Lookup | None = None  # outcome unknown: when to look it up next


class OrderTracker:
    """Client order id -> `TrackedOrder`, kept in step with the journal and the position book."""

    def __init__(
        self,
        *,
        journal: OrderJournal,
        positions: PositionBook,
        metrics: Metrics,
        on_storage_failure: StorageFailed,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        self.journal = journal
        self.positions = positions
        self.metrics = metrics
        self._storage_failed = on_storage_failure
        self._orders: dict[str, TrackedOrder] = {}
        # The records with a `lookup`, so the periodic sweep does not walk every resting order.
        self._lookups: dict[str, Lookup] = {}
        # Sends in progress, both ways, so the end of a send is O(1) however many orders rest.
        self._sending_by_venue: dict[str, str] = {}  # venue order id -> client order id
        self._sending_venue_of: dict[str, str] = {}  # client order id -> venue order id

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def __len__(self) -> int:
        return len(self._orders)

    def _record(self, client_order_id: str) -> TrackedOrder:
        rec = self._orders.get(client_order_id)
        if rec is None:
            rec = self._orders[client_order_id] = TrackedOrder()
        return rec

    # admission and journaling -------------------------------------------------------------
    def admit(self, prepared: Prepared) -> None:
        """`prepared` passed every check and was signed; it is about to be journaled."""
        rec = self._record(prepared.request.client_order_id)
        rec.request = prepared.request
        rec.venue_order_id = prepared.venue_order_id

    def forget(self, client_order_id: str) -> None:
        """Drop an admitted order that was never journaled (nothing of it left the process)."""
        self._orders.pop(client_order_id, None)
        self._lookups.pop(client_order_id, None)

    async def journal_pending(self, prepared: Prepared, *, also: StateWrite | None = None) -> None:
        """Write the PENDING row (with the signed order, and `also` in the same transaction)
        durably, then track it as open."""
        req = prepared.request
        # Fills from the user feed name the venue's order id: link them to this order's trace.
        self._tracing.remember_order(prepared.venue_order_id)
        try:
            with self._tracing.span("journal_pending"):
                await self.journal.record(
                    req,
                    status=OrderStatus.PENDING,
                    venue_order_id=prepared.venue_order_id,
                    payload_hash=prepared.payload_hash,
                    signed_order=prepared.signed_order,
                    audit=("order_journaled", {"venue_order_id": prepared.venue_order_id}),
                    also=also,
                )
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=req.client_order_id)
            raise
        self._record(req.client_order_id).status = OrderStatus.PENDING
        self.positions.add_open(req)
        self.metrics.open_orders.set(self.positions.open_count)

    def track_row(self, row: JournalRow) -> None:
        """Mirror a non-terminal journal row (start-up, reconciliation)."""
        rec = self._record(row.client_order_id)
        rec.status = row.status
        if row.venue_order_id is not None:
            rec.venue_order_id = row.venue_order_id
        self.positions.add_open_row(
            OpenOrder(
                row.client_order_id, row.strategy, row.token_id, row.side, row.price, row.remaining
            )
        )

    async def load(self) -> None:
        """Track every non-terminal journal row (start-up)."""
        for row in await self.journal.non_terminal():
            self.track_row(row)

    # reads ----------------------------------------------------------------------------------
    def status(self, client_order_id: str) -> OrderStatus | None:
        rec = self._orders.get(client_order_id)
        return rec.status if rec is not None else None

    async def request_for(self, client_order_id: str) -> OrderRequest | None:
        """The order's request: from memory, else rebuilt from its journal row."""
        rec = self._orders.get(client_order_id)
        if rec is not None and rec.request is not None:
            return rec.request
        row = await self.journal.get(client_order_id)
        if row is None:
            return None
        req = OrderRequest.model_construct(
            strategy=row.strategy,
            token_id=row.token_id,
            side=row.side,
            price=row.price,
            size=row.size,
            order_type=row.order_type,
            expiration=row.expiration,
            post_only=row.post_only,
            client_order_id=row.client_order_id,
            reason=row.reason,
        )
        if not row.status.terminal:  # a finished order is not tracked again
            self._record(client_order_id).request = req
        return req

    # sends in progress ------------------------------------------------------------------------
    def is_sending(self, client_order_id: str) -> bool:
        rec = self._orders.get(client_order_id)
        return rec is not None and rec.sending

    def set_sending(self, client_order_id: str, sending: bool) -> None:
        rec = self._orders.get(client_order_id)
        if rec is not None:
            rec.sending = sending
        if sending:
            if rec is not None and rec.venue_order_id is not None:
                self._sending_by_venue[rec.venue_order_id] = client_order_id
                self._sending_venue_of[client_order_id] = rec.venue_order_id
            return
        # The record may be gone already (a terminal outcome drops it): the reverse map says
        # which venue id this send registered.
        venue_id = self._sending_venue_of.pop(client_order_id, None)
        if venue_id is not None and self._sending_by_venue.get(venue_id) == client_order_id:
            del self._sending_by_venue[venue_id]

    def sending_unsettled(self, venue_order_id: str) -> bool:
        """True while a send of this order is in progress here and its journal row is not yet
        past PENDING (or not written yet): its submit path will settle it. Answered from
        memory, so an order's own feed event does not queue a journal read ahead of the
        submit path's outcome write."""
        coid = self._sending_by_venue.get(venue_order_id)
        return coid is not None and self.status(coid) in (None, OrderStatus.PENDING)

    # unknown outcomes ---------------------------------------------------------------------------
    def look_up_later(self, lookup: Lookup) -> Lookup:
        """Schedule lookups of an order whose outcome is unknown."""
        self._record(lookup.client_order_id).lookup = lookup
        self._lookups[lookup.client_order_id] = lookup
        return lookup

    def lookup_done(self, client_order_id: str) -> None:
        self._lookups.pop(client_order_id, None)
        rec = self._orders.get(client_order_id)
        if rec is not None:
            rec.lookup = None
            if rec.status is None and rec.request is None and not rec.sending:
                del self._orders[client_order_id]  # held only the lookup

    def lookups_due(self, now: float) -> list[Lookup]:
        return [u for u in self._lookups.values() if u.due <= now]

    @property
    def unknown_count(self) -> int:
        return len(self._lookups)

    # transitions ----------------------------------------------------------------------------------
    async def transition(
        self,
        req: OrderRequest,
        to: OrderStatus,
        *,
        venue_order_id: str | None = None,
        size_matched: Decimal | None = None,
        avg_price: Decimal | None = None,
        detail: str = "",
        audit: tuple[str, dict[str, Any]] | None = None,
        mirror_first: bool = False,
    ) -> bool:
        """Journal `req` moving to `to`, then mirror it; False if the life cycle forbids it.

        `mirror_first` (an acknowledged order, answered before its row is durable): the record
        moves as soon as the write is queued, so the strategy's next order is checked against
        it; if the journal then refuses the move (the row moved meanwhile), the record is set
        from the row as written."""
        coid = req.client_order_id
        rec = self._orders.get(coid)
        current = rec.status if rec is not None else None
        if current is not None and current != to and not current.can_become(to):
            log.info("order_transition_skipped", client_order_id=coid, current=current, to=to)
            return False
        try:
            with self._tracing.span("journal_outcome", status=to):
                writing = self.journal.transition(
                    coid,
                    to,
                    venue_order_id=venue_order_id,
                    size_matched=size_matched,
                    avg_price=avg_price,
                    detail=detail,
                    audit=audit,
                )
                if mirror_first:
                    # No await comes between this and the row joining the write queue (awaiting
                    # `writing` runs up to `Database.write` queueing it): nothing sees one
                    # without the other.
                    self._mirror(req, to, venue_order_id, size_matched)
                await writing
        except IllegalTransition:
            log.info("order_transition_refused", client_order_id=coid, to=to)
            if mirror_first:
                await self._resync(req)
            return False
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=coid, to=to)
            raise
        if not mirror_first:
            self._mirror(req, to, venue_order_id, size_matched)
        return True

    def _mirror(
        self,
        req: OrderRequest,
        to: OrderStatus,
        venue_order_id: str | None,
        size_matched: Decimal | None,
    ) -> None:
        coid = req.client_order_id
        if to.terminal:
            self._leave(coid)
            self.metrics.orders_total.labels(req.strategy, req.side.value, to.value.lower()).inc()
        else:
            rec = self._record(coid)
            rec.status = to
            if venue_order_id is not None:
                rec.venue_order_id = venue_order_id
            if size_matched is not None:
                self.positions.update_open(coid, req.size - size_matched)
        self.metrics.open_orders.set(self.positions.open_count)

    async def _resync(self, req: OrderRequest) -> None:
        """Set the record of `req` from its journal row (after a move mirrored too early)."""
        coid = req.client_order_id
        row = await self.journal.get(coid)
        if row is None or row.status.terminal:
            self._leave(coid)
        else:
            self.track_row(row)
        self.metrics.open_orders.set(self.positions.open_count)

    def _leave(self, client_order_id: str) -> None:
        """The order is done here: its record, any lookup and its open-order commitment go."""
        self._orders.pop(client_order_id, None)
        self._lookups.pop(client_order_id, None)
        self.positions.update_open(client_order_id, None)
