"""The paper broker (the default mode): fills against local order books, never calls the venue.

Marketable orders walk the book's levels up to their limit: FOK fills entirely or is refused, FAK
fills what it can and kills the rest, GTC/GTD fill their marketable part and rest the remainder.
Resting orders fill when the book crosses them (`poll`, run by `run()`). Fills and order updates
go to the same handlers the live user feed uses, so journal, positions and metrics match live.

Paper fills consume the liquidity they take: the size taken at each level is remembered per
token and subtracted from what later orders see, so two paper orders never both fill against the
same level. The memory for a token is dropped when its book changes (a new snapshot or delta from
the feed, or a REST `/book` with different levels): from then on the venue's book is the truth
again. A book that is re-sent unchanged keeps the consumption.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

import orjson
import structlog

from errors import DuplicateOrder, OrderRejected
from execution.market_rules import fillable_size
from execution.ports import (
    Ack,
    BatchItem,
    CancelResult,
    FillHandler,
    MarketMeta,
    OrderEventHandler,
    Prepared,
    VenueOrder,
    VenueStatus,
)
from models import ZERO, BookSource, Fill, Level, LiquidityRole, OrderRequest, OrderType, Side

log = structlog.get_logger("execution.paper")

FOK_KILLED = "order couldn't be fully filled. FOK orders are fully filled or killed."
FAK_KILLED = (
    "no orders found to match with FAK order. FAK orders are partially filled or killed if no "
    "match is found."
)
POST_ONLY_CROSSES = "invalid post-only order: order crosses book"


@runtime_checkable
class Refreshable(Protocol):
    """A book source that must be asked to fetch a token's book (the REST-backed one)."""

    async def refresh(self, token_id: str) -> None: ...


@dataclass(slots=True)
class PaperOrder:
    """One simulated order: what it asked for and what it got so far (paper trading, and the
    backtest's matching model, which adds its queue position and timing)."""

    prepared: Prepared
    fillable: Decimal  # the request's size after the venue's rounding (`fillable_size`)
    matched: Decimal = ZERO
    cost: Decimal = ZERO
    status: VenueStatus = VenueStatus.LIVE

    @property
    def req(self) -> OrderRequest:
        return self.prepared.request

    @property
    def remaining(self) -> Decimal:
        return self.fillable - self.matched

    def view(self) -> VenueOrder:
        return VenueOrder(
            venue_order_id=self.prepared.venue_order_id,
            status=self.status,
            original_size=self.req.size,
            size_matched=self.matched,
            price=self.req.price,
            token_id=self.req.token_id,
            side=self.req.side,
            order_type=self.req.order_type.value,
        )


def _crossing(side: Side, limit: Decimal, levels: list[Level]) -> list[Level]:
    """Levels (best first) a `side` order at `limit` can trade against."""
    if side is Side.BUY:
        return [lv for lv in levels if lv[0] <= limit]
    return [lv for lv in levels if lv[0] >= limit]


@dataclass(slots=True)
class _Consumed:
    """Liquidity our paper fills took from one token's book, valid while the book is unchanged."""

    seen: tuple[tuple[Level, ...], tuple[Level, ...]]  # (bids, asks) as last seen
    used: dict[tuple[Side, Decimal], Decimal]  # (side of the book, price) -> size taken


def _less(
    levels: list[Level] | None, book_side: Side, used: dict[tuple[Side, Decimal], Decimal]
) -> list[Level] | None:
    if levels is None:
        return None
    out: list[Level] = []
    for price, size in levels:
        left = size - used.get((book_side, price), ZERO)
        if left > 0:
            out.append((price, left))
    return out


def walk_levels(levels: list[Level], want: Decimal) -> list[Level]:
    """Take up to `want` from `levels` in order; return (price, size) fills."""
    out: list[Level] = []
    for price, size in levels:
        if want <= 0:
            break
        take = min(size, want)
        if take > 0:
            out.append((price, take))
            want -= take
    return out


