"""Build the execution stage from `Settings`: broker, market rules, risk, executor, user feed,
the exchange heartbeat monitor (`execution.heartbeat`), and the operator's control routes.

The orchestrator folds the stage into its life cycle; tests and benchmarks call `assemble()` too,
so the daemon and they build the same thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from config import Settings
from errors import OrderRejected
from execution.funds import Funds
from execution.heartbeat import ExecutorTrading, HeartbeatMonitor
from execution.market_rules import MarketRules
from execution.paper import PaperBroker
from execution.ports import Broker
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits
from execution.shared_account import SharedAccount
from executor import Executor, ExecutorConfig
from models import BookSource, Level
from observability.logging import Redactor
from observability.metrics import BREAKER_STATE_VALUE, Metrics
from observability.tracing import Tracing
from resilience import CircuitBreaker, Clock, RateLimiter, RetryPolicy, SystemClock
from storage import Repositories
from venue.clob.broker import ClobBroker, build_client
from venue.clob.public import PublicMarketMeta, RestBookSource
from venue.parse import MalformedLog
from venue.user_feed import UserFeed
from wiring.shared import Shared, venue_limiter
from wiring.stage import Control, Service, Stage, Step

log = structlog.get_logger("wiring.execution")


class PreferredBooks:
    """A `BookSource` that reads the market feed's BookStore once it is built and has the book,
    and the REST `/book` otherwise (paper fills and position marks work before the feed does)."""

    def __init__(self, *, rest: RestBookSource, primary: Callable[[], BookSource | None]) -> None:
        self._rest = rest
        self._primary = primary

    async def refresh(self, token_id: str) -> None:
        p = self._primary()
        if p is None or p.asks(token_id) is None:
            await self._rest.refresh(token_id)

    def asks(self, token_id: str) -> list[Level] | None:
        p = self._primary()
        got = p.asks(token_id) if p is not None else None
        return got if got is not None else self._rest.asks(token_id)

    def bids(self, token_id: str) -> list[Level] | None:
        p = self._primary()
        got = p.bids(token_id) if p is not None else None
        return got if got is not None else self._rest.bids(token_id)

    # Best levels (position marks): O(1) from the feed's book; the REST book (fetched only while
    # the feed's is unusable, kept 2 s) when the feed has none.
    def best_ask(self, token_id: str) -> Level | None:
        p = self._primary()
        got = p.best_ask(token_id) if p is not None else None
        return got if got is not None else self._rest.best_ask(token_id)

    def best_bid(self, token_id: str) -> Level | None:
        p = self._primary()
        got = p.best_bid(token_id) if p is not None else None
        return got if got is not None else self._rest.best_bid(token_id)


@dataclass(kw_only=True)
class ExecutionStage(Stage):
    """The executor and what it trades through. `rules` is the executor's market rules (the
    market data stage loads discovered markets into them)."""

    executor: Executor
    broker: Broker
    rules: MarketRules
    user_feed: UserFeed | None = None
    heartbeat: HeartbeatMonitor | None = None  # live only
    # What takes rotated API credentials on a reload (live only: the broker and the user feed).
    credential_sinks: list[Any] = field(default_factory=list)


def retry_policy(s: Settings) -> RetryPolicy:
    return RetryPolicy(
        attempts=s.retry_attempts,
        base_delay_s=s.retry_base_delay_s,
        max_delay_s=s.retry_max_delay_s,
    )


def controls(executor: Executor) -> list[Control]:
    """The operator's routes: halt, resume, reduce-only, cancel every resting order. `actor` in
    the body (set by the sidecar, never by the caller) goes into the audit entry."""

    async def halt(body: Mapping[str, Any]) -> Mapping[str, Any]:
        await executor.halt(str(body.get("reason") or "manual halt"), actor=_actor(body))
        return {"trading_state": executor.state.value}

    async def resume(body: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            await executor.resume(str(body.get("reason") or "manual resume"), actor=_actor(body))
        except OrderRejected as e:
            return {"trading_state": executor.state.value, "refused": e.reason}
        return {"trading_state": executor.state.value}

    async def reduce(body: Mapping[str, Any]) -> Mapping[str, Any]:
        # REDUCING is manual only: the risk caps already refuse every BUY that would breach
        # them, so an automatic trigger would add a state, not protection.
        reason = str(body.get("reason") or "manual reduce-only")
        await executor.reduce_only(reason, actor=_actor(body))
        return {"trading_state": executor.state.value}

    async def cancel_all(body: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"canceled": await executor.cancel_all(actor=_actor(body))}

    return [("halt", halt), ("resume", resume), ("reduce", reduce), ("cancel-all", cancel_all)]


def _actor(body: Mapping[str, Any]) -> str:
    return str(body.get("actor") or "")


async def build_execution(
    shared: Shared, *, books: Callable[[], BookSource | None] = lambda: None
) -> ExecutionStage:
    """The execution stage over the process's storage, metrics and venue budget. `books` returns
    the market feed's BookStore once that stage is built (None until then)."""
    stage = await assemble(
        shared.settings,
        repos=shared.repos,
        metrics=shared.metrics,
        redactor=shared.redactor,
        books=books,
        clock=shared.clock,
        limiter=shared.budget.limiter,
        rest_malformed=shared.malformed_log("rest"),
        tracing=shared.tracing,
    )
    shared.credential_sinks.extend(stage.credential_sinks)
    return stage


