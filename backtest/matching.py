"""The backtest's matching model: a `Broker` that fills orders against the recorded liquidity.

The executor hands it signed orders exactly as it hands them to the live broker; nothing is
matched when `send` is called. An order *arrives* `latency_ns` after it was sent, on the
replay's simulated clock, and the replay (`backtest.replay`) lets it arrive, in a fixed order,
before it applies the next record whose receive time is at or after the arrival. What it then
does, stated plainly:

* **Crossing orders** take the recorded levels of the opposite side at or better than their
  limit, best price first, at the level's price (taker), up to the order's size: FOK fills in
  full or is refused, FAK fills what it can and kills the rest, GTC/GTD rest the remainder.
  A BUY is accounted, as the venue's exchange accounts it, in its maker amount: it spends its
  pUSD at each level's price, so a level below its limit buys more shares than the order's
  size (the price improvement comes as shares, floored to the 6-decimal on-chain unit; the
  venue's "taking with surplus": a FAK BUY of 5 at 0.99 against an ask at 0.98 fills
  5.051019, py-clob-client-v2 issue #89). A SELL sells its shares at each level's price.
  A post-only order that would cross is refused.
* **Consumed liquidity stays consumed**: what our orders took from a level is remembered and
  subtracted from that level until the recording shows the level with a different size (the
  venue's update replenished or moved it; from then on the recorded size is the truth again).
  The recording does not know about our trades, so this is the only way the same size cannot
  be taken twice.
* **Resting orders queue behind the displayed size.** A resting order joins the back of its
  price level: the size displayed there when it arrived is ahead of it. It fills (as maker, at
  its own price) only from recorded trades at or through its price, and only with the part of
  their size that exceeds the queue still ahead of it (trades first eat the queue). Cancels in
  the queue ahead are not assumed (they may have been behind us): conservative. When the
  recorded opposite side comes to or through its price, it fills from that displayed size as
  well (the venue would have matched it), consuming it.
* **Fees** are charged by the executor's market rules (the venue's formula, per leg, taker only;
  `execution.fees`), from the recorded Gamma fee schedule (`--fees none` zeroes it).
* **Tick size and minimum size** are the executor's market rules, fed by the recorded Gamma rows
  and `tick_size_change` frames: an order off the grid or too small is refused before it is
  sent, as live.
* **GTD** orders expire at their expiration on the simulated clock.

Trade ids are sequential (`bt-1`, ...): the same input gives the same fills.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal

import orjson

from errors import DuplicateOrder, OrderRejected
from execution.market_rules import fillable_size, order_amounts
from execution.paper import FAK_KILLED, FOK_KILLED, POST_ONLY_CROSSES, PaperOrder, walk_levels
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

SHARE_UNIT = Decimal("0.000001")
"""The on-chain unit of a share amount: a BUY's shares bought at a level are floored to it."""


def spend_levels(levels: Sequence[Level], budget: Decimal) -> list[Level]:
    """A BUY taker's (price, shares) legs: `budget` pUSD (its maker amount) spent level by
    level at each level's price, best first, each leg's shares floored to `SHARE_UNIT`."""
    out: list[Level] = []
    for price, size in levels:
        if size <= 0:
            continue
        n = min(size, (budget / price).quantize(SHARE_UNIT, rounding=ROUND_DOWN))
        if n <= 0:
            break
        out.append((price, n))
        budget -= n * price
        if budget <= 0:
            break
    return out


@dataclass(slots=True, kw_only=True)
class SimOrder(PaperOrder):
    """One order the model knows: a paper order, plus its place in time and in the queue."""

    seq: int
    sent_ns: int
    arrive_ns: int
    queue_ahead: Decimal = ZERO
    done_ns: int | None = None
    reject: str = ""
    waiter: asyncio.Future[Ack] | None = None


@dataclass(frozen=True, slots=True)
class SimFill:
    """One fill the model made (the backtest's own ledger keeps these)."""

    t_ns: int
    seq: int
    order_seq: int
    token_id: str
    side: Side
    price: Decimal
    size: Decimal
    role: LiquidityRole
    strategy: str
    reason: str


@dataclass(slots=True)
class _Used:
    """Size our fills took at one level, valid while the level shows `seen`."""

    seen: Decimal
    taken: Decimal


