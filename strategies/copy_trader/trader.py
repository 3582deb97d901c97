"""The copy trader's loop: poll each followed wallet, decide every new trade, submit, settle.

Per followed wallet, a task first applies the start policy (`begin`: a wallet with no stored
cursor starts from now, its existing trades recorded as seen and never copied, unless its rule
asks for a bounded `backfill_s`), then polls `/activity?type=TRADE` from a persisted high-water
mark on a fixed-rate schedule (phases spread over the interval so wallets do not poll in
lockstep), and every trade it has not handled before goes through the wallet's rule:

    side -> age -> leader notional (entries) -> market allow/block -> sizing -> exposure
         -> limit price (leader +/- slippage, on the tick grid) -> book check -> minimum size

The rule schema lives in `rules`, the arithmetic in `sizing`, the durable ledger and the
per-market memory in `state`, the market facts (ticks, tags) in `markets`; this module owns the
schedule, the order of the checks, submission and the settling of results.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final, Protocol

import structlog

from errors import ConfigError, OrderRejected, TransientError
from execution.fees import NO_FEE
from execution.ports import MarketMeta
from models import BookSource, OrderRequest, OrderResult, OrderType, Side
from observability.metrics import Metrics
from observability.tracing import Tracing
from resilience.backoff import Backoff
from resilience.clock import Clock, SystemClock
from storage import Repositories
from storage.repositories import COPY_STRATEGY
from strategies.base import OrderSink, PositionSource
from strategies.copy_trader.markets import (
    DefaultTick,
    MarketInfoSource,
    StaticMarketInfo,
    TagSource,
)
from strategies.copy_trader.rules import CopyRules, WalletRule
from strategies.copy_trader.sizing import (
    Batch,
    Skip,
    entry_size,
    exit_size,
    limit_price,
    min_size_skip,
    round_size,
)
from strategies.copy_trader.state import (
    MAX_MARKETS,
    CopyLedger,
    Intent,
    MarketMemory,
    client_order_id_for,
)
from venue.data_api import Fetched, LeaderPosition, LeaderTrade

log = structlog.get_logger("strategies.copy_trader")

STRATEGY_NAME: Final = COPY_STRATEGY
"""The default name (`COPY_NAME`); an instance's identity is its `name`."""
RECENT: Final = 1000
"""How many recent copies (`CopyTrader.copied`, `.lags`) are kept in memory; the
`polyd_copy_lag_seconds` histogram holds the whole distribution."""


class PositionsReader(Protocol):
    """The slice of the Data API client the trader uses (a fake in unit tests)."""

    async def activity_trades(
        self, wallet: str, *, start: int | None = None
    ) -> Fetched[LeaderTrade]: ...

    async def positions(
        self, wallet: str, *, market: str | None = None
    ) -> Fetched[LeaderPosition]: ...


