"""The reconciler: brings the journal back in line with the venue.

It runs at start-up, after every user-feed reconnect and periodically: every non-terminal journal
row is settled against the venue's open orders (one paginated read) or, for rows the venue no
longer lists, a lookup by order hash; a young journaled order the venue has never seen is re-sent
as the same signed bytes; fills are fetched since the last checkpoint; and UNKNOWN orders are
looked up on their backoff until the grace runs out. An order the venue answered `delayed` is
watched: if neither the user feed nor a reconcile has settled it once the market's taker delay
(`sd`) plus a margin has passed, it is looked up by its hash and our fills in its market are read
(`/data/trades?market=`), again every margin until it ends. How an answer becomes a journal
status is `Settlement`'s; this module decides what to ask and when. It also takes over an order
whose send ended without a definite answer (outcome unknown, or retries exhausted on venue
errors).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from errors import (
    DuplicateOrder,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    RefusalSource,
    TransientError,
    VenueUnavailable,
)
from execution.guard import TradingGuard
from execution.market_rules import MarketRules
from execution.ports import (
    Ack,
    Broker,
    Prepared,
    Restorable,
    StoredOrderMismatch,
    VenueOrder,
    VenueStatus,
)
from execution.risk import TradingState
from execution.settlement import Settlement, status_of
from execution.tracker import Lookup, OrderTracker
from models import Fill, OrderRequest, OrderResult, OrderStatus, OrderType, Side
from observability.metrics import Metrics
from resilience import Backoff, CircuitBreaker, Clock
from storage import Repositories
from storage.journal import JournalRow
from storage.keys import daemon_key

log = structlog.get_logger("executor")

FILLS_CURSOR = "venue:fills"
DELAYED_MAX_CHECKS = 20  # then the periodic reconcile alone settles it


@dataclass(slots=True)
class Delayed:
    """An order the venue holds back for its market's taker delay."""

    client_order_id: str
    venue_order_id: str
    token_id: str
    due: float
    checks: int = 0


class Sender(Protocol):
    """What the reconciler needs from the executor: its send path and its fill handler."""

    async def send_signed(self, prepared: Prepared) -> Ack:
        """Send a signed order, retried as the same bytes on 429/425/5xx only."""
        ...

    async def on_fill(self, fill: Fill) -> None:
        """Record a fill once and move the position."""
        ...


def age_s(created_at: str) -> float:
    """Seconds since a journal row's `created_at`; infinite if it cannot be read."""
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds()
    except ValueError:
        return float("inf")


