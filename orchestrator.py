"""polyd's life cycle: `python -m orchestrator`.

Folds the stages that `wiring/` builds from one `Settings` into one life cycle, owns every
long-lived task in a TaskGroup, and runs them in this order:

start: settings -> logging -> metrics -> storage (writer lock, open, migrate) -> sidecar -> venue
       -> reconcile -> executor -> feeds -> strategies   (/health says "starting" until then)
stop:  strategies -> executor drain (+ cancel resting orders if configured) -> feeds -> sidecar
       -> storage, each step under a deadline. SIGTERM/SIGINT only *ask* for this.

Exit codes: 0 clean stop, 1 fatal runtime error, 2 bad configuration or rules, 3 another process
holds the database (another daemon), a strategy's lease, or the sidecar's address, or took this
daemon's PostgreSQL writer lock while it ran (`wiring.writer_lock`: trading halted, then a stop).
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":
    # A Ctrl-C while the imports below run (most of half a second) is only noted here, and the
    # process exits 0 as soon as they end (`_main_quietly`): an exception raised into a
    # library's import can meet a bare `except:` there and be lost, leaving the daemon to run.
    _EARLY_CTRL_C: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _: _EARLY_CTRL_C.append(signum))

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from config import Settings, env_file_warnings, load_settings
from errors import AlreadyRunning, ConfigError, FatalError
from launch import before_daemon, build_parser, env_file_of, print_config_error
from observability.console import Console
from observability.gc_pauses import GcPauses, freeze_heap
from observability.health import CheckResult
from observability.logging import Redactor, configure_logging
from observability.metrics import Metrics
from observability.notify import Notifier
from observability.sidecar import Health, Phase, Sidecar
from observability.systemd import SystemdNotifier
from preflight import no_strategy_warning, start_warnings
from resilience.backoff import Backoff
from storage import Database, Repositories
from strategies.base import Strategy
from wiring.chat import build_chat
from wiring.database import DatabaseProbe
from wiring.leases import adopt_positions, hold_leases
from wiring.names import build_names
from wiring.reload import Reloads
from wiring.shared import Shared, build_shared, describe_db, process_metrics
from wiring.stage import Service, Stage, Step
from wiring.summary import build_summary
from wiring.writer_lock import watch_writer_lock

if TYPE_CHECKING:  # built lazily: the venue SDK loads only when trading is built
    from executor import Executor
    from venue.order_book import BookStore

VERSION = "0.1.0"
EXIT_OK, EXIT_FATAL, EXIT_CONFIG, EXIT_IN_USE = 0, 1, 2, 3

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


@dataclass
class Context:
    """What the daemon built, as its life cycle runs it: the shared parts, the stages folded in
    build order (their services, strategies, drainers and closers), and the stages' products that
    hooks (`on_ready`, tests, benchmarks) read."""

    settings: Settings
    redactor: Redactor
    metrics: Metrics
    health: Health
    shared: Shared
    db: Database
    repos: Repositories
    sidecar: Sidecar | None = None
    strategies: list[Strategy] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    closers: list[Step] = field(default_factory=list)
    drainers: list[Step] = field(default_factory=list)
    # Operator webhook: ctx.notifier.notify(kind, key, text) never blocks (disabled without a URL).
    notifier: Notifier = field(default_factory=Notifier)
    executor: Executor | None = None  # once the execution stage is built
    books: BookStore | None = None  # the market feed's books, once market data is built

    def fold(self, stage: Stage) -> None:
        """Take a stage's parts into the life cycle (its start-up steps are run by the caller)."""
        for name, check in stage.checks:
            self.health.register(name, check)
        if self.sidecar is not None:
            for action, handler in stage.controls:
                self.sidecar.add_control(action, handler)
        self.services.extend(stage.services)
        self.strategies.extend(stage.strategies)
        self.drainers.extend(stage.drainers)
        self.closers.extend(stage.closers)


