"""Replay a recording through the code that trades live: feed parsing, books, sniper, executor.

`run_backtest()` reads a recording (`recording.reader`) in receive-time order and drives, on a
simulated clock:

* the live `MarketFeed`'s frame handling (`handle_frame`: the same parsing, books, doubts and
  tick sizes), REST books through `apply_rest_book`, connection gaps through `shard_lost`;
* discovery over the recorded Gamma rows (the same `parse_market` and `keep` filters the live
  discovery applies to Gamma's answers), refreshed every `discovery_interval_s`;
* the live `Sniper` and `Executor` (market rules, risk, journal in a throwaway database), with
  the `MatchingModel` (`backtest.matching`) as the executor's broker.

The clock only moves with the records: every component reads the receive time of the record
being applied. After each record that woke the strategy, the replay lets the event loop run
until every submission is either finished or parked in the matching model waiting for its
arrival time, so results never depend on how fast the machine is: the same recording, rules and
options give byte-identical results.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from backtest.matching import MatchingModel, SimFill
from config import Settings, load_settings
from errors import FeedError
from execution.fees import fee_booked
from execution.funds import Funds
from execution.market_rules import MarketRules
from execution.positions import PositionBook
from execution.risk import RiskEngine, RiskLimits
from executor import Executor, ExecutorConfig
from models import ONE, ZERO, LiquidityRole, Market, OrderRequest, OrderResult
from observability.metrics import Metrics
from recording import format as fmt
from recording.reader import Recording
from resilience import CircuitBreaker
from storage import Database, Repositories
from strategies.sniper.rules import SniperRule
from strategies.sniper.strategy import Sniper
from venue.gamma import DiscoveryResult, MarketRow, keep, parse_market, resolution_payouts
from venue.market_feed.feed import MarketFeed
from venue.market_feed.parsing import PARSE_ERRORS, parse_last_trade_price
from venue.order_book import BookStore
from wiring.execution import retry_policy

log = structlog.get_logger("backtest")

NS: Final = 1_000_000_000
REPLAY_OWNER: Final = "replay"
_SETTLE_IDLE_ROUNDS: Final = 4
"""Quiet loop turns in a row that end a settle when a rule has a take-profit: its SELL is
created by the BUY's task after the BUY returned, one turn before it reaches the sink."""
_SETTLE_MAX_ROUNDS: Final = 200_000


class SimClock:
    """The replay's clock: the receive time of the record being applied (a `resilience.Clock`)."""

    def __init__(self, t_ns: int = 0) -> None:
        self.t_ns = t_ns

    def monotonic(self) -> float:
        return self.t_ns / NS

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.t_ns / NS, UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # time moves with the records only


class _CountingSink:
    """The sniper's order sink: the executor, counting submissions still in progress and
    telling `seen` of each order and its outcome."""

    def __init__(
        self, executor: Executor, seen: Callable[[OrderRequest, OrderResult | None], None]
    ) -> None:
        self._executor = executor
        self._seen = seen
        self.active = 0

    async def submit(self, request: OrderRequest) -> OrderResult:
        self.active += 1
        try:
            self._seen(request, None)
            out = await self._executor.submit(request)
            self._seen(request, out)
            return out
        finally:
            self.active -= 1


@dataclass
class OrderRecord:
    """One order the strategy submitted, as the backtest reports it."""

    t_ns: int
    token_id: str
    rule: str
    side: str
    order_type: str
    price: Decimal
    size: Decimal
    status: str = ""
    filled: Decimal = ZERO
    avg_price: Decimal | None = None
    reason: str = ""


@dataclass
class BacktestResult:
    """What a backtest found: orders, fills, markets, resolutions and the run's figures."""

    data: str
    start_ns: int | None
    end_ns: int | None
    latency_ms: int
    fees: str
    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[SimFill] = field(default_factory=list)
    fees_of: dict[int, Decimal] = field(default_factory=dict)  # fill seq -> fee booked
    markets: dict[str, Market] = field(default_factory=dict)  # by token
    payouts: dict[str, Decimal] = field(default_factory=dict)  # by token, once resolved
    resolved_at: dict[str, tuple[int, Decimal]] = field(default_factory=dict)  # (t, payout)
    marks: dict[str, Decimal] = field(default_factory=dict)  # last known price by token
    prices: dict[str, list[tuple[int, Decimal]]] = field(default_factory=dict)  # held tokens
    records: int = 0
    frames: int = 0
    first_t: int | None = None
    last_t: int | None = None
    notes: list[str] = field(default_factory=list)


