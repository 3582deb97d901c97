"""The sniper: buy when a fresh book offers a price inside a rule's band, once per opportunity.

Rules come from a TOML or JSON file (`SNIPER_RULES_PATH`; see
`deploy/sniper-rules.example.toml`). Each rule selects markets (explicit token ids, condition
ids or slugs, and/or a Gamma filter such as "ends within N minutes") and fires when, on a
*usable* book (DESIGN invariant 6):

* the best ask is within `[min_price, max_price]`,
* the ask depth at or under `max_price` is at least `min_size`,
* optionally, the market ends within `ends_within_minutes`.

It then emits one BUY (FAK by default, or FOK) limited at `max_price` (on the current tick
grid), sized `min(max_notional / price, depth)` rounded down to the venue's size precision.

Exactly once per opportunity: after firing, a rule is disarmed for that token until it sees the
condition false again on a usable book. No second order goes out for a token while one is in
flight, nor after one of ours filled until the feed reports that book changed (the asks we took
may still show). At most `max_entries` accepted entries per token, at least `cooldown_s` apart.

An optional take-profit rests a GTC SELL at entry x (1 + take_profit), rounded up to the tick. Live,
the BUY's ack can beat its fill (user websocket), and risk only sells what the position holds, so
the SELL waits (in its own task, bounded by `fill_wait_s`) until the position shows the fill.

Only books the feed reports as changed are evaluated; nothing polls.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import structlog
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from errors import ConfigError
from models import (
    ONE,
    ZERO,
    Market,
    OrderRequest,
    OrderResult,
    OrderType,
    Side,
    _to_decimal,
    validate_condition_id,
    validate_token_id,
)
from observability.metrics import Metrics
from strategies.base import OrderSink, PositionSource
from venue.gamma import DiscoveryResult, MarketQuery
from venue.order_book import BookStore, OrderBook

log = structlog.get_logger("sniper")

SIZE_STEP: Final = Decimal("0.01")
"""Polymarket order sizes carry at most 2 decimals (reference §1.6)."""
MIN_MARKETABLE_NOTIONAL: Final = Decimal("1")
"""Marketable BUYs under $1 are refused by the venue (reference §6.2)."""
FILL_WAIT_S: Final = 5.0
"""How long a take-profit waits for the BUY's fill to reach the position before sending anyway."""
FILL_POLL_S: Final = 0.02
"""How often it looks (the executor has no fill hook; the position is an in-memory read)."""


def _rule_decimal(v: Any) -> Decimal:
    # TOML has no decimal type: a float is taken through its shortest repr (0.95 -> "0.95"),
    # which is exactly the text the operator wrote. Strings are preferred and documented.
    if isinstance(v, float):
        v = repr(v)
    return _to_decimal(v)


RuleDecimal = Annotated[Decimal, BeforeValidator(_rule_decimal)]

MAX_WINDOW_MINUTES: Final = 525_600
"""A year: the largest `ends_within_minutes` (TOML accepts `inf`, which Gamma's window cannot)."""


