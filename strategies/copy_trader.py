"""The copy trader: follow chosen wallets through the Data API and mirror their trades.

Per followed wallet, a task polls `/activity?type=TRADE` from a persisted high-water mark on a
fixed-rate schedule (phases spread over the interval so wallets do not poll in lockstep), and
every trade it has not handled before goes through the wallet's rule:

    side -> age -> leader notional (entries) -> market allow/block -> sizing -> exposure
         -> limit price (leader +/- slippage, on the tick grid) -> book check -> minimum size

Exactly-once copying across crashes. Each trade is *handled* by one durable write that marks its
dedupe key (tx hash + asset + side + size) seen, moves the wallet's cursor to its timestamp and —
when it is to be copied — stores an *intent*: the exact `OrderRequest`, whose client order id is
derived from the dedupe key. Only then is the request submitted. The executor journals an order
by client order id before it leaves the process, so after a crash each stored intent is either in
the journal (the executor's reconciliation owns it; the intent is closed) or it never left (it is
submitted now, with the same client order id). A skip is the same write without an intent.
The Data API's `start` filter is inclusive and the cursor is a timestamp in seconds, so trades
sharing the cursor's second are fetched again and dropped by the seen set: no gap, no duplicate.

Every skip has a reason from `SKIP_REASONS`: the `polyd_copy_skipped_total{reason}` label, an
audit entry and a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import orjson
import structlog
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from errors import ConfigError, FeedError, OrderRejected, TransientError
from models import (
    BookSource,
    OrderRequest,
    OrderResult,
    OrderType,
    Side,
    _to_decimal,
)
from observability.metrics import Metrics
from resilience.backoff import Backoff
from resilience.clock import Clock, SystemClock
from storage import Repositories
from storage.repositories import CopyIntent
from strategies.base import OrderSink, PositionSource
from venue.data_api import Fetched, LeaderPosition, LeaderTrade

log = structlog.get_logger("strategies.copy_trader")

STRATEGY_NAME: Final = "copy"
SIZE_STEP: Final = Decimal("0.01")
MIN_MARKETABLE_BUY: Final = Decimal("1")
"""The venue refuses a marketable BUY under $1 (reference §8)."""

SKIP_REASONS: Final = frozenset(
    {
        "side_not_copied",  # the rule does not copy this side
        "too_old",  # the leader trade is older than max_trade_age_s
        "leader_notional_too_small",  # entry below min_leader_notional
        "market_blocked",  # slug or tag on the block list
        "market_not_allowed",  # allow list set and the market is not on it
        "exposure_limit",  # max_market_exposure already used up
        "no_position",  # leader sold, we hold nothing to sell
        "slippage",  # the book is already past leader price +/- max_slippage
        "price_out_of_range",  # the limit price falls outside [tick, 1 - tick]
        "below_min_size",  # our copy would be under the market's minimum size
        "rejected",  # the executor (risk, market rules or venue) refused the order
        "unfilled",  # FAK/FOK found nothing to trade at our limit
    }
)
"""The fixed set of skip reasons (a metric label, so it must stay small)."""


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

Dec = Annotated[Decimal, BeforeValidator(_to_decimal)]


def _address(v: Any) -> str:
    s = v.strip().lower() if isinstance(v, str) else ""
    if len(s) != 42 or not s.startswith("0x") or any(c not in "0123456789abcdef" for c in s[2:]):
        raise ValueError("must be a wallet address: 0x followed by 40 hex characters")
    return s


class WalletRule(BaseModel):
    """How to copy one wallet. Every money field is a decimal (string or integer, never float)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    address: Annotated[str, BeforeValidator(_address)]
    label: str = Field(default="", max_length=64)
    enabled: bool = True
    sizing: Literal["ratio", "fixed_notional", "percent"] = "ratio"
    ratio: Dec | None = None
    fixed_notional: Dec | None = None
    percent: Dec | None = None
    percent_min_notional: Dec = Decimal("1")
    percent_max_notional: Dec | None = None
    max_trade_notional: Dec = Decimal("25")
    max_market_exposure: Dec = Decimal("100")
    sides: frozenset[Side] = frozenset({Side.BUY, Side.SELL})
    mirror_exits: bool = True
    max_slippage: Dec = Decimal("0.02")
    order_type: Literal["FAK", "FOK"] = "FAK"
    max_trade_age_s: float | None = Field(default=None, gt=0, le=86_400)
    min_leader_notional: Dec = Decimal("0")
    poll_interval_s: float | None = Field(default=None, ge=0.1, le=3600)
    allow_slugs: frozenset[str] = frozenset()
    block_slugs: frozenset[str] = frozenset()
    allow_tags: frozenset[str] = frozenset()
    block_tags: frozenset[str] = frozenset()

    @field_validator("sides", mode="before")
    @classmethod
    def _sides(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple | set | frozenset):
            return frozenset(str(x).upper() for x in v)
        return v

    @field_validator("allow_tags", "block_tags", "allow_slugs", "block_slugs", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        if isinstance(v, list | tuple | set | frozenset):
            return frozenset(str(x).strip().lower() for x in v)
        return v

    @field_validator(
        "ratio",
        "fixed_notional",
        "percent",
        "percent_max_notional",
        "max_trade_notional",
        "max_market_exposure",
    )
    @classmethod
    def _positive(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("percent_min_notional", "min_leader_notional")
    @classmethod
    def _non_negative(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v

    @field_validator("max_slippage")
    @classmethod
    def _slippage(cls, v: Decimal) -> Decimal:
        if not Decimal(0) <= v < Decimal(1):
            raise ValueError("must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _sizing_fields(self) -> WalletRule:
        need = {"ratio": self.ratio, "fixed_notional": self.fixed_notional, "percent": self.percent}
        if need[self.sizing] is None:
            raise ValueError(f"sizing = {self.sizing!r} needs the field {self.sizing!r}")
        if self.percent is not None and self.percent > 100:
            raise ValueError("percent must be at most 100 (it is a percentage)")
        if (
            self.percent_max_notional is not None
            and self.percent_max_notional < self.percent_min_notional
        ):
            raise ValueError("percent_max_notional must be at least percent_min_notional")
        if not self.sides:
            raise ValueError("sides must name BUY, SELL or both")
        return self

    @property
    def name(self) -> str:
        return self.label or self.address[:10]


class CopyRules(BaseModel):
    """The whole rules file: optional `[defaults]` merged under each `[[wallets]]` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wallets: tuple[WalletRule, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> CopyRules:
        seen: set[str] = set()
        for w in self.wallets:
            if w.address in seen:
                raise ValueError(f"wallet {w.address} is listed twice")
            seen.add(w.address)
        return self

    @property
    def active(self) -> tuple[WalletRule, ...]:
        return tuple(w for w in self.wallets if w.enabled)


def parse_rules(data: Mapping[str, Any]) -> CopyRules:
    """Validate a rules document; raise ConfigError naming the wallet and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(["COPY_RULES: the file must be a table/object with a `wallets` list"])
    unknown = set(data) - {"defaults", "wallets"}
    if unknown:
        raise ConfigError([f"COPY_RULES: unknown top-level key(s): {', '.join(sorted(unknown))}"])
    defaults = data.get("defaults") or {}
    wallets = data.get("wallets") or []
    if not isinstance(defaults, Mapping) or not isinstance(wallets, list):
        raise ConfigError(["COPY_RULES: `defaults` must be a table and `wallets` a list"])
    problems: list[str] = []
    rules: list[WalletRule] = []
    for i, raw in enumerate(wallets):
        if not isinstance(raw, Mapping):
            problems.append(f"COPY_RULES wallets[{i}]: must be a table")
            continue
        who = str(raw.get("label") or raw.get("address") or f"#{i}")
        try:
            rules.append(WalletRule.model_validate({**defaults, **raw}))
        except ValidationError as e:
            for err in e.errors(include_input=False, include_url=False, include_context=False):
                loc = ".".join(str(p) for p in err.get("loc", ())) or "(rule)"
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                problems.append(f"COPY_RULES wallet {who} ({i}): {loc}: {msg}")
    if problems:
        raise ConfigError(problems)
    try:
        return CopyRules(wallets=tuple(rules))
    except ValidationError as e:
        raise ConfigError(
            [
                f"COPY_RULES: {str(x.get('msg', '')).removeprefix('Value error, ')}"
                for x in e.errors()
            ]
        ) from None


def load_rules(path: Path) -> CopyRules:
    """Read and validate a TOML (`.toml`) or JSON rules file; raise ConfigError when bad."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"COPY_RULES_PATH: cannot read {path}: {e.strerror}"]) from None
    try:
        if path.suffix.lower() == ".json":
            data = orjson.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"COPY_RULES_PATH: {path} is not valid TOML/JSON: {e}"]) from None
    return parse_rules(data)


# --------------------------------------------------------------------------------------------
# Collaborators
# --------------------------------------------------------------------------------------------


class TickInfo(Protocol):
    """The market facts sizing and pricing need (`execution.ports.MarketMeta` fits)."""

    @property
    def tick_size(self) -> Decimal: ...

    @property
    def min_size(self) -> Decimal: ...


class MarketInfoSource(Protocol):
    """Tick size and minimum size per token (`execution.market_rules.MarketRules` fits)."""

    async def ensure(self, token_id: str) -> TickInfo | None:
        """Return the token's market facts, fetching them the first time; None if unknown."""
        ...


class TagSource(Protocol):
    """Tags of a market (Gamma), for tag allow/block lists."""

    async def tags(self, condition_id: str) -> frozenset[str] | None:
        """Return the market's lower-case tags, or None if they cannot be known now."""
        ...

    async def warm(self) -> None:
        """Load what `tags` needs before the first leader trade; log errors, never raise."""
        ...


TagLister = Callable[[str], Awaitable[Iterable[str]]]
"""`lister(tag)` -> condition ids of the open markets carrying `tag` (Gamma `/events?tag_slug=`)."""


@dataclass
class _TagEntry:
    members: frozenset[str]
    loaded_at: float


class TagIndex:
    """A `TagSource` over per-tag market lists, for exactly the tags the rules name.

    Gamma's `/markets` rows carry no tags unless asked (`include_tag`), but `/events?tag_slug=`
    filters by tag server-side; so for each tag a rule lists, the index keeps the set of condition
    ids of open markets in events carrying it, and a market's tags (as far as the rules care) are
    the listed tags whose set holds it. A set is reloaded after `ttl_s`, and sooner
    (`miss_refresh_s`) when asked about a market it does not hold, so a market listed since the
    last load is found. A tag that has never loaded makes `tags` return None: the trader then
    fails closed. A failed reload keeps the previous set (tags change rarely).
    """

    def __init__(
        self,
        *,
        tags: Iterable[str],
        lister: TagLister,
        clock: Clock | None = None,
        ttl_s: float = 300.0,
        miss_refresh_s: float = 30.0,
        retry_after_s: float = 5.0,
    ) -> None:
        self.watched = tuple(sorted({t.strip().lower() for t in tags if t.strip()}))
        self._lister = lister
        self._clock = clock or SystemClock()
        self._ttl = ttl_s
        self._miss = miss_refresh_s
        self._retry_after = retry_after_s
        self._entries: dict[str, _TagEntry] = {}
        self._failed_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.loads = 0

    async def warm(self) -> None:
        try:
            for tag in self.watched:
                await self._members(tag, None)
        except Exception:  # a task's boundary: the first trade will try again
            log.exception("copy_tags_warm_failed")

    async def tags(self, condition_id: str) -> frozenset[str] | None:
        found: set[str] = set()
        for tag in self.watched:
            members = await self._members(tag, condition_id)
            if members is None:
                return None
            if condition_id in members:
                found.add(tag)
        return frozenset(found)

    def _due(self, tag: str, condition_id: str | None, now: float) -> bool:
        entry = self._entries.get(tag)
        if entry is None:
            return True
        age = now - entry.loaded_at
        missing = condition_id is not None and condition_id not in entry.members
        return age >= self._ttl or (missing and age >= self._miss)

    async def _members(self, tag: str, condition_id: str | None) -> frozenset[str] | None:
        if self._due(tag, condition_id, self._clock.monotonic()):
            async with self._locks.setdefault(tag, asyncio.Lock()):
                now = self._clock.monotonic()
                recently_failed = now - self._failed_at.get(tag, -math.inf) < self._retry_after
                if self._due(tag, condition_id, now) and not recently_failed:
                    await self._load(tag, now)
        entry = self._entries.get(tag)
        return entry.members if entry is not None else None

    async def _load(self, tag: str, now: float) -> None:
        try:
            members = frozenset(await self._lister(tag))
        except (TransientError, FeedError) as e:
            self._failed_at[tag] = now
            log.warning("copy_tags_load_failed", tag=tag, error=str(e))
            return
        self._entries[tag] = _TagEntry(members, now)
        self._failed_at.pop(tag, None)
        self.loads += 1
        log.info("copy_tags_loaded", tag=tag, markets=len(members))


@dataclass(frozen=True)
class DefaultTick:
    """Fallback market facts when no source knows the token: Polymarket's common grid."""

    tick_size: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("5")


class StaticMarketInfo:
    """A `MarketInfoSource` from a fixed table (tests, bench), falling back to `DefaultTick`."""

    def __init__(self, table: Mapping[str, TickInfo] | None = None) -> None:
        self._table = dict(table or {})

    def put(self, token_id: str, info: TickInfo) -> None:
        self._table[token_id] = info

    async def ensure(self, token_id: str) -> TickInfo | None:
        return self._table.get(token_id, DefaultTick())


class PositionsReader(Protocol):
    """The slice of the Data API client the trader uses (a fake in unit tests)."""

    async def activity_trades(
        self, wallet: str, *, start: int | None = None
    ) -> Fetched[LeaderTrade]: ...

    async def positions(
        self, wallet: str, *, market: str | None = None
    ) -> Fetched[LeaderPosition]: ...


# --------------------------------------------------------------------------------------------
# Durable ledger: seen keys, cursors and intents in one write (storage: CopyIntentRepository)
# --------------------------------------------------------------------------------------------

Intent = CopyIntent
"""A copy we decided to send: the exact request and what it copies (stored before sending)."""


def client_order_id_for(dedupe_key: str) -> str:
    """Derive the copy order's client order id from the leader trade's dedupe key."""
    return "cp" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:30]


class CopyLedger:
    """The copy trader's view of its durable state: what each decision writes, and when.

    The SQL lives in `storage.repositories.CopyIntentRepository`; this class only decides the
    audit details and reads the executor's journal.
    """

    def __init__(self, repos: Repositories) -> None:
        self._repos = repos
        self._store = repos.copy_intents

    async def cursor(self, wallet: str) -> int | None:
        return await self._store.cursor(wallet)

    async def seen(self, wallet: str, keys: Iterable[str]) -> set[str]:
        return await self._store.seen_among(wallet, keys)

    async def handle(
        self,
        trade: LeaderTrade,
        *,
        intent: Intent | None = None,
        skip: tuple[str, str] | None = None,
    ) -> bool:
        """Mark `trade` handled (and store `intent`, or audit `skip`) atomically.

        Return False if it had been handled already (nothing is written then).
        """
        detail: dict[str, Any] = {
            "wallet": trade.wallet,
            "dedupe_key": trade.dedupe_key,
            "token_id": trade.token_id,
            "side": trade.side.value,
            "leader_price": str(trade.price),
            "leader_size": str(trade.size),
        }
        event = "copy_intent"
        if skip is not None:
            event = "copy_skipped"
            detail["reason"], detail["detail"] = skip
        return await self._store.handle(
            trade.wallet, trade.dedupe_key, trade.timestamp, audit=(event, detail), intent=intent
        )

    async def pending(self) -> list[Intent]:
        return await self._store.pending()

    async def close_intent(self, coid: str, event: str, **detail: Any) -> None:
        """Delete the intent for `coid` and audit how it ended, in one write."""
        await self._store.close(coid, event, detail)

    async def in_journal(self, coid: str) -> bool:
        return await self._repos.orders.get(coid) is not None

    async def prune(self, wallet: str, *, older_than_s: float) -> int:
        before = time.time() - older_than_s
        iso = datetime.fromtimestamp(before, UTC).isoformat(timespec="microseconds")
        return await self._store.prune_seen(wallet, before_iso=iso)


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}")


def snap_price(price: Decimal, tick: Decimal, side: Side) -> Decimal:
    """Put a limit price on the tick grid without loosening it (BUY down, SELL up)."""
    steps = price / tick
    rounded = steps.to_integral_value(rounding=ROUND_FLOOR if side is Side.BUY else ROUND_CEILING)
    return (rounded * tick).quantize(tick)


def limit_price(
    leader_price: Decimal, slippage: Decimal, tick: Decimal, side: Side
) -> Decimal | None:
    """Leader price +/- slippage on the grid, clamped to [tick, 1 - tick]; None if impossible."""
    raw = leader_price + slippage if side is Side.BUY else leader_price - slippage
    p = snap_price(raw, tick, side)
    lo, hi = tick, Decimal(1) - tick
    p = min(max(p, lo), hi)
    # Clamping may not move the price to the wrong side of the leader's by more than slippage.
    if side is Side.BUY and p < leader_price - tick:
        return None
    if side is Side.SELL and p > leader_price + tick:
        return None
    return p


def round_size(size: Decimal) -> Decimal:
    return size.quantize(SIZE_STEP, rounding=ROUND_DOWN)


@dataclass
class _Batch:
    """Context for one poll's trades: the leader's holdings before each sell."""

    trades: list[LeaderTrade]
    leader_after: dict[str, Decimal] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The strategy
# --------------------------------------------------------------------------------------------


class CopyTrader:
    """Mirror followed wallets' trades into the executor, exactly once each."""

    name = STRATEGY_NAME

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
    ) -> None:
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
        self._ledger = CopyLedger(repos)
        self._metrics = metrics
        self._markets = markets or StaticMarketInfo()
        self._tags = tags
        self._books = books
        self._interval = poll_interval_s
        self._max_age = max_trade_age_s
        self._clock = clock or SystemClock()
        self._wall = wall
        self._spread = spread_phases
        self._market_locks: dict[str, asyncio.Lock] = {}
        self._tokens_of_market: dict[str, set[str]] = {}
        self._booked: dict[str, Decimal] = {}  # condition id -> notional we bought (this run)
        self._unsent: dict[str, Intent] = {}
        self.copied: list[OrderRequest] = []
        self.lags: list[float] = []

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
        while True:
            delay = interval
            try:
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

    # -- polling -------------------------------------------------------------------------------

    async def poll_once(self, rule: WalletRule) -> int:
        """Fetch the wallet's new trades and handle each; return how many were handled."""
        for intent in [i for i in self._unsent.values() if i.wallet == rule.address]:
            await self._complete(intent)
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
        seen = await self._ledger.seen(rule.address, {t.dedupe_key for t in trades})
        fresh: list[LeaderTrade] = []
        keys: set[str] = set()
        for t in trades:
            if t.dedupe_key in seen or t.dedupe_key in keys:
                continue
            keys.add(t.dedupe_key)
            fresh.append(t)
        if not fresh:
            return 0
        batch = _Batch(fresh)
        handled = 0
        for t in fresh:
            await self._handle(rule, t, batch)
            handled += 1
        return handled

    async def _handle(self, rule: WalletRule, trade: LeaderTrade, batch: _Batch) -> None:
        self._metrics.copy_leader_trades_total.inc()
        self._tokens_of_market.setdefault(trade.condition_id, set()).add(trade.token_id)
        lock = self._market_locks.setdefault(trade.condition_id, asyncio.Lock())
        async with lock:
            decision = await self._decide(rule, trade, batch)
            if isinstance(decision, Skip):
                if await self._ledger.handle(trade, skip=(decision.reason, decision.detail)):
                    self._count_skip(decision.reason, wallet=rule.name, detail=decision.detail)
                return
            intent = Intent(decision, trade.wallet, trade.dedupe_key, trade.timestamp)
            if not await self._ledger.handle(trade, intent=intent):
                return  # handled by an earlier poll that raced this one
            self._metrics.strategy_signals_total.labels(STRATEGY_NAME).inc()
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
                cond = self._condition_of(req.token_id)
                if cond is not None:
                    price = result.avg_price or req.price
                    self._booked[cond] = self._booked.get(cond, Decimal(0)) + filled * price
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
        reason = "rejected" if result.status.value == "REJECTED" else "unfilled"
        await self._ledger.close_intent(
            coid, "copy_skipped", reason=reason, status=result.status.value, detail=result.reason
        )
        self._count_skip(reason, wallet=intent.wallet, detail=result.reason)

    def _condition_of(self, token_id: str) -> str | None:
        for cond, tokens in self._tokens_of_market.items():
            if token_id in tokens:
                return cond
        return None

    # -- the rule ------------------------------------------------------------------------------

    async def _decide(
        self, rule: WalletRule, trade: LeaderTrade, batch: _Batch
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
            size_or_skip = self._entry_size(rule, trade, price)
        else:
            size_or_skip = await self._exit_size(rule, trade, price, batch)
        if isinstance(size_or_skip, Skip):
            return size_or_skip
        size = round_size(size_or_skip)
        book_skip = self._book_check(trade.side, trade.token_id, price)
        if book_skip is not None:
            return book_skip
        if size <= 0 or size < min_size:
            return Skip("below_min_size", f"{size} < {min_size}")
        if entry and size * price < MIN_MARKETABLE_BUY:
            return Skip("below_min_size", f"notional {size * price} < {MIN_MARKETABLE_BUY}")
        return OrderRequest(
            strategy=STRATEGY_NAME,
            token_id=trade.token_id,
            side=trade.side,
            price=price,
            size=size,
            order_type=OrderType(rule.order_type),
            client_order_id=client_order_id_for(trade.dedupe_key),
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

    def _exposure(self, condition_id: str) -> Decimal:
        held = Decimal(0)
        for token in self._tokens_of_market.get(condition_id, ()):
            pos = self._positions.position(token)
            held += pos.size * pos.avg_cost
        return max(held, self._booked.get(condition_id, Decimal(0)))

    @staticmethod
    def _rule_notional(rule: WalletRule, trade: LeaderTrade, price: Decimal) -> Decimal:
        if rule.sizing == "ratio":
            assert rule.ratio is not None
            notional = trade.size * rule.ratio * price
        elif rule.sizing == "fixed_notional":
            assert rule.fixed_notional is not None
            notional = rule.fixed_notional
        else:
            assert rule.percent is not None
            notional = trade.notional * rule.percent / 100
            notional = max(notional, rule.percent_min_notional)
            if rule.percent_max_notional is not None:
                notional = min(notional, rule.percent_max_notional)
        return min(notional, rule.max_trade_notional)

    def _entry_size(self, rule: WalletRule, trade: LeaderTrade, price: Decimal) -> Decimal | Skip:
        notional = self._rule_notional(rule, trade, price)
        room = rule.max_market_exposure - self._exposure(trade.condition_id)
        if room <= 0:
            return Skip("exposure_limit", f"market exposure at {rule.max_market_exposure}")
        notional = min(notional, room)
        return notional / price

    async def _exit_size(
        self, rule: WalletRule, trade: LeaderTrade, price: Decimal, batch: _Batch
    ) -> Decimal | Skip:
        ours = self._positions.position(trade.token_id).size
        if ours <= 0:
            return Skip("no_position", "we hold none of this token")
        if not rule.mirror_exits:
            # Sized like an entry (exposure aside: a sell reduces it), never beyond our holding.
            return min(self._rule_notional(rule, trade, price) / price, ours)
        before = await self._leader_before(trade, batch)
        fraction = Decimal(1) if before <= 0 else min(trade.size / before, Decimal(1))
        return min(ours * fraction, ours)

    async def _leader_before(self, trade: LeaderTrade, batch: _Batch) -> Decimal:
        """The leader's holding just before `trade`: now (Data API) + what this batch undid."""
        if trade.token_id not in batch.leader_after:
            got = await self._api.positions(trade.wallet, market=trade.condition_id)
            size = Decimal(0)
            for p in got.rows:
                if p.token_id == trade.token_id:
                    size = p.size
            batch.leader_after[trade.token_id] = size
        holding = batch.leader_after[trade.token_id]
        idx = batch.trades.index(trade)
        for later in reversed(batch.trades[idx:]):
            if later.token_id != trade.token_id:
                continue
            holding += later.size if later.side is Side.SELL else -later.size
        return holding

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


def write_demo_rules(sim: Any, workdir: Path) -> dict[str, Any]:
    """Write copy rules following the demo scenario's whale; return the settings pointing at them.

    Shaped as a `demo.RULE_WRITERS` entry (`(sim, workdir) -> settings overrides`).
    """
    whale = sim.scenario.whale_address if sim.scenario is not None else None
    if whale is None:
        return {}
    path = workdir / "copy-rules.toml"
    path.write_text(
        "# written by --demo: copy the scenario's whale at 5% of its size\n"
        "[[wallets]]\n"
        f'address = "{whale}"\n'
        'label = "demo-whale"\n'
        'ratio = "0.05"\n'
        'max_trade_notional = "20"\n'
        'max_market_exposure = "150"\n'
        'max_slippage = "0.02"\n'
    )
    return {"copy_enabled": True, "copy_rules_path": path}
