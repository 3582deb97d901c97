"""Copy trader state: the durable ledger (dedupe, cursors, intents) and a per-market memory.

`CopyLedger` is the trader's view of its durable state: which leader trades were handled, each
wallet's cursor and the intents stored before sending, each decision written in one
transaction (the SQL lives in `storage.repositories.CopyIntentRepository`). `MarketMemory` is
the in-memory, bounded part: per market, the tokens the leader traded, the notional we bought in
this run, what our copies still open reserve, and the lock that serialises decisions on one
market.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from storage import JournalRow, Repositories
from storage.repositories import COPY_STRATEGY, CopyIntent
from strategies.base import PositionSource
from venue.data_api import LeaderTrade

MAX_MARKETS: Final = 10_000
"""How many markets `MarketMemory` remembers before forgetting the least recently traded."""

Intent = CopyIntent
"""A copy we decided to send: the exact request and what it copies (stored before sending)."""


def client_order_id_for(dedupe_key: str, strategy: str = COPY_STRATEGY) -> str:
    """Derive the copy order's client order id from the leader trade's dedupe key and the copy
    trader's name: two instances copying one leader trade send two orders, under two ids (the
    default instance's ids are those it had before instances had names)."""
    key = dedupe_key if strategy == COPY_STRATEGY else f"{strategy}:{dedupe_key}"
    return "cp" + hashlib.sha256(key.encode()).hexdigest()[:30]


def legacy_dedupe_key(trade: LeaderTrade) -> str:
    """The key earlier versions recorded for `trade`: tx hash + asset + side + size, no price.

    A database written before the price joined the key holds keys of this form only; one of
    them marks `trade` handled. The forms cannot collide (four fields here, five in the current
    key), and no current version writes this form, so it never hides a fill handled since: at
    worst, a fill of the same size at a second price in a transaction handled before the upgrade
    stays uncopied, as it was then.
    """
    return f"{trade.tx_hash}:{trade.token_id}:{trade.side.value}:{trade.size.normalize():f}"


class CopyLedger:
    """The copy trader's view of its durable state: what each decision writes, and when.

    The SQL lives in `storage.repositories.CopyIntentRepository`; this class only decides the
    audit details and reads the executor's journal.
    """

    def __init__(self, repos: Repositories, *, strategy: str = COPY_STRATEGY) -> None:
        self._repos = repos
        self._store = repos.copy_intents.scoped(strategy)

    async def cursor(self, wallet: str) -> int | None:
        return await self._store.cursor(wallet)

    async def start_following(
        self, wallet: str, *, cursor: int, existing: Iterable[LeaderTrade], detail: dict[str, Any]
    ) -> bool:
        """Record a new wallet's `existing` trades as seen (never copied) and its cursor, in one
        write; False if the wallet had been started already."""
        return await self._store.start_following(
            wallet,
            cursor=cursor,
            seen=[t.dedupe_key for t in existing],
            audit=("copy_wallet_started", {"wallet": wallet, **detail}),
        )

    async def seen(self, wallet: str, trades: Iterable[LeaderTrade]) -> set[str]:
        """The dedupe keys of those `trades` handled already, under their key or the legacy
        key an earlier version recorded (`legacy_dedupe_key`)."""
        trades = list(trades)
        keys = {t.dedupe_key for t in trades} | {legacy_dedupe_key(t) for t in trades}
        recorded = await self._store.seen_among(wallet, keys)
        return {
            t.dedupe_key
            for t in trades
            if t.dedupe_key in recorded or legacy_dedupe_key(t) in recorded
        }

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

    async def journal_row(self, coid: str) -> JournalRow | None:
        """The executor's journal entry of our order `coid`, if it journaled one."""
        return await self._repos.orders.get(coid)

    async def prune(self, wallet: str, *, older_than_s: float) -> int:
        before = time.time() - older_than_s
        iso = datetime.fromtimestamp(before, UTC).isoformat(timespec="microseconds")
        return await self._store.prune_seen(wallet, before_iso=iso)


@dataclass
class _Reservation:
    notional: Decimal  # what the copy counts now: filled at its price + open part at its limit
    until: float  # monotonic time past which a copy the journal does not know is dropped


@dataclass
class _Market:
    tokens: set[str] = field(default_factory=set)
    booked: Decimal = Decimal(0)  # notional we bought in this market (this run)
    reserved: dict[str, _Reservation] = field(default_factory=dict)  # by client order id