class Selector(BaseModel):
    """Which markets a rule watches: explicit ids, and/or a Gamma filter."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    token_ids: tuple[str, ...] = ()
    condition_ids: tuple[str, ...] = ()
    slugs: tuple[str, ...] = ()
    ends_within_minutes: float | None = Field(default=None, gt=0, le=MAX_WINDOW_MINUTES)
    tags: tuple[str, ...] = ()
    tag_ids: tuple[str, ...] = ()
    min_liquidity: RuleDecimal | None = None
    min_volume: RuleDecimal | None = None

    @model_validator(mode="after")
    def _check(self) -> Selector:
        for t in self.token_ids:
            validate_token_id(t)
        for c in self.condition_ids:
            validate_condition_id(c)
        explicit = self.token_ids or self.condition_ids or self.slugs
        gamma = self.ends_within_minutes is not None or self.tags or self.tag_ids
        if not explicit and not gamma:
            raise ValueError(
                "select needs token_ids, condition_ids, slugs, or a Gamma filter "
                "(ends_within_minutes, tags, tag_ids)"
            )
        return self

    def queries(self) -> list[MarketQuery]:
        """Gamma queries whose union is this selection."""
        out: list[MarketQuery] = []
        if self.token_ids or self.condition_ids or self.slugs:
            out.append(
                MarketQuery(
                    token_ids=self.token_ids,
                    condition_ids=tuple(c.lower() for c in self.condition_ids),
                    slugs=self.slugs,
                )
            )
        if self.ends_within_minutes is not None or self.tags or self.tag_ids:
            out.append(
                MarketQuery(
                    tags=self.tags,
                    tag_ids=self.tag_ids,
                    ends_within_s=(
                        self.ends_within_minutes * 60 if self.ends_within_minutes else None
                    ),
                    min_liquidity=self.min_liquidity,
                    min_volume=self.min_volume,
                )
            )
        return out


class SniperRule(BaseModel):
    """One sniper rule (see `deploy/sniper-rules.example.toml` for every field)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$")
    enabled: bool = True
    select: Selector
    outcome: str | None = None
    min_price: RuleDecimal
    max_price: RuleDecimal
    min_size: RuleDecimal
    max_notional: RuleDecimal
    order_type: Literal["FAK", "FOK"] = "FAK"
    max_entries: int = Field(default=1, ge=1, le=1000)
    cooldown_s: float = Field(default=60.0, ge=0)
    ends_within_minutes: float | None = Field(default=None, gt=0, le=MAX_WINDOW_MINUTES)
    take_profit: RuleDecimal | None = None
    max_book_age_s: float | None = Field(default=None, gt=0)

    @field_validator("min_price", "max_price")
    @classmethod
    def _price(cls, v: Decimal) -> Decimal:
        if not ZERO < v < ONE:
            raise ValueError("must be strictly between 0 and 1")
        return v

    @field_validator("max_price")
    @classmethod
    def _band(cls, v: Decimal, info: ValidationInfo) -> Decimal:
        # Checked on max_price (validated after min_price) so the refusal names a field, like
        # every other rule error: "rule 'x' (#1) field max_price: must not be below min_price".
        low = info.data.get("min_price")
        if low is not None and v < low:
            raise ValueError(f"must not be below min_price ({low})")
        return v

    @field_validator("min_size", "max_notional")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("take_profit")
    @classmethod
    def _tp(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and not ZERO < v < ONE:
            raise ValueError("must be a fraction between 0 and 1 (0.02 = +2%)")
        return v


class RulesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[SniperRule, ...] = ()


def _problems(err: ValidationError, raw_rules: Any) -> list[str]:
    lines = []
    for e in err.errors(include_url=False, include_context=False, include_input=False):
        loc = list(e.get("loc", ()))
        where = "rules file"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            i = loc[1]
            name = "?"
            if isinstance(raw_rules, list) and i < len(raw_rules):
                r = raw_rules[i]
                if isinstance(r, dict) and isinstance(r.get("name"), str):
                    name = r["name"]
            field = ".".join(str(p) for p in loc[2:])
            where = f"rule {name!r} (#{i + 1})" + (f" field {field}" if field else "")
        elif loc:
            where = f"field {'.'.join(str(p) for p in loc)}"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"SNIPER_RULES_PATH: {where}: {msg}")
    return lines


