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

Durable state (`state=`, a `storage.strategy_state.SniperStateRepository`): an entry is counted
when its order is journaled PENDING, in the same transaction (the executor runs the slot write
with the row), so a crash or restart can never forget an order that may be at the venue; a
refusal (nothing bought, nothing resting) gives the entry back. `max_entries` holds for the life
of the rule, whose identity is its name. The cooldown is stored as wall-clock time. A
take-profit is stored once its BUY filled and closed in the transaction that journals the SELL,
so one a crash interrupted is sent at the next start.

This module owns the loop (discovery's markets, book changes, firing, submission, take-profit);
the rule schema lives in `rules`, the arithmetic in `sizing` and the per-(rule, token) slots in
`state`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Protocol, cast

import structlog

from execution.fees import NO_FEE, FeeSchedule, FeeSource, gamma_schedule
from models import ONE, ZERO, Market, OrderRequest, OrderResult, OrderStatus, OrderType, Side
from observability.metrics import Metrics
from observability.tracing import Tracing
from storage.journal import StateWrite
from storage.strategy_state import (
    ABSENT_RULE_RETENTION_DAYS,
    SNIPER_STRATEGY,
    SlotKey,
    SniperStateRepository,
)
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
NOTHING_BOUGHT: Final = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELED, OrderStatus.EXPIRED})
"""Final statuses that, with no fill, mean the order bought nothing: its entry is given back."""


class StateOrderSink(Protocol):
    """An `OrderSink` that journals a state write with the order's PENDING row (the executor)."""

    async def submit(
        self, request: OrderRequest, *, also: StateWrite | None = None
    ) -> OrderResult: ...