class Daemon:
    """One run of the daemon, from settings to exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        redactor: Redactor,
        duration_s: float | None = None,
        on_ready: Callable[[Context], None] | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.reloads = Reloads(load=lambda: settings)  # SIGHUP / POST /reload (`wiring.reload`)
        self.settings = settings
        self.redactor = redactor
        self.duration_s = duration_s
        self.on_ready = on_ready
        # The process's start-up heap frozen out of garbage collection once ready
        # (`observability.gc_pauses`): the daemon's entry points, not daemons run inside tests.
        self.freeze_heap = freeze_heap
        self.systemd = SystemdNotifier(settings.notify_socket, watchdog_usec=settings.watchdog_usec)
        self._stop = asyncio.Event()
        self._code = EXIT_OK
        self.ctx: Context | None = None

    def request_stop(self, reason: str = "requested", *, code: int = EXIT_OK) -> None:
        """Ask for a graceful stop (idempotent; safe from a signal handler); the run then ends
        with exit `code` (a non-zero one wins over an earlier request's 0)."""
        self._code = self._code or code
        if not self._stop.is_set():
            log.info("stop_requested", reason=reason)
            self._stop.set()

    async def run(self) -> int:
        """Run until asked to stop; return the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        self.reloads.install(loop)
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
            if busy := [x for x in _leaves(e) if isinstance(x, AlreadyRunning)]:
                log.error("already_running", error=str(busy[0]))  # one line, no traceback
                return EXIT_IN_USE
            bad_config = [x for x in _leaves(e) if isinstance(x, ConfigError)]
            if bad_config:  # e.g. a strategy's rules file, read at start-up: a line a problem
                for problem in (p for bad in bad_config for p in bad.problems):
                    log.error("config_error", problem=problem)
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
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        s = self.settings
        metrics = process_metrics(s, version=VERSION)
        gc_pauses = GcPauses(metrics.observe_gc_pause)
        gc_pauses.install()
        health = Health(mode=s.mode, version=VERSION)
        shared = await build_shared(s, redactor=self.redactor, metrics=metrics)
        ctx = self.ctx = Context(
            settings=s,
            redactor=self.redactor,
            metrics=metrics,
            health=health,
            shared=shared,
            db=shared.db,
            repos=shared.repos,
        )
        ctx.closers.extend(shared.closers)
        probe = DatabaseProbe(shared.db, metrics=metrics)
        await probe.ping()
        health.register("database", probe.check)
        ctx.services.append(("database:probe", probe.run))
        log.info("daemon_starting", version=VERSION, mode=s.mode, db=describe_db(s))
        try:
            await self._start_and_serve(ctx, probe)
        finally:
            await self._close_all(ctx)
            gc_pauses.remove()
        log.info("daemon_stopped", exit_code=self._code)
        return self._code

    async def _start_and_serve(self, ctx: Context, probe: DatabaseProbe) -> None:
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
        Console(  # the web console at /ui (docs/console.md)
            sidecar, health=ctx.health, db_path=s.db_path, database_url=s.database_url,
            daily_loss_limit=s.risk_daily_loss_limit, daemon_id=s.daemon_id,
            public_read=s.ui_public_read,
        ).mount()  # fmt: skip
        await sidecar.start()
        ctx.closers.append(("sidecar", sidecar.stop))
        await self._build_trading(ctx)
        await hold_leases(ctx)  # several daemons on one PostgreSQL database: exit 3 if taken
        await adopt_positions(ctx)  # strategies taken over: their positions join the book
        # PostgreSQL's writer lock can be dropped with its connection: retaken, or exit 3.
        watch_writer_lock(ctx, stop=lambda why: self.request_stop(why, code=EXIT_IN_USE))
        if not ctx.strategies and self.duration_s != 0:  # 0: a reconcile pass (the demo's last)
            idle = no_strategy_warning(s)
            log.warning("no_strategy_enabled", detail=idle)
            ctx.health.register("strategies", lambda: CheckResult(True, idle))
        # Building and reconciling can outlast the probe's staleness limit, and its loop starts
        # with the services: ping once more so /health reads a fresh answer when it turns ok.
        await probe.ping()
        ctx.services += notifier.services(
            warn_fraction=s.risk_daily_loss_warn_fraction,
            reason=lambda: ctx.executor.state_reason if ctx.executor is not None else "",
        ) + build_chat(ctx)  # Telegram chat control (idle without a bot token)
        ctx.services += build_names(ctx) + build_summary(ctx)  # names; snapshot, summary line
        self.reloads.start(ctx)
        if self.freeze_heap:  # before the first order: the collection blocks the loop once
            frozen, took = freeze_heap()
            ctx.metrics.gc_frozen_objects.set(frozen)
            log.info("heap_frozen", objects=frozen, collect_ms=round(took * 1e3, 1))
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
        """Build the stages in life-cycle order and fold each in as it is built: execution
        (reconciled before anything trades), market data, copy trading."""
        # Imported here: the venue SDK loads only when trading is built, not for the CLI.
        from wiring.copy_trading import build_copy_trading
        from wiring.execution import build_execution
        from wiring.market_data import build_market_data
        from wiring.redemption import build_redemption

        execution = await build_execution(ctx.shared, books=lambda: ctx.books)
        ctx.executor = execution.executor
        await self._fold(ctx, execution)
        market_data = build_market_data(ctx.shared, execution)
        ctx.books = market_data.books
        await self._fold(ctx, market_data)
        await self._fold(ctx, build_copy_trading(ctx.shared, execution, books=market_data.books))
        await self._fold(ctx, build_redemption(ctx.shared, execution, alert=ctx.notifier.notify))

    @staticmethod
    async def _fold(ctx: Context, stage: Stage) -> None:
        """Fold `stage` into the life cycle, then run its start-up steps (e.g. reconcile)."""
        ctx.fold(stage)
        for _, step in stage.startup:
            await step()

    @staticmethod
    async def _cancel(what: str, tasks: Sequence[asyncio.Task[None]], timeout_s: float) -> None:
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


def tg_tasks_left(tasks: Sequence[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    return [t for t in tasks if not t.done()]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m orchestrator`: parse the command line, run it, return the exit code."""
    args = build_parser().parse_args(argv)
    code = before_daemon(args, version=VERSION)
    if code is not None:
        return code
    if args.demo:
        return run_demo(duration_s=args.duration, speed=args.speed or 1.0)
    env_file, _ = env_file_of(args)
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as e:
        print_config_error(e)
        return EXIT_CONFIG
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
    for warning in start_warnings(env_file):  # a misspelled key would leave its default
        log.warning("unknown_setting", detail=warning)
    daemon = Daemon(
        settings, redactor=redactor, duration_s=duration_s, on_ready=on_ready, freeze_heap=True
    )
    daemon.reloads.load = lambda: load_settings(env_file=env_file)
    return asyncio.run(daemon.run())


def run_demo(*, duration_s: float | None = None, speed: float = 1.0) -> int:
    """Run the daemon live against the built-in simulator (`--demo`) and return the exit code.
    No settings file is read: the demo must never pick up a real key from a developer's `.env`."""
    try:
        return asyncio.run(_demo(duration_s, speed))
    except ConfigError as e:
        print_config_error(e)
        return EXIT_CONFIG
    except AlreadyRunning as e:  # another demo is running from this checkout
        print(f"polyd: {e}", file=sys.stderr)
        return EXIT_IN_USE


async def _demo(duration_s: float | None, speed: float = 1.0) -> int:
    import demo  # the simulator is only imported when asked for

    async with demo.prepared(speed=speed) as prepared:
        settings = prepared.settings
        redactor = configure_logging(
            level=settings.log_level,
            fmt=settings.log_format,
            redactor=Redactor(settings.secret_values()),
        )
        print(json.dumps(prepared.banner()), flush=True)

        def announce(ctx: Context) -> None:
            assert ctx.sidecar is not None and ctx.sidecar.bound_port is not None
            base = f"http://{settings.http_host}:{ctx.sidecar.bound_port}"
            print(f"health:  {base}/health\nmetrics: {base}/metrics", flush=True)
            print(demo.operate(settings, port=ctx.sidecar.bound_port), flush=True)

        daemon = Daemon(
            settings, redactor=redactor, duration_s=duration_s, on_ready=announce, freeze_heap=True
        )
        code = await daemon.run()
        if code == EXIT_OK:
            # A last pass with no strategy: its start-up reconcile books what was still in flight.
            settle = demo.settle_settings(settings)
            code = await Daemon(settle, redactor=redactor, duration_s=0).run()
        demo.print_summary(settings.db_path, settings.database_url)
        if code != EXIT_OK:
            return code
        result = demo.ledger_check(prepared)
        print(result.line(), flush=True)
    return code if result.ok else EXIT_FATAL


def _main_quietly() -> None:
    """Run `main` and exit with its code; a Ctrl-C at any moment is a clean exit 0.

    Once the daemon's loop has given SIGINT back (Python's own handler raises
    KeyboardInterrupt), one may still land in the demo's summary or the loop's shutdown. While
    the interpreter finishes (joining worker threads), SIGINT is ignored.
    """
    if _EARLY_CTRL_C:  # during the imports
        sys.exit(EXIT_OK)
    # Until the daemon's loop takes SIGINT over, a Ctrl-C ends the process quietly with exit 0.
    signal.signal(signal.SIGINT, lambda *_: sys.exit(EXIT_OK))
    try:
        code = main()
    except KeyboardInterrupt:
        code = EXIT_OK
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    _main_quietly()