class CopyTrader:
    """Mirror followed wallets' trades into the executor, exactly once each."""

    def __init__(
        self,
        *,
        rules: CopyRules,
        data_api: PositionsReader,
        sink: OrderSink,
        positions: PositionSource,
        repos: Repositories,
        metrics: Metrics,
        markets: MarketInfoSource | None = None,
        tags: TagSource | None = None,
        books: BookSource | None = None,
        poll_interval_s: float = 1.0,
        max_trade_age_s: float = 60.0,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        spread_phases: bool = True,
        recent: int = RECENT,
        max_markets: int = MAX_MARKETS,
        tracing: Tracing | None = None,
        name: str = STRATEGY_NAME,
    ) -> None:
        self.name = name
        """The instance's name (`COPY_NAME`): the strategy of its orders, positions, lease,
        ledger and metrics."""
        self._tracing = tracing or Tracing()
        for w in rules.active:
            age = w.max_trade_age_s or max_trade_age_s
            if w.backfill_s > age:
                raise ConfigError(
                    [
                        f"COPY_RULES wallet {w.name}: backfill_s ({w.backfill_s:g}) must be at "
                        f"most the max trade age ({age:g}s, COPY_MAX_TRADE_AGE_S unless the "
                        "wallet sets max_trade_age_s)"
                    ]
                )
        if tags is None:
            tagged = [w.name for w in rules.active if w.allow_tags or w.block_tags]
            if tagged:
                # Refuse rather than skip every trade of these wallets as "tags unknown".
                raise ConfigError(
                    [
                        f"COPY_RULES wallet {name}: allow_tags/block_tags need a market tag "
                        "source (Gamma), and none is configured"
                        for name in tagged
                    ]
                )
        self.rules = rules
        self._api = data_api
        self._sink = sink
        self._positions = positions
        self._ledger = CopyLedger(repos, strategy=name)
        self._metrics = metrics
        self._markets = markets or StaticMarketInfo()
        self._tags = tags
        self._books = books
        self._interval = poll_interval_s
        self._max_age = max_trade_age_s
        self._clock = clock or SystemClock()
        self._wall = wall
        self._spread = spread_phases
        self._memory = MarketMemory(positions, strategy=self.name, max_markets=max_markets)
        self._unsent: dict[str, Intent] = {}
        self.copied: deque[OrderRequest] = deque(maxlen=recent)
        """The most recent copies sent (at most `recent`)."""
        self.lags: deque[float] = deque(maxlen=recent)
        """Leader trade -> our result, in seconds, of the most recent copies (at most `recent`)."""

    # -- life cycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Recover pending intents, then poll every followed wallet until cancelled."""
        await self.recover()
        wallets = self.rules.active
        if not wallets:
            log.info("copy_no_wallets")
            return
        async with asyncio.TaskGroup() as tg:
            if self._tags is not None:
                tg.create_task(self._tags.warm(), name="copy:tags")
            for i, rule in enumerate(wallets):
                phase = (i / len(wallets)) * self._interval_of(rule) if self._spread else 0.0
                tg.create_task(self._wallet_loop(rule, phase), name=f"copy:{rule.name}")

    def _interval_of(self, rule: WalletRule) -> float:
        return rule.poll_interval_s or self._interval

    def _age_of(self, rule: WalletRule) -> float:
        return rule.max_trade_age_s or self._max_age

    async def _wallet_loop(self, rule: WalletRule, phase: float) -> None:
        interval = self._interval_of(rule)
        backoff = Backoff(interval, 30.0)
        await self._ledger.prune(rule.address, older_than_s=max(86_400.0, 10 * self._age_of(rule)))
        await self._clock.sleep(phase)
        next_at = self._clock.monotonic()
        started = False
        while True:
            delay = interval
            try:
                if not started:
                    await self.begin(rule)
                    started = True
                await self.poll_once(rule)
                backoff.reset()
            except TransientError as e:
                # Counted by the client per attempt; the cursor did not move, so nothing is lost.
                delay = max(interval, backoff.next())
                log.warning("copy_poll_failed", wallet=rule.name, error=type(e).__name__)
            except Exception:  # the task's loop boundary: count, log, keep following
                self._metrics.data_api_errors_total.labels("poll_crash").inc()
                log.exception("copy_poll_crashed", wallet=rule.name)
                delay = max(interval, backoff.next())
            # Fixed-rate schedule: a slow poll eats into the wait instead of adding to it.
            next_at += delay
            now = self._clock.monotonic()
            if next_at < now:
                next_at = now + (interval - (now - next_at) % interval)
            await self._clock.sleep(next_at - now)

    # -- recovery ------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish intents a previous run stored but may not have sent; return how many sent."""
        sent = 0
        for intent in await self._ledger.pending():
            sent += await self._complete(intent, recovering=True)
        return sent

    async def _complete(self, intent: Intent, *, recovering: bool = False) -> int:
        coid = intent.request.client_order_id
        if await self._ledger.in_journal(coid):
            await self._ledger.close_intent(coid, "copy_intent_in_journal", wallet=intent.wallet)
            req = intent.request
            cond = self._memory.condition_of(req.token_id)
            if req.side is Side.BUY and cond is not None:
                # Sent by this run, outcome never answered: count it until the journal says how
                # it ended (refreshed at once, so a known outcome is booked now).
                until = self._clock.monotonic() + self._reservation_life(intent.wallet)
                self._memory.reserve(cond, coid, req.size * req.price, until=until)
                await self._refresh_reservations(cond)
            log.info("copy_intent_in_journal", client_order_id=coid)
            return 0
        rule = next((r for r in self.rules.active if r.address == intent.wallet), None)
        age = self._wall() - intent.leader_ts
        if recovering and (rule is None or age > self._age_of(rule)):
            await self._ledger.close_intent(
                coid, "copy_skipped", reason="too_old", detail=f"intent recovered after {age:.0f}s"
            )
            self._count_skip("too_old", wallet=intent.wallet, detail="recovered intent expired")
            return 0
        await self._submit(intent)
        return 1

    # -- start policy --------------------------------------------------------------------------

    async def begin(self, rule: WalletRule) -> int:
        """Apply the start policy to `rule`'s wallet; return how many trades it set aside.

        A wallet with a stored cursor resumes from it. A new one (no cursor) starts from now:
        the trades the Data API already has (as far back as a poll would look) are recorded as
        seen and never copied, except those of the last `backfill_s` seconds, which the polls
        that follow copy as usual (still subject to the max trade age). Logged per wallet.
        """
        cursor = await self._ledger.cursor(rule.address)
        if cursor is not None:
            log.info("copy_wallet_resumed", wallet=rule.name, cursor=cursor)
            return 0
        now = self._wall()
        since = int(now - 2 * self._age_of(rule)) - 1  # as far back as `poll_once` looks
        got = await self._api.activity_trades(rule.address, start=since)
        trades = [t for t in got.rows if t.wallet == rule.address and t.timestamp >= since]
        window = now - rule.backfill_s
        existing = [t for t in trades if rule.backfill_s == 0 or t.timestamp < window]
        start = int(now) if rule.backfill_s == 0 else int(window)
        detail: dict[str, Any] = {
            "existing_trades": len(trades),
            "recorded_seen": len(existing),
            "backfill_s": rule.backfill_s,
            "from_ts": start,
        }
        if not await self._ledger.start_following(
            rule.address, cursor=start, existing=existing, detail=detail
        ):
            return 0  # another task started it meanwhile
        log.info("copy_wallet_first_start", wallet=rule.name, **detail)
        return len(existing)

    # -- polling -------------------------------------------------------------------------------

    async def poll_once(self, rule: WalletRule) -> int:
        """Fetch the wallet's new trades and handle each; return how many were handled."""
        for intent in [i for i in self._unsent.values() if i.wallet == rule.address]:
            await self._complete(intent)
        await self._refresh_reservations()  # also those of markets the leaders left
        max_age = self._age_of(rule)
        now = self._wall()
        cursor = await self._ledger.cursor(rule.address)
        # Look back twice the age limit: trades in the extra band are fetched only to be
        # recorded as `too_old` (visible lag), anything older is never fetched at all.
        floor_ts = int(now - 2 * max_age) - 1
        start = floor_ts if cursor is None else max(cursor, floor_ts)
        got = await self._api.activity_trades(rule.address, start=start)
        for reason, detail in got.skipped:
            if reason != "not_trade":
                log.warning("copy_row_skipped", wallet=rule.name, reason=reason, detail=detail)
        trades = [t for t in got.rows if t.wallet == rule.address and t.timestamp >= start]
        if not trades:
            return 0
        seen = await self._ledger.seen(rule.address, trades)
        fresh: list[LeaderTrade] = []
        keys: set[str] = set()
        for t in trades:
            if t.dedupe_key in seen or t.dedupe_key in keys:
                continue
            keys.add(t.dedupe_key)
            fresh.append(t)
        if not fresh:
            return 0
        batch = Batch(fresh)
        handled = 0
        for t in fresh:
            await self._handle(rule, t, batch)
            handled += 1
        return handled

    async def _handle(self, rule: WalletRule, trade: LeaderTrade, batch: Batch) -> None:
        self._metrics.copy_leader_trades_total.inc()
        self._memory.note(trade.condition_id, trade.token_id)
        async with self._memory.locked(trade.condition_id):
            # The trace of a copied order starts at the decision about the leader's trade.
            with self._tracing.span(
                "copy_decision",
                strategy=self.name,
                wallet=rule.name,
                token_id=trade.token_id,
                side=trade.side,
            ):
                await self._decide_and_submit(rule, trade, batch)

    async def _decide_and_submit(self, rule: WalletRule, trade: LeaderTrade, batch: Batch) -> None:
        decision = await self._decide(rule, trade, batch)
        if isinstance(decision, Skip):
            if await self._ledger.handle(trade, skip=(decision.reason, decision.detail)):
                self._count_skip(decision.reason, wallet=rule.name, detail=decision.detail)
            return
        intent = Intent(decision, trade.wallet, trade.dedupe_key, trade.timestamp)
        if not await self._ledger.handle(trade, intent=intent):
            return  # handled by an earlier poll that raced this one
        self._metrics.strategy_signals_total.labels(self.name).inc()
        await self._submit(intent)

    def _count_skip(self, reason: str, *, wallet: str, detail: str = "") -> None:
        self._metrics.copy_skipped_total.labels(reason).inc()
        log.info("copy_skipped", wallet=wallet, reason=reason, detail=detail)

    async def _submit(self, intent: Intent) -> None:
        req = intent.request
        coid = req.client_order_id
        self._unsent[coid] = intent
        try:
            result = await self._sink.submit(req)
        except OrderRejected as e:
            self._unsent.pop(coid, None)
            await self._ledger.close_intent(
                coid, "copy_skipped", reason="rejected", detail=e.reason, source=e.source
            )
            self._count_skip("rejected", wallet=intent.wallet, detail=e.reason)
            return
        # Any other error leaves the intent stored and in `_unsent`: the next poll (or a
        # restart) looks the client order id up in the journal before deciding to send again.
        self._unsent.pop(coid, None)
        lag = self._wall() - intent.leader_ts
        await self._settle(intent, result, lag)

    async def _settle(self, intent: Intent, result: OrderResult, lag: float) -> None:
        req = intent.request
        coid = req.client_order_id
        filled = result.filled_size
        if result.accepted or filled > 0:
            self._metrics.copy_copied_total.inc()
            self._metrics.copy_lag_seconds.observe(max(lag, 0.0))
            self.copied.append(req)
            self.lags.append(lag)
            if req.side is Side.BUY:
                self._count_buy(intent, result)
            log.info(
                "copy_copied",
                wallet=intent.wallet,
                client_order_id=coid,
                side=req.side.value,
                price=str(req.price),
                size=str(req.size),
                filled=str(filled),
                lag_s=round(lag, 3),
            )
            await self._ledger.close_intent(
                coid, "copy_sent", status=result.status.value, filled=str(filled), lag_s=lag
            )
            return
        if req.side is Side.BUY:
            self._count_buy(intent, result)  # an UNKNOWN outcome may still be a fill
        reason = "rejected" if result.status.value == "REJECTED" else "unfilled"
        await self._ledger.close_intent(
            coid, "copy_skipped", reason=reason, status=result.status.value, detail=result.reason
        )
        self._count_skip(reason, wallet=intent.wallet, detail=result.reason)

    # -- market exposure of our copies --------------------------------------------------------

    def _count_buy(self, intent: Intent, result: OrderResult) -> None:
        """Count a copied BUY against its market's cap: what filled, at its price; and, while
        the order may still fill (resting, or its outcome unknown), its open part at its limit
        price, as a reservation held until `_refresh_reservations` learns how the order ended."""
        req = intent.request
        cond = self._memory.condition_of(req.token_id)
        if cond is None:
            return
        bought = result.filled_size * (result.avg_price or req.price)
        if not result.status.open:
            self._memory.book(cond, bought)
            return
        open_part = max(req.size - result.filled_size, Decimal(0)) * req.price
        until = self._clock.monotonic() + self._reservation_life(intent.wallet)
        # The result's id: a tick-refused copy may live on as its re-priced order.
        self._memory.reserve(cond, result.client_order_id, bought + open_part, until=until)

    def _reservation_life(self, wallet: str) -> float:
        rule = next((r for r in self.rules.active if r.address == wallet), None)
        return self._age_of(rule) if rule is not None else self._max_age

    async def _refresh_reservations(self, condition_id: str | None = None) -> None:
        """Settle the reservations of copies whose outcome is known now (in one market or all).

        The trader learns how an order ended from the executor's journal, which the executor's
        tracking and reconciliation drive to a terminal state: once terminal, what matched is
        booked at its price and the rest of the room is freed (a copy canceled or expired
        unfilled frees all of it); while open, the reservation follows its matched size. A sink
        that journals nothing (no such row) leaves the trader blind: that reservation is dropped
        once its life has run out, the wallet's `max_trade_age_s` after the copy was settled (a
        copy so old would not be sent any more either; a fill it made shows in the positions).
        Every reservation thus ends, and the memory of them stays bounded.
        """
        for coid, until in self._memory.reservations(condition_id):
            row = await self._ledger.journal_row(coid)
            if row is None:
                if self._clock.monotonic() >= until:
                    self._memory.release(coid)
                continue
            bought = row.size_matched * (row.avg_price or row.price)
            if row.status.terminal:
                self._memory.settle(coid, bought)
            else:
                open_part = max(row.size - row.size_matched, Decimal(0)) * row.price
                self._memory.adjust(coid, bought + open_part)

    # -- the rule ------------------------------------------------------------------------------

    async def _decide(
        self, rule: WalletRule, trade: LeaderTrade, batch: Batch
    ) -> OrderRequest | Skip:
        if trade.side not in rule.sides:
            return Skip("side_not_copied", trade.side.value)
        age = self._wall() - trade.timestamp
        if age > self._age_of(rule):
            return Skip("too_old", f"{age:.0f}s > {self._age_of(rule):g}s")
        entry = trade.side is Side.BUY
        if entry and trade.notional < rule.min_leader_notional:
            return Skip(
                "leader_notional_too_small", f"{trade.notional} < {rule.min_leader_notional}"
            )
        market_skip = await self._market_filter(rule, trade)
        if market_skip is not None:
            return market_skip
        info = await self._markets.ensure(trade.token_id) or DefaultTick()
        tick, min_size = info.tick_size, info.min_size
        price = limit_price(trade.price, rule.max_slippage, tick, trade.side)
        if price is None:
            return Skip("price_out_of_range", f"leader {trade.price} tick {tick}")
        if entry:
            await self._refresh_reservations(trade.condition_id)
            exposure = self._memory.exposure(trade.condition_id)
            fee = info.fee if isinstance(info, MarketMeta) else NO_FEE
            asks = self._books.asks(trade.token_id) if self._books is not None else None
            low = asks[0][0] if asks else None
            size_or_skip = entry_size(rule, trade, price, exposure, fee, low)
        else:
            size_or_skip = await self._exit_size(rule, trade, price, batch)
        if isinstance(size_or_skip, Skip):
            return size_or_skip
        size = round_size(size_or_skip)
        book_skip = self._book_check(trade.side, trade.token_id, price)
        if book_skip is not None:
            return book_skip
        size_skip = min_size_skip(size, price, min_size, entry=entry)
        if size_skip is not None:
            return size_skip
        return OrderRequest(
            strategy=self.name,
            token_id=trade.token_id,
            side=trade.side,
            price=price,
            size=size,
            order_type=OrderType(rule.order_type),
            client_order_id=client_order_id_for(trade.dedupe_key, self.name),
            reason=f"copy {rule.name} {trade.tx_hash[:12]} {trade.side.value} "
            f"{trade.size}@{trade.price}",
        )

    async def _market_filter(self, rule: WalletRule, trade: LeaderTrade) -> Skip | None:
        slugs = {s.lower() for s in (trade.slug, trade.event_slug) if s}
        if slugs & rule.block_slugs:
            return Skip("market_blocked", f"slug {sorted(slugs & rule.block_slugs)[0]}")
        if rule.allow_slugs and not slugs & rule.allow_slugs:
            return Skip("market_not_allowed", f"slug {trade.slug or '?'}")
        if rule.allow_tags or rule.block_tags:
            tags = await self._tags.tags(trade.condition_id) if self._tags is not None else None
            if tags is None:
                # Fail closed: a tag filter we cannot evaluate must not let the trade through.
                reason = "market_not_allowed" if rule.allow_tags else "market_blocked"
                return Skip(reason, "market tags unknown")
            if tags & rule.block_tags:
                return Skip("market_blocked", f"tag {sorted(tags & rule.block_tags)[0]}")
            if rule.allow_tags and not tags & rule.allow_tags:
                return Skip("market_not_allowed", "no allowed tag")
        return None

    async def _exit_size(
        self, rule: WalletRule, trade: LeaderTrade, price: Decimal, batch: Batch
    ) -> Decimal | Skip:
        # Our holding is the copy trader's own: shares another strategy bought (or that no order
        # of ours explains) are never sold because a followed wallet exits.
        ours = self._positions.position(trade.token_id, strategy=self.name).size
        if ours <= 0:
            return Skip("no_position", "the copy trader holds none of this token")
        before = await self._leader_before(trade, batch) if rule.mirror_exits else None
        return exit_size(rule, trade, price, ours=ours, leader_before=before)

    async def _leader_before(self, trade: LeaderTrade, batch: Batch) -> Decimal:
        """The leader's holding just before `trade`: now (Data API) + what this batch undid."""
        if trade.token_id not in batch.leader_after:
            got = await self._api.positions(trade.wallet, market=trade.condition_id)
            size = Decimal(0)
            for p in got.rows:
                if p.token_id == trade.token_id:
                    size = p.size
            batch.leader_after[trade.token_id] = size
        return batch.holding_before(trade)

    def _book_check(self, side: Side, token_id: str, price: Decimal) -> Skip | None:
        if self._books is None:
            return None
        levels = self._books.asks(token_id) if side is Side.BUY else self._books.bids(token_id)
        if not levels:
            return None  # no usable book: the venue enforces our limit price
        best = levels[0][0]
        if (side is Side.BUY and best > price) or (side is Side.SELL and best < price):
            return Skip("slippage", f"best {best} beyond limit {price}")
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Return the `q` quantile (0..1) of `values` by nearest rank; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]
