"""The order executor: where money is lost or kept.

    market rules -> risk -> sign once -> journal PENDING (durable) -> breaker
                 -> broker.send (retried as the same signed payload on 429/425/5xx only)
                 -> answer the caller at the ack; journal the outcome + audit (durable)

The broker keeps to the venue's rate limits itself (the live broker waits on its own buckets,
the paper broker on none); the executor names no endpoint.

`submit()` returns an `OrderResult` for every order-level outcome (refused with a reason, live,
filled, partially filled, canceled remainder, UNKNOWN being reconciled). An acknowledged order
is answered as soon as the venue's answer is in: its outcome row is queued first (every later
read sees it, every later write commits after it) and made durable by the submission's task. It
raises only on bugs and on a `StorageError` once the order is admitted (the PENDING row, or any
other outcome, could not be written), after which trading is halted; a refusal that cannot be
journaled is still returned (REJECTED, "storage error: ..."). From the PENDING write on, a
submission belongs to the executor: cancelling the caller does not abandon it, and `drain()`
waits for it, its outcome row included. A timeout or a dropped connection never leads to a
re-sign: the row goes UNKNOWN and the order is looked up by its locally computed hash until the
venue says what happened. The one re-send outside the 429/425/5xx retries is reconciliation's:
a young journaled order the venue has never seen is re-sent as the same signed bytes (the venue
refuses a second order with the same hash).

Its parts live in `execution/`: `tracker` (the in-memory mirror of the journal), `guard`
(trading state, kill switch, daily loss limit, the breaker as health reads it), `settlement`
(an outcome written as a journal row, audit entry, counters and `OrderResult`), `reconciler`
(reconcile passes, same-bytes re-sends, fill sync, unknown outcomes) and `batch` (`submit_many`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import structlog

from errors import (
    AccountLimitReached,
    DuplicateOrder,
    OrderRejected,
    OutcomeUnknown,
    RefusalSource,
    StorageError,
    TransientError,
)
from execution.batch import BatchSender
from execution.funds import count_fill, fill_log
from execution.guard import TradingGuard
from execution.market_rules import MarketRules
from execution.ports import Ack, Broker, Prepared, VenueOrder
from execution.positions import PositionBook
from execution.reconciler import Reconciler
from execution.repricing import reprice_once
from execution.risk import RiskEngine, TradingState
from execution.settlement import Answer, Settlement, hand_over, log_abandoned_failure
from execution.tracker import OrderTracker
from models import Fill, OrderRequest, OrderResult, OrderStatus, Position, TradeStatus
from observability.health import CheckResult
from observability.metrics import BREAKER_STATE_VALUE, TRADING_STATE_VALUE, Metrics
from observability.tracing import Tracing, traced_order
from resilience import BreakerState, CircuitBreaker, Clock, RetryPolicy
from resilience.retry import retry_call
from storage import Repositories
from storage.journal import StateWrite

log = structlog.get_logger("executor")
T = TypeVar("T")


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
    account_shared: bool = False  # other daemons trade the account (cancel only our own)
    # A `delayed` order not settled by events is looked up this long after the market's delay.
    delayed_margin_s: float = 5.0
    daily_loss_limit: Decimal = Decimal("100")
    daily_loss_warn_fraction: float = 0.8
    tracing: Tracing = field(default_factory=Tracing)  # off unless the settings turn it on


class Executor:
    """Validates, journals, sends and settles orders. Implements OrderSink, PositionSource
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
        retry_policy: RetryPolicy,
        clock: Clock,
        config: ExecutorConfig,
    ) -> None:
        self.tracing = config.tracing
        self.repos = repos
        self.broker = broker
        self.rules = rules
        self.risk = risk
        self.positions = positions
        self.metrics = metrics
        self.breaker = breaker
        self.retry_policy = retry_policy
        self.clock = clock
        self.config = config
        self.guard = TradingGuard(
            repos=repos,
            positions=positions,
            metrics=metrics,
            breaker=breaker,
            clock=clock,
            kill_switch_path=config.kill_switch_path,
            daily_loss_limit=config.daily_loss_limit,
            daily_loss_warn_fraction=config.daily_loss_warn_fraction,
        )
        self.tracker = OrderTracker(
            journal=repos.orders,
            positions=positions,
            metrics=metrics,
            on_storage_failure=self._storage_failed,
            tracing=self.tracing,
        )
        self.settle = Settlement(
            repos=repos,
            tracker=self.tracker,
            metrics=metrics,
            on_storage_failure=self._storage_failed,
        )
        self.reconciler = Reconciler(
            sender=self,
            settle=self.settle,
            repos=repos,
            broker=broker,
            tracker=self.tracker,
            guard=self.guard,
            breaker=breaker,
            metrics=metrics,
            clock=clock,
            unknown_grace_s=config.unknown_grace_s,
            resend_window_s=config.resend_window_s,
            rules=rules,
            delayed_margin_s=config.delayed_margin_s,
        )
        self.settle.on_delayed = self.reconciler.watch_delayed
        self.batches = BatchSender(
            broker=broker,
            breaker=breaker,
            tracker=self.tracker,
            settle=self.settle,
            reconciler=self.reconciler,
        )
        self.reconciled = self.reconciler.reconciled
        # Submissions from the PENDING write on, owned here so a cancelled caller cannot
        # abandon a send half-way (drain() waits for them through `_inflight`).
        self._submissions: set[asyncio.Task[Any]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        bind = getattr(broker, "bind", None)
        if callable(bind):
            bind(on_fill=self.tracing.traced_fills(self.on_fill), on_order=self.on_order_event)

    async def start(self) -> None:
        """Restore trading state, positions, open orders and today's PnL baseline."""
        await self.guard.load()
        self.positions.load(*await self.repos.own_positions())  # not other daemons' strategies
        await self.tracker.load()
        self._publish()
        log.info("executor_started", state=self.state, open_orders=self.positions.open_count)

    # --- protocols for strategies ---
    def position(self, token_id: str, *, strategy: str) -> Position:
        """PositionSource: `strategy`'s holding in `token_id` as its journaled fills say."""
        return self.positions.position(token_id, strategy=strategy)

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """TickSizeSink: the market feed saw a `tick_size_change`."""
        self.rules.set_tick_size(token_id, tick_size)

    # --- trading state (the guard's) ---
    @property
    def state(self) -> TradingState:
        return self.guard.state

    @property
    def state_reason(self) -> str:
        return self.guard.reason

    async def halt(self, reason: str, actor: str = "") -> None:
        """Stop new orders (cancels still go); survives restarts until `resume()`."""
        await self.guard.set_state(TradingState.HALTED, reason, actor=actor)

    async def reduce_only(self, reason: str, actor: str = "") -> None:
        """Allow only position-reducing SELLs (and cancels)."""
        await self.guard.set_state(TradingState.REDUCING, reason, actor=actor)

    async def resume(self, reason: str = "manual resume", actor: str = "") -> None:
        """Return to ACTIVE. Refused while the kill-switch file exists."""
        await self.guard.resume(reason, actor=actor)

    async def check_guards(self) -> None:
        """Kill switch and daily loss limit; called before each order and by `run()`."""
        await self.guard.check()

    def _storage_failed(self, event: str, **kw: Any) -> None:
        """A database write failed: halt trading (in memory) until an operator resumes."""
        self.guard.storage_failed()
        log.error(event, **kw)

    # --- submission ---
    @traced_order
    async def submit(self, request: OrderRequest, *, also: StateWrite | None = None) -> OrderResult:
        """OrderSink: validate, journal, send and return the outcome of `request` (module
        docstring); `also` (strategy state) commits with its PENDING row. From the PENDING write
        on, the submission is a task the executor owns, which `drain()` waits for."""
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
        self.tracker.set_sending(coid, True)
        # Set at the venue's ack (the outcome row queued), else from the task's end.
        answer: Answer = asyncio.get_running_loop().create_future()

        def done(task: asyncio.Future[OrderResult]) -> None:
            self.tracker.set_sending(coid, False)
            self._leave()
            hand_over(task, answer)

        sending = self._journal_and_send(admitted, started, also, answer)
        self._own(sending, name=f"executor:submit:{coid}", done=done)
        return await reprice_once(
            request, await self._await_owned(answer, coid), self.rules, self.submit
        )

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

    async def _await_owned(self, task: asyncio.Future[T], client_order_id: str) -> T:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                # The caller stopped waiting; the order goes on (and drain() waits for it).
                log.info("order_submission_continues", client_order_id=client_order_id)
                task.add_done_callback(log_abandoned_failure)
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
                self.tracker.forget(p.request.client_order_id)
            self._leave()
            raise
        if not ready:
            self._leave()
            return [results[r.client_order_id] for r in requests]
        sending = [p.request.client_order_id for p in ready]
        for coid in sending:
            self.tracker.set_sending(coid, True)

        def done(_: asyncio.Future[list[OrderResult]]) -> None:
            for coid in sending:
                self.tracker.set_sending(coid, False)
            self._leave()

        task = self._own(
            self.batches.journal_and_send(ready),
            name=f"executor:submit_many:{sending[0]}",
            done=done,
        )
        for r in await self._await_owned(task, sending[0]):
            results[r.client_order_id] = r
        return [results[r.client_order_id] for r in requests]

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _admit(self, req: OrderRequest) -> Prepared | OrderResult:
        """Trading state, market rules and risk; then sign. A refusal is journaled and audited."""
        if req.client_order_id in self.tracker:
            return await self.settle.refused(
                req, RefusalSource.RULES, "duplicate client order id", journal=False
            )
        try:
            await self.guard.check()
        except StorageError:
            self._storage_failed("storage_failed_halting", client_order_id=req.client_order_id)
        halted = self.guard.refusal(rests=req.order_type.rests)
        if halted is not None:
            return await self.settle.refused(req, RefusalSource.HALTED, halted)
        meta, reason = await self.tracing.within("market_rules", self.rules.admit(req))
        if reason is not None:
            return await self.settle.refused(req, RefusalSource.RULES, reason)
        assert meta is not None  # the rules refuse an unknown market
        with self.tracing.span("risk"):
            req, reason = await self.risk.admit(req, meta, self.positions, self.state)
        if reason is not None:
            active = self.state is TradingState.ACTIVE
            return await self.settle.refused(
                req, RefusalSource.RISK if active else RefusalSource.HALTED, reason
            )
        prepared = await self.tracing.within("sign", self.broker.prepare(req, meta))
        self.tracker.admit(prepared)
        return prepared

    async def _journal_pending(self, prepared: Prepared, also: StateWrite | None = None) -> None:
        await self.tracker.journal_pending(prepared, also=also)

    async def _journal_and_send(
        self, prepared: Prepared, started: float, also: StateWrite | None, answer: Answer
    ) -> OrderResult:
        req = prepared.request
        try:
            await self._journal_pending(prepared, also)
        except AccountLimitReached as e:  # another daemon on the account took the room first
            return await self.settle.over_account_cap(req, e)
        if not self.tracing.call("breaker", self.breaker.allow, state=self.breaker.state.name):
            return await self.settle.rejected(
                req, RefusalSource.BREAKER, f"circuit breaker {self.breaker.state}: venue failing"
            )
        try:
            ack = await self.tracing.within("post_order", self.send_signed(prepared))
        except DuplicateOrder:
            self.breaker.record_success()  # the venue answered: it holds the order
            return await self._outcome_unknown(prepared, "duplicate on re-send")
        except OrderRejected as e:
            self.breaker.record_success()  # the venue answered; it is up
            return await self.settle.rejected(req, RefusalSource.VENUE, e.reason)
        except OutcomeUnknown as e:
            self.breaker.record_failure()
            return await self._outcome_unknown(prepared, str(e))
        except TransientError as e:
            self._transient_failure(e)
            return await self.reconciler.after_errors(prepared, e)
        self.breaker.record_success()
        self.metrics.submit_seconds.labels(self.broker.name).observe(time.perf_counter() - started)
        return await self.settle.acknowledged(req, ack, answer=answer)

    async def send_signed(self, prepared: Prepared) -> Ack:
        """Send a signed order, retried as the same payload on 429/425/5xx only.

        Raises `DuplicateOrder` when the venue already holds an order with this hash (an
        earlier attempt, or the send a crashed run made): it is ours; find out what it did.
        """
        attempt = 0

        async def once() -> Ack:
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                self.metrics.venue_retries_total.labels("post_order", "transient").inc()
            return await self.broker.send(prepared)

        return await retry_call(
            self.retry_policy,
            once,
            retry_on=(TransientError,),
            clock=self.clock,
            log_event="order_send_retry",
            logger=log,
        )

    def _transient_failure(self, e: TransientError) -> None:
        self.guard.venue_failed(e)

    async def _outcome_unknown(self, prepared: Prepared, why: str) -> OrderResult:
        return await self.reconciler.outcome_unknown(prepared, why)

    # --- venue events (user feed, paper broker, REST reconcile) ---
    async def on_fill(self, fill: Fill) -> None:
        """Record a fill once (idempotent by trade id) and move the position."""
        if fill.client_order_id is None:
            row = await self.repos.orders.get_by_venue_id(fill.venue_order_id)
            if row is not None and not self.repos.orders.owns(row):
                return  # another daemon's order on this account: its owner records the fill
            if row is not None:
                fill = fill.model_copy(update={"client_order_id": row.client_order_id})
        fill = await self.rules.with_fee(fill)
        recorded = await self.repos.fills.record_moves(fill)
        if recorded is None:
            return
        # Every row written (shares a sale outside the daemon took, or its failure gave back,
        # too) with the row it replaced: a flat one the book let go of must not count twice.
        self.positions.move(recorded.moves)
        pos = recorded.position
        if fill.status is TradeStatus.FAILED:
            # The trade never settled: the repository rebuilt the position without it (and
            # audited `fill_failed`) in one transaction. The order's own status is left to the
            # venue's order events.
            log.warning("fill_failed_reversed", position=str(pos.size), **fill_log(fill))
            self._publish()
            return
        count_fill(self.metrics, fill)
        self.risk.funds.spent(fill)
        log.info("fill_recorded", **fill_log(fill))
        if fill.client_order_id is not None:
            await self.settle.filled(fill.client_order_id)
        self._publish()

    async def on_order_event(self, vo: VenueOrder) -> None:
        """Apply an order update (user WS `order` event, paper broker, REST listing). An order
        still PENDING is left to its submit path (or to start-up reconciliation, if this process
        died meanwhile); one being sent from here is known to be so without a journal read; one
        another daemon journaled (a shared account) is that daemon's to settle."""
        if self.tracker.sending_unsettled(vo.venue_order_id):
            return
        row = await self.repos.orders.get_by_venue_id(vo.venue_order_id, own=True)
        if row is None or row.status.terminal or row.status is OrderStatus.PENDING:
            return
        req = await self.tracker.request_for(row.client_order_id)
        if req is None:
            return
        self.tracker.lookup_done(row.client_order_id)
        await self.settle.from_venue(req, vo, "order event")

    # --- cancels (always allowed: breaker and halt do not apply) ---
    async def cancel(self, client_order_id: str) -> bool:
        """Cancel one resting order; return True if the venue canceled it."""
        row = await self.repos.orders.get(client_order_id)
        if row is None or row.venue_order_id is None or row.status.terminal:
            return False
        res = await self.broker.cancel([row.venue_order_id])
        await self.settle.canceled(res.canceled)
        return row.venue_order_id in res.canceled

    async def cancel_all(self, actor: str = "daemon") -> int:
        """Cancel every resting order at the venue; return how many were canceled."""
        # On a shared account (ACCOUNT_SHARED) the other daemons' orders are theirs: ours only.
        own = await self.repos.orders.open_venue_ids() if self.config.account_shared else None
        res = await (self.broker.cancel_all() if own is None else self.broker.cancel(own))
        await self.settle.canceled(res.canceled)
        await self.repos.audit.append("cancel_all", canceled=len(res.canceled), actor=actor)
        return len(res.canceled)

    # --- reconciliation (the reconciler's) ---
    async def reconcile(self, *, grace_s: float | None = None) -> dict[str, int]:
        """Settle every non-terminal journal row against the venue (re-sending a young one it
        has never seen as the same signed bytes) and fetch fills since the last checkpoint. Run
        at start-up, after every user-feed reconnect and periodically; see `Reconciler`."""
        counts = await self.tracing.within("reconcile", self.reconciler.reconcile(grace_s=grace_s))
        self._publish()
        return counts

    async def settle_unknowns(self) -> None:
        """Look up UNKNOWN orders whose next try is due."""
        await self.reconciler.settle_unknowns()

    # --- service loop, drain, health ---
    async def run(self, *, tick_s: float = 0.2, periodic_reconcile: bool = True) -> None:
        """Guards, UNKNOWN lookups, periodic reconcile and metrics, until cancelled."""
        while True:
            await asyncio.sleep(tick_s)
            try:
                await self.guard.check()
                await self.reconciler.settle_unknowns()
                if periodic_reconcile and (
                    self.clock.monotonic() - self.reconciler.last_run
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
        `cancel_on_shutdown` (unless `guard.keep_orders`); return True if all finished in time.

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
        if self.config.cancel_on_shutdown and self.guard.keep_orders is None:
            n = await self.cancel_all()
            log.info("canceled_on_shutdown", canceled=n)
        return drained

    def health(self) -> CheckResult:
        """The `executor` check: ok while ACTIVE, the breaker is not OPEN and no hold on resting
        orders (exchange heartbeats lapsed).

        A breaker whose open period is over reads `half_open` and ok: it is waiting for the next
        order to probe it, and without orders it would otherwise keep `/health` at 503 (and
        uptime monitors alerting) for as long as nothing trades. It is not probed with a read:
        a read proves nothing about `POST /order` in the venue's cancel-only or post-only modes.
        """
        breaker = self.breaker_state()
        held = self.guard.resting_hold
        ok = self.state is TradingState.ACTIVE and breaker is not BreakerState.OPEN and not held
        return CheckResult(
            ok,
            {
                "trading_state": self.state.value,
                "reason": self.state_reason,
                "resting_orders_held": held or "",
                "breaker": breaker.value,
                "open_orders": self.positions.open_count,
                "unknown_orders": self.tracker.unknown_count,
                "in_flight": self._inflight,
            },
        )

    def breaker_state(self) -> BreakerState:
        """The breaker's state, with an OPEN breaker whose wait is over read as HALF_OPEN."""
        return self.guard.breaker_state()

    def on_breaker_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """Hook for `CircuitBreaker(on_state_change=...)`."""
        self.guard.on_breaker_change(name, old, new)

    def _publish(self) -> None:
        m = self.metrics
        m.trading_state.set(TRADING_STATE_VALUE[self.state.value])
        # As /health reads it: an OPEN breaker past its wait is half-open (waiting for a probe).
        m.breaker_state.labels(self.breaker.name).set(
            BREAKER_STATE_VALUE[self.breaker_state().name]
        )
        self.positions.publish(m)

    async def wait_idle(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
                return True
        return False
