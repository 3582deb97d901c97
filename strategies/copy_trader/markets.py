"""Market facts the copy trader needs: tick and minimum size per token, and market tags.

Owns the seams (`TickInfo`, `MarketInfoSource`, `TagSource`), the fixed-table source used when
nothing better is wired (`StaticMarketInfo`, falling back to `DefaultTick`), and `TagIndex`, the
Gamma-backed tag source for exactly the tags the rules name.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import structlog

from errors import FeedError, TransientError
from resilience.clock import Clock, SystemClock

log = structlog.get_logger("strategies.copy_trader")


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