def refused(result: OrderResult) -> bool:
    """True if the order bought nothing and rests nowhere: it does not use up an entry."""
    return result.filled_size <= 0 and result.status in NOTHING_BOUGHT


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
        name: str = SNIPER_STRATEGY,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fill_wait_s: float = FILL_WAIT_S,
        fill_poll_s: float = FILL_POLL_S,
        retired_slots: int = RETIRED_SLOTS,
        fees: Callable[[str], FeeSchedule] | None = None,
        state: SniperStateRepository | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        if state is not None and "also" not in inspect.signature(orders.submit).parameters:
            raise TypeError("durable sniper state needs an order sink that journals it (also=)")
        self.name = name
        """The instance's name (`SNIPER_NAME`): the strategy of its orders, positions, lease,
        stored state and metrics."""
        self._state = state.scoped(name) if state is not None else None
        self._to_load: set[SlotKey] = set()  # watched pairs not read back from storage yet
        self._rearmed: set[SlotKey] = set()  # re-armed in memory, not yet in storage
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
        self._want_loaded((r.name, t) for t, rs in rules_of.items() for r in rs)
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
            self._want_loaded((r.name, token) for r in chosen)
            self._books.ensure(token, market=market.condition_id, tick_size=market.tick_size)
        if self.on_watch is not None:
            self.on_watch(set(self._rules_of))
        self._mark_dirty(market.token_ids)

    def watched_tokens(self) -> set[str]:
        return set(self._rules_of)

    # --- durable state -------------------------------------------------------------------
    def _want_loaded(self, keys: Iterable[SlotKey]) -> None:
        """Queue pairs with no slot in memory to be read back before deciding on them."""
        if self._state is None:
            return
        self._to_load.update(k for k in keys if not self._slots.known(*k))

    def _reload_slot(self, rule: str, token: str) -> None:
        """Forget the slot of a submission that failed with an error, to read it back before
        the next decision. Its entry (disarmed, counted) was stored with the PENDING row in one
        transaction: if that write failed, nothing was counted and the slot is still armed
        there; kept in memory, it would wait for the book to lose the opportunity it never
        took (a restarted strategy may have missed that change) and count an entry never sent.
        """
        if self._state is None:
            return  # no durable state: memory is all there is
        self._slots.forget(rule, token)
        self._want_loaded([(rule, token)])

    async def _load_slots(self) -> None:
        assert self._state is not None
        keys, self._to_load = self._to_load, set()
        try:
            stored = await self._state.load(keys)
        except BaseException:
            self._to_load |= keys  # not read: still to load (never decided on as blank)
            raise
        mono, wall = self._clock(), self._wall().timestamp()
        for (rule, token), st in stored.items():
            if self._slots.known(rule, token):
                continue  # decided on meanwhile (never: loads run before decisions)
            last = float("-inf")
            if st.last_fire_at is not None:
                last = mono - max(wall - st.last_fire_at, 0.0)
            self._slots.restore(rule, token, Slot(st.armed, st.entries, last))
        for rule, token in keys:
            self._slots.get(rule, token)  # known from now on: nothing stored means blank
        if stored:
            log.info("sniper_slots_loaded", slots=len(stored))

    async def _flush_rearmed(self) -> None:
        assert self._state is not None
        keys, self._rearmed = self._rearmed, set()
        await self._state.rearm(keys)

    async def _start_state(self, tg: asyncio.TaskGroup) -> None:
        """Say which rules have stored state and which do not, prune long-gone rules, and send
        the take-profits a previous run stored but never journaled."""
        assert self._state is not None
        names = {r.name for r in self.rules}
        stored = await self._state.rule_names()
        gone = sorted(set(stored) - names)
        if gone:
            log.warning(
                "sniper_state_not_loaded",
                rules=gone,
                entries={n: stored[n] for n in gone},
                why="no rule of that name in the rules file (renamed, removed or disabled); "
                f"its state is kept {ABSENT_RULE_RETENTION_DAYS} days, then deleted",
            )
        fresh = sorted(names - set(stored))
        if fresh:
            log.info("sniper_rules_without_state", rules=fresh, why="new or renamed: no entries")
        pruned = await self._state.prune_absent(names)
        if pruned:
            log.info("sniper_state_pruned", slots=pruned, days=ABSENT_RULE_RETENTION_DAYS)
        for tp in await self._state.take_profits(names):
            log.info(
                "sniper_take_profit_recovered",
                rule=tp.rule,
                token_id=tp.request.token_id,
                client_order_id=tp.request.client_order_id,
            )
            tg.create_task(
                self._take_profit(tp.request, tp.rule, None),
                name=f"{self.name}:take_profit:{tp.rule}",
            )

    async def _send(self, req: OrderRequest, also: StateWrite | None) -> OrderResult:
        if also is None or self._state is None:
            return await self._orders.submit(req)
        return await cast(StateOrderSink, self._orders).submit(req, also=also)

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
                if self._state is not None:
                    await self._start_state(tg)
                self._mark_dirty(self._rules_of)
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    if self._to_load:
                        await self._load_slots()
                    if self._rearmed:
                        await self._flush_rearmed()
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
        if self._to_load and any((r.name, token) in self._to_load for r in rules):
            self._wake.set()  # read back from storage first: the run loop does, then decides
            self._dirty.add(token)
            return
        book = self._books.usable_book(token)
        if book is None:
            return  # stale, reconnecting or never snapshotted: decide nothing, re-arm nothing
        # It may still show the asks our fill took: nothing fires before the feed's next change.
        # A rule still re-arms on it, since the feed's change may have come before our fill's
        # answer (the executor answers at the ack, which can come after the feed's update).
        took = token in self._took
        market = self._markets.get(token)
        now = self._clock()
        for rule in rules:
            slot = self._slots.get(rule.name, token)
            if rule.max_book_age_s is not None and now - book.updated_at > rule.max_book_age_s:
                continue
            d = opportunity(rule, token, book, market, self._wall, self._fee(token, market))
            if d is None:
                if not slot.armed and self._state is not None:
                    self._rearmed.add((rule.name, token))
                    self._wake.set()
                slot.armed = True
                continue
            if not slot.armed or took:
                continue  # the same opportunity we already acted on, or a book not yet fresh
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
            slot.entries += 1  # counted now (in flight); given back if the order is refused
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
        also = None
        if self._state is not None:
            also = self._state.fired(
                d.rule.name, d.token_id, req.client_order_id, self._wall().timestamp()
            )
        # The trace of this order starts here: the submission task inherits the span as parent.
        with self._tracing.span(
            "sniper_evaluation",
            strategy=self.name,
            rule=d.rule.name,
            token_id=d.token_id,
            side=req.side,
            order_type=req.order_type,
            client_order_id=req.client_order_id,
        ):
            tg.create_task(
                self._submit(tg, req, d, slot, market, held, also),
                name=f"{self.name}:submit:{d.rule.name}",
            )

    async def _submit(
        self,
        tg: asyncio.TaskGroup,
        req: OrderRequest,
        d: Decision,
        slot: Slot,
        market: Market | None,
        held: Decimal | None,
        also: StateWrite | None,
    ) -> None:
        try:
            try:
                result = await self._send(req, also)
            except Exception:
                # The executor is done with it: storage now says whether it was counted.
                self._reload_slot(d.rule.name, d.token_id)
                raise
            if result.filled_size > 0:
                self._took.add(d.token_id)
            if refused(result):
                slot.entries = max(slot.entries - 1, 0)
                if self._state is not None:
                    # Only if this order was counted (journaled): a refusal before that wrote
                    # nothing. The one order in flight per token keeps this exact.
                    await self._state.give_back(
                        d.rule.name, d.token_id, req.client_order_id, result.reason
                    )
        finally:
            self._in_flight.discard(d.token_id)
            self._mark_dirty((d.token_id,))
        await self._after(tg, req, result, d, slot, market, held)

    async def _after(
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
        if not refused(result):
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
        if self._state is not None:
            # Durable before it is sent: a crash from here on sends it at the next start.
            await self._state.store_take_profit(
                d.rule.name, d.token_id, req.client_order_id, exit_req
            )
        tg.create_task(
            self._take_profit(exit_req, d.rule.name, want),
            name=f"{self.name}:take_profit:{d.rule.name}",
        )

    async def _take_profit(self, exit_req: OrderRequest, rule: str, want: Decimal | None) -> None:
        positions = self._positions
        if (
            want is not None
            and positions is not None
            and not await self._reaches(positions, exit_req.token_id, want)
        ):
            # Risk decides (and journals a refusal) rather than the take-profit vanishing here.
            log.warning(
                "sniper_take_profit_fill_not_seen",
                rule=rule,
                token_id=exit_req.token_id,
                want=str(want),
                waited_s=self._fill_wait_s,
            )
        if self._metrics is not None:
            self._metrics.strategy_signals_total.labels(self.name).inc()
        coid = exit_req.client_order_id
        also = self._state.take_profit_sent(coid) if self._state is not None else None
        exit_result = await self._send(exit_req, also)
        if self._state is not None and exit_result.status is OrderStatus.REJECTED:
            # Refused (before or after its PENDING row): it will not be sent again.
            await self._state.drop_take_profit(coid, exit_result.reason)
        log.info(
            "sniper_take_profit",
            rule=rule,
            token_id=exit_req.token_id,
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
