"""Serve a recording as the simulator's market (`python -m simulator --replay DIR`).

The recording is read through `recording.reader` (the one reader of the format).

* Markets: every recorded Gamma row is listed with its own condition id, token ids, slug,
  question, tick size, minimum size, neg_risk, end date, tags and fee schedule, so Gamma,
  `/clob-markets`, `/book` and the websocket serve the recorded ids.
* Frames: every recorded market-websocket frame is sent again, as recorded (same bytes), to the
  connections subscribed to a token it names, at its recorded time offset divided by `speed`.
  The replay clock starts when the first market-websocket client subscribes (a daemon started
  after the simulator misses nothing); until then the books are empty.
  `PONG`s are not re-sent (the simulator answers PINGs itself). A subscription's first `book`
  is the simulator's current book, built from the recording (see below).
* Liquidity: recorded levels become resting orders of one replay maker, so REST `/book`,
  marketable orders and the FOK/FAK rules see them. A `book` event or REST snapshot replaces a
  token's levels, a `price_change` sets one level. Only the first token of each market (Gamma's
  first `clobTokenIds` entry) is seeded: the venue's cross-token matching gives the other token
  the same liquidity (a NO buy at p takes YES bids at 1 - p), where seeding both mirrored books
  would count it twice. The second token's REST `/book` is therefore empty; its recorded frames
  are still re-sent.
* Matching: your marketable order takes recorded levels at their prices, in the engine's price
  then time priority, and what it takes is gone until the recording next updates that level
  (then the recorded size comes back: the recording does not know about your trade). A level
  that would cross the book when it arrives is not seeded, so a resting order of yours is never
  filled by replayed liquidity: there is no queue model, and a resting order fills only if a
  live taker hits it.
* `tick_size_change` sets the market's tick; `market_resolved` resolves the market (without a
  second announcement). A recorded gap is logged; the frames after it carry the resync.

When the recording is over, the last state stays served and `finished` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import orjson

from recording import format as fmt
from recording.reader import Recording
from simulator.lifecycle import Lifecycle

if TYPE_CHECKING:
    from simulator.market import SimMarket
    from simulator.venue import Venue
    from simulator.ws import Hub

log = logging.getLogger("simulator.replay")

REPLAY_MAKER: Final = "0x" + "5e" * 20
"""The address that owns every replayed level."""

Json = dict[str, Any]


def _dec(v: Any, default: Decimal) -> Decimal:
    try:
        d = Decimal(str(v))
    except (InvalidOperation, ValueError):
        return default
    return d if d.is_finite() else default


def _json_list(v: Any) -> list[str]:
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            return []
    return [str(x) for x in v] if isinstance(v, list) else []


def _end_date(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


class Replay:
    """Replay `recording` into `sim` (frames out through the market `hub`) at `speed` times
    the recorded pace (see the module docstring)."""

    def __init__(self, sim: Venue, hub: Hub, recording: Recording, *, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be greater than 0")
        self.sim = sim
        self.hub = hub
        self.recording = recording
        self.speed = speed
        self.frames = 0
        self.skipped_levels = 0
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._orders: dict[tuple[str, str, Decimal], str] = {}
        self._seeded: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # --- markets -------------------------------------------------------------------------
    def list_markets(self) -> list[SimMarket]:
        """List every recorded market (the latest Gamma row of each) in the simulator."""
        out = []
        for row in self.recording.markets().values():
            m = self._list(row)
            if m is not None:
                out.append(m)
        if not out:
            raise ValueError(f"{self.recording.path}: the recording holds no usable market")
        for m in out:
            self._seeded.add(m.token_ids[0])
        return out

    def _list(self, row: Mapping[str, Any]) -> SimMarket | None:
        tokens = _json_list(row.get("clobTokenIds"))
        outcomes = _json_list(row.get("outcomes")) or ["Yes", "No"]
        cid = row.get("conditionId")
        if len(tokens) != 2 or len(outcomes) != 2 or not isinstance(cid, str):
            log.warning("replay: market %r skipped (not a binary CLOB market)", row.get("slug"))
            return None
        sched = row.get("feeSchedule") if row.get("feesEnabled") is True else None
        fee_rate = _dec(sched.get("rate"), Decimal(0)) if isinstance(sched, dict) else Decimal(0)
        fee_exp = _dec(sched.get("exponent"), Decimal(1)) if isinstance(sched, dict) else Decimal(1)
        tags = row.get("tags")
        m = self.sim.add_market(
            question=str(row.get("question") or ""),
            slug=str(row.get("slug") or cid),
            tick_size=_dec(row.get("orderPriceMinTickSize"), Decimal("0.01")),
            min_size=_dec(row.get("orderMinSize"), Decimal(5)),
            neg_risk=row.get("negRisk") is True,
            end_date=_end_date(row.get("endDate")),
            accepting_orders=row.get("acceptingOrders") is not False,
            tags=tuple(str(t["slug"]) for t in tags if isinstance(t, dict) and t.get("slug"))
            if isinstance(tags, list)
            else (),
            outcomes=(outcomes[0], outcomes[1]),
            volume=_dec(row.get("volume"), Decimal(0)),
            liquidity=_dec(row.get("liquidity"), Decimal(0)),
            fee_rate=fee_rate,
            fee_exponent=fee_exp,
            condition_id=cid,
            token_ids=(tokens[0], tokens[1]),
            gamma_id=str(row.get("id") or ""),
        )
        m.fee_type = str(row.get("feeType") or "")
        m.auto_tick = False  # the recording says when the tick changes
        return m

    # --- running -------------------------------------------------------------------------
    def start(self) -> None:
        """Start replaying (a task owned by this object; `stop` ends it)."""
        self._task = asyncio.create_task(self._run(), name="sim:replay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.sim.market_subscribed.wait()
        self.started.set()
        started = loop.time()
        t0: int | None = None
        kinds = (fmt.WS, fmt.REST_BOOK, fmt.GAP_START, fmt.GAP_END)
        try:
            for r in self.recording.records(kinds=kinds):
                if t0 is None:
                    t0 = r.t
                due = started + (r.t - t0) / 1e9 / self.speed
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.apply(r)
        finally:
            self.finished.set()
            log.info("replay: finished after %d frames", self.frames)

    def apply(self, r: fmt.Record) -> None:
        """Apply one recorded record to the books and re-send it if it is a frame."""
        if r.kind == fmt.REST_BOOK:
            book = r.get("book")
            if isinstance(book, dict):
                self.sim.market_quiet = True
                try:
                    self._book(str(r.get("token")), book)
                finally:
                    self.sim.market_quiet = False
            return
        if r.kind in (fmt.GAP_START, fmt.GAP_END):
            log.info("replay: recorded %s on shard %s", r.kind, r.get("shard"))
            return
        text = r.get("d")
        if not isinstance(text, str) or text == "PONG":
            return
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = None  # re-sent as recorded: the venue did send garbage
        events = body if isinstance(body, list) else [body]
        assets: set[str] = set()
        sim = self.sim
        sim.market_quiet = True  # the recorded frame is the announcement
        try:
            for ev in events:
                if isinstance(ev, dict):
                    assets |= self._event(ev)
        finally:
            sim.market_quiet = False
        frame = text.encode()
        for c in self.hub.conns:
            if c.subscribed and (not assets or c.assets & assets):
                c.push_frame(frame)
        self.frames += 1

    def _event(self, ev: Json) -> set[str]:
        et = ev.get("event_type")
        if et == "book":
            token = str(ev.get("asset_id"))
            self._book(token, ev)
            return {token}
        if et == "price_change":
            out = set()
            for ch in ev.get("price_changes") or []:
                if isinstance(ch, dict):
                    token = str(ch.get("asset_id"))
                    out.add(token)
                    side = "BUY" if str(ch.get("side")).upper() == "BUY" else "SELL"
                    self._level(token, side, _dec(ch.get("price"), Decimal(0)), ch.get("size"))
            return out
        token = str(ev.get("asset_id", ""))
        m = self.sim.market_of_token(token)
        if et == "tick_size_change" and m is not None:
            m.tick_size = _dec(ev.get("new_tick_size"), m.tick_size)
        elif et == "last_trade_price" and m is not None:
            m.books[token].last_trade_price = _dec(ev.get("price"), Decimal("0.5"))
        elif et == "market_resolved":
            tokens = [str(a) for a in ev.get("assets_ids") or []]
            self._resolve(str(ev.get("market", "")), str(ev.get("winning_asset_id") or ""))
            return set(tokens)
        return {token} if token else set()

    def _resolve(self, condition_id: str, winner: str) -> None:
        m = self.sim.markets_by_cid.get(condition_id)
        if m is None or m.resolved:
            return
        Lifecycle(self.sim).resolve(
            condition_id, winner if winner in m.token_ids else None, announce=False
        )

    def _book(self, token: str, book: Mapping[str, Any]) -> None:
        if token not in self._seeded:
            return
        levels = {
            (token, side, p): q
            for side, raw in (("BUY", book.get("bids")), ("SELL", book.get("asks")))
            for p, q in _levels(raw)
        }
        for key in [k for k in self._orders if k[0] == token and k not in levels]:
            self._cancel(key)
        # Stale levels went first, so a new level never crosses one that is about to go.
        for (_, side, price), qty in levels.items():
            self._level(token, side, price, qty)

    def _level(self, token: str, side: str, price: Decimal, size: Any) -> None:
        if token not in self._seeded:
            return
        key = (token, side, price)
        qty = _dec(size, Decimal(0))
        sim = self.sim
        held = self._orders.get(key)
        if held is not None:
            o = sim.engine.orders.get(held)
            if o is not None and o.status == "LIVE" and o.remaining == qty:
                return  # unchanged (a periodic snapshot repeats what the frames said)
        self._cancel(key)
        if qty <= 0:
            return
        if sim.engine.crosses(side, token, price):
            self.skipped_levels += 1
            return
        try:
            self._orders[key] = sim.seed_order(REPLAY_MAKER, token, side, price, qty)
        except ValueError:  # off the tick grid, market closed: the level is not served
            self.skipped_levels += 1

    def _cancel(self, key: tuple[str, str, Decimal]) -> None:
        oid = self._orders.pop(key, None)
        if oid is None:
            return
        eng = self.sim.engine
        eng.cancel(oid)
        o = eng.orders.get(oid)
        if o is not None and o.status != "LIVE" and o.remaining == o.original_size:
            del eng.orders[oid]  # never traded: nothing refers to it; keep memory flat


def _levels(raw: Any) -> Iterable[tuple[Decimal, Decimal]]:
    if not isinstance(raw, list):
        return []
    out = []
    for lv in raw:
        if isinstance(lv, dict):
            p, s = _dec(lv.get("price"), Decimal(0)), _dec(lv.get("size"), Decimal(0))
            if p > 0:
                out.append((p, s))
    return out