def parse_rules(data: Any) -> list[SniperRule]:
    """Validate rules from decoded TOML/JSON (`{"rules": [...]}` or a bare list)."""
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise ConfigError(["SNIPER_RULES_PATH: expected a table with [[rules]] or a list"])
    try:
        parsed = RulesFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(e, data.get("rules"))) from None
    names = [r.name for r in parsed.rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError([f"SNIPER_RULES_PATH: rule names must be unique: {', '.join(dupes)}"])
    return [r for r in parsed.rules if r.enabled]


def load_rules(path: str | Path) -> list[SniperRule]:
    """Read and validate a TOML (`.toml`) or JSON rules file; raise ConfigError on any problem."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"SNIPER_RULES_PATH: cannot read {p}: {e.strerror}"]) from None
    try:
        data: Any = (
            tomllib.loads(text.decode()) if p.suffix.lower() == ".toml" else json.loads(text)
        )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"SNIPER_RULES_PATH: {p} is not valid {p.suffix[1:]}: {e}"]) from None
    return parse_rules(data)


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round `value` down to a multiple of `step`."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Round `value` up to a multiple of `step`."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


@dataclass(slots=True)
class _Slot:
    """State of one (rule, token) pair."""

    armed: bool = True
    entries: int = 0
    last_fire: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Decision:
    """An order the sniper will submit, with what it saw."""

    rule: SniperRule
    token_id: str
    price: Decimal
    size: Decimal
    best_ask: Decimal
    depth: Decimal


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
    ) -> None:
        self.name = name
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
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._in_flight: set[str] = set()
        self._took: set[str] = set()  # filled here; the feed has not shown its book since
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.pending: list[tuple[OrderRequest, Decision, _Slot, Market | None]] = []
        """Orders decided by `evaluate()` called outside `run()` (nothing submits them)."""
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
                self._tg = tg
                self._mark_dirty(self._rules_of)
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    dirty, self._dirty = self._dirty, set()
                    for token in dirty:
                        self.evaluate(token)
        finally:
            self._tg = None
            self._books.remove_listener(self._on_books)

    # --- decision ------------------------------------------------------------------------
    def evaluate(self, token: str) -> list[Decision]:
        """Check every rule on `token`'s book; submit (when running) and return what fired."""
        rules = self._rules_of.get(token)
        if not rules:
            return []
        book = self._books.usable_book(token)
        if book is None:
            return []  # stale, reconnecting or never snapshotted: decide nothing, re-arm nothing
        if token in self._took:
            return []  # may still show the asks our fill took: wait for the feed's next change
        market = self._markets.get(token)
        now = self._clock()
        fired: list[Decision] = []
        for rule in rules:
            slot = self._slots.get((rule.name, token))
            if slot is None:
                slot = self._slots[(rule.name, token)] = _Slot()
            if rule.max_book_age_s is not None and now - book.updated_at > rule.max_book_age_s:
                continue
            d = self._opportunity(rule, token, book, market)
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
            fired.append(d)
            self._fire(d, slot, market)
        return fired

    def _opportunity(
        self, rule: SniperRule, token: str, book: OrderBook, market: Market | None
    ) -> Decision | None:
        best = book.best_ask()
        if best is None:
            return None
        ask = best[0]
        if ask < rule.min_price or ask > rule.max_price:
            return None
        if market is not None and not market.tradable:
            return None
        if rule.ends_within_minutes is not None:
            end = market.end_date if market is not None else None
            if end is None:
                return None
            left = (end - self._wall()).total_seconds()
            if left < 0 or left > rule.ends_within_minutes * 60:
                return None
        tick = book.tick_size or (market.tick_size if market is not None else Decimal("0.01"))
        limit = floor_to(rule.max_price, tick)
        if limit < ask or not tick <= limit <= ONE - tick:
            return None
        depth = book.ask_depth_at_or_under(limit)
        if depth < rule.min_size:
            return None
        size = floor_to(min(rule.max_notional / limit, depth), SIZE_STEP)
        min_size = market.min_size if market is not None else ZERO
        if size <= 0 or size < min_size or size * limit < MIN_MARKETABLE_NOTIONAL:
            return None
        return Decision(rule, token, limit, size, ask, depth)

    def _blocked(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.sniper_blocked_total.labels(reason).inc()

    def _fire(self, d: Decision, slot: _Slot, market: Market | None) -> None:
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
        if self._tg is None:
            # Evaluated outside run() (a unit test calling evaluate): the caller submits.
            self.pending.append((req, d, slot, market))
            return
        # What we hold before this BUY: its take-profit waits for the position to grow past it.
        held = self._positions.position(d.token_id).size if self._positions else None
        self._tg.create_task(
            self._submit(req, d, slot, market, held), name=f"{self.name}:submit:{d.rule.name}"
        )

    async def _submit(
        self,
        req: OrderRequest,
        d: Decision,
        slot: _Slot,
        market: Market | None,
        held: Decimal | None = None,
    ) -> None:
        try:
            result = await self._orders.submit(req)
            if result.filled_size > 0:
                self._took.add(d.token_id)
        finally:
            self._in_flight.discard(d.token_id)
            self._mark_dirty((d.token_id,))
        await self._after(req, result, d, slot, market, held)

    async def _after(
        self,
        req: OrderRequest,
        result: OrderResult,
        d: Decision,
        slot: _Slot,
        market: Market | None,
        held: Decimal | None = None,
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
            market.tick_size if market is not None else Decimal("0.01")
        )
        entry = result.avg_price or req.price
        price = ceil_to(entry * (ONE + tp), tick)
        size = floor_to(filled, SIZE_STEP)
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
            reason=f"sniper rule {d.rule.name}: take profit {tp}",
        )
        want = held + size if held is not None else None
        if self._tg is None:
            await self._take_profit(exit_req, d, want)
        else:
            self._tg.create_task(
                self._take_profit(exit_req, d, want),
                name=f"{self.name}:take_profit:{d.rule.name}",
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
                while positions.position(token_id).size < want:  # noqa: ASYNC110 - no hook
                    await asyncio.sleep(self._fill_poll_s)
        except TimeoutError:
            return False
        return True


def write_demo_rules(sim: Any, workdir: Path) -> dict[str, Any]:
    """Write sniper rules for the demo scenario's markets that end soon; return the settings.

    Shaped as a `demo.RULE_WRITERS` entry (`(sim, workdir) -> settings overrides`). The demo's
    ending markets trade at 0.95-0.98 and now and then show a dip ask for a second or two.
    """
    if getattr(sim, "scenario", None) is None:
        return {}
    path = workdir / "sniper-rules.toml"
    path.write_text(
        "# written by --demo: buy near-certain outcomes of markets about to end\n"
        "[[rules]]\n"
        'name = "demo-near-close"\n'
        'outcome = "Yes"\n'
        'min_price = "0.90"\n'
        'max_price = "0.97"\n'
        'min_size = "5"\n'
        'max_notional = "20"\n'
        "max_entries = 3\n"
        "cooldown_s = 20\n"
        "ends_within_minutes = 30\n"
        "[rules.select]\n"
        "ends_within_minutes = 30\n"
        'tags = ["crypto"]\n'
    )
    return {"sniper_enabled": True, "sniper_rules_path": path}