class Reconciler:
    """Start-up and periodic reconciliation, re-sends, fill sync and the unknown sweep."""

    def __init__(
        self,
        *,
        sender: Sender,
        settle: Settlement,
        repos: Repositories,
        broker: Broker,
        tracker: OrderTracker,
        guard: TradingGuard,
        breaker: CircuitBreaker,
        metrics: Metrics,
        clock: Clock,
        unknown_grace_s: float,
        resend_window_s: float,
        rules: MarketRules | None = None,
        delayed_margin_s: float = 5.0,
    ) -> None:
        self.sender = sender
        self.settle = settle
        self.repos = repos
        self.broker = broker
        self.tracker = tracker
        self.guard = guard
        self.breaker = breaker
        self.metrics = metrics
        self.clock = clock
        self.unknown_grace_s = unknown_grace_s
        self.resend_window_s = resend_window_s
        self.rules = rules
        self.delayed_margin_s = delayed_margin_s
        self._delayed: dict[str, Delayed] = {}  # open delayed orders only (dropped once settled)
        self.last_run = 0.0  # clock.monotonic() at the end of the last pass
        self.reconciled = asyncio.Event()
        self._lock = asyncio.Lock()  # start-up, periodic and user-feed passes

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        return await self.broker.lookup(venue_order_id)

    # one pass -----------------------------------------------------------------------------
    async def reconcile(self, *, grace_s: float | None = None) -> dict[str, int]:
        """Settle every non-terminal journal row against the venue; see `Executor.reconcile`."""
        async with self._lock:
            return await self._reconcile(grace_s)

    async def _reconcile(self, grace_s: float | None) -> dict[str, int]:
        grace = self.unknown_grace_s if grace_s is None else grace_s
        window = min(self.resend_window_s, grace)
        counts = {
            "settled": 0,
            "unchanged": 0,
            "pending": 0,
            "resent": 0,
            "unknown_at_venue": 0,
            "fills": 0,
            "other_daemons": 0,
        }
        journal_ids: set[str] = set()
        venue_open = {vo.venue_order_id: vo for vo in await self.broker.open_orders()}
        for row in await self.repos.orders.non_terminal():
            journal_ids.add(row.venue_order_id or "")
            if self.tracker.is_sending(row.client_order_id):
                continue  # its own send settles it
            self.tracker.track_row(row)
            req = await self.tracker.request_for(row.client_order_id)
            if req is None:
                continue
            if row.venue_order_id is None:
                await self.settle.rejected(req, RefusalSource.VENUE, "never sent (no order hash)")
                counts["settled"] += 1
                continue
            vo = venue_open.get(row.venue_order_id)
            if vo is not None and _unchanged(req, row, vo):
                counts["unchanged"] += 1
                continue
            if vo is None:
                vo = await self.lookup(row.venue_order_id)
            if vo is not None:
                await self.settle.from_venue(req, vo, "reconciled")
                counts["settled"] += 1
            elif (
                row.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN)
                and age_s(row.created_at) < window
                and await self._resend(req, row) is not None
            ):
                self.tracker.lookup_done(row.client_order_id)
                counts["resent"] += 1
                counts["settled"] += 1
            elif age_s(row.created_at) >= grace:
                self.metrics.reconciled_total.labels("REJECTED").inc()
                if row.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN):
                    await self.settle.rejected(req, RefusalSource.VENUE, "not found at the venue")
                else:
                    await self.tracker.transition(
                        req, OrderStatus.CANCELED, detail="no longer known to the venue"
                    )
                counts["settled"] += 1
            else:
                if row.status is OrderStatus.PENDING:
                    await self.tracker.transition(req, OrderStatus.UNKNOWN, detail="reconciling")
                now = self.clock.monotonic()
                self.tracker.look_up_later(
                    Lookup(
                        row.client_order_id,
                        row.venue_order_id,
                        now - age_s(row.created_at),
                        now,
                        Backoff(0.1, max(1.0, grace / 4)),
                    )
                )
                counts["pending"] += 1
        for vo in venue_open.values():
            if vo.venue_order_id not in journal_ids:
                known = await self.repos.orders.get_by_venue_id(vo.venue_order_id)
                if known is not None and not self.repos.orders.owns(known):
                    # Another daemon on this account journaled it: that daemon settles it; no alarm.
                    counts["other_daemons"] += 1
                elif known is None:
                    counts["unknown_at_venue"] += 1
                    log.warning("venue_order_not_in_journal", venue_order_id=vo.venue_order_id)
                    await self.repos.audit.append(
                        "venue_order_not_in_journal", venue_order_id=vo.venue_order_id
                    )
        counts["fills"] = await self.sync_fills()
        self.last_run = self.clock.monotonic()
        self.reconciled.set()
        await self.repos.audit.append("reconciled", counts=counts)
        log.info("reconciled", **counts)
        return counts

    # re-send of a young journaled order ---------------------------------------------------------
    async def _resend(self, req: OrderRequest, row: JournalRow) -> OrderResult | None:
        """Re-send the journaled signed order of `row` (the venue has never seen its hash).

        Return the outcome if the venue answered, None if nothing was sent or the answer is
        still unknown (the row is then looked up until the grace, as before).
        """
        coid = req.client_order_id
        if not isinstance(self.broker, Restorable) or not row.venue_order_id:
            return None
        signed = await self.repos.orders.signed_order(coid)
        if signed is None or not row.payload_hash:
            return None  # journaled before signed orders were kept, or a paper order
        if req.order_type is OrderType.GTD and (req.expiration or 0) <= time.time():
            return None  # expired: the venue would refuse it; the grace settles it
        await self.guard.check()
        state = self.guard.state
        if (
            state is TradingState.HALTED
            or (state is TradingState.REDUCING and req.side is not Side.SELL)
            or self.guard.refuses_resting(req.order_type.rests) is not None
        ):
            log.info("order_resend_held", client_order_id=coid, trading_state=state.value)
            return None
        if not self.breaker.allow():
            return None
        try:
            prepared = self.broker.restore(
                req,
                venue_order_id=row.venue_order_id,
                payload_hash=row.payload_hash,
                signed_order=signed,
            )
        except StoredOrderMismatch as e:
            log.warning("order_resend_refused", client_order_id=coid, why=str(e))
            await self.repos.audit.append(
                "order_resend_refused", strategy=req.strategy, client_order_id=coid, why=str(e)
            )
            return None
        self.tracker.set_sending(coid, True)
        try:
            age = round(age_s(row.created_at), 3)
            log.warning(
                "order_resent",
                client_order_id=coid,
                venue_order_id=prepared.venue_order_id,
                payload_hash=prepared.payload_hash,
                age_s=age,
            )
            # Audited before it leaves, like the PENDING row: a crash mid-resend leaves a trace.
            await self.repos.audit.append(
                "order_resent",
                strategy=req.strategy,
                client_order_id=coid,
                venue_order_id=prepared.venue_order_id,
                payload_hash=prepared.payload_hash,
                age_s=age,
            )
            self.metrics.venue_retries_total.labels("post_order", "resend").inc()
            try:
                ack = await self.sender.send_signed(prepared)
            except DuplicateOrder as e:
                self.breaker.record_success()  # the venue answered: it holds the order
                return await self._look_up_resent(req, prepared.venue_order_id, e)
            except OrderRejected as e:
                self.breaker.record_success()
                return await self.settle.rejected(req, RefusalSource.VENUE, f"{e.reason} (re-sent)")
            except OutcomeUnknown as e:
                self.breaker.record_failure()
                return await self._look_up_resent(req, prepared.venue_order_id, e)
            except TransientError as e:
                self.guard.venue_failed(e)
                return await self._look_up_resent(req, prepared.venue_order_id, e)
            self.breaker.record_success()
            return await self.settle.acknowledged(req, ack)
        finally:
            self.tracker.set_sending(coid, False)

    async def _look_up_resent(
        self, req: OrderRequest, venue_order_id: str, why: Exception
    ) -> OrderResult | None:
        try:
            vo = await self.lookup(venue_order_id)
        except (TransientError, OutcomeUnknown):
            vo = None
        if vo is None:
            log.info(
                "order_resend_unsettled",
                client_order_id=req.client_order_id,
                error=type(why).__name__,
            )
            return None
        dup = isinstance(why, DuplicateOrder)
        return await self.settle.from_venue(
            req, vo, "re-sent: venue already had it" if dup else "re-sent, then looked up"
        )

    # fills ----------------------------------------------------------------------------------
    async def sync_fills(self) -> int:
        """Fetch our fills since the checkpoint (minus an overlap) and record them."""
        # Per daemon: each daemon's broker reads its own account's fills.
        source = daemon_key(FILLS_CURSOR, self.repos.daemon_id)
        cursor = await self.repos.cursors.get(source)
        after = max(0, int(cursor) - 60) if cursor else int(time.time()) - 86_400
        fills = await self.broker.fills_since(after)
        newest = int(cursor) if cursor else 0
        for f in sorted(fills, key=lambda f: f.ts):
            await self.sender.on_fill(f)
            newest = max(newest, int(f.ts.timestamp()))
        if newest:
            await self.repos.cursors.advance(source, value=str(newest))
        return len(fills)

    # orders whose outcome is unknown -------------------------------------------------------------
    async def outcome_unknown(self, prepared: Prepared, why: str) -> OrderResult:
        """The answer was lost: go UNKNOWN, look the order up once now, then in the background."""
        req = prepared.request
        self.metrics.outcome_unknown_total.inc()
        log.warning(
            "order_outcome_unknown",
            client_order_id=req.client_order_id,
            venue_order_id=prepared.venue_order_id,
            why=why,
        )
        await self.tracker.transition(
            req, OrderStatus.UNKNOWN, detail=why, audit=("order_outcome_unknown", {"why": why})
        )
        now = self.clock.monotonic()
        lookup = self.tracker.look_up_later(
            Lookup(
                req.client_order_id,
                prepared.venue_order_id,
                now,
                now,
                Backoff(0.05, max(1.0, self.unknown_grace_s / 4)),
            )
        )
        settled = await self.try_settle(lookup)
        if settled is not None:
            return settled
        return OrderResult(
            client_order_id=req.client_order_id,
            status=OrderStatus.UNKNOWN,
            venue_order_id=prepared.venue_order_id,
            reason="outcome unknown; reconciling by order hash",
        )

    async def after_errors(self, prepared: Prepared, e: TransientError) -> OrderResult:
        """Retries exhausted on definite venue errors. Look once before calling it rejected:
        a 5xx can come back from a venue that did take the order."""
        req = prepared.request
        if not isinstance(e, RateLimited | VenueUnavailable):
            try:
                vo = await self.lookup(prepared.venue_order_id)
            except (TransientError, OutcomeUnknown):
                return await self.outcome_unknown(prepared, f"lookup failed after {e}")
            if vo is not None:
                return await self.settle.from_venue(req, vo, "found after venue errors")
        return await self.settle.rejected(req, RefusalSource.VENUE, f"{type(e).__name__}: {e}")

    async def settle_unknowns(self) -> None:
        """Look up UNKNOWN orders whose next try is due, and delayed orders past their delay."""
        for u in self.tracker.lookups_due(self.clock.monotonic()):
            await self.try_settle(u)
        if self._delayed:
            await self.settle_delayed()

    # orders the venue holds back (taker delay) ----------------------------------------------------
    def watch_delayed(self, req: OrderRequest, ack: Ack) -> None:
        """`ack` said `delayed`: check on it after the market's delay plus the margin."""
        meta = self.rules.get(req.token_id) if self.rules is not None else None
        delay = meta.taker_delay_s if meta is not None else 0.0
        coid = req.client_order_id
        due = self.clock.monotonic() + delay + self.delayed_margin_s
        self._delayed[coid] = Delayed(coid, ack.venue_order_id, req.token_id, due)
        log.info("order_delayed", client_order_id=coid, venue_order_id=ack.venue_order_id)

    @property
    def delayed_count(self) -> int:
        return len(self._delayed)

    async def settle_delayed(self) -> None:
        """Settle delayed orders past their due time that no event has settled yet."""
        now = self.clock.monotonic()
        for d in list(self._delayed.values()):
            status = self.tracker.status(d.client_order_id)
            if status is None or status.terminal:
                del self._delayed[d.client_order_id]  # the feed (or a reconcile) settled it
                continue
            if d.due > now:
                continue
            d.checks += 1
            d.due = now + self.delayed_margin_s
            if d.checks > DELAYED_MAX_CHECKS:
                del self._delayed[d.client_order_id]
                log.warning("order_delayed_unsettled", client_order_id=d.client_order_id)
                continue
            req = await self.tracker.request_for(d.client_order_id)
            if req is None:
                del self._delayed[d.client_order_id]
                continue
            try:
                await self._fills_in_market(d.token_id)
                vo = await self.lookup(d.venue_order_id)
            except (TransientError, OutcomeUnknown) as e:
                log.info(
                    "order_delayed_lookup_failed",
                    client_order_id=d.client_order_id,
                    error=type(e).__name__,
                )
                continue
            if vo is not None and vo.status is not VenueStatus.DELAYED:
                await self.settle.from_venue(req, vo, "delayed order looked up")
                del self._delayed[d.client_order_id]

    async def _fills_in_market(self, token_id: str) -> None:
        """Record our fills in the token's market (by market, never by asset: a maker fill of
        ours on the other token is listed under the taker's asset). The rules' cache is bounded:
        a token it let go is fetched again for its market."""
        meta = await self.rules.ensure(token_id) if self.rules is not None else None
        if meta is None:
            return
        after = int(time.time()) - 3600
        for f in await self.broker.fills_since(after, market=meta.condition_id):
            await self.sender.on_fill(f)

    async def try_settle(self, u: Lookup) -> OrderResult | None:
        """Look `u` up once: settle it if the venue knows it, reject it past the grace,
        otherwise schedule the next try on its backoff."""
        req = await self.tracker.request_for(u.client_order_id)
        if req is None:
            self.tracker.lookup_done(u.client_order_id)
            return None
        try:
            vo = await self.lookup(u.venue_order_id)
        except (TransientError, OutcomeUnknown) as e:
            log.info(
                "order_lookup_failed", client_order_id=u.client_order_id, error=type(e).__name__
            )
            u.due = self.clock.monotonic() + u.backoff.next()
            return None
        if vo is not None:
            self.tracker.lookup_done(u.client_order_id)
            return await self.settle.from_venue(req, vo, "looked up by order hash")
        if self.clock.monotonic() - u.since >= self.unknown_grace_s:
            self.tracker.lookup_done(u.client_order_id)
            self.metrics.reconciled_total.labels("REJECTED").inc()
            return await self.settle.rejected(
                req, RefusalSource.VENUE, f"not found at the venue after {self.unknown_grace_s:g}s"
            )
        u.due = self.clock.monotonic() + u.backoff.next()
        return None


def _unchanged(req: OrderRequest, row: JournalRow, vo: VenueOrder) -> bool:
    """True if settling `row` from `vo` would write the status and size it already has."""
    status = status_of(req, vo.status, vo.size_matched)
    return status is row.status and vo.size_matched == row.size_matched
