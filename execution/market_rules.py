"""Market rules: tick grid, minimum size, open market — checked before anything is journaled —
and each market's taker fee (`/clob-markets` `fd`, falling back to Gamma's `feeSchedule`).

Metadata is cached per token. It is fed by the venue (`MetadataSource`, fetched once on first
use), by market discovery (`load_market`) and by the market feed's `tick_size_change`
(`set_tick_size`), so the next order uses the new grid. A price off the cached grid refetches
the market once before it is refused (`admit`): the tick turns finer above 0.96 / below 0.04 and
a missed `tick_size_change` must not leave the daemon refusing good prices. A resolved market
(`mark_resolved`) refuses every order with a reason naming the resolution.

The cache is bounded (`MAX_TOKENS`): a daemon that runs for weeks sees a new market every few
minutes, and a token it no longer trades must not stay for ever. The tokens written longest ago
leave first, a quarter of the bound at a time; discovery writes every watched market again on
each pass, so what is watched stays. An evicted token is fetched again on its next use, as on the
first (a resolved one then reads `closed` from the venue and is still refused).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal

import structlog

from errors import TransientError
from execution.fees import NO_FEE, FeeSchedule, FeeSource, fee_booked, gamma_schedule
from execution.ports import MarketMeta, MetadataSource
from models import ONE, ZERO, Fill, LiquidityRole, Market, OrderRequest, OrderType, Side, on_tick

log = structlog.get_logger("execution.market_rules")

MIN_MARKETABLE_BUY_NOTIONAL = Decimal("1")
"""The venue refuses marketable BUYs under $1."""
GTD_SECURITY_S = 60
"""A GTD order must expire more than 60 s from now."""
SIZE_DECIMALS = 2
SIZE_STEP = Decimal("0.01")
FEE_RETRY_S = 60.0
"""How long before asking `/clob-markets` again for a fee it could not serve."""
MAX_TOKENS = 20_000
"""Tokens whose metadata the cache keeps: every market discovery watches (a few thousand at
most) with room to spare."""
AMOUNT_STEP = Decimal("0.0001")
"""Marketable orders: the taker amount has at most 4 decimals."""

V2_REFUSAL = (
    "Protocol-V2 market (Gamma version v2: ExchangeV3, EIP-712 domain version 3):"
    " polyd cannot sign or route its orders"
)
"""Why a Protocol-V2 market is refused: by discovery (each one logged, counted per rule) and by
the market rules for any order on a v2 position id (a copied leader trade, say)."""

_V2_RESERVED_BITS = ((1 << 64) - 1) << 40
_UINT256_MAX = (1 << 256) - 1


def is_v2_position_id(token_id: str) -> bool:
    """True if `token_id` lies in the Protocol-V2 position-id namespace.

    The official SDK's rule (`polymarket-client` 0.14.0, `polymarket/_internal/protocol.py`,
    `is_v2_position_id`, which routes such orders to ExchangeV3 with EIP-712 domain version "3"):
    a v2 position id packs a module id, the bytes31 condition id and the outcome byte, and keeps
    bits 40..103 zero. A v1 (conditional-tokens) position id is a keccak hash, whose 64 bits
    there are all zero with probability 2**-64. Not a uint256: not a v2 id.
    """
    raw = token_id.strip()
    if not raw.isdigit():
        return False
    value = int(raw)
    return value <= _UINT256_MAX and value & _V2_RESERVED_BITS == 0


def order_amounts(req: OrderRequest) -> tuple[Decimal, Decimal]:
    """Return (maker, taker) amounts in human units, exactly as the venue checks them.

    Limit orders: BUY pays price x size pUSD for `size` shares; SELL the reverse. Marketable
    orders (FOK/FAK): the maker amount has at most 2 decimals and the taker at most 4, so a BUY
    spends price x size rounded down to the cent.
    """
    p, s = req.price, req.size
    if req.order_type.rests:
        return (p * s, s) if req.side is Side.BUY else (s, p * s)
    if req.side is Side.BUY:
        dollars = (p * s).quantize(SIZE_STEP, rounding=ROUND_DOWN)
        return dollars, (dollars / p).quantize(AMOUNT_STEP, rounding=ROUND_DOWN)
    shares = s.quantize(SIZE_STEP, rounding=ROUND_DOWN)
    return shares, (shares * p).quantize(AMOUNT_STEP, rounding=ROUND_DOWN)


def fillable_size(req: OrderRequest) -> Decimal:
    """The shares the venue's order for `req` can fill: `req.size` after the venue's rounding.

    A marketable BUY of 20.61 shares at 0.97 spends 19.99 pUSD (the cent below 19.9917) for
    20.6082 shares; once those have matched the order is filled, not "partially filled with the
    rest killed". For resting orders and SELLs it is `req.size` itself.
    """
    maker, taker = order_amounts(req)
    return taker if req.side is Side.BUY else maker


class MarketRules:
    """The metadata cache and the checks that refuse an order the venue would refuse."""

    def __init__(
        self, *, source: MetadataSource | None = None, max_tokens: int = MAX_TOKENS
    ) -> None:
        self._source = source
        self._max_tokens = max(1, max_tokens)
        self._meta: dict[str, MarketMeta] = {}  # oldest written first
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._fee_tried: dict[str, float] = {}  # token -> when its CLOB fee was last asked for

    @property
    def source(self) -> MetadataSource | None:
        """Where metadata is fetched from (the venue's `/markets`)."""
        return self._source

    def get(self, token_id: str) -> MarketMeta | None:
        return self._meta.get(token_id)

    @property
    def cached(self) -> int:
        """Tokens whose metadata is held (not `__len__`: an empty cache must stay truthy)."""
        return len(self._meta)

    def put(self, meta: MarketMeta) -> None:
        """Record (or replace) one token's metadata."""
        self._store(meta)

    def _store(self, meta: MarketMeta) -> None:
        """Write one token's metadata as the newest; past `max_tokens`, drop the oldest written
        (a quarter of the bound at once: O(1) amortised per write)."""
        self._meta.pop(meta.token_id, None)
        self._meta[meta.token_id] = meta
        if len(self._meta) > self._max_tokens:
            drop = len(self._meta) - self._max_tokens + self._max_tokens // 4
            for token in list(itertools.islice(self._meta, drop)):
                del self._meta[token]
                self._fee_tried.pop(token, None)

    def load_market(self, market: Market) -> None:
        """Record both tokens of a market found by discovery (Gamma)."""
        for token_id in market.token_ids:
            self.put(
                MarketMeta(
                    token_id=token_id,
                    condition_id=market.condition_id,
                    tick_size=market.tick_size,
                    min_size=market.min_size,
                    neg_risk=market.neg_risk,
                    accepting_orders=market.accepting_orders and market.active,
                    closed=market.closed,
                    fee=self._fee_after_gamma(token_id, market),
                )
            )

    # fees -------------------------------------------------------------------------------
    def fee(self, token_id: str) -> FeeSchedule:
        """The token's taker fee as last read (`/clob-markets` `fd`, else Gamma), or no fee
        when the market is unknown."""
        meta = self._meta.get(token_id)
        return meta.fee if meta is not None else NO_FEE

    async def with_fee(self, fill: Fill) -> Fill:
        """`fill` with the fee the venue charged it. Trades carry no fee amount, so it is
        computed from the market's schedule: taker only, rounded down; a maker pays 0. A taker
        fill with its legs known pays per leg at the leg's price, each rounded down, as the venue
        charges it (docs/venue-mechanics.md §1): not once on the average price."""
        if fill.fee != 0:
            return fill
        await self.ensure(fill.token_id)
        taker = fill.role is LiquidityRole.TAKER
        schedule = self.fee(fill.token_id)
        legs = fill.legs or ((fill.size, fill.price),)
        fee = sum((fee_booked(n, p, schedule, taker=taker) for n, p in legs), ZERO)
        return fill.model_copy(update={"fee": fee}) if fee else fill

    def _fee_after_gamma(self, token_id: str, market: Market) -> FeeSchedule:
        """Gamma's schedule only where the CLOB's has not been read: `fd` wins."""
        old = self._meta.get(token_id)
        if old is not None and old.fee.source == FeeSource.CLOB:
            return old.fee
        return gamma_schedule(market) or (old.fee if old is not None else NO_FEE)

    def _needs_fee(self, meta: MarketMeta) -> bool:
        """True when the CLOB's fee of a known token has not been read and is due for a try."""
        if self._source is None or meta.fee.source == FeeSource.CLOB:
            return False
        last = self._fee_tried.get(meta.token_id)
        return last is None or time.monotonic() - last >= FEE_RETRY_S

    async def _read_fee(self, meta: MarketMeta) -> None:
        """Read the CLOB's fee for a token discovery (Gamma) loaded; keep the rest as it is."""
        assert self._source is not None
        self._fee_tried[meta.token_id] = time.monotonic()
        try:
            fetched = await self._source.market_meta(meta.token_id)
        except TransientError as e:
            log.warning("market_fee_unavailable", token_id=meta.token_id, error=type(e).__name__)
            return
        for m in fetched:
            cur = self._meta.get(m.token_id)
            if m.fee.source == FeeSource.CLOB and cur is not None:
                self._store(replace(cur, fee=m.fee))
                self._fee_tried.pop(m.token_id, None)
            elif cur is None:
                self._store(m)

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """Apply a `tick_size_change`; unknown tokens are fetched on first use as usual."""
        old = self._meta.get(token_id)
        if old is None:
            return
        self._store(replace(old, tick_size=tick_size))  # the fee and the rest stay
        log.info("tick_size_changed", token_id=token_id, old=str(old.tick_size), new=str(tick_size))

    def mark_resolved(self, token_id: str, condition_id: str, payout: Decimal) -> None:
        """The market of `token_id` resolved: no order there is sent again."""
        old = self._meta.get(token_id) or MarketMeta(
            token_id, condition_id, Decimal("0.01"), Decimal("5"), False
        )
        self._store(replace(old, accepting_orders=False, closed=True, payout=payout))

    async def refresh(self, token_id: str) -> MarketMeta | None:
        """Fetch the token's market again (its tick may have changed); keep what we had if the
        venue cannot say, and never forget a resolution."""
        if self._source is None:
            return self._meta.get(token_id)
        try:
            fresh = await self._source.market_meta(token_id)
        except TransientError as e:
            log.warning("market_meta_unavailable", token_id=token_id, error=type(e).__name__)
            return self._meta.get(token_id)
        for m in fresh:
            old = self._meta.get(m.token_id)
            if old is not None and old.payout is not None and m.payout is None:
                m = replace(m, accepting_orders=False, closed=True, payout=old.payout)
            if old is not None and m.fee.source != FeeSource.CLOB:
                m = replace(m, fee=old.fee)  # the CLOB's fee could not be read this time
            self._store(m)
        return self._meta.get(token_id)

    async def admit(self, req: OrderRequest) -> tuple[MarketMeta | None, str | None]:
        """(metadata, why the venue would refuse `req` or None). A price off the cached grid
        refetches the market once first: the cached tick may be the stale one. A Protocol-V2
        position id is refused before anything is fetched."""
        if is_v2_position_id(req.token_id):
            return self._meta.get(req.token_id), V2_REFUSAL
        meta = await self.ensure(req.token_id)
        reason = self.check(req, meta)
        if reason is not None and meta is not None and meta.payout is None and _off_grid(reason):
            meta = await self.refresh(req.token_id)
            reason = self.check(req, meta)
        return meta, reason

    async def ensure(self, token_id: str) -> MarketMeta | None:
        """Return the token's metadata, fetching it from the venue the first time."""
        meta = self._meta.get(token_id)
        if meta is not None and self._needs_fee(meta):
            await self._read_fee(meta)
            return self._meta.get(token_id)
        if meta is not None or self._source is None:
            return meta
        pending = self._loading.get(token_id)
        if pending is None:
            pending = self._loading[token_id] = asyncio.get_running_loop().create_future()
            try:
                for m in await self._source.market_meta(token_id):
                    if m.token_id not in self._meta:
                        self._store(m)
                    if m.fee.source != FeeSource.CLOB:
                        self._fee_tried[m.token_id] = time.monotonic()
                pending.set_result(None)
            except TransientError as e:
                log.warning("market_meta_unavailable", token_id=token_id, error=type(e).__name__)
                pending.set_result(None)
            finally:
                self._loading.pop(token_id, None)
        else:
            await pending
        return self._meta.get(token_id)

    @staticmethod
    def check(
        req: OrderRequest, meta: MarketMeta | None, *, now: float | None = None
    ) -> str | None:
        """Return why the venue would refuse `req`, or None if it follows the market's rules."""
        if meta is None:
            return f"unknown market for token {req.token_id}"
        if meta.payout is not None:
            return f"market resolved (this token pays {meta.payout}): no new orders"
        if meta.closed:
            return "market is closed"
        if not meta.accepting_orders:
            return "market is not accepting orders"
        tick = meta.tick_size
        if not tick <= req.price <= ONE - tick:
            return f"price {req.price} outside [{tick}, {ONE - tick}]"
        if not on_tick(req.price, tick):
            return f"price {req.price} is not on the tick grid {tick}"
        if req.size != req.size.quantize(SIZE_STEP, rounding=ROUND_DOWN):
            return f"size {req.size} has more than {SIZE_DECIMALS} decimal places"
        if req.order_type.rests and req.size < meta.min_size:
            return f"size {req.size} is under the market minimum {meta.min_size}"
        if (
            req.order_type in (OrderType.FOK, OrderType.FAK)
            and req.side is Side.BUY
            and req.notional.quantize(SIZE_STEP, rounding=ROUND_DOWN) < MIN_MARKETABLE_BUY_NOTIONAL
        ):
            return f"marketable BUY notional {req.notional} is under $1"
        if req.order_type is OrderType.GTD and req.expiration is not None:
            t = time.time() if now is None else now
            if req.expiration <= t + GTD_SECURITY_S:
                return "GTD expiration must be more than 60 s ahead"
        return None


def _off_grid(reason: str) -> bool:
    return "tick grid" in reason or (reason.startswith("price ") and " outside [" in reason)