def rule_of(reason: str) -> str:
    """The sniper rule named in an order's reason (`sniper rule NAME: ...`)."""
    head = reason.removeprefix("sniper rule ")
    return head.split(":", 1)[0] if head != reason else "?"


def discover(rules: list[SniperRule], rows: dict[str, MarketRow], now: datetime) -> DiscoveryResult:
    """What live discovery would hand the sniper, over the recorded Gamma rows."""
    out: DiscoveryResult = {}
    for rule in rules:
        found: dict[str, Market] = {}
        for q in rule.select.queries():
            for cid in sorted(rows):
                row = rows[cid]
                m = row.market
                if q.explicit and not (
                    set(q.token_ids) & set(m.token_ids)
                    or m.condition_id in q.condition_ids
                    or (m.slug and m.slug in q.slugs)
                ):
                    continue
                if q.tags and row.tag_slugs and not set(q.tags) & set(row.tag_slugs):
                    continue
                if keep(row, q, now):
                    found[cid] = m
        out[rule.name] = list(found.values())
    return out


def backtest_settings(db_path: Path, **overrides: Any) -> Settings:
    """Paper-mode settings for the replay's executor (never a `.env`: no key is needed)."""
    return load_settings(env_file=None, mode="paper", db_path=db_path, **overrides)