@dataclass(slots=True)
class MatchingModel:
    """The `Broker` of a backtest (see the module docstring)."""

    books: BookSource
    now_ns: Callable[[], int]
    latency_ns: int = 0
    name: str = "backtest"
    orders: dict[str, SimOrder] = field(default_factory=dict)
    fills: list[SimFill] = field(default_factory=list)
    on_fill_cb: Callable[[SimFill], None] | None = None
    _arrivals: list[tuple[int, str, str, Decimal, Decimal, int, str]] = field(default_factory=list)
    _pushed: int = 0
    _resting: dict[str, SimOrder] = field(default_factory=dict)
    _used: dict[tuple[str, Side, Decimal], _Used] = field(default_factory=dict)
    _seq: int = 0
    _trade_seq: int = 0
    _on_fill: FillHandler | None = None
    _on_order: OrderEventHandler | None = None

    def bind(self, *, on_fill: FillHandler, on_order: OrderEventHandler) -> None:
        """Connect the executor's handlers (the executor does it, as for the paper broker)."""
        self._on_fill, self._on_order = on_fill, on_order

    # --- the broker port -----------------------------------------------------------------
    async def prepare(self, request: OrderRequest, meta: MarketMeta) -> Prepared:
        body = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        oid = "0x" + hashlib.sha256(b"backtest:" + body).hexdigest()
        return Prepared(request, oid, hashlib.sha256(body).hexdigest(), body)

    async def send(self, prepared: Prepared) -> Ack:
        oid = prepared.venue_order_id
        if oid in self.orders:
            raise DuplicateOrder(f"order {oid} is invalid. Duplicated.", order_id=oid)
        now = self.now_ns()
        req = prepared.request
        so = SimOrder(
            prepared=prepared,
            fillable=fillable_size(req),
            seq=0,
            sent_ns=now,
            arrive_ns=now + self.latency_ns,
        )
        so.waiter = asyncio.get_running_loop().create_future()
        self.orders[oid] = so
        # Orders sent at the same moment arrive in an order of their own, not of the loop's:
        # (time, token, side, price, size); the count only separates identical twins.
        self._pushed += 1
        key = (so.arrive_ns, req.token_id, req.side.value, req.price, req.size, self._pushed, oid)
        heapq.heappush(self._arrivals, key)
        return await so.waiter

    async def send_batch(self, batch: Sequence[Prepared]) -> list[BatchItem]:
        tasks = [asyncio.ensure_future(self.send(p)) for p in batch]
        out: list[BatchItem] = []
        for t in tasks:
            try:
                out.append(await t)
            except OrderRejected as e:
                out.append(e)
        return out

    async def cancel(self, venue_order_ids: Sequence[str]) -> CancelResult:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for oid in venue_order_ids:
            so = self._resting.pop(oid, None)
            if so is not None:
                so.status = VenueStatus.CANCELED
                so.done_ns = self.now_ns()
                canceled.append(oid)
            elif oid in self.orders:
                not_canceled[oid] = "order can't be canceled, already matched"
            else:
                not_canceled[oid] = "order not found"
        return CancelResult(tuple(canceled), not_canceled)

    async def cancel_all(self) -> CancelResult:
        return await self.cancel(list(self._resting))

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        so = self.orders.get(venue_order_id)
        return so.view() if so is not None else None

    async def open_orders(self) -> list[VenueOrder]:
        return [o.view() for o in self._resting.values()]

    async def fills_since(self, after_unix_s: int, *, market: str | None = None) -> list[Fill]:
        return []  # every fill is delivered to the handler as it happens

    async def close(self) -> None:
        return None

    # --- driven by the replay ------------------------------------------------------------
    @property
    def parked(self) -> int:
        """Orders sent and not yet arrived: their senders wait for the replay to let them in."""
        return len(self._arrivals)

    def next_arrival(self) -> int | None:
        return self._arrivals[0][0] if self._arrivals else None

    async def arrive_until(self, t_ns: int) -> None:
        """Let every order whose arrival time is at or before `t_ns` arrive, in (arrival time,
        send order) order, and match it against the book as it stands."""
        while self._arrivals and self._arrivals[0][0] <= t_ns:
            oid = heapq.heappop(self._arrivals)[-1]
            so = self.orders[oid]
            self._seq += 1
            so.seq = self._seq
            try:
                ack = await self._arrive(so)
            except OrderRejected as e:
                so.status, so.reject, so.done_ns = VenueStatus.CANCELED, e.reason, so.arrive_ns
                assert so.waiter is not None
                so.waiter.set_exception(e)
            else:
                assert so.waiter is not None
                so.waiter.set_result(ack)

    async def _arrive(self, so: SimOrder) -> Ack:
        req = so.req
        crossing = self._crossing(req.token_id, req.side, req.price)
        if req.post_only and crossing:
            raise OrderRejected(POST_ONLY_CROSSES)
        if req.side is Side.BUY:
            takes = spend_levels(crossing, order_amounts(req)[0])
        else:
            takes = walk_levels(crossing, so.fillable)
        got = sum((s for _, s in takes), ZERO)
        if req.order_type is OrderType.FOK and got < so.fillable:
            raise OrderRejected(FOK_KILLED)
        if req.order_type is OrderType.FAK and got <= 0:
            raise OrderRejected(FAK_KILLED)
        ids = [
            await self._fill(so, price, size, LiquidityRole.TAKER, so.arrive_ns)
            for price, size in takes
        ]
        if so.remaining <= 0:
            so.status, so.done_ns = VenueStatus.MATCHED, so.arrive_ns
        elif not req.order_type.rests:
            so.status = VenueStatus.MATCHED if so.matched > 0 else VenueStatus.CANCELED
            so.done_ns = so.arrive_ns
        else:
            own = (
                self.books.bids(req.token_id)
                if req.side is Side.BUY
                else self.books.asks(req.token_id)
            )
            so.queue_ahead = next((s for p, s in own or () if p == req.price), ZERO)
            self._resting[so.prepared.venue_order_id] = so
        return Ack(
            venue_order_id=so.prepared.venue_order_id,
            status=VenueStatus.MATCHED if so.matched > 0 else VenueStatus.LIVE,
            size_matched=so.matched,
            avg_price=so.cost / so.matched if so.matched > 0 else None,
            trade_ids=tuple(ids),
        )

    def _crossing(self, token: str, side: Side, limit: Decimal) -> list[Level]:
        """The opposite side's levels `side` at `limit` can take, less what we consumed."""
        book_side = Side.SELL if side is Side.BUY else Side.BUY
        levels = self.books.asks(token) if side is Side.BUY else self.books.bids(token)
        out: list[Level] = []
        for price, size in levels or ():
            if (side is Side.BUY and price > limit) or (side is Side.SELL and price < limit):
                break
            key = (token, book_side, price)
            used = self._used.get(key)
            if used is not None:
                if used.seen != size:
                    del self._used[key]  # the recording updated the level: its size is true again
                else:
                    size -= used.taken
            if size > 0:
                out.append((price, size))
        return out

    def _consume(self, token: str, side: Side, price: Decimal, size: Decimal) -> None:
        book_side = Side.SELL if side is Side.BUY else Side.BUY
        levels = self.books.asks(token) if side is Side.BUY else self.books.bids(token)
        shown = next((s for p, s in levels or () if p == price), None)
        if shown is None:
            return
        key = (token, book_side, price)
        used = self._used.get(key)
        if used is None or used.seen != shown:
            self._used[key] = _Used(shown, size)
        else:
            used.taken += size

    async def _fill(
        self, so: SimOrder, price: Decimal, size: Decimal, role: LiquidityRole, t_ns: int
    ) -> str:
        req = so.req
        if role is LiquidityRole.TAKER:
            self._consume(req.token_id, req.side, price, size)
        so.matched += size
        so.cost += price * size
        self._trade_seq += 1
        trade_id = f"bt-{self._trade_seq}"
        sf = SimFill(
            t_ns,
            self._trade_seq,
            so.seq,
            req.token_id,
            req.side,
            price,
            size,
            role,
            req.strategy,
            req.reason,
        )
        self.fills.append(sf)
        if self.on_fill_cb is not None:
            self.on_fill_cb(sf)
        if self._on_fill is not None:
            await self._on_fill(
                Fill(
                    trade_id=trade_id,
                    venue_order_id=so.prepared.venue_order_id,
                    client_order_id=req.client_order_id,
                    token_id=req.token_id,
                    side=req.side,
                    price=price,
                    size=size,
                    role=role,
                    ts=datetime.fromtimestamp(t_ns / 1e9, UTC),
                    legs=((size, price),) if role is LiquidityRole.TAKER else (),
                )
            )
        return trade_id

    async def on_trade(self, token: str, price: Decimal, size: Decimal, t_ns: int) -> None:
        """A recorded trade at `price`: it eats the queue ahead of our resting orders at or
        through that price, then fills them (maker, at their own price)."""
        for so in self._resting_for(token):
            req = so.req
            through = price <= req.price if req.side is Side.BUY else price >= req.price
            if not through:
                continue
            left = size - so.queue_ahead
            so.queue_ahead = max(so.queue_ahead - size, ZERO)
            if left > 0:
                await self._maker(so, min(left, so.remaining), t_ns)

    async def on_book(self, token: str, t_ns: int) -> None:
        """The recorded book changed: expire GTD orders, and fill resting orders the opposite
        side now reaches (the venue would have matched them against it)."""
        for so in self._resting_for(token):
            req = so.req
            exp = req.expiration
            if req.order_type is OrderType.GTD and exp and exp - 60 <= t_ns // 1_000_000_000:
                so.status, so.done_ns = VenueStatus.EXPIRED, t_ns
                self._resting.pop(so.prepared.venue_order_id, None)
                if self._on_order is not None:
                    await self._on_order(so.view())
                continue
            reach = self._crossing(token, req.side, req.price)
            for p, s in walk_levels(reach, so.remaining):
                self._consume(token, req.side, p, s)
                await self._maker(so, s, t_ns)

    def _resting_for(self, token: str) -> list[SimOrder]:
        return sorted(
            (o for o in self._resting.values() if o.req.token_id == token), key=lambda o: o.seq
        )

    async def _maker(self, so: SimOrder, size: Decimal, t_ns: int) -> None:
        if size <= 0:
            return
        await self._fill(so, so.req.price, size, LiquidityRole.MAKER, t_ns)
        if so.remaining <= 0:
            so.status, so.done_ns = VenueStatus.MATCHED, t_ns
            self._resting.pop(so.prepared.venue_order_id, None)
        if self._on_order is not None:
            await self._on_order(so.view())

    def has_resting(self, token: str) -> bool:
        return any(o.req.token_id == token for o in self._resting.values())