@dataclass
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class MarketMemory:
    """Per market, what the trader learned this run: its tokens, our booked notional, the
    reservations of copies still open, a lock.

    The exposure of a market is the larger of what we hold in its tokens (at cost) and what we
    booked buying in it plus what open copies reserve, so a fill the position has not shown yet
    still counts, and so does a copy that may still fill (resting, or sent with its outcome
    unknown). A reservation is settled (`settle`: what filled is booked, the rest freed) or
    dropped (`release`) by the trader once the order's outcome is known.

    Bounded: past `max_markets`, noting a new market forgets the least recently traded one that
    is not being decided on, in which we hold nothing and reserve nothing (markets we hold stay,
    bounded by our capital; reservations end with their orders). A lock exists only while some
    decision waits for or holds it.
    """

    def __init__(
        self, positions: PositionSource, *, strategy: str, max_markets: int = MAX_MARKETS
    ) -> None:
        if max_markets < 1:
            raise ValueError("max_markets must be at least 1")
        self._positions = positions
        self._strategy = strategy  # whose holdings count: the copy trader's own
        self._max = max_markets
        self._markets: OrderedDict[str, _Market] = OrderedDict()
        self._condition_of: dict[str, str] = {}
        self._locks: dict[str, _Lock] = {}
        self._reserved_in: dict[str, str] = {}  # client order id -> market of its reservation

    def __len__(self) -> int:
        return len(self._markets)

    @property
    def locks(self) -> int:
        """How many market locks exist now (one per market being decided on)."""
        return len(self._locks)

    def note(self, condition_id: str, token_id: str) -> None:
        """Remember that `token_id` trades in `condition_id` (a leader just traded it)."""
        m = self._markets.get(condition_id)
        if m is None:
            m = self._markets[condition_id] = _Market()
        else:
            self._markets.move_to_end(condition_id)
        m.tokens.add(token_id)
        self._condition_of.setdefault(token_id, condition_id)
        self._evict(keep=condition_id)

    def condition_of(self, token_id: str) -> str | None:
        """The market `token_id` was noted in, if it is remembered."""
        return self._condition_of.get(token_id)

    def book(self, condition_id: str, notional: Decimal) -> None:
        """Add `notional` bought in `condition_id` to its booked exposure."""
        m = self._markets.get(condition_id)
        if m is not None:
            m.booked += notional

    def reserve(
        self, condition_id: str, client_order_id: str, notional: Decimal, *, until: float
    ) -> None:
        """Count `notional` against `condition_id` for a copy that may still fill, until it is
        settled or released (`until`: the monotonic time the trader may drop it unseen)."""
        m = self._markets.get(condition_id)
        if m is not None:
            m.reserved[client_order_id] = _Reservation(notional, until)
            self._reserved_in[client_order_id] = condition_id

    def reservations(self, condition_id: str | None = None) -> list[tuple[str, float]]:
        """`(client order id, until)` of the open reservations (in one market, or in all)."""
        out = []
        for coid, cond in self._reserved_in.items():
            if condition_id is None or cond == condition_id:
                out.append((coid, self._markets[cond].reserved[coid].until))
        return out

    def reserved(self, condition_id: str) -> Decimal:
        """What the open copies in `condition_id` reserve."""
        m = self._markets.get(condition_id)
        return sum((r.notional for r in m.reserved.values()), Decimal(0)) if m else Decimal(0)

    def adjust(self, client_order_id: str, notional: Decimal) -> None:
        """Set what the still-open copy `client_order_id` counts (e.g. after a partial fill)."""
        cond = self._reserved_in.get(client_order_id)
        if cond is not None:
            self._markets[cond].reserved[client_order_id].notional = notional

    def settle(self, client_order_id: str, bought: Decimal) -> None:
        """End the reservation of a copy whose outcome is known: book `bought` (what filled, at
        its price), free the rest. Nothing happens if the reservation has ended already."""
        cond = self._reserved_in.pop(client_order_id, None)
        if cond is not None:
            m = self._markets[cond]
            del m.reserved[client_order_id]
            m.booked += bought

    def release(self, client_order_id: str) -> None:
        """Drop a reservation without booking anything."""
        self.settle(client_order_id, Decimal(0))

    def exposure(self, condition_id: str) -> Decimal:
        """Our exposure in the market: held at cost, or booked plus reserved if more."""
        m = self._markets.get(condition_id)
        if m is None:
            return Decimal(0)
        held = Decimal(0)
        for token in m.tokens:
            pos = self._positions.position(token, strategy=self._strategy)
            held += pos.size * pos.avg_cost
        return max(held, m.booked + self.reserved(condition_id))

    @contextlib.asynccontextmanager
    async def locked(self, condition_id: str) -> AsyncIterator[None]:
        """Hold the market's lock: one decision at a time per market."""
        entry = self._locks.get(condition_id)
        if entry is None:
            entry = self._locks[condition_id] = _Lock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[condition_id]

    def _holds(self, m: _Market) -> bool:
        return any(self._positions.position(t, strategy=self._strategy).size > 0 for t in m.tokens)

    def _evict(self, *, keep: str) -> None:
        looked = 0
        while len(self._markets) > self._max and looked < len(self._markets):
            looked += 1
            cond = next(iter(self._markets))
            m = self._markets[cond]
            if cond == keep or cond in self._locks or m.reserved or self._holds(m):
                self._markets.move_to_end(cond)  # in use: give it another round
                continue
            del self._markets[cond]
            for token in m.tokens:
                if self._condition_of.get(token) == cond:
                    del self._condition_of[token]
