"""Copy-trader benchmark: `python -m bench copy [--wallets N] [--seconds S] [--fraction F]`.

Figures:

* `copy_lag_p50_s`, `copy_lag_p99_s`: leader trade timestamp -> our order acknowledged, through
  the whole daemon (Data API poll at 1 s, dedupe + intent write, executor, signing, CLOB POST)
  live against the in-process simulator. Each leader trade is scripted at a whole second
  (+5 ms), so the Data API's whole-second `timestamp` *is* the trade instant; wallets' poll
  phases are spread over the second, so the poll delay is what it would be for trades at random
  instants. That is the figure the `polyd_copy_lag_seconds` histogram records.
* `copy_lag_random_instant_*`: a second run with trades at uniformly random instants, measured
  both from the Data API timestamp (which is *truncated to the second*, adding 0.5 s on average
  that no poller can remove) and from the true trade instant (known to the bench).
* `wallets_within_budget`: how many wallets can each be polled every 1 s within the Data API
  budget (`rate_limit_fraction` of 1,000 requests in any 10 s sliding window, as documented at
  https://docs.polymarket.com/api-reference/rate-limits),
  *proved by measurement*: that many wallets polled for `--budget-seconds` (>= one window)
  against the simulator, their mean poll interval checked and every request's admission instant
  checked against every 10 s window; twice as many wallets show the graceful slow-down.
  `--budget-only` skips the lag runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import parse_qs

import structlog

from config import load_settings
from demo import funded_key, simulator_overrides
from models import OrderRequest, OrderResult, OrderStatus, Position
from observability.logging import Redactor
from observability.metrics import Metrics
from orchestrator import Context, Daemon
from resilience.clock import SystemClock
from simulator import Simulator
from storage import Database, Repositories
from strategies.copy_trader import CopyRules, CopyTrader, WalletRule, percentile
from venue.data_api import DataApiBudget, DataApiClient

D = Decimal
MAKER = "0x" + "7a" * 20


def _wallet(i: int) -> str:
    return f"0x{0xC0C0 + i:040x}"


def _rules_toml(wallets: list[str]) -> str:
    out = ["[defaults]", 'ratio = "0.5"', 'max_slippage = "0.02"', 'max_market_exposure = "500"']
    for w in wallets:
        out += ["[[wallets]]", f'address = "{w}"']
    return "\n".join(out) + "\n"


async def _lag_run(wallets: int, seconds: float, aligned: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    leaders = [_wallet(i) for i in range(wallets)]
    true_at: dict[str, float] = {}
    with TemporaryDirectory() as tmp:
        rules = Path(tmp) / "copy.toml"
        rules.write_text(_rules_toml(leaders))
        async with Simulator(seed=seed, settle_delay_s=0.02) as sim:
            markets = [sim.add_market(question=f"Bench {i}?", slug=f"bench-{i}") for i in range(5)]
            for m in markets:
                sim.seed_order(MAKER, m.token_ids[0], "SELL", D("0.51"), D("100000"))
            settings = load_settings(
                env_file=None,
                **simulator_overrides(sim, funded_key(sim, D("100000"))),
                db_path=Path(tmp) / "bench.db",
                http_port=0,
                sniper_enabled=False,
                copy_rules_path=rules,
                copy_poll_interval_s=1.0,
                log_level="ERROR",
                risk_max_position_notional="100000",
                risk_max_total_exposure="100000",
                risk_max_order_notional="1000",
                risk_daily_loss_limit="100000",
                shutdown_timeout_s=3,
            )

            async def script() -> None:
                await asyncio.sleep(2.0)  # let every wallet's first poll set its cursor
                end = time.time() + seconds
                while time.time() < end:
                    if aligned:
                        nxt = int(time.time()) + 1 + 0.005
                        await asyncio.sleep(nxt - time.time())
                        batch = 2
                    else:
                        await asyncio.sleep(rng.uniform(0.0, 1.0))
                        batch = 1
                    for _ in range(batch):
                        m = rng.choice(markets)
                        tx = sim.trade_as(
                            wallet=rng.choice(leaders),
                            token_id=m.token_ids[0],
                            side="BUY",
                            price=D("0.50"),
                            size=D("20"),
                        )
                        true_at[tx] = time.time()

            tasks: list[asyncio.Task[None]] = []

            def start(ctx: Context) -> None:
                tasks.append(asyncio.get_running_loop().create_task(script(), name="bench:script"))

            daemon = Daemon(
                settings, redactor=Redactor([]), duration_s=seconds + 4.5, on_ready=start
            )
            await daemon.run()
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        db = Database(settings.db_path)
        await db.open()
        try:
            repos = Repositories.over(db)
            sent = await repos.audit.tail(event="copy_sent", limit=100_000)
            intents = await repos.audit.tail(event="copy_intent", limit=100_000)
        finally:
            await db.close()
    tx_of = {e.client_order_id: str(e.detail["dedupe_key"]).split(":")[0] for e in intents}
    from_ts = [float(e.detail["lag_s"]) for e in sent]
    true_lags = []
    for e in sent:
        tx = tx_of.get(e.client_order_id)
        if tx in true_at:
            true_lags.append(datetime.fromisoformat(e.at).timestamp() - true_at[tx])
    return {"trades": len(true_at), "copied": len(sent), "from_ts": from_ts, "true": true_lags}


class _NullSink:
    async def submit(self, request: OrderRequest) -> OrderResult:
        return OrderResult(client_order_id=request.client_order_id, status=OrderStatus.REJECTED)

    def position(self, token_id: str, *, strategy: str) -> Position:
        return Position(token_id=token_id, strategy=strategy)


class _RecordingBudget(DataApiBudget):
    """The daemon's budget, recording the instant each request was admitted (send time)."""

    def __init__(self, fraction: float, *, clock: SystemClock) -> None:
        super().__init__(fraction, clock=clock)
        self.admitted: list[float] = []

    async def acquire(self, route: str) -> float:
        waited = await super().acquire(route)
        self.admitted.append(self.clock.monotonic())
        return waited


