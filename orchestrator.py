"""polyd's composition root: `python -m orchestrator`.

Builds every component from one `Settings`, owns every long-lived task in a TaskGroup, and runs the
life cycle from DESIGN.md:

start: settings -> logging -> metrics -> storage (open, migrate) -> venue -> reconcile -> executor
       -> sidecar -> feeds -> strategies   (/health says "starting" until reconcile is done)
stop:  strategies -> executor drain (+ cancel resting orders if configured) -> feeds -> sidecar
       -> storage, each step under a deadline. SIGTERM/SIGINT only *ask* for this.

Exit codes: 0 clean stop, 1 fatal runtime error, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from config import Settings, env_file_warnings, load_settings
from errors import ConfigError, FatalError, OrderRejected
from observability.health import CheckResult
from observability.logging import Redactor, configure_logging
from observability.metrics import Metrics
from observability.notify import Notifier, TradingWatch
from observability.sidecar import Health, Phase, Sidecar
from observability.systemd import SystemdNotifier
from resilience.backoff import Backoff
from storage import Database, Repositories
from strategies.base import Strategy

VERSION = "0.1.0"
EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2

log = structlog.get_logger("orchestrator")


# --------------------------------------------------------------------------------------------
# Strategy supervision
# --------------------------------------------------------------------------------------------


@dataclass
class StrategyState:
    name: str
    running: bool = False
    restarts: int = 0
    halted: bool = False
    last_error: str | None = None


class StrategySupervisor:
    """Run a strategy, restart it with backoff when it crashes, halt it when it crash-loops.

    More than `max_restarts` crashes within `window_s` stops the strategy for good (until the
    daemon restarts) and turns its health check red, so `/health` reports `degraded`.
    """

    def __init__(
        self,
        *,
        metrics: Metrics,
        health: Health,
        max_restarts: int,
        window_s: float,
        backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        notify: Callable[..., object] | None = None,
    ) -> None:
        self._notify = notify  # Notifier.notify(kind, key, text, **fields); never blocks
        self._metrics = metrics
        self._health = health
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff = backoff
        self._sleep = sleep
        self.states: dict[str, StrategyState] = {}

    async def run(self, strategy: Strategy) -> None:
        name = strategy.name
        state = self.states[name] = StrategyState(name)
        self._health.register(f"strategy:{name}", lambda: self._check(state))
        crashes: deque[float] = deque()
        backoff = self._backoff()
        up = self._metrics.strategy_up.labels(name)
        while True:
            state.running = True
            up.set(1)
            structlog.contextvars.bind_contextvars(strategy=name)
            try:
                await strategy.run()
            except Exception as e:  # the task boundary: count, log, restart
                state.last_error = type(e).__name__
                self._metrics.strategy_restarts_total.labels(name).inc()
                log.exception("strategy_crashed", strategy=name)
            else:
                log.info("strategy_finished", strategy=name)
                return
            finally:
                state.running = False
                up.set(0)
                structlog.contextvars.unbind_contextvars("strategy")
            now = time.monotonic()
            crashes.append(now)
            while crashes and now - crashes[0] > self._window_s:
                crashes.popleft()
            state.restarts += 1
            if len(crashes) > self._max_restarts:
                state.halted = True
                log.error(
                    "strategy_halted",
                    strategy=name,
                    crashes=len(crashes),
                    window_s=self._window_s,
                )
                if self._notify is not None:
                    self._notify(
                        "strategy_halted",
                        f"strategy_halted:{name}",
                        f"strategy {name} halted after {len(crashes)} crashes in "
                        f"{self._window_s:g}s ({state.last_error}); /health is degraded",
                        strategy=name,
                    )
                return
            delay = backoff.next()
            log.warning("strategy_restarting", strategy=name, in_s=round(delay, 3))
            if self._notify is not None:
                self._notify(
                    "strategy_crash",
                    f"strategy_crash:{name}",
                    f"strategy {name} crashed ({state.last_error}); restart {state.restarts} "
                    f"in {delay:.1f}s",
                    strategy=name,
                )
            await self._sleep(delay)

    @staticmethod
    def _check(state: StrategyState) -> CheckResult:
        if state.halted:
            return CheckResult(False, f"halted after repeated crashes ({state.last_error})")
        return CheckResult(True, {"running": state.running, "restarts": state.restarts})


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------


class DatabaseProbe:
    """Ping the database in the background; `/health` reads the last answer.

    A ping queues behind write batches on the database's one thread, so a `/health` request that
    pinged itself would wait for a group commit and its fsync under load. The check reports the
    last ping (failing if it is older than `stale_after_s`) and the last write error.
    """

    def __init__(self, db: Database, *, interval_s: float = 1.0, stale_after_s: float = 5.0):
        self._db = db
        self._interval_s = interval_s
        self._stale_after_s = stale_after_s
        self._ok = False
        self._at = float("-inf")

    async def ping(self) -> None:
        self._ok = await self._db.ping()
        self._at = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.ping()

    def check(self) -> CheckResult:
        age = time.monotonic() - self._at
        if not self._ok:
            return CheckResult(False, "database does not answer")
        if age > self._stale_after_s:
            return CheckResult(False, f"no answer from the database for {age:.0f}s")
        if self._db.last_write_error:
            return CheckResult(False, "last write batch failed")
        return CheckResult(True, "ok")


@dataclass
class Context:
    """What the composition root built, handed to the stages that need it."""

    settings: Settings
    redactor: Redactor
    metrics: Metrics
    health: Health
    db: Database
    repos: Repositories
    sidecar: Sidecar | None = None
    strategies: list[Strategy] = field(default_factory=list)
    services: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = field(
        default_factory=list
    )
    closers: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    drainers: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    executor: Any = None  # executor.Executor: OrderSink, PositionSource, TickSizeSink
    # Operator webhook: ctx.notifier.notify(kind, key, text) never blocks (disabled without a URL).
    notifier: Notifier = field(default_factory=Notifier)
    books: Any = None  # models.BookSource (the feed's BookStore) once market data is built


class Daemon:
    """One run of the daemon, from settings to exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        redactor: Redactor,
        duration_s: float | None = None,
        on_ready: Callable[[Context], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor
        self.duration_s = duration_s
        self.on_ready = on_ready
        self.systemd = SystemdNotifier(settings.notify_socket, watchdog_usec=settings.watchdog_usec)
        self._stop = asyncio.Event()
        self.ctx: Context | None = None

    def request_stop(self, reason: str = "requested") -> None:
        """Ask for a graceful stop (idempotent; safe from a signal handler)."""
        if not self._stop.is_set():
            log.info("stop_requested", reason=reason)
            self._stop.set()

    async def run(self) -> int:
        """Run until asked to stop; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            # The watchdog pings from this loop from the first moment, so a blocked loop (at
            # start-up too) stops them and systemd restarts the service.
            async with asyncio.TaskGroup() as tg:
                watchdog = tg.create_task(self.systemd.watchdog_loop(), name="lifecycle:watchdog")
                try:
                    return await self._run()
                finally:
                    watchdog.cancel()
        except Exception as e:  # the process boundary: a fatal error ends the run with exit 1
            bad_config = [x for x in _leaves(e) if isinstance(x, ConfigError)]
            if bad_config:  # e.g. a strategy's rules file, read at start-up
                for bad in bad_config:
                    log.error("config_error", problems=bad.problems)
                return EXIT_CONFIG
            for exc in _leaves(e):
                if isinstance(exc, FatalError):
                    log.error("fatal_error", error=str(exc))
                else:
                    log.error("fatal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return EXIT_FATAL
        finally:
            self.systemd.stopping("stopped")
            self.systemd.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        s = self.settings
        metrics = Metrics()
        metrics.build_info.labels(VERSION, s.mode).set(1)
        metrics.start_time_seconds.set(time.time())
        metrics.daily_loss_limit_usd.set(float(s.risk_daily_loss_limit))
        health = Health(mode=s.mode, version=VERSION)
        db = Database(
            s.db_path,
            busy_timeout_ms=s.db_busy_timeout_ms,
            observe_batch=metrics.observe_db_batch,
            observe_error=metrics.db_write_errors_total.inc,
        )
        await db.open()
        ctx = self.ctx = Context(
            settings=s,
            redactor=self.redactor,
            metrics=metrics,
            health=health,
            db=db,
            repos=Repositories.over(db),
        )
        ctx.closers.append(("storage", db.close))
        probe = DatabaseProbe(db)
        await probe.ping()
        health.register("database", probe.check)
        ctx.services.append(("database:probe", probe.run))
        log.info("daemon_starting", version=VERSION, mode=s.mode, db=str(s.db_path))
        try:
            await self._start_and_serve(ctx)
        finally:
            await self._close_all(ctx)
        log.info("daemon_stopped")
        return EXIT_OK

    async def _start_and_serve(self, ctx: Context) -> None:
        s = ctx.settings
        self.systemd.status("starting: building the trading stack and reconciling")
        notifier = ctx.notifier = Notifier.from_settings(
            s, metrics=ctx.metrics, redactor=ctx.redactor
        )
        ctx.closers.append(("notify", notifier.close))
        # The sidecar listens before the trading stack is built, so /health answers "starting"
        # (503) through a long start-up reconcile; stages register their control routes on it.
        sidecar = ctx.sidecar = Sidecar(
            host=s.http_host,
            port=s.http_port,
            health=ctx.health,
            metrics=ctx.metrics,
            control_token=s.control_token.get_secret_value() if s.control_token else None,
        )
        await sidecar.start()
        ctx.closers.append(("sidecar", sidecar.stop))
        await self._build_trading(ctx)
        if notifier.enabled:
            watch = TradingWatch(
                notifier=notifier,
                metrics=ctx.metrics,
                warn_fraction=s.risk_daily_loss_warn_fraction,
                reason=lambda: str(getattr(ctx.executor, "state_reason", "") or ""),
            )
            ctx.services.append(("notify", notifier.run))
            ctx.services.append(("notify:watch", watch.run))
        ctx.health.phase = Phase.RUNNING
        ctx.metrics.ready.set(1)
        log.info(
            "daemon_ready",
            health_url=f"http://{s.http_host}:{sidecar.bound_port}/health",
            metrics_url=f"http://{s.http_host}:{sidecar.bound_port}/metrics",
            strategies=[st.name for st in ctx.strategies],
        )
        self.systemd.ready(
            f"running: {s.mode}, {len(ctx.strategies)} strategies, "
            f"sidecar on {s.http_host}:{sidecar.bound_port}"
        )
        if self.on_ready is not None:
            self.on_ready(ctx)
        supervisor = StrategySupervisor(
            metrics=ctx.metrics,
            health=ctx.health,
            max_restarts=s.strategy_max_restarts,
            window_s=s.strategy_restart_window_s,
            notify=notifier.notify,
        )
        async with asyncio.TaskGroup() as tg:
            services = [tg.create_task(fn(), name=f"service:{n}") for n, fn in ctx.services]
            strategies = [
                tg.create_task(supervisor.run(st), name=f"strategy:{st.name}")
                for st in ctx.strategies
            ]
            timers = []
            if self.duration_s is not None:
                timers.append(
                    tg.create_task(self._stop_after(self.duration_s), name="lifecycle:duration")
                )
            await self._stop.wait()
            ctx.health.phase = Phase.STOPPING
            self.systemd.stopping("stopping: strategies, drain, feeds, sidecar, storage")
            log.info("daemon_stopping")
            await self._cancel("strategies", strategies, s.shutdown_timeout_s)
            for name, drain in ctx.drainers:
                await self._step(f"drain:{name}", drain(), s.drain_timeout_s)
            await self._cancel("services", services, s.shutdown_timeout_s)
            # The duration timer too: a SIGTERM before it fires must not wait for it.
            for task in tg_tasks_left(strategies + services + timers):
                task.cancel()

    async def _stop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.request_stop(f"duration {seconds:g}s elapsed")

    async def _build_trading(self, ctx: Context) -> None:
        """Build the trading stack in life-cycle order; each stage adds services and closers."""
        await self._build_execution(ctx)
        await self._build_market_data(ctx)
        await self._build_copy_trading(ctx)

    async def _build_execution(self, ctx: Context) -> None:
        """Venue client, start-up reconciliation, executor, user feed, control routes."""
        from execution.assembly import assemble  # the SDK loads only when trading is built

        s = ctx.settings
        built = await assemble(
            s,
            repos=ctx.repos,
            metrics=ctx.metrics,
            redactor=ctx.redactor,
            books=lambda: ctx.books,
        )
        executor = ctx.executor = built.executor
        ctx.health.register("executor", executor.health)
        if built.user_feed is not None:
            ctx.health.register("venue:user_feed", built.user_feed.health)
        if s.live:
            # /health says "starting" until every journal row left by the last run is settled.
            await executor.reconcile()
        ctx.services.extend(built.services)

        async def halt(body: Mapping[str, Any]) -> Mapping[str, Any]:
            await executor.halt(str(body.get("reason") or "manual halt"))
            return {"trading_state": executor.state.value}

        async def resume(body: Mapping[str, Any]) -> Mapping[str, Any]:
            try:
                await executor.resume(str(body.get("reason") or "manual resume"))
            except OrderRejected as e:
                return {"trading_state": executor.state.value, "refused": e.reason}
            return {"trading_state": executor.state.value}

        async def reduce(body: Mapping[str, Any]) -> Mapping[str, Any]:
            # REDUCING is manual only: the risk caps already refuse every BUY that would breach
            # them, so an automatic trigger would add a state, not protection.
            await executor.reduce_only(str(body.get("reason") or "manual reduce-only"))
            return {"trading_state": executor.state.value}

        async def cancel_all(body: Mapping[str, Any]) -> Mapping[str, Any]:
            return {"canceled": await executor.cancel_all()}

        if ctx.sidecar is not None:
            ctx.sidecar.add_control("halt", halt)
            ctx.sidecar.add_control("resume", resume)
            ctx.sidecar.add_control("reduce", reduce)
            ctx.sidecar.add_control("cancel-all", cancel_all)

        async def drain() -> None:
            # Wait for in-flight submissions for part of the drain deadline, so that the
            # CANCEL_ON_SHUTDOWN cancel still fits inside it when a submission hangs.
            await executor.drain(wait_s=max(0.1, s.drain_timeout_s - s.http_timeout_s))

        ctx.drainers.append(("executor", drain))
        ctx.closers.extend(built.closers)

    async def _build_market_data(self, ctx: Context) -> None:
        """Market discovery, the market websocket feed, order books and the sniper."""
        import aiohttp

        from models import Market
        from resilience.clock import SystemClock
        from resilience.rate_limit import RateLimiter, polymarket_limits
        from strategies.sniper import Sniper
        from strategies.sniper import load_rules as load_sniper_rules
        from venue.gamma import Discovery, DiscoveryResult, GammaClient
        from venue.market_feed import ClobBookFetcher, MarketFeed
        from venue.order_book import BookStore

        s = ctx.settings
        rules = []
        if s.sniper_enabled and s.sniper_rules_path is not None:
            rules = load_sniper_rules(s.sniper_rules_path)  # ConfigError: the daemon exits 2
        executor = ctx.executor
        clock = SystemClock()
        limiter = RateLimiter.from_limits(polymarket_limits(s.rate_limit_fraction), clock=clock)
        store = BookStore(stale_after_s=s.feed_stale_after_s, clock=clock.monotonic)
        ctx.books = store  # the paper broker and position marks read books through BookSource
        session = aiohttp.ClientSession()
        ctx.closers.append(("market_data_http", session.close))
        feed = MarketFeed(
            url=s.market_ws_url,
            store=store,
            metrics=ctx.metrics,
            tick_sink=executor,  # tick_size_change -> the executor's market rules
            fetcher=ClobBookFetcher(
                session=session, base_url=s.clob_host, limiter=limiter, timeout_s=s.http_timeout_s
            ),
            shard_size=s.feed_shard_size,
            ping_interval_s=s.feed_ping_interval_s,
            stale_after_s=s.feed_stale_after_s,
            clock=clock,
        )
        ctx.services.append(("feed:market", feed.run))
        ctx.health.register("feed:market", feed.health)
        if not rules:
            log.info("sniper_off", enabled=s.sniper_enabled, rules=str(s.sniper_rules_path))
            return
        if executor is None:
            raise FatalError("the sniper needs the executor, which was not built")
        sniper = Sniper(rules=rules, books=store, orders=executor, metrics=ctx.metrics)
        sniper.on_watch = lambda tokens: feed.watch("sniper", tokens)
        market_rules = getattr(executor, "rules", None)

        def on_markets(found: DiscoveryResult) -> None:
            if market_rules is not None and hasattr(market_rules, "load_market"):
                for m in {m.condition_id: m for ms in found.values() for m in ms}.values():
                    market_rules.load_market(_with_live_tick(m, store))
            sniper.set_markets(found)

        def _with_live_tick(m: Market, books: BookStore) -> Market:
            # Gamma's tick can lag a websocket tick_size_change; the book's tick is newer.
            for t in m.token_ids:
                b = books.get(t)
                if b is not None and b.tick_size is not None and b.tick_size != m.tick_size:
                    return m.model_copy(update={"tick_size": b.tick_size})
            return m

        gamma = GammaClient(
            base_url=s.gamma_api_url,
            session=session,
            limiter=limiter,
            metrics=ctx.metrics,
            timeout_s=s.http_timeout_s,
        )
        discovery = Discovery(
            gamma=gamma,
            queries=sniper.market_queries(),
            on_update=on_markets,
            interval_s=s.discovery_interval_s,
            metrics=ctx.metrics,
            clock=clock,
        )
        ctx.services.append(("discovery", discovery.run))
        ctx.strategies.append(sniper)
        log.info("sniper_built", rules=[r.name for r in rules])

    async def _build_copy_trading(self, ctx: Context) -> None:
        """The Data API client, the Gamma tag index (if rules filter by tag) and the copy trader."""
        from resilience.clock import SystemClock
        from resilience.retry import RetryPolicy
        from strategies.copy_trader import CopyTrader, TagIndex, load_rules
        from venue.data_api import DataApiBudget, DataApiClient

        s = ctx.settings
        if not s.copy_enabled or s.copy_rules_path is None:
            log.info("copy_trader_off", enabled=s.copy_enabled, rules=str(s.copy_rules_path))
            return
        rules = load_rules(s.copy_rules_path)  # ConfigError: the daemon exits 2
        if not rules.active:
            log.info("copy_trader_off", reason="no enabled wallets in the rules file")
            return
        executor = ctx.executor
        if executor is None:
            raise FatalError("the copy trader needs the executor, which was not built")
        metrics = ctx.metrics
        clock = SystemClock()
        data_api = DataApiClient(
            base_url=s.data_api_url,
            budget=DataApiBudget(s.rate_limit_fraction, clock=clock),
            timeout_s=s.http_timeout_s,
            retry=RetryPolicy(
                attempts=min(s.retry_attempts, 3),
                base_delay_s=s.retry_base_delay_s,
                max_delay_s=min(s.retry_max_delay_s, 2.0),
            ),
            clock=clock,
            on_error=lambda kind: metrics.data_api_errors_total.labels(kind).inc(),
        )
        ctx.closers.append(("data_api", data_api.close))
        tags: TagIndex | None = None
        tag_names = {t for w in rules.active for t in (*w.allow_tags, *w.block_tags)}
        if tag_names:
            # Tag allow/block lists: per-tag market lists from Gamma `/events?tag_slug=`, on
            # a session and a small share of the Gamma limits of their own (discovery holds
            # `rate_limit_fraction` of them; this is a few listings every few minutes).
            import aiohttp

            from resilience.rate_limit import RateLimiter, polymarket_limits
            from venue.gamma import GammaClient, MarketQuery

            session = aiohttp.ClientSession()
            ctx.closers.append(("copy_gamma_http", session.close))
            gamma = GammaClient(
                base_url=s.gamma_api_url,
                session=session,
                limiter=RateLimiter.from_limits(
                    polymarket_limits(min(0.1, s.rate_limit_fraction)), clock=clock
                ),
                metrics=metrics,
                timeout_s=s.http_timeout_s,
            )

            async def tagged(tag: str) -> list[str]:
                query = MarketQuery(
                    tags=(tag,), active=None, accepting_orders=None, enable_order_book=None
                )
                return [m.condition_id for m in await gamma.markets(query)]

            tags = TagIndex(tags=tag_names, lister=tagged, clock=clock)
            log.info("copy_tags_wired", tags=list(tags.watched))
        ctx.strategies.append(
            CopyTrader(
                rules=rules,
                data_api=data_api,
                sink=executor,
                positions=executor,
                repos=ctx.repos,
                metrics=metrics,
                markets=getattr(executor, "rules", None),
                tags=tags,
                books=ctx.books,
                poll_interval_s=s.copy_poll_interval_s,
                max_trade_age_s=s.copy_max_trade_age_s,
                clock=clock,
            )
        )
        log.info("copy_trader_built", wallets=[w.name for w in rules.active])

    @staticmethod
    async def _cancel(what: str, tasks: Sequence[asyncio.Task[Any]], timeout_s: float) -> None:
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.error("stop_deadline_missed", step=what, pending=[t.get_name() for t in pending])

    @staticmethod
    async def _step(name: str, aw: Awaitable[None], timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await aw
        except TimeoutError:
            log.error("stop_deadline_missed", step=name, timeout_s=timeout_s)
        except Exception:
            log.exception("stop_step_failed", step=name)

    async def _close_all(self, ctx: Context) -> None:
        for name, close in reversed(ctx.closers):
            await self._step(f"close:{name}", close(), ctx.settings.shutdown_timeout_s)


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def tg_tasks_left(tasks: Sequence[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    return [t for t in tasks if not t.done()]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="polyd: a Polymarket CLOB trading daemon (sniper + copy trader).",
        epilog="Settings come from the environment and .env; see .env.example.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate settings, print them with secrets redacted, exit 0 (ok) or 2 (bad)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run live against the built-in venue simulator with a throwaway key",
    )
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds"
    )
    p.add_argument(
        "--env-file", default=".env", metavar="PATH", help="settings file (default: .env)"
    )
    from cli import add_commands  # status|positions|orders|halt|reduce|resume|cancel-all

    add_commands(p)
    return p


def _print_config_error(e: ConfigError) -> None:
    print("polyd: configuration error:", file=sys.stderr)
    for line in e.problems:
        print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"polyd {VERSION}")
        return EXIT_OK
    if args.duration is not None and args.duration <= 0:
        print("polyd: --duration must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    env_file = None if args.env_file in ("", "none") else args.env_file
    if args.command is not None:
        from cli import run_command

        cli_code: int = run_command(args, env_file=env_file)
        return cli_code
    if args.demo:
        from demo import run_demo  # the simulator is only imported when asked for

        code: int = run_demo(duration_s=args.duration, env_file=env_file)
        return code
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as e:
        _print_config_error(e)
        return EXIT_CONFIG
    if args.check_config:
        for key, value in settings.redacted().items():
            print(f"{key}={value}")
        for warning in env_file_warnings(env_file or ".env"):
            print(f"warning: {warning}", file=sys.stderr)
        print("configuration ok", file=sys.stderr)
        return EXIT_OK
    return run(settings, duration_s=args.duration, env_file=env_file)


def run(
    settings: Settings,
    *,
    duration_s: float | None = None,
    env_file: str | Path | None = ".env",
    on_ready: Callable[[Context], None] | None = None,
) -> int:
    """Configure logging and run the daemon to completion; return the exit code."""
    redactor = configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        redactor=Redactor(settings.secret_values()),
    )
    for warning in env_file_warnings(env_file) if env_file else []:
        log.warning("env_file_permissions", detail=warning)
    daemon = Daemon(settings, redactor=redactor, duration_s=duration_s, on_ready=on_ready)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    raise SystemExit(main())
