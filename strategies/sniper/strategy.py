"""The sniper: buy when a fresh book offers a price inside a rule's band, once per opportunity.

Rules come from a TOML or JSON file (`SNIPER_RULES_PATH`; see
`deploy/sniper-rules.example.toml`). Each rule selects markets (explicit token ids, condition
ids or slugs, and/or a Gamma filter such as "ends within N minutes") and fires when, on a
*usable* book (a fresh snapshot, and updates still arriving):

* the best ask is within `[min_price, max_price]`,
* the ask depth at or under `max_price` is at least `min_size`,
* optionally, the market ends within `ends_within_minutes`.

It then emits one BUY (FAK by default, or FOK) limited at `max_price` (on the current tick
grid), sized so that notional plus the market's taker fee (budgeted at that price) stays within
`max_notional`, capped by depth, rounded down to the venue's size precision.

Exactly once per opportunity: after firing, a rule is disarmed for that token until it sees the
condition false again on a usable book. No second order goes out for a token while one is in
flight, nor after one of ours filled until the feed reports that book changed (the asks we took
may still show). At most `max_entries` accepted entries per token, at least `cooldown_s` apart.

An optional take-profit rests a GTC SELL at entry x (1 + take_profit), rounded up to the tick,
post-only by default (`take_profit_post_only`): a maker pays no taker fee. Live,
the BUY's ack can beat its fill (user websocket), and risk only sells what the position holds, so
the SELL waits (in its own task, bounded by `fill_wait_s`) until the position shows the fill.

Only books the feed reports as changed are evaluated; nothing polls.

This module owns the loop (discovery's markets, book changes, firing, submission, take-profit);
the rule schema lives in `rules`, the arithmetic in `sizing` and the per-(rule, token) slots in
`state`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import structlog

from execution.fees import NO_FEE, FeeSchedule, FeeSource, gamma_schedule
from models import ONE, ZERO, Market, OrderRequest, OrderResult, OrderType, Side
from observability.metrics import Metrics
from strategies.base import OrderSink, PositionSource
from strategies.sniper.rules import SniperRule
from strategies.sniper.sizing import DEFAULT_TICK, Decision, opportunity, take_profit_quote
from strategies.sniper.state import RETIRED_SLOTS, Slot, Slots
from venue.gamma import DiscoveryResult, MarketQuery
from venue.order_book import BookStore

log = structlog.get_logger("sniper")

FILL_WAIT_S: Final = 5.0
"""How long a take-profit waits for the BUY's fill to reach the position before sending anyway."""
FILL_POLL_S: Final = 0.02
"""How often it looks (the executor has no fill hook; the position is an in-memory read)."""