class PaperBroker:
    """A `Broker` that simulates execution against a `BookSource`."""

    name = "paper"

    def __init__(
        self, *, books: BookSource, poll_interval_s: float = 0.2, finished_kept: int = 10_000
    ) -> None:
        self.books = books
        self.poll_interval_s = poll_interval_s
        self._orders: dict[str, PaperOrder] = {}  # working (LIVE) orders only
        # The last `finished_kept` finished orders, for lookups and duplicate refusals: a long
        # paper run must not keep every order it ever placed, nor scan them on every poll.
        self._finished: OrderedDict[str, VenueOrder] = OrderedDict()
        self._finished_kept = finished_kept
        self._consumed: dict[str, _Consumed] = {}
        self._on_fill: FillHandler | None = None
        self._on_order: OrderEventHandler | None = None

    def bind(self, *, on_fill: FillHandler, on_order: OrderEventHandler) -> None:
        """Connect the executor's handlers (done by the executor itself)."""
        self._on_fill, self._on_order = on_fill, on_order

    async def prepare(self, request: OrderRequest, meta: MarketMeta) -> Prepared:
        body = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        oid = "0x" + hashlib.sha256(b"paper:" + body).hexdigest()
        return Prepared(request, oid, hashlib.sha256(body).hexdigest(), body)

    async def _levels(self, req: OrderRequest) -> list[Level] | None:
        """The levels `req` can trade against, less what earlier paper fills took."""
        if isinstance(self.books, Refreshable):
            await self.books.refresh(req.token_id)
        return self._levels_now(req)

    def _levels_now(self, req: OrderRequest) -> list[Level] | None:
        tok = req.token_id
        bids, asks = self.books.bids(tok), self.books.asks(tok)
        seen = (tuple(bids or ()), tuple(asks or ()))
        c = self._consumed.get(tok)
        if c is not None and c.seen != seen:
            del self._consumed[tok]  # the book moved on: the venue's levels are the truth again
            c = None
        used = c.used if c is not None else {}
        book_side = Side.SELL if req.side is Side.BUY else Side.BUY
        levels = _less(asks if req.side is Side.BUY else bids, book_side, used)
        return None if levels is None else _crossing(req.side, req.price, levels)

    def _consume(self, req: OrderRequest, fills: list[Level]) -> None:
        """Remember the size `fills` took from the book `req` traded against."""
        if not fills:
            return
        tok = req.token_id
        c = self._consumed.get(tok)
        if c is None:
            bids, asks = self.books.bids(tok), self.books.asks(tok)
            c = self._consumed[tok] = _Consumed((tuple(bids or ()), tuple(asks or ())), {})
        book_side = Side.SELL if req.side is Side.BUY else Side.BUY
        for price, size in fills:
            key = (book_side, price)
            c.used[key] = c.used.get(key, ZERO) + size

    async def send(self, prepared: Prepared) -> Ack:
        req = prepared.request
        if prepared.venue_order_id in self._orders or prepared.venue_order_id in self._finished:
            raise DuplicateOrder(
                f"order {prepared.venue_order_id} is invalid. Duplicated.",
                order_id=prepared.venue_order_id,
            )
        crossing = await self._levels(req)
        if req.post_only and crossing:
            raise OrderRejected(POST_ONLY_CROSSES)
        fillable = fillable_size(req)  # a marketable BUY: the shares its cents buy at its limit
        fills = walk_levels(crossing or [], fillable)
        got = sum((s for _, s in fills), ZERO)
        if req.order_type is OrderType.FOK and got < fillable:
            raise OrderRejected(FOK_KILLED)
        if req.order_type is OrderType.FAK and got <= 0:
            raise OrderRejected(FAK_KILLED)
        po = PaperOrder(prepared, fillable)
        self._orders[prepared.venue_order_id] = po
        self._consume(req, fills)  # before any await: a concurrent order sees it
        trade_ids = await self._fill(po, fills)
        if po.remaining <= 0:
            po.status = VenueStatus.MATCHED
        elif not req.order_type.rests:
            po.status = VenueStatus.MATCHED if po.matched > 0 else VenueStatus.CANCELED
        self._retire_if_done(po)
        return Ack(
            venue_order_id=prepared.venue_order_id,
            status=VenueStatus.MATCHED if po.matched > 0 else VenueStatus.LIVE,
            size_matched=po.matched,
            avg_price=po.cost / po.matched if po.matched > 0 else None,
            trade_ids=tuple(trade_ids),
        )

    async def _fill(self, po: PaperOrder, fills: list[Level]) -> list[str]:
        ids: list[str] = []
        for price, size in fills:
            trade_id = uuid.uuid4().hex
            po.matched += size
            po.cost += price * size
            ids.append(trade_id)
            if self._on_fill is not None:
                await self._on_fill(
                    Fill(
                        trade_id=trade_id,
                        venue_order_id=po.prepared.venue_order_id,
                        client_order_id=po.req.client_order_id,
                        token_id=po.req.token_id,
                        side=po.req.side,
                        price=price,
                        size=size,
                        role=LiquidityRole.TAKER,
                    )
                )
        return ids

    async def send_batch(self, batch: Sequence[Prepared]) -> list[BatchItem]:
        out: list[BatchItem] = []
        for p in batch:
            try:
                out.append(await self.send(p))
            except OrderRejected as e:
                out.append(e)
        return out

    def _retire_if_done(self, po: PaperOrder) -> None:
        """Move an order that stopped working from the working set to the finished ones."""
        if po.status is VenueStatus.LIVE:
            return
        oid = po.prepared.venue_order_id
        self._orders.pop(oid, None)
        self._finished[oid] = po.view()
        while len(self._finished) > self._finished_kept:
            self._finished.popitem(last=False)

    def _may_cross(self, req: OrderRequest) -> bool:
        """O(1) pre-check on the best level: False means the book cannot fill `req` now."""
        tok = req.token_id
        best = self.books.best_ask(tok) if req.side is Side.BUY else self.books.best_bid(tok)
        return best is not None and bool(_crossing(req.side, req.price, [best]))

    async def poll(self) -> None:
        """Fill resting orders the book now crosses; expire GTD orders past their time.

        Costs O(working orders) with an O(1) best-level check each; only an order its book now
        crosses reads the levels (a REST-backed book is refreshed once per token per poll).
        """
        now = time.time()
        refreshed: set[str] = set()
        for po in list(self._orders.values()):
            if po.status is not VenueStatus.LIVE:
                continue
            req = po.req
            if req.order_type is OrderType.GTD and req.expiration and req.expiration - 60 <= now:
                po.status = VenueStatus.EXPIRED
                self._retire_if_done(po)
                await self._emit(po)
                continue
            if isinstance(self.books, Refreshable) and req.token_id not in refreshed:
                refreshed.add(req.token_id)
                await self.books.refresh(req.token_id)
            if not self._may_cross(req):
                continue
            crossing = self._levels_now(req)
            if not crossing:
                continue
            fills = walk_levels(crossing, po.remaining)
            if not fills:
                continue
            self._consume(req, fills)
            for price, size in fills:
                await self._fill_as_maker(po, price, size)
            if po.remaining <= 0:
                po.status = VenueStatus.MATCHED
                self._retire_if_done(po)
            await self._emit(po)

    async def _fill_as_maker(self, po: PaperOrder, price: Decimal, size: Decimal) -> None:
        # A resting order trades at its own price when the book comes to it.
        po.matched += size
        po.cost += po.req.price * size
        if self._on_fill is not None:
            await self._on_fill(
                Fill(
                    trade_id=uuid.uuid4().hex,
                    venue_order_id=po.prepared.venue_order_id,
                    client_order_id=po.req.client_order_id,
                    token_id=po.req.token_id,
                    side=po.req.side,
                    price=po.req.price,
                    size=size,
                    role=LiquidityRole.MAKER,
                )
            )

    async def _emit(self, po: PaperOrder) -> None:
        if self._on_order is not None:
            await self._on_order(po.view())

    async def run(self) -> None:
        """Poll resting orders until cancelled (a service task owned by the orchestrator)."""
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.poll()
            except Exception:  # the task boundary: one bad poll must not stop paper fills
                log.exception("paper_poll_failed")

    async def cancel(self, venue_order_ids: Sequence[str]) -> CancelResult:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for oid in venue_order_ids:
            po = self._orders.get(oid)  # working orders are LIVE: a finished one was retired
            if po is not None:
                po.status = VenueStatus.CANCELED
                self._retire_if_done(po)
                canceled.append(oid)
            elif oid in self._finished:
                not_canceled[oid] = "order can't be canceled, already matched"
            else:
                not_canceled[oid] = "order not found"
        return CancelResult(tuple(canceled), not_canceled)

    async def cancel_all(self) -> CancelResult:
        return await self.cancel(list(self._orders))

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        po = self._orders.get(venue_order_id)
        return po.view() if po is not None else self._finished.get(venue_order_id)

    async def open_orders(self) -> list[VenueOrder]:
        return [o.view() for o in self._orders.values()]

    async def fills_since(self, after_unix_s: int, *, market: str | None = None) -> list[Fill]:
        return []  # paper fills are delivered to the handler as they happen

    async def close(self) -> None:
        return None
