"""The order executor: where money is lost or kept.

    market rules -> risk -> sign once -> journal PENDING (durable) -> rate limit -> breaker
                 -> broker.send (retried as the same signed payload on 429/425/5xx only)
                 -> journal the outcome + audit

`submit()` returns an `OrderResult` for every order-level outcome (refused with a reason, live,
filled, partially filled, canceled remainder, UNKNOWN being reconciled). It raises only on bugs
and on a `StorageError` once the order is admitted (the PENDING row or its outcome could not be
written), after which trading is halted; a refusal that cannot be journaled is still returned
(REJECTED, "storage error: ..."). From the PENDING write on, a submission belongs to the
executor: cancelling the caller does not abandon it, and `drain()` waits for it. A timeout or a
dropped connection never leads to a re-sign: the row goes UNKNOWN and the order is looked up by
its locally computed hash until the venue says what happened (DESIGN invariants 1, 2, 7). The
one re-send outside the 429/425/5xx retries is reconciliation's: a young journaled order the
venue has never seen is re-sent as the same signed bytes (the venue refuses a second order with
the same hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from errors import (
    IllegalTransition,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    StorageError,
    TransientError,
    VenueUnavailable,
)
from execution.market_rules import MarketRules, fillable_size
from execution.ports import (
    Ack,
    Broker,
    Prepared,
    Restorable,
    StoredOrderMismatch,
    VenueOrder,
    VenueStatus,
    journal_status,
)
from execution.positions import OpenOrder, PositionBook
from execution.risk import RiskEngine, TradingState
from models import (
    ZERO,
    Fill,
    OrderRequest,
    OrderResult,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TradeStatus,
)
from observability.health import CheckResult
from observability.metrics import BREAKER_STATE_VALUE, TRADING_STATE_VALUE, Metrics
from resilience import Backoff, BreakerState, CircuitBreaker, Clock, RateLimiter, RetryPolicy
from resilience.retry import retry_call
from storage import Repositories
from storage.repositories import JournalRow

log = structlog.get_logger("executor")
T = TypeVar("T")

BATCH_MAX = 15
STATE_KEY = "trading_state"
DAY_KEY = "daily_pnl_baseline"
FILLS_CURSOR = "venue:fills"


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    """Executor knobs taken from `Settings` by the orchestrator."""

    kill_switch_path: Path | None = None
    unknown_grace_s: float = 30.0
    # Reconciliation re-sends (same signed bytes) a journaled order the venue has never seen
    # while it is younger than this; kept below `unknown_grace_s`. 0 = never re-send.
    resend_window_s: float = 20.0
    reconcile_interval_s: float = 30.0
    cancel_on_shutdown: bool = False
    daily_loss_limit: Decimal = Decimal("100")
    daily_loss_warn_fraction: float = 0.8


@dataclass(slots=True)
class _Unknown:
    client_order_id: str
    venue_order_id: str
    since: float
    due: float
    backoff: Backoff


class _Duplicated(OutcomeUnknown):
    """The venue refused the order as a duplicate of its own hash: it holds that order."""


def _log_abandoned_failure(task: asyncio.Future[Any]) -> None:
    """Done-callback of a submission whose caller was cancelled: nobody else sees its error."""
    if task.cancelled():
        return
    e = task.exception()
    if e is not None:
        log.error("order_submission_failed", error=type(e).__name__, detail=str(e)[:200])


def _age_s(created_at: str) -> float:
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds()
    except ValueError:
        return float("inf")


class Executor:
    """Validates, journals, sends and reconciles orders. Implements OrderSink, PositionSource
    and TickSizeSink for the strategies."""

    def __init__(
        self,
        *,
        repos: Repositories,
        broker: Broker,
        rules: MarketRules,
        risk: RiskEngine,
        positions: PositionBook,
        metrics: Metrics,
        breaker: CircuitBreaker,
        limiter: RateLimiter,
        retry_policy: RetryPolicy,
        clock: Clock,
        config: ExecutorConfig,
    ) -> None:
        self.repos = repos
        self.broker = broker
        self.rules = rules
        self.risk = risk
        self.positions = positions
        self.metrics = metrics
        self.breaker = breaker
        self.limiter = limiter
        self.retry_policy = retry_policy
        self.clock = clock
        self.config = config
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self._requests: dict[str, OrderRequest] = {}
        self._status: dict[str, OrderStatus] = {}
        self._unknown: dict[str, _Unknown] = {}
        # Client order ids whose send is in progress in this process (journaled PENDING, answer
        # not settled yet): reconciliation leaves them to that send.
        self._sending: set[str] = set()
        self._reconcile_lock = asyncio.Lock()  # start-up, periodic and user-feed passes
        # Submissions from the PENDING write on, owned here so a cancelled caller cannot
        # abandon a send half-way (drain() waits for them through `_inflight`).
        self._submissions: set[asyncio.Task[Any]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._warned_day: str | None = None
        self._persisted_day: str | None = None
        self._last_reconcile = 0.0
        self._forced_open_s: float | None = None  # how long the last force_open lasts
        self.reconciled = asyncio.Event()
        bind = getattr(broker, "bind", None)
        if callable(bind):
            bind(on_fill=self.on_fill, on_order=self.on_order_event)

    # ------------------------------------------------------------------------------------
    # start-up
    # ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore trading state, positions, open orders and today's PnL baseline."""
        raw = await self.repos.state.get(STATE_KEY)
        if raw:
            saved = orjson.loads(raw)
            self.state = TradingState(saved.get("state", "ACTIVE"))
            self.state_reason = str(saved.get("reason", ""))
        self.positions.load(await self.repos.fills.positions(include_flat=True))
        for row in await self.repos.orders.non_terminal():
            self._track_row(row)
        day_raw = await self.repos.state.get(DAY_KEY)
        if day_raw:
            d = orjson.loads(day_raw)
            if d.get("day") == datetime.now(UTC).strftime("%Y-%m-%d"):
                self.positions.set_day_baseline(d["day"], Decimal(d["baseline"]))
                self._persisted_day = day_raw
        self._publish()
        log.info("executor_started", state=self.state, open_orders=self.positions.open_count)

    def _track_row(self, row: JournalRow) -> None:
        self._status[row.client_order_id] = row.status
        self.positions.add_open_row(
            OpenOrder(
                row.client_order_id,
                row.strategy,
                row.token_id,
                row.side,
                row.price,
                row.remaining,
            )
        )

    # ------------------------------------------------------------------------------------
    # protocols for strategies
    # ------------------------------------------------------------------------------------
    def position(self, token_id: str) -> Position:
        """PositionSource: our holding in `token_id` as journaled fills say."""
        return self.positions.position(token_id)

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """TickSizeSink: the market feed saw a `tick_size_change`."""
        self.rules.set_tick_size(token_id, tick_size)

    # ------------------------------------------------------------------------------------
    # trading state
    # ------------------------------------------------------------------------------------
    async def halt(self, reason: str) -> None:
        """Stop new orders (cancels still go); survives restarts until `resume()`."""
        await self._set_state(TradingState.HALTED, reason)

    async def reduce_only(self, reason: str) -> None:
        """Allow only position-reducing SELLs (and cancels)."""
        await self._set_state(TradingState.REDUCING, reason)

    async def resume(self, reason: str = "manual resume") -> None:
        """Return to ACTIVE. Refused while the kill-switch file exists."""
        if self._kill_switch_on():
            raise OrderRejected("kill-switch file is present; remove it first", source="halted")
        self.breaker.reset()
        await self._set_state(TradingState.ACTIVE, reason)

    async def _set_state(self, state: TradingState, reason: str) -> None:
        if state is self.state and reason == self.state_reason:
            return
        old = self.state
        body = orjson.dumps({"state": state.value, "reason": reason}).decode()
        await self.repos.state.set(
            STATE_KEY, body, audit=("trading_state", {"from": old, "to": state, "reason": reason})
        )
        self.state, self.state_reason = state, reason
        self.metrics.trading_state.set(TRADING_STATE_VALUE[state.value])
        log.warning("trading_state_changed", old=old, new=state, reason=reason)

    def _storage_failed(self, event: str, **kw: Any) -> None:
        """A database write failed: halt trading in memory (the state row cannot be written
        either). It stays halted until an operator resumes, once writes succeed again."""
        self.state, self.state_reason = TradingState.HALTED, "storage error"
        self.metrics.trading_state.set(TRADING_STATE_VALUE["HALTED"])
        log.error(event, **kw)

    def _kill_switch_on(self) -> bool:
        p = self.config.kill_switch_path
        return p is not None and p.exists()

    async def check_guards(self) -> None:
        """Kill switch and daily loss limit; called before each order and by `run()`."""
        if self._kill_switch_on() and self.state is not TradingState.HALTED:
            await self.halt("kill-switch file present")
        pnl = self.positions.daily_pnl()
        day, baseline = self.positions.day
        limit = self.config.daily_loss_limit
        if pnl <= -limit and self.state is not TradingState.HALTED:
            await self.halt(f"daily loss limit reached ({pnl} <= -{limit})")
        elif pnl <= -limit * Decimal(str(self.config.daily_loss_warn_fraction)) and (
            self._warned_day != day
        ):
            self._warned_day = day
            log.warning("daily_loss_warning", pnl=str(pnl), limit=str(limit))
            await self.repos.audit.append("daily_loss_warning", pnl=str(pnl), limit=str(limit))
        want = orjson.dumps({"day": day, "baseline": str(baseline)}).decode()
        if day and want != self._persisted_day:
            await self.repos.state.set(DAY_KEY, want)
            self._persisted_day = want

    # ------------------------------------------------------------------------------------
    # submission
    # ------------------------------------------------------------------------------------
    async def submit(self, request: OrderRequest) -> OrderResult:
        """OrderSink: validate, journal, send and return the outcome of `request`.

        From the PENDING write on, the submission runs as a task the executor owns: a caller
        cancelled meanwhile (its strategy stopping on SIGTERM) stops waiting, but the order is
        still sent and settled, and `drain()` waits for it (bugs-found B2).
        """
        self._enter()
        started = time.perf_counter()
        try:
            admitted = await self._admit(request)
        except BaseException:
            self._leave()
            raise
        if isinstance(admitted, OrderResult):
            self._leave()
            return admitted
        coid = request.client_order_id
        self._sending.add(coid)

        def done(_: asyncio.Future[OrderResult]) -> None:
            self._sending.discard(coid)
            self._leave()

        task = self._own(
            self._journal_and_send(admitted, started), name=f"executor:submit:{coid}", done=done
        )
        return await self._await_owned(task, coid)

    def _own(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str,
        done: Callable[[asyncio.Future[T]], None],
    ) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._submissions.add(task)
        task.add_done_callback(self._submissions.discard)
        task.add_done_callback(done)
        return task

    async def _await_owned(self, task: asyncio.Task[T], client_order_id: str) -> T:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                # The caller stopped waiting; the order goes on (and drain() waits for it).
                log.info("order_submission_continues", client_order_id=client_order_id)
                task.add_done_callback(_log_abandoned_failure)
            raise

    async def submit_many(self, requests: Sequence[OrderRequest]) -> list[OrderResult]:
        """Submit several orders ready at the same time as POST /orders batches of up to 15.

        Batches are never retried: an order whose batch failed in transit is looked up by hash.
        """
        self._enter()
        results: dict[str, OrderResult] = {}
        ready: list[Prepared] = []
        try:
            for req in requests:
                prepared_or_result = await self._admit(req)
                if isinstance(prepared_or_result, OrderResult):
                    results[req.client_order_id] = prepared_or_result
                else:
                    ready.append(prepared_or_result)
        except BaseException:
            # Admitted but not yet journaled: nothing of them exists outside this process.
            for p in ready:
                self._requests.pop(p.request.client_order_id, None)
            self._leave()
            raise
        if not ready:
            self._leave()
            return [results[r.client_order_id] for r in requests]
        sending = {p.request.client_order_id for p in ready}
        self._sending |= sending

        def done(_: asyncio.Future[list[OrderResult]]) -> None:
            self._sending.difference_update(sending)
            self._leave()

        first = ready[0].request.client_order_id
        task = self._own(
            self._journal_and_send_batches(ready), name=f"executor:submit_many:{first}", done=done
        )
        for r in await self._await_owned(task, first):
            results[r.client_order_id] = r
        return [results[r.client_order_id] for r in requests]

    async def _journal_and_send_batches(self, ready: list[Prepared]) -> list[OrderResult]:
        await asyncio.gather(*(self._journal_pending(p) for p in ready))
        out: list[OrderResult] = []
        for i in range(0, len(ready), BATCH_MAX):
            out.extend(await self._send_batch(ready[i : i + BATCH_MAX]))
        return out

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _admit(self, req: OrderRequest) -> Prepared | OrderResult:
        """Trading state, market rules and risk; then sign. A refusal is journaled and audited."""
        if req.client_order_id in self._requests or req.client_order_id in self._status:
            return await self._refuse(req, "rules", "duplicate client order id", journal=False)
        try:
            await self.check_guards()
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=req.client_order_id)
        if self.state is TradingState.HALTED:
            return await self._refuse(req, "halted", f"trading is halted: {self.state_reason}")
        meta = await self.rules.ensure(req.token_id)
        reason = self.rules.check(req, meta)
        if reason is not None:
            return await self._refuse(req, "rules", reason)
        reason = self.risk.check(req, self.positions, self.state)
        if reason is not None:
            source = "halted" if self.state is not TradingState.ACTIVE else "risk"
            return await self._refuse(req, source, reason)
        assert meta is not None
        prepared = await self.broker.prepare(req, meta)
        self._requests[req.client_order_id] = req
        return prepared

    async def _journal_pending(self, p: Prepared) -> None:
        req = p.request
        try:
            await self.repos.orders.record(
                req,
                status=OrderStatus.PENDING,
                venue_order_id=p.venue_order_id,
                payload_hash=p.payload_hash,
                signed_order=p.signed_order,
                audit=("order_journaled", {"venue_order_id": p.venue_order_id}),
            )
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=req.client_order_id)
            raise
        self._status[req.client_order_id] = OrderStatus.PENDING
        self.positions.add_open(req)
        self.metrics.open_orders.set(self.positions.open_count)

    async def _journal_and_send(self, prepared: Prepared, started: float) -> OrderResult:
        req = prepared.request
        await self._journal_pending(prepared)
        if not self.breaker.allow():
            return await self._settle_rejected(
                req, "breaker", f"circuit breaker {self.breaker.state}: venue failing"
            )
        try:
            ack = await self._send_with_retries(prepared)
        except OrderRejected as e:
            self.breaker.record_success()  # the venue answered; it is up
            return await self._settle_rejected(req, "venue", e.reason)
        except OutcomeUnknown as e:
            if isinstance(e, _Duplicated):
                self.breaker.record_success()  # the venue answered: it holds the order
            else:
                self.breaker.record_failure()
            return await self._outcome_unknown(prepared, str(e))
        except TransientError as e:
            self._transient_failure(e)
            return await self._after_transient(prepared, e)
        self.breaker.record_success()
        self.metrics.submit_seconds.labels(self.broker.name).observe(time.perf_counter() - started)
        return await self._settle_ack(req, ack)

    async def _send_with_retries(self, prepared: Prepared) -> Ack:
        attempt = 0

        async def once() -> Ack:
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                self.metrics.venue_retries_total.labels("post_order", "transient").inc()
            await self.limiter.acquire("post_order")
            try:
                return await self.broker.send(prepared)
            except OrderRejected as e:
                if "duplicated" in e.reason.lower():
                    # The venue already holds an order with this hash (an earlier attempt, or
                    # the send a crashed run made): it is ours; find out what it did.
                    raise _Duplicated(
                        "duplicate on re-send", order_id=prepared.venue_order_id
                    ) from e
                raise

        return await retry_call(
            self.retry_policy,
            once,
            retry_on=(TransientError,),
            clock=self.clock,
            log_event="order_send_retry",
            logger=log,
        )

    def _transient_failure(self, e: TransientError) -> None:
        self.breaker.record_failure()
        if isinstance(e, VenueUnavailable) and e.retry_after:
            self._forced_open_s = e.retry_after
            self.breaker.force_open("venue unavailable", for_s=e.retry_after)
        self.metrics.venue_errors_total.labels("post_order", type(e).__name__).inc()

    async def _send_batch(self, chunk: list[Prepared]) -> list[OrderResult]:
        if not self.breaker.allow():
            return [
                await self._settle_rejected(p.request, "breaker", "circuit breaker open")
                for p in chunk
            ]
        await self.limiter.acquire("post_orders")
        try:
            items = await self.broker.send_batch(chunk)
        except OrderRejected as e:
            self.breaker.record_success()
            return [await self._settle_rejected(p.request, "venue", e.reason) for p in chunk]
        except OutcomeUnknown as e:
            self.breaker.record_failure()
            return [await self._outcome_unknown(p, str(e)) for p in chunk]
        except TransientError as e:
            self.breaker.record_failure()
            return [await self._after_transient(p, e) for p in chunk]
        self.breaker.record_success()
        out: list[OrderResult] = []
        for p, item in zip(chunk, items, strict=True):
            if isinstance(item, OrderRejected):
                out.append(await self._settle_rejected(p.request, "venue", item.reason))
            elif isinstance(item, OutcomeUnknown):
                out.append(await self._outcome_unknown(p, str(item)))
            else:
                out.append(await self._settle_ack(p.request, item))
        return out

    # ------------------------------------------------------------------------------------
    # outcomes
    # ------------------------------------------------------------------------------------
    async def _refuse(
        self, req: OrderRequest, source: str, reason: str, *, journal: bool = True
    ) -> OrderResult:
        """A local refusal: never sent; journaled as REJECTED with an audit entry, counted.

        If that write fails the refusal still stands (nothing was sent): trading halts and the
        strategy gets REJECTED "storage error: ..." rather than a `StorageError` (B3).
        """
        self.metrics.order_rejections_total.labels(req.strategy, source).inc()
        self.metrics.orders_total.labels(req.strategy, req.side.value, "rejected").inc()
        log.info("order_refused", client_order_id=req.client_order_id, source=source, reason=reason)
        detail = {"source": source, "reason": reason}
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

    async def _settle_rejected(self, req: OrderRequest, source: str, reason: str) -> OrderResult:
        self.metrics.order_rejections_total.labels(req.strategy, source).inc()
        await self._transition(
            req,
            OrderStatus.REJECTED,
            detail=f"{source}: {reason}",
            audit=("order_rejected", {"source": source, "reason": reason}),
        )
        log.info(
            "order_rejected", client_order_id=req.client_order_id, source=source, reason=reason
        )
        return OrderResult(
            client_order_id=req.client_order_id,
            status=OrderStatus.REJECTED,
            reason=f"{source}: {reason}",
        )

    async def _settle_ack(self, req: OrderRequest, ack: Ack) -> OrderResult:
        status = self._status_of(req, ack.status, ack.size_matched)
        reason = ""
        if status is OrderStatus.CANCELED and ack.size_matched > 0:
            reason = "remainder killed (FAK)"
        await self._transition(
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
        )
        return self._result(
            req, status, ack.venue_order_id, ack.size_matched, ack.avg_price, reason
        )

    def _result(
        self,
        req: OrderRequest,
        status: OrderStatus,
        venue_order_id: str | None,
        matched: Decimal,
        avg: Decimal | None,
        reason: str = "",
    ) -> OrderResult:
        return OrderResult(
            client_order_id=req.client_order_id,
            status=status,
            venue_order_id=venue_order_id,
            filled_size=matched,
            avg_price=avg,
            reason=reason,
        )

    async def _outcome_unknown(self, prepared: Prepared, why: str) -> OrderResult:
        """The answer was lost: go UNKNOWN, look the order up once now, then in the background."""
        req = prepared.request
        self.metrics.outcome_unknown_total.inc()
        log.warning(
            "order_outcome_unknown",
            client_order_id=req.client_order_id,
            venue_order_id=prepared.venue_order_id,
            why=why,
        )
        await self._transition(
            req, OrderStatus.UNKNOWN, detail=why, audit=("order_outcome_unknown", {"why": why})
        )
        now = self.clock.monotonic()
        self._unknown[req.client_order_id] = _Unknown(
            req.client_order_id,
            prepared.venue_order_id,
            now,
            now,
            Backoff(0.05, max(1.0, self.config.unknown_grace_s / 4)),
        )
        settled = await self._try_settle_unknown(self._unknown[req.client_order_id])
        if settled is not None:
            return settled
        return OrderResult(
            client_order_id=req.client_order_id,
            status=OrderStatus.UNKNOWN,
            venue_order_id=prepared.venue_order_id,
            reason="outcome unknown; reconciling by order hash",
        )

    async def _after_transient(self, prepared: Prepared, e: TransientError) -> OrderResult:
        """Retries exhausted on definite venue errors. Look once before calling it rejected:
        a 5xx can come back from a venue that did take the order."""
        req = prepared.request
        if not isinstance(e, RateLimited | VenueUnavailable):
            try:
                vo = await self._lookup(prepared.venue_order_id)
            except (TransientError, OutcomeUnknown):
                return await self._outcome_unknown(prepared, f"lookup failed after {e}")
            if vo is not None:
                return await self._settle_from_venue(req, vo, "found after venue errors")
        return await self._settle_rejected(req, "venue", f"{type(e).__name__}: {e}")

    async def _lookup(self, venue_order_id: str) -> VenueOrder | None:
        await self.limiter.acquire("data_orders")
        return await self.broker.lookup(venue_order_id)

    async def _settle_from_venue(self, req: OrderRequest, vo: VenueOrder, why: str) -> OrderResult:
        status = self._status_of(req, vo.status, vo.size_matched)
        self.metrics.reconciled_total.labels(status.value).inc()
        await self._transition(
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
        return self._result(req, status, vo.venue_order_id, vo.size_matched, None, why)

    async def _try_settle_unknown(self, u: _Unknown) -> OrderResult | None:
        req = await self._request_for(u.client_order_id)
        if req is None:
            self._unknown.pop(u.client_order_id, None)
            return None
        try:
            vo = await self._lookup(u.venue_order_id)
        except (TransientError, OutcomeUnknown) as e:
            log.info(
                "order_lookup_failed", client_order_id=u.client_order_id, error=type(e).__name__
            )
            u.due = self.clock.monotonic() + u.backoff.next()
            return None
        if vo is not None:
            self._unknown.pop(u.client_order_id, None)
            return await self._settle_from_venue(req, vo, "looked up by order hash")
        if self.clock.monotonic() - u.since >= self.config.unknown_grace_s:
            self._unknown.pop(u.client_order_id, None)
            self.metrics.reconciled_total.labels("REJECTED").inc()
            return await self._settle_rejected(
                req, "venue", f"not found at the venue after {self.config.unknown_grace_s:g}s"
            )
        u.due = self.clock.monotonic() + u.backoff.next()
        return None

    async def _request_for(self, client_order_id: str) -> OrderRequest | None:
        req = self._requests.get(client_order_id)
        if req is not None:
            return req
        row = await self.repos.orders.get(client_order_id)
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
        self._requests[client_order_id] = req
        return req

    async def _transition(
        self,
        req: OrderRequest,
        to: OrderStatus,
        *,
        venue_order_id: str | None = None,
        size_matched: Decimal | None = None,
        avg_price: Decimal | None = None,
        detail: str = "",
        audit: tuple[str, dict[str, Any]] | None = None,
    ) -> bool:
        coid = req.client_order_id
        current = self._status.get(coid)
        if current is not None and current != to and not current.can_become(to):
            log.info("order_transition_skipped", client_order_id=coid, current=current, to=to)
            return False
        try:
            await self.repos.orders.transition(
                coid,
                to,
                venue_order_id=venue_order_id,
                size_matched=size_matched,
                avg_price=avg_price,
                detail=detail,
                audit=audit,
            )
        except IllegalTransition:
            log.info("order_transition_refused", client_order_id=coid, to=to)
            return False
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=coid, to=to)
            raise
        if to.terminal:
            self._status.pop(coid, None)
            self._requests.pop(coid, None)
            self._unknown.pop(coid, None)
            self.positions.update_open(coid, None)
            self.metrics.orders_total.labels(req.strategy, req.side.value, to.value.lower()).inc()
        else:
            self._status[coid] = to
            if size_matched is not None:
                self.positions.update_open(coid, req.size - size_matched)
        self.metrics.open_orders.set(self.positions.open_count)
        return True

    # ------------------------------------------------------------------------------------
    # venue events (user feed, paper broker, REST reconcile)
    # ------------------------------------------------------------------------------------
    async def on_fill(self, fill: Fill) -> None:
        """Record a fill once (idempotent by trade id) and move the position."""
        row = None
        if fill.client_order_id is None:
            row = await self.repos.orders.get_by_venue_id(fill.venue_order_id)
            if row is not None:
                fill = fill.model_copy(update={"client_order_id": row.client_order_id})
        pos = await self.repos.fills.record(fill)
        if pos is None:
            return
        self.positions.set_position(pos)
        if fill.status is TradeStatus.FAILED:
            # The trade never settled: the repository rebuilt the position without it (and
            # audited `fill_failed`) in one transaction. The order's own status is left to the
            # venue's order events.
            log.warning(
                "fill_failed_reversed",
                client_order_id=fill.client_order_id,
                trade_id=fill.trade_id,
                side=fill.side,
                size=str(fill.size),
                position=str(pos.size),
            )
            self._publish()
            return
        self.metrics.fills_total.labels(fill.side.value, fill.role.value.lower()).inc()
        log.info(
            "fill_recorded",
            client_order_id=fill.client_order_id,
            trade_id=fill.trade_id,
            side=fill.side,
            price=str(fill.price),
            size=str(fill.size),
        )
        coid = fill.client_order_id
        if coid is not None and self._status.get(coid) in (
            OrderStatus.LIVE,
            OrderStatus.PARTIALLY_FILLED,
        ):
            req = await self._request_for(coid)
            if req is not None:
                matched = sum((f.size for f in await self.repos.fills.for_order(coid)), ZERO)
                fillable = fillable_size(req)
                to = OrderStatus.FILLED if matched >= fillable else OrderStatus.PARTIALLY_FILLED
                await self._transition(req, to, size_matched=min(matched, req.size), detail="fill")
        self._publish()

    async def on_order_event(self, vo: VenueOrder) -> None:
        """Apply an order update (user WS `order` event, paper broker, REST listing)."""
        row = await self.repos.orders.get_by_venue_id(vo.venue_order_id)
        if row is None or row.status.terminal:
            return
        req = await self._request_for(row.client_order_id)
        if req is None:
            return
        if row.status is OrderStatus.PENDING:
            # The submit path is still waiting for its ack and will settle the row (or start-up
            # reconciliation will, if this process died meanwhile).
            return
        self._unknown.pop(row.client_order_id, None)
        await self._settle_from_venue(req, vo, "order event")

    # ------------------------------------------------------------------------------------
    # cancels (always allowed: breaker and halt do not apply)
    # ------------------------------------------------------------------------------------
    async def cancel(self, client_order_id: str) -> bool:
        """Cancel one resting order; return True if the venue canceled it."""
        row = await self.repos.orders.get(client_order_id)
        if row is None or row.venue_order_id is None or row.status.terminal:
            return False
        await self.limiter.acquire("cancel_order")
        res = await self.broker.cancel([row.venue_order_id])
        await self._apply_cancels(res.canceled)
        return row.venue_order_id in res.canceled

    async def cancel_all(self) -> int:
        """Cancel every resting order at the venue; return how many were canceled."""
        await self.limiter.acquire("cancel_all")
        res = await self.broker.cancel_all()
        await self._apply_cancels(res.canceled)
        await self.repos.audit.append("cancel_all", canceled=len(res.canceled))
        return len(res.canceled)

    async def _apply_cancels(self, venue_ids: Sequence[str]) -> None:
        for vid in venue_ids:
            row = await self.repos.orders.get_by_venue_id(vid)
            if row is None or row.status.terminal:
                continue
            req = await self._request_for(row.client_order_id)
            if req is not None:
                await self._transition(
                    req, OrderStatus.CANCELED, detail="canceled", audit=("order_canceled", {})
                )

    # ------------------------------------------------------------------------------------
    # reconciliation
    # ------------------------------------------------------------------------------------
    async def reconcile(self, *, grace_s: float | None = None) -> dict[str, int]:
        """Settle every non-terminal journal row against the venue, compare open orders and
        fetch fills since the last checkpoint. Run at start-up and after every reconnect.

        The venue's open orders are fetched once; a row the venue lists there is settled from
        that list (and not written at all when nothing changed), and only rows it no longer lists
        are looked up one by one. So a pass costs one paginated read plus one lookup per order
        that finished unseen, not one lookup per resting order. One pass runs at a time.

        A PENDING/UNKNOWN row the venue has never seen is re-sent (the same signed bytes, never
        re-signed) while younger than the resend window: the crashed run may have died before
        sending it, and the venue refuses a second order with the same hash. Rows whose send is
        still in progress in this process are left to it.
        """
        async with self._reconcile_lock:
            return await self._reconcile(grace_s)

    async def _reconcile(self, grace_s: float | None) -> dict[str, int]:
        grace = self.config.unknown_grace_s if grace_s is None else grace_s
        window = min(self.config.resend_window_s, grace)
        counts = {
            "settled": 0,
            "unchanged": 0,
            "pending": 0,
            "resent": 0,
            "unknown_at_venue": 0,
            "fills": 0,
        }
        journal_ids: set[str] = set()
        await self.limiter.acquire("data_orders")
        venue_open = {vo.venue_order_id: vo for vo in await self.broker.open_orders()}
        for row in await self.repos.orders.non_terminal():
            journal_ids.add(row.venue_order_id or "")
            if row.client_order_id in self._sending:
                continue  # its own send settles it
            self._track_row(row)
            req = await self._request_for(row.client_order_id)
            if req is None:
                continue
            if row.venue_order_id is None:
                await self._settle_rejected(req, "venue", "never sent (no order hash)")
                counts["settled"] += 1
                continue
            vo = venue_open.get(row.venue_order_id)
            if vo is not None and self._unchanged(req, row, vo):
                counts["unchanged"] += 1
                continue
            if vo is None:
                vo = await self._lookup(row.venue_order_id)
            if vo is not None:
                await self._settle_from_venue(req, vo, "reconciled")
                counts["settled"] += 1
            elif (
                row.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN)
                and _age_s(row.created_at) < window
                and await self._resend(req, row) is not None
            ):
                self._unknown.pop(row.client_order_id, None)
                counts["resent"] += 1
                counts["settled"] += 1
            elif _age_s(row.created_at) >= grace:
                self.metrics.reconciled_total.labels("REJECTED").inc()
                if row.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN):
                    await self._settle_rejected(req, "venue", "not found at the venue")
                else:
                    await self._transition(
                        req, OrderStatus.CANCELED, detail="no longer known to the venue"
                    )
                counts["settled"] += 1
            else:
                if row.status is OrderStatus.PENDING:
                    await self._transition(req, OrderStatus.UNKNOWN, detail="reconciling")
                now = self.clock.monotonic()
                self._unknown[row.client_order_id] = _Unknown(
                    row.client_order_id,
                    row.venue_order_id,
                    now - _age_s(row.created_at),
                    now,
                    Backoff(0.1, max(1.0, grace / 4)),
                )
                counts["pending"] += 1
        for vo in venue_open.values():
            if vo.venue_order_id not in journal_ids:
                known = await self.repos.orders.get_by_venue_id(vo.venue_order_id)
                if known is None:
                    counts["unknown_at_venue"] += 1
                    log.warning("venue_order_not_in_journal", venue_order_id=vo.venue_order_id)
                    await self.repos.audit.append(
                        "venue_order_not_in_journal", venue_order_id=vo.venue_order_id
                    )
        counts["fills"] = await self.sync_fills()
        self._last_reconcile = self.clock.monotonic()
        self.reconciled.set()
        await self.repos.audit.append("reconciled", counts=counts)
        log.info("reconciled", **counts)
        self._publish()
        return counts

    @staticmethod
    def _status_of(req: OrderRequest, status: VenueStatus, matched: Decimal) -> OrderStatus:
        """The journal status of `req` given the venue's status and matched size; the order is
        filled once it matched its size after the venue's rounding (`fillable_size`)."""
        return journal_status(
            status, size=fillable_size(req), matched=matched, order_type=req.order_type
        )

    def _unchanged(self, req: OrderRequest, row: JournalRow, vo: VenueOrder) -> bool:
        """True if settling `row` from `vo` would write the status and size it already has."""
        status = self._status_of(req, vo.status, vo.size_matched)
        return status is row.status and vo.size_matched == row.size_matched

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
        await self.check_guards()
        if self.state is TradingState.HALTED or (
            self.state is TradingState.REDUCING and req.side is not Side.SELL
        ):
            log.info("order_resend_held", client_order_id=coid, trading_state=self.state.value)
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
        self._sending.add(coid)
        try:
            age = round(_age_s(row.created_at), 3)
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
                ack = await self._send_with_retries(prepared)
            except OrderRejected as e:
                self.breaker.record_success()
                return await self._settle_rejected(req, "venue", f"{e.reason} (re-sent)")
            except OutcomeUnknown as e:
                if isinstance(e, _Duplicated):
                    self.breaker.record_success()
                else:
                    self.breaker.record_failure()
                return await self._look_up_resent(req, prepared.venue_order_id, e)
            except TransientError as e:
                self._transient_failure(e)
                return await self._look_up_resent(req, prepared.venue_order_id, e)
            self.breaker.record_success()
            return await self._settle_ack(req, ack)
        finally:
            self._sending.discard(coid)

    async def _look_up_resent(
        self, req: OrderRequest, venue_order_id: str, why: Exception
    ) -> OrderResult | None:
        try:
            vo = await self._lookup(venue_order_id)
        except (TransientError, OutcomeUnknown):
            vo = None
        if vo is None:
            log.info(
                "order_resend_unsettled",
                client_order_id=req.client_order_id,
                error=type(why).__name__,
            )
            return None
        dup = isinstance(why, _Duplicated)
        return await self._settle_from_venue(
            req, vo, "re-sent: venue already had it" if dup else "re-sent, then looked up"
        )

    async def sync_fills(self) -> int:
        """Fetch our fills since the checkpoint (minus an overlap) and record them."""
        cursor = await self.repos.cursors.get(FILLS_CURSOR)
        after = max(0, int(cursor) - 60) if cursor else int(time.time()) - 86_400
        await self.limiter.acquire("data_trades")
        fills = await self.broker.fills_since(after)
        newest = int(cursor) if cursor else 0
        for f in sorted(fills, key=lambda f: f.ts):
            await self.on_fill(f)
            newest = max(newest, int(f.ts.timestamp()))
        if newest:
            await self.repos.cursors.advance(FILLS_CURSOR, value=str(newest))
        return len(fills)

    async def settle_unknowns(self) -> None:
        """Look up UNKNOWN orders whose next try is due."""
        now = self.clock.monotonic()
        for u in [u for u in self._unknown.values() if u.due <= now]:
            await self._try_settle_unknown(u)

    # ------------------------------------------------------------------------------------
    # service loop, drain, health
    # ------------------------------------------------------------------------------------
    async def run(self, *, tick_s: float = 0.2, periodic_reconcile: bool = True) -> None:
        """Guards, UNKNOWN lookups, periodic reconcile and metrics, until cancelled."""
        while True:
            await asyncio.sleep(tick_s)
            try:
                await self.check_guards()
                await self.settle_unknowns()
                if periodic_reconcile and (
                    self.clock.monotonic() - self._last_reconcile
                    >= self.config.reconcile_interval_s
                ):
                    await self.reconcile()
                self._publish()
            except StorageError as e:
                # A failed write halts trading; the daemon stays up (HALTED, /health 503 with
                # the database check failing) until writes succeed and an operator resumes.
                self.metrics.venue_errors_total.labels("executor_loop", "StorageError").inc()
                self._storage_failed("executor_loop_storage_failed", error=str(e)[:200])
            except Exception:  # the task boundary: log, count, keep guarding
                self.metrics.venue_errors_total.labels("executor_loop", "error").inc()
                log.exception("executor_loop_failed")

    async def drain(self, wait_s: float | None = None) -> bool:
        """Wait up to `wait_s` for in-flight submissions, then cancel resting orders if
        `cancel_on_shutdown`; return True if every submission finished in time.

        The cancel runs even when the wait timed out: a submission still in flight at that
        point may land one more order after it, which the venue cancels once exchange heartbeats
        stop (the daemon is exiting). The caller bounds the whole call as well.
        """
        drained = True
        if wait_s is None:
            await self._idle.wait()
        elif not await self.wait_idle(wait_s):
            drained = False
            log.warning("drain_timed_out", in_flight=self._inflight, waited_s=wait_s)
            await self.repos.audit.append("drain_timed_out", in_flight=self._inflight)
        if self.config.cancel_on_shutdown:
            n = await self.cancel_all()
            log.info("canceled_on_shutdown", canceled=n)
        return drained

    def health(self) -> CheckResult:
        """The `executor` check: ok while ACTIVE and the breaker is not OPEN.

        A breaker whose open period is over reads `half_open` and ok: it is waiting for the next
        order to probe it, and without orders it would otherwise keep `/health` at 503 (and
        uptime monitors alerting) for as long as nothing trades. It is not probed with a read:
        a read proves nothing about `POST /order` in the venue's cancel-only or post-only modes.
        """
        breaker = self.breaker_state()
        ok = self.state is TradingState.ACTIVE and breaker is not BreakerState.OPEN
        return CheckResult(
            ok,
            {
                "trading_state": self.state.value,
                "reason": self.state_reason,
                "breaker": breaker.value,
                "open_orders": self.positions.open_count,
                "unknown_orders": len(self._unknown),
                "in_flight": self._inflight,
            },
        )

    def breaker_state(self) -> BreakerState:
        """The breaker's state, with an OPEN breaker whose wait is over read as HALF_OPEN.

        `CircuitBreaker.state` stays OPEN until the next `allow()` (an order) moves it; asking
        `allow()` here would use up the probe slot the next order needs.
        """
        b = self.breaker
        if b.state is not BreakerState.OPEN or b.opened_at is None:
            return b.state
        # Opened on failures: `reset_timeout_s`; forced by `_transient_failure`: Retry-After.
        open_for = b.reset_timeout_s if b.reason == "failures" else self._forced_open_s
        if open_for is not None and self.clock.monotonic() - b.opened_at >= open_for:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def on_breaker_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """Hook for `CircuitBreaker(on_state_change=...)`."""
        self.metrics.breaker_state.labels(name).set(BREAKER_STATE_VALUE[new.name])
        if new is BreakerState.OPEN:
            self.metrics.breaker_opened_total.labels(name).inc()
        log.warning("breaker_state_changed", breaker=name, old=old.value, new=new.value)

    def _publish(self) -> None:
        m = self.metrics
        m.trading_state.set(TRADING_STATE_VALUE[self.state.value])
        # As /health reads it: an OPEN breaker past its wait is half-open (waiting for a probe).
        m.breaker_state.labels(self.breaker.name).set(
            BREAKER_STATE_VALUE[self.breaker_state().name]
        )
        m.open_orders.set(self.positions.open_count)
        m.exposure_usd.set(float(self.positions.exposure()))
        m.pnl_realized_usd.set(float(self.positions.realized()))
        m.pnl_unrealized_usd.set(float(self.positions.unrealized()))
        m.daily_pnl_usd.set(float(self.positions.daily_pnl()))

    async def wait_idle(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
                return True
        return False