def max_in_window(times: list[float], window_s: float) -> int:
    """The most instants any half-open window [t, t + window_s) holds."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _budget_run(wallets: int, seconds: float, fraction: float) -> dict[str, Any]:
    """Poll `wallets` idle wallets for `seconds`; return the achieved rate, windows and gaps."""
    with TemporaryDirectory() as tmp:
        async with Simulator(seed=9) as sim:
            db = Database(Path(tmp) / "b.db")
            await db.open()
            clock = SystemClock()
            budget = _RecordingBudget(fraction, clock=clock)
            api = DataApiClient(base_url=sim.data_url, budget=budget, timeout_s=5)
            sink = _NullSink()
            trader = CopyTrader(
                rules=CopyRules(
                    wallets=tuple(
                        WalletRule(address=_wallet(1000 + i), ratio=D("1")) for i in range(wallets)
                    )
                ),
                data_api=api,
                sink=sink,
                positions=sink,
                repos=Repositories.over(db),
                metrics=Metrics(),
                poll_interval_s=1.0,
            )
            task = asyncio.create_task(trader.run(), name="bench:budget")
            await asyncio.sleep(1.5)  # warm-up: first polls and their phases
            t0, n0 = time.monotonic(), api.requests
            mark = len(sim.request_log)
            await asyncio.sleep(seconds)
            elapsed, n = time.monotonic() - t0, api.requests - n0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await api.close()
            await db.close()
            per_user: dict[str, list[float]] = defaultdict(list)
            for r in sim.request_log[mark:]:
                if r.server == "data":
                    user = parse_qs(r.query).get("user", [""])[0]
                    per_user[user].append(r.ts)
            gaps = [b - a for ts in per_user.values() for a, b in itertools.pairwise(ts)]
            served = [r.ts for r in sim.request_log if r.server == "data"]
    general = budget.windows["general"]
    return {
        "wallets": wallets,
        "seconds": seconds,
        "requests_per_s": round(n / elapsed, 2),
        "mean_poll_interval_s": round(wallets / (n / elapsed), 3) if n else None,
        "max_poll_gap_s": round(max(gaps), 3) if gaps else None,
        "window_limit": general.limit,
        # Every request of the run, warm-up included, checked against every 10 s window: at
        # admission (the limiter's guarantee) and as the venue saw them (network jitter).
        "max_requests_any_window_sent": max_in_window(budget.admitted, general.window_s),
        "max_requests_any_window_served": max_in_window(served, general.window_s),
        "requests_total": len(budget.admitted),
    }


def _fits(run: dict[str, Any], interval_s: float) -> bool:
    """All wallets polled at the interval (2% measuring slack) and no window over budget."""
    mean = run["mean_poll_interval_s"]
    return (
        mean is not None
        and mean <= interval_s * 1.02
        and run["max_requests_any_window_sent"] <= run["window_limit"]
    )


def main(argv: list[str]) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m bench copy")
    p.add_argument("--wallets", type=int, default=20, help="leader wallets in the lag runs")
    p.add_argument("--seconds", type=float, default=15.0, help="trading seconds per lag run")
    p.add_argument("--fraction", type=float, default=0.5, help="RATE_LIMIT_FRACTION")
    p.add_argument(
        "--budget-seconds", type=float, default=12.0, help="measuring time (>= one 10 s window)"
    )
    p.add_argument("--budget-only", action="store_true", help="skip the copy-lag runs")
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=True,
    )

    async def run() -> dict[str, object]:
        empty: dict[str, Any] = {"from_ts": [], "true": [], "copied": 0, "trades": 0}
        aligned = empty if a.budget_only else await _lag_run(a.wallets, a.seconds, True, 1)
        rand = empty if a.budget_only else await _lag_run(a.wallets, a.seconds, False, 2)
        computed = DataApiBudget(a.fraction, clock=SystemClock()).wallets_at(1.0)
        at_budget = await _budget_run(computed, a.budget_seconds, a.fraction)
        over = await _budget_run(2 * computed, a.budget_seconds, a.fraction)
        # Proved by measurement: `computed` wallets each polled every 1 s with no 10 s window
        # over budget; otherwise only what was actually achieved counts.
        measured_rate = at_budget["requests_per_s"]
        within = computed if _fits(at_budget, 1.0) else int(measured_rate)

        def r(x: float) -> float:
            return round(x, 3)

        return {
            "copy_lag_p50_s": r(percentile(aligned["from_ts"], 0.5)),
            "copy_lag_p99_s": r(percentile(aligned["from_ts"], 0.99)),
            "copy_lag_true_p50_s": r(percentile(aligned["true"], 0.5)),
            "copy_lag_true_p99_s": r(percentile(aligned["true"], 0.99)),
            "copied": f"{aligned['copied']}/{aligned['trades']}",
            "copy_lag_random_instant_from_ts_p50_s": r(percentile(rand["from_ts"], 0.5)),
            "copy_lag_random_instant_from_ts_p99_s": r(percentile(rand["from_ts"], 0.99)),
            "copy_lag_random_instant_true_p50_s": r(percentile(rand["true"], 0.5)),
            "copy_lag_random_instant_true_p99_s": r(percentile(rand["true"], 0.99)),
            "copied_random_instant": f"{rand['copied']}/{rand['trades']}",
            "poll_interval_s": 1.0,
            "leader_wallets": a.wallets,
            "wallets_within_budget": within,
            "wallets_within_budget_computed": computed,
            "rate_limit_fraction": a.fraction,
            "budget_requests_per_s": r(DataApiBudget(a.fraction, clock=SystemClock()).rate_per_s()),
            "measured_at_budget": at_budget,
            "measured_at_twice_budget": over,
            "targets": {"copy_lag_p50_s": 0.6, "copy_lag_p99_s": 1.2, "wallets_within_budget": 50},
            "method": (
                "full daemon live against the in-process simulator (real executor, signing, "
                "CLOB POST); lag = Data API trade timestamp -> order acknowledged, trades "
                "scripted at whole seconds so the second-resolution timestamp equals the true "
                "instant; poll phases spread over the 1 s interval. random_instant: trades at "
                "random instants, where the truncated timestamp adds ~0.5 s to the from_ts "
                "figure but not to the true lag. wallets_within_budget: that many idle wallets "
                "polled every 1 s against the simulator for >= one 10 s window, mean interval "
                "<= 1.02 s and no 10 s window holding more than fraction x 1,000 requests at "
                "admission (sliding-window budget); served = as the simulator logged them."
            ),
        }

    return asyncio.run(run())