class Sniper:
    """The sniper strategy (see module docstring). Emits `OrderRequest`s into an `OrderSink`."""

    def __init__(
        self,
        *,
        rules: Sequence[SniperRule],
        books: BookStore,
        orders: OrderSink,
        positions: PositionSource | None = None,
        metrics: Metrics | None = None,
        name: str = "sniper",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fill_wait_s: float = FILL_WAIT_S,
        fill_poll_s: float = FILL_POLL_S,
        retired_slots: int = RETIRED_SLOTS,
        fees: Callable[[str], FeeSchedule] | None = None,
    ) -> None:
        self.name = name
        # The market's taker fee per token (the executor's market rules); Gamma's as fallback.
        self._fees = fees
        self.rules = list(rules)
        self._books = books
        self._orders = orders
        # The executor is both; without a position source a take-profit is sent at once.
        if positions is None and isinstance(orders, PositionSource):
            positions = orders
        self._positions = positions
        self._fill_wait_s = fill_wait_s
        self._fill_poll_s = fill_poll_s
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._markets: dict[str, Market] = {}
        self._rules_of: dict[str, list[SniperRule]] = {}
        self._slots = Slots(retired_max=retired_slots)
        self._in_flight: set[str] = set()
        self._took: set[str] = set()  # filled here; the feed has not shown its book since
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.on_watch: Callable[[set[str]], None] | None = None
        """Called with the tokens to watch whenever discovery changes them (feed.watch)."""

    # --- market selection ----------------------------------------------------------------
    def market_queries(self) -> dict[str, list[MarketQuery]]:
        """Gamma queries per rule, for `venue.gamma.Discovery`."""
        return {r.name: r.select.queries() for r in self.rules}

    def set_markets(self, found: DiscoveryResult) -> None:
        """Install discovery's result: which tokens each rule watches, and their markets."""
        markets: dict[str, Market] = {}
        rules_of: dict[str, list[SniperRule]] = {}
        by_name = {r.name: r for r in self.rules}
        for name, ms in found.items():
            rule = by_name.get(name)
            if rule is None:
                continue
            for m in ms:
                for token, outcome in zip(m.token_ids, m.outcomes, strict=False):
                    if rule.outcome is not None and outcome.lower() != rule.outcome.lower():
                        continue
                    markets[token] = m
                    rules_of.setdefault(token, []).append(rule)
        self._markets = markets
        self._rules_of = rules_of
        # Forget tokens no longer watched: their slots are set aside (bounded), and they leave
        # `_took` (the feed stops showing their books; a book watched again needs a snapshot).
        self._slots.keep_only((r.name, t) for t, rs in rules_of.items() for r in rs)
        self._took.intersection_update(rules_of)
        for token, m in markets.items():
            self._books.ensure(token, market=m.condition_id, tick_size=m.tick_size)
        if self.on_watch is not None:
            self.on_watch(set(rules_of))
        self._mark_dirty(rules_of)

    def set_market(self, market: Market, rules: Iterable[SniperRule] | None = None) -> None:
        """Watch one market directly (tests, explicit wiring), under `rules` (default: all)."""
        use = list(rules) if rules is not None else self.rules
        for token, outcome in zip(market.token_ids, market.outcomes, strict=False):
            chosen = [r for r in use if r.outcome is None or r.outcome.lower() == outcome.lower()]
            if not chosen:
                continue
            self._markets[token] = market
            self._rules_of[token] = chosen
            self._books.ensure(token, market=market.condition_id, tick_size=market.tick_size)
        if self.on_watch is not None:
            self.on_watch(set(self._rules_of))
        self._mark_dirty(market.token_ids)

    def watched_tokens(self) -> set[str]:
        return set(self._rules_of)

    # --- run loop ------------------------------------------------------------------------
    def _on_books(self, token_ids: Collection[str]) -> None:
        self._took.difference_update(token_ids)
        self._dirty.update(token_ids)
        self._wake.set()

    def _mark_dirty(self, token_ids: Iterable[str]) -> None:
        self._dirty.update(token_ids)
        self._wake.set()

    async def run(self) -> None:
        """Evaluate changed books and submit orders until cancelled."""
        self._books.add_listener(self._on_books)
        try:
            async with asyncio.TaskGroup() as tg:
                self._mark_dirty(self._rules_of)
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    dirty, self._dirty = self._dirty, set()
                    for token in dirty:
                        self._evaluate(tg, token)
        finally:
            self._books.remove_listener(self._on_books)

    # --- decision ------------------------------------------------------------------------
    def _evaluate(self, tg: asyncio.TaskGroup, token: str) -> None:
        """Check every rule on `token`'s book and submit, in `tg`, what fires."""
        rules = self._rules_of.get(token)
        if not rules:
            return
        book = self._books.usable_book(token)
        if book is None:
            return  # stale, reconnecting or never snapshotted: decide nothing, re-arm nothing
        if token in self._took:
            return  # may still show the asks our fill took: wait for the feed's next change
        market = self._markets.get(token)
        now = self._clock()
        for rule in rules:
            slot = self._slots.get(rule.name, token)
            if rule.max_book_age_s is not None and now - book.updated_at > rule.max_book_age_s:
                continue
            d = opportunity(rule, token, book, market, self._wall, self._fee(token, market))
            if d is None:
                slot.armed = True
                continue
            if not slot.armed:
                continue  # the same opportunity we already acted on
            if slot.entries >= rule.max_entries:
                slot.armed = False
                self._blocked("max_entries")
                continue
            if token in self._in_flight:
                continue  # stays armed: looked at again when the submission returns
            if now - slot.last_fire < rule.cooldown_s:
                self._blocked("cooldown")
                continue  # stays armed: may fire on a book change after the cooldown
            slot.armed = False
            slot.last_fire = now
            self._fire(tg, d, slot, market)

    def _fee(self, token: str, market: Market | None) -> FeeSchedule:
        """The token's taker fee: the market rules' (`/clob-markets` `fd`) once read, else the
        schedule Gamma showed discovery, else none."""
        known = self._fees(token) if self._fees is not None else NO_FEE
        if known.source == FeeSource.NONE and market is not None:
            return gamma_schedule(market) or known
        return known

    def _blocked(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.sniper_blocked_total.labels(reason).inc()

    def _fire(self, tg: asyncio.TaskGroup, d: Decision, slot: Slot, market: Market | None) -> None:
        req = OrderRequest(
            strategy=self.name,
            token_id=d.token_id,
            side=Side.BUY,
            price=d.price,
            size=d.size,
            order_type=OrderType(d.rule.order_type),
            reason=f"sniper rule {d.rule.name}: ask {d.best_ask} depth {d.depth}",
        )
        if self._metrics is not None:
            self._metrics.strategy_signals_total.labels(self.name).inc()
        log.info(
            "sniper_fired",
            rule=d.rule.name,
            token_id=d.token_id,
            price=str(d.price),
            size=str(d.size),
            best_ask=str(d.best_ask),
            client_order_id=req.client_order_id,
        )
        self._in_flight.add(d.token_id)
        # What we hold before this BUY: its take-profit waits for the position to grow past it.
        held = (
            self._positions.position(d.token_id, strategy=self.name).size
            if self._positions
            else None
        )
        tg.create_task(
            self._submit(tg, req, d, slot, market, held), name=f"{self.name}:submit:{d.rule.name}"
        )

    async def _submit(
        self,
        tg: asyncio.TaskGroup,
        req: OrderRequest,
        d: Decision,
        slot: Slot,
        market: Market | None,
        held: Decimal | None,
    ) -> None:
        try:
            result = await self._orders.submit(req)
            if result.filled_size > 0:
                self._took.add(d.token_id)
        finally:
            self._in_flight.discard(d.token_id)
            self._mark_dirty((d.token_id,))
        self._after(tg, req, result, d, slot, market, held)

    def _after(
        self,
        tg: asyncio.TaskGroup,
        req: OrderRequest,
        result: OrderResult,
        d: Decision,
        slot: Slot,
        market: Market | None,
        held: Decimal | None,
    ) -> None:
        filled = result.filled_size
        if result.accepted or filled > 0:
            slot.entries += 1
            log.info(
                "sniper_entry",
                rule=d.rule.name,
                token_id=d.token_id,
                status=result.status.value,
                filled=str(filled),
                entries=slot.entries,
            )
        else:
            self._blocked("rejected")
            log.warning(
                "sniper_order_refused",
                rule=d.rule.name,
                token_id=d.token_id,
                status=result.status.value,
                why=result.reason[:200],
            )
            return
        tp = d.rule.take_profit
        if tp is None or filled <= 0:
            return
        book = self._books.get(d.token_id)
        tick = (book.tick_size if book is not None else None) or (
            market.tick_size if market is not None else DEFAULT_TICK
        )
        price, size = take_profit_quote(result.avg_price or req.price, filled, tp, tick)
        min_size = market.min_size if market is not None else ZERO
        if price > ONE - tick or size <= 0 or size < min_size:
            log.info(
                "sniper_take_profit_skipped",
                rule=d.rule.name,
                token_id=d.token_id,
                price=str(price),
                size=str(size),
            )
            return
        exit_req = OrderRequest(
            strategy=self.name,
            token_id=d.token_id,
            side=Side.SELL,
            price=price,
            size=size,
            order_type=OrderType.GTC,
            post_only=d.rule.take_profit_post_only,
            reason=f"sniper rule {d.rule.name}: take profit {tp}",
        )
        want = held + size if held is not None else None
        tg.create_task(
            self._take_profit(exit_req, d, want), name=f"{self.name}:take_profit:{d.rule.name}"
        )

    async def _take_profit(self, exit_req: OrderRequest, d: Decision, want: Decimal | None) -> None:
        positions = self._positions
        if (
            want is not None
            and positions is not None
            and not await self._reaches(positions, d.token_id, want)
        ):
            # Risk decides (and journals a refusal) rather than the take-profit vanishing here.
            log.warning(
                "sniper_take_profit_fill_not_seen",
                rule=d.rule.name,
                token_id=d.token_id,
                want=str(want),
                waited_s=self._fill_wait_s,
            )
        if self._metrics is not None:
            self._metrics.strategy_signals_total.labels(self.name).inc()
        exit_result = await self._orders.submit(exit_req)
        log.info(
            "sniper_take_profit",
            rule=d.rule.name,
            token_id=d.token_id,
            price=str(exit_req.price),
            size=str(exit_req.size),
            status=exit_result.status.value,
            client_order_id=exit_req.client_order_id,
        )

    async def _reaches(self, positions: PositionSource, token_id: str, want: Decimal) -> bool:
        try:
            async with asyncio.timeout(self._fill_wait_s):
                # The executor offers no fill hook (and is not ours to change): a short, bounded
                # poll of an in-memory read, in the take-profit's own task.
                while positions.position(token_id, strategy=self.name).size < want:  # noqa: ASYNC110 - no hook
                    await asyncio.sleep(self._fill_poll_s)
        except TimeoutError:
            return False
        return True