async def assemble(
    s: Settings,
    *,
    repos: Repositories,
    metrics: Metrics,
    redactor: Redactor,
    books: Callable[[], BookSource | None] = lambda: None,
    clock: Clock | None = None,
    limiter: RateLimiter | None = None,
    rest_malformed: MalformedLog | None = None,
    tracing: Tracing | None = None,
) -> ExecutionStage:
    """Build the broker (paper or live), market rules, risk, executor and (live) user feed.

    `limiter` is the process's venue budget; without one (a test, a benchmark) the stage gets a
    budget of its own. `rest_malformed` counts REST answers refused for out-of-bound numbers.
    """
    clock = clock or SystemClock()
    rest_malformed = rest_malformed or MalformedLog(
        "rest", metrics=metrics, monotonic=clock.monotonic
    )
    limiter = limiter or venue_limiter(s, clock=clock, metrics=metrics)
    closers: list[Step] = []
    services: list[Service] = []
    broker: Broker
    clob: ClobBroker | None = None
    if s.live:
        assert s.private_key is not None  # Settings refuses live mode without it
        creds = (
            (
                s.clob_api_key.get_secret_value(),
                s.clob_api_secret.get_secret_value(),
                s.clob_api_passphrase.get_secret_value(),
            )
            if s.clob_api_key and s.clob_api_secret and s.clob_api_passphrase
            else None
        )
        key = s.private_key.get_secret_value()
        identity = await asyncio.to_thread(
            build_client,
            host=s.clob_host,
            chain_id=s.chain_id,
            private_key=key,
            creds=creds,
            signature_type=s.signature_type,
            funder=s.funder_address,
            http_timeout_s=s.http_timeout_s,
        )
        # Derived credentials are secrets too: scrub them from every log line from now on.
        c = identity.creds
        redactor.add(c.api_secret, c.api_passphrase, c.api_key)
        clob = ClobBroker(
            identity=identity,
            host=s.clob_host,
            http_timeout_s=s.http_timeout_s,
            limiter=limiter,
            malformed=rest_malformed,
            tracing=tracing,
        )
        broker = clob
        rules = MarketRules(source=clob)
        rest_books = RestBookSource(
            host=s.clob_host,
            timeout_s=s.http_timeout_s,
            limiter=limiter,
            malformed=rest_malformed,
        )
        closers.append(("clob", clob.close))
    else:
        rest_books = RestBookSource(
            host=s.clob_host,
            timeout_s=s.http_timeout_s,
            limiter=limiter,
            malformed=rest_malformed,
        )
        paper = PaperBroker(books=PreferredBooks(rest=rest_books, primary=books))
        broker = paper
        # Paper mode still follows the venue's rules, read from its public REST routes.
        public = PublicMarketMeta(
            host=s.clob_host,
            timeout_s=s.http_timeout_s,
            limiter=limiter,
            malformed=rest_malformed,
        )
        rules = MarketRules(source=public)
        closers.append(("market-meta", public.close))
        services.append(("paper", paper.run))
    closers.append(("rest-books", rest_books.close))
    positions = PositionBook(books=PreferredBooks(rest=rest_books, primary=books))
    executor_box: list[Executor] = []

    def on_breaker(name: str, old: Any, new: Any) -> None:
        if executor_box:
            executor_box[0].on_breaker_change(name, old, new)

    breaker = CircuitBreaker(
        "venue",
        failure_threshold=s.breaker_failure_threshold,
        reset_timeout_s=s.breaker_reset_timeout_s,
        clock=clock,
        on_state_change=on_breaker,
    )
    # Export the state from the start: a gauge with no sample reads as "no data", not "closed".
    metrics.breaker_state.labels(breaker.name).set(BREAKER_STATE_VALUE[breaker.state.name])
    risk = RiskEngine(limits=RiskLimits.from_settings(s), funds=Funds(broker=broker))
    if clob is not None:
        repos.orders.for_account(clob.funder)  # orders name their account (several daemons)
        if s.account_shared:  # per-account caps counted over every daemon, under a lock
            repos.orders.share_account(risk.account_refusal)
    executor = Executor(
        repos=repos,
        broker=broker,
        rules=rules,
        risk=risk,
        positions=positions,
        metrics=metrics,
        breaker=breaker,
        retry_policy=retry_policy(s),
        clock=clock,
        config=ExecutorConfig(
            kill_switch_path=s.kill_switch_path,
            unknown_grace_s=s.order_lookup_grace_s,
            resend_window_s=s.resend_window_s,
            delayed_margin_s=s.delayed_order_margin_s,
            reconcile_interval_s=s.reconcile_interval_s,
            cancel_on_shutdown=s.cancel_on_shutdown,
            account_shared=s.account_shared,
            daily_loss_limit=s.risk_daily_loss_limit,
            daily_loss_warn_fraction=s.risk_daily_loss_warn_fraction,
            tracing=tracing or Tracing(),
        ),
    )
    executor_box.append(executor)
    shared: SharedAccount | None = None
    if clob is not None and s.account_shared:
        # Halts and the daily loss limit are the account's, synced with the other daemons on it.
        shared = SharedAccount(
            repo=repos.accounts, account=clob.funder, daemon_id=repos.daemon_id, positions=positions
        )
        executor.guard.share_account(shared)
        services.append(("account:sync", executor.guard.run_account_sync))
    await executor.start()
    feed: UserFeed | None = None
    monitor: HeartbeatMonitor | None = None
    if clob is not None:
        creds_ = clob.identity.creds
        feed = UserFeed(
            url=s.user_ws_url,
            api_key=creds_.api_key,
            api_secret=creds_.api_secret,
            api_passphrase=creds_.api_passphrase,
            funder=clob.funder,
            on_order=executor.on_order_event,
            on_fill=(tracing or Tracing()).traced_fills(executor.on_fill),
            on_connected=executor.reconcile,
            metrics=metrics,
            ping_interval_s=s.feed_ping_interval_s,
            pong_timeout_s=s.user_feed_pong_timeout_s,
            stale_after_s=s.user_feed_stale_after_s,
            clock=clock,
            tracing=tracing,
        )
        services.append(("feed:user", feed.run))
        monitor = HeartbeatMonitor(
            venue=clob,
            trading=ExecutorTrading(executor),
            metrics=metrics,
            clock=clock,
            interval_s=s.heartbeat_interval_s,
            max_failures=s.heartbeat_max_failures,
            lapse_after_s=s.heartbeat_lapse_s,
        )
        services.append(("heartbeats", monitor.run))
    services.append(("executor", lambda: executor.run(periodic_reconcile=s.live)))
    stage = ExecutionStage(
        executor=executor,
        broker=broker,
        rules=rules,
        user_feed=feed,
        heartbeat=monitor,
        credential_sinks=[x for x in (clob, feed) if x is not None],
        services=services,
        closers=closers,
    )
    stage.checks.append(("executor", executor.health))
    if shared is not None:
        stage.checks.append(("account", shared.health))
    if feed is not None:
        stage.checks.append(("venue:user_feed", feed.health))
    if s.live:
        # /health says "starting" until every journal row left by the last run is settled.
        async def reconcile() -> None:
            await executor.reconcile()

        stage.startup.append(("reconcile", reconcile))
    stage.controls.extend(controls(executor))

    async def drain() -> None:
        # Wait for in-flight submissions for part of the drain deadline, so that the
        # CANCEL_ON_SHUTDOWN cancel still fits inside it when a submission hangs.
        await executor.drain(wait_s=max(0.1, s.drain_timeout_s - s.http_timeout_s))

    stage.drainers.append(("executor", drain))
    return stage