async def run_backtest(
    data: str | Path,
    rules: list[SniperRule],
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    latency_ms: int = 0,
    fees: str = "venue",
    settings: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay the recording at `data` through the sniper with `rules`; see the module docstring."""
    rec = Recording(data)
    with tempfile.TemporaryDirectory(prefix="polyd-backtest-") as tmp:
        s = backtest_settings(Path(tmp) / "backtest.db", **(settings or {}))
        # The journal lives in memory: nothing of a replay needs to survive it, and a durable
        # (fsynced) journal would make the replay as slow as the disk.
        db = Database(":memory:")
        await db.open()
        try:
            replay = _Replay(rec, rules, s, db, latency_ms=latency_ms, fees=fees)
            result = BacktestResult(str(data), start_ns, end_ns, latency_ms, fees)
            await replay.run(result, start_ns, end_ns, progress)
        finally:
            await db.close()
    result.notes.extend(rec.problems)
    return result


class _Replay:
    def __init__(
        self,
        rec: Recording,
        rules: list[SniperRule],
        s: Settings,
        db: Database,
        *,
        latency_ms: int,
        fees: str,
    ) -> None:
        self.rec = rec
        self.rules = rules
        self.s = s
        self.fees = fees
        self.clock = SimClock()
        self.store = BookStore(stale_after_s=s.feed_stale_after_s, clock=self.clock.monotonic)
        self.model = MatchingModel(
            books=self.store, now_ns=lambda: self.clock.t_ns, latency_ns=latency_ms * 1_000_000
        )
        self.market_rules = MarketRules(source=None)
        metrics = Metrics()
        positions = PositionBook(books=self.store)
        self.executor = Executor(
            repos=Repositories.over(db),
            broker=self.model,
            rules=self.market_rules,
            risk=RiskEngine(limits=RiskLimits.from_settings(s), funds=Funds(broker=self.model)),
            positions=positions,
            metrics=metrics,
            breaker=CircuitBreaker(
                "venue",
                failure_threshold=s.breaker_failure_threshold,
                reset_timeout_s=s.breaker_reset_timeout_s,
                clock=self.clock,
            ),
            retry_policy=retry_policy(s),
            clock=self.clock,
            config=ExecutorConfig(daily_loss_limit=s.risk_daily_loss_limit),
        )
        self.feed = MarketFeed(
            url="ws://backtest.invalid",
            store=self.store,
            tick_sink=self.executor,
            shard_size=1_000_000_000,
            stale_after_s=s.feed_stale_after_s,
            clock=self.clock,
        )
        self._open: dict[str, OrderRecord] = {}
        self._pending_trades: list[tuple[str, Decimal, Decimal]] = []
        self.sink = _CountingSink(self.executor, self._seen)
        self.sniper = Sniper(
            rules=rules,
            books=self.store,
            orders=self.sink,
            positions=self.executor,
            clock=self.clock.monotonic,
            wall_clock=self.clock.wall,
            fees=self.market_rules.fee,
        )
        self.sniper.on_watch = lambda tokens: self.feed.watch("sniper", tokens)
        # Without take-profits every submission is visible (in flight, or in the sink) from the
        # turn the sniper fires it, so one quiet turn is enough.
        self._idle_rounds = (
            _SETTLE_IDLE_ROUNDS if any(r.take_profit is not None for r in rules) else 1
        )
        self.rows: dict[str, MarketRow] = {}
        self.tokens: set[str] = set()
        self.last_discovery: int | None = None
        self.rows_changed = False
        self.touched: set[str] = set()
        self.store.add_listener(self._on_books)
        self.result: BacktestResult | None = None

    def _on_books(self, tokens: Collection[str]) -> None:
        self.touched.update(tokens)

    # --- records -------------------------------------------------------------------------
    async def run(
        self,
        result: BacktestResult,
        start: int | None,
        end: int | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.result = result
        await self.executor.start()
        self.model.on_fill_cb = self._fee_of
        kinds = (
            fmt.WS,
            fmt.REST_BOOK,
            fmt.MARKET,
            fmt.WATCH,
            fmt.GAP_START,
            fmt.GAP_END,
            fmt.DROPPED,
        )
        self.feed.on_resolved = self._on_resolved
        sniper_task = asyncio.create_task(self.sniper.run(), name="backtest:sniper")
        try:
            await asyncio.sleep(0)
            for r in self.rec.records(start=start, end=end, kinds=kinds):
                if result.first_t is None:
                    result.first_t = r.t
                    self.clock.t_ns = r.t
                    for shard in self.feed.shards:
                        shard.on_connect(self.clock.monotonic())
                if self.model.parked:
                    await self._arrivals(r.t)
                self.clock.t_ns = max(self.clock.t_ns, r.t)
                result.records += 1
                self._apply(r)
                if self._pending_trades:
                    trades, self._pending_trades = self._pending_trades, []
                    for tok, price, size in trades:
                        await self.model.on_trade(tok, price, size, self.clock.t_ns)
                if self._due_discovery():
                    self._discover()
                if self.touched:
                    touched, self.touched = self.touched, set()
                    if self.model._resting:
                        for tok in sorted(touched):
                            if self.model.has_resting(tok):
                                await self.model.on_book(tok, self.clock.t_ns)
                    for tok in touched:
                        if tok in result.prices:
                            self._price_point(tok)
                if self._busy():
                    await self._settle()
                if progress is not None and result.records % 100_000 == 0:
                    progress(result.records)
            result.last_t = self.clock.t_ns
            while self.model.parked:
                nxt = self.model.next_arrival()
                assert nxt is not None
                await self._arrivals(nxt)
            await self._settle()
        finally:
            sniper_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sniper_task
        result.last_t = self.clock.t_ns
        result.fills = list(self.model.fills)
        result.orders.sort(key=lambda o: (o.t_ns, o.token_id, o.side, o.price, o.size))
        self._final_marks()

    def _seen(self, request: OrderRequest, out: OrderResult | None) -> None:
        """Keep every order the sniper submits, with the executor's outcome."""
        result = self.result
        assert result is not None
        if out is None:
            self._open[request.client_order_id] = o = OrderRecord(
                self.clock.t_ns,
                request.token_id,
                rule_of(request.reason),
                request.side.value,
                request.order_type.value,
                request.price,
                request.size,
            )
            result.orders.append(o)
            return
        o = self._open.pop(request.client_order_id)
        o.status, o.filled, o.avg_price = out.status.value, out.filled_size, out.avg_price
        o.reason = out.reason[:200] if out.filled_size <= 0 else ""

    async def _arrivals(self, until: int) -> None:
        while (nxt := self.model.next_arrival()) is not None and nxt <= until:
            self.clock.t_ns = max(self.clock.t_ns, nxt)
            await self.model.arrive_until(nxt)
            await self._settle()

    def _apply(self, r: fmt.Record) -> None:
        result = self.result
        assert result is not None
        kind = r.kind
        if kind == fmt.WS:
            result.frames += 1
            d = r.get("d")
            if not isinstance(d, str):
                return
            shard = self.feed.shards[0] if self.feed.shards else None
            if shard is None:
                return
            self.feed.handle_frame(d, shard)
            if self.model._resting and "last_trade_price" in d:
                self._trades(d)
        elif kind == fmt.MARKET:
            self._market(r.get("gamma"))
        elif kind == fmt.WATCH:
            toks = r.get("tokens")
            if isinstance(toks, list):
                self._watch(str(t) for t in toks)
        elif kind == fmt.REST_BOOK:
            tok, book = str(r.get("token", "")), r.get("book")
            if isinstance(book, dict) and tok in self.store:
                with contextlib.suppress(*PARSE_ERRORS):
                    self.feed.apply_rest_book(tok, book, trust_hash=True)
        elif kind == fmt.GAP_START:
            for shard in self.feed.shards:
                shard.link.connected = False
                self.feed.shard_lost(shard)
        elif kind == fmt.GAP_END:
            for shard in self.feed.shards:
                shard.on_connect(self.clock.monotonic())
        elif kind == fmt.DROPPED:
            self.store.mark_all_unusable(self.store.token_ids())

    def _trades(self, d: str) -> None:
        try:
            obj = orjson.loads(d)
        except orjson.JSONDecodeError:
            return
        for ev in obj if isinstance(obj, list) else [obj]:
            if isinstance(ev, dict) and ev.get("event_type") == "last_trade_price":
                try:
                    tr = parse_last_trade_price(ev)
                except PARSE_ERRORS:
                    continue
                size = Decimal(str(ev.get("size") or 0))
                self._pending_trades.append((tr.token_id, tr.price, size))

    def _watch(self, tokens: Any) -> None:
        new = set(tokens) - self.tokens
        if not new:
            return
        self.tokens |= new
        self.feed.watch(REPLAY_OWNER, self.tokens)
        if self.result is not None and self.result.first_t is not None:
            for shard in self.feed.shards:
                if not shard.link.connected:
                    shard.on_connect(self.clock.monotonic())

    def _market(self, row: Any) -> None:
        if not isinstance(row, dict):
            return
        try:
            parsed = parse_market(row)
        except FeedError:
            return
        m = parsed.market
        if self.fees == "none":
            m = m.model_copy(update={"fee_rate": ZERO})
            parsed.market = m
        self.rows[m.condition_id] = parsed
        self.rows_changed = True
        self.market_rules.load_market(m)
        result = self.result
        assert result is not None
        for t in m.token_ids:
            result.markets[t] = m
        self._watch(m.token_ids)
        payouts = resolution_payouts(row)
        if payouts:
            self._resolve(payouts)

    def _on_resolved(self, market: str, token_ids: list[str], winner: str | None) -> None:
        if winner is None:
            return
        self._resolve({t: ONE if t == winner else ZERO for t in token_ids})

    def _resolve(self, payouts: dict[str, Decimal]) -> None:
        result = self.result
        assert result is not None
        for tok, pay in payouts.items():
            if tok not in result.payouts:
                result.payouts[tok] = pay
                result.resolved_at[tok] = (self.clock.t_ns, pay)
                if tok in result.prices:
                    result.prices[tok].append((self.clock.t_ns // NS, pay))

    def _due_discovery(self) -> bool:
        if self.rows_changed:
            return True
        if self.last_discovery is None or not self.rows:
            return False
        return self.clock.t_ns - self.last_discovery >= int(self.s.discovery_interval_s * NS)

    def _discover(self) -> None:
        self.rows_changed = False
        self.last_discovery = self.clock.t_ns
        found = discover(self.rules, self.rows, self.clock.wall())
        self.sniper.set_markets(found)

    def _busy(self) -> bool:
        return bool(self.sniper._wake.is_set() or self.sink.active or self.sniper._in_flight)

    async def _settle(self) -> None:
        """Run the loop until the strategy and the executor wait only on parked orders."""
        idle = 0
        need = self._idle_rounds
        for i in range(_SETTLE_MAX_ROUNDS):
            await asyncio.sleep(0 if i < 64 else 0.0002)
            quiet = (
                not self.sniper._wake.is_set()
                and self.sink.active == self.model.parked
                and len(self.sniper._in_flight) <= self.sink.active
            )
            idle = idle + 1 if quiet else 0
            if idle >= need:
                return
        raise RuntimeError("the replay did not settle (a submission never finished)")

    def _fee_of(self, f: SimFill) -> None:
        result = self.result
        assert result is not None
        sched = self.market_rules.fee(f.token_id)
        result.fees_of[f.seq] = fee_booked(
            f.size, f.price, sched, taker=f.role is LiquidityRole.TAKER
        )
        if f.token_id not in result.prices:
            result.prices[f.token_id] = []
            self._price_point(f.token_id)

    def _price_point(self, tok: str) -> None:
        result = self.result
        assert result is not None
        pts = result.prices[tok]
        if len(pts) >= 20_000:
            return  # bounded: a chart needs no more
        b = self.store.get(tok)
        if b is None:
            return
        bid, ask = b.best_bid(), b.best_ask()
        if bid is not None and ask is not None:
            mid = (bid[0] + ask[0]) / 2
            ts = self.clock.t_ns // NS
            if not pts or pts[-1][1] != mid:
                pts.append((ts, mid))

    def _final_marks(self) -> None:
        result = self.result
        assert result is not None
        for f in result.fills:
            tok = f.token_id
            if tok in result.marks:
                continue
            b = self.store.get(tok)
            best = b.best_bid() if b is not None else None
            result.marks[tok] = best[0] if best is not None else ZERO
