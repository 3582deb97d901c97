"""The venue's state, below every route handler: what the CLOB, Gamma and Data API servers serve.

`Venue` owns the markets and their books (through the matching `Engine`), balances and funding,
API keys and heartbeats, the Data API trade rows, the request log, seeded makers, the fault
registry, trade recording and settlement timers, and the record of order bodies received. The
route handlers (`clob*`, `offchain`) and the demo `scenario` import it; it imports none of them.
What it needs from the servers above it (the request-log middleware, websocket faults) it gets
through the `Server` protocol, which the `Simulator` implements.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson
from aiohttp import web

from simulator.crypto import (
    CHAIN_CONTRACTS,
    SignatureError,
    domain_separator,
    order_digest,
    order_struct_hash,
)
from simulator.engine import Book, Engine, Order, Sink, Trade, fmt, now_ms
from simulator.faults import Fault, FaultRegistry
from simulator.history import History, RequestLog, Retention
from simulator.history import ledger as history_ledger
from simulator.market import SimMarket
from simulator.rows import DataRow as DataRow
from simulator.rows import RequestRecord as RequestRecord

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class Server(Protocol):
    """Server-level actions the state and the route handlers call; the `Simulator` has them."""

    def log_middleware(self, server: str) -> Any:
        """An aiohttp middleware appending every request of `server` to the request log."""
        ...

    def ws_fault(self, kind: str, channel: str, seconds: float, count: int) -> None:
        """Apply a websocket fault (`ws_drop`, `ws_stall`, `ws_malformed`) on `channel`."""
        ...

    def send_raw_frame(self, channel: str, frame: bytes) -> None:
        """Send `frame` as it is, once, on every connection of `channel` (`ws_frame`)."""
        ...


class VenueSink(Sink):
    """The engine's sink, plus the refusals the order routes report that the engine never sees."""

    def killed(self, order: Order, reason: str) -> None:
        """A FOK order was killed before it reached the engine."""

    def tick_changed(self, market: SimMarket, old: Decimal) -> None:
        """`market`'s tick changed from `old` (`simulator.lifecycle`)."""

    def market_resolved(self, market: SimMarket, winner: str | None, announce: bool) -> None:
        """`market` resolved (`simulator.lifecycle`); `announce`: send `market_resolved`."""


@dataclass(frozen=True)
class ApiKey:
    """Registered L2 credentials and the address that owns them."""

    api_key: str
    secret: str
    passphrase: str
    address: str  # checksummed, as sent in POLY_ADDRESS
    nonce: int


@dataclass(frozen=True, slots=True)
class ReceivedOrder:
    """One order as it reached the venue, before any fault answered its request.

    `body` is the whole body of a `POST /order`, or one element of a `POST /orders` list in
    compact JSON (a batch body is its elements' bytes joined). `order_id` is the hash the venue
    computes for it (what `orderID` would say); None when the body does not hold a readable order.
    """

    path: str
    body: bytes
    owner: str | None
    order_id: str | None

    def as_json(self) -> Json:
        return {
            "path": self.path,
            "body": self.body.decode("utf-8", errors="replace"),
            "owner": self.owner,
            "order_id": self.order_id,
        }


class Faults:
    """`sim.faults`: add or clear faults (same bodies as `POST /_sim/fault`)."""

    def __init__(self, venue: Venue) -> None:
        self._venue = venue
        self.registry = FaultRegistry()

    def add(self, **spec: Any) -> None:
        """Register a fault, e.g. `add(kind="status", route="POST /order", status=429)`."""
        self._venue.apply_fault_sync(spec)

    def clear(self) -> None:
        self.registry.clear()


class Venue:
    """The venue's state and the operations on it; the `Simulator` adds servers on top."""

    def __init__(
        self,
        *,
        seed: int,
        settle_delay_s: float,
        chain_id: int,
        page_size: int,
        heartbeat_timeout_s: float,
        sink: VenueSink,
        server: Server,
        retention: Retention | None = None,
    ) -> None:
        self.seed = seed
        self.settle_delay_s = settle_delay_s
        self.chain_id = chain_id
        self.page_size = page_size
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.server = server
        self.rng = random.Random(seed)
        self.sink = sink
        self.engine = Engine(self.rng, self.sink)
        self.engine.on_rest = self._on_rest
        self.engine.fee_of = self.fee_of
        self.faults = Faults(self)
        self.markets: list[SimMarket] = []
        self.markets_by_cid: dict[str, SimMarket] = {}
        self._market_of_token: dict[str, SimMarket] = {}
        self.retention = retention or Retention()
        self.history = History(self.retention, self._is_client)
        self.request_log = RequestLog(self.retention.requests)
        self.data_rows: list[DataRow] = []
        self.keys: dict[str, ApiKey] = {}
        self.keys_by_addr_nonce: dict[tuple[str, int], ApiKey] = {}
        self.heartbeats: dict[str, tuple[str, asyncio.TimerHandle | None]] = {}  # Orders.heartbeat
        self.heartbeat_legacy_error = False  # 400 body `{"error", ...}` instead of `error_msg`
        self.heartbeat_lapses = 0  # how many API keys' switches fired
        self.funders: dict[str, str] = {}  # api key -> funder seen on its orders
        # What `python -m orchestrator doctor` checks, set over `POST /_sim/conditions`.
        self.geoblock: Json = {"blocked": False, "ip": "127.0.0.1", "country": "IE", "region": "D"}
        self.clock_offset_s = 0.0  # added to the time `GET /time` answers
        self.no_allowance: set[str] = set()  # lower-case addresses with zero pUSD allowances
        # Every order-carrying request body, as received: the last `retention.requests` of them
        # (a body is a request; the demo's smaller retention bounds these too).
        self.received: deque[tuple[str, bytes]] = deque(maxlen=self.retention.requests)
        self.received_total = 0
        self._seeded_owners: dict[str, str] = {}
        self._domains: dict[str, bytes] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self.stats_events = 0
        self.market_quiet = False
        """While True, book changes send no market-channel frames (a replay is applying one)."""
        self.market_subscribed = asyncio.Event()
        """Set by the first market-websocket subscription (a replay's clock starts there)."""

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []

        def run() -> None:
            self._timers.discard(holder[0])
            fn(*args)

        h = loop.call_later(delay, run)
        holder.append(h)
        self._timers.add(h)

    # markets -----------------------------------------------------------------------------
    def _token_id(self) -> str:
        while True:
            t = str(self.rng.getrandbits(256))
            if 76 <= len(t) <= 78:
                return t

    def add_market(
        self,
        question: str,
        slug: str,
        tick_size: Decimal = Decimal("0.01"),
        min_size: Decimal = Decimal("5"),
        neg_risk: bool = False,
        end_date: datetime | None = None,
        accepting_orders: bool = True,
        tags: tuple[str, ...] = (),
        outcomes: tuple[str, str] = ("Yes", "No"),
        volume: Decimal = Decimal("1000"),
        liquidity: Decimal = Decimal("500"),
        closed: bool = False,
        fee_rate: Decimal = Decimal(0),
        fee_exponent: Decimal = Decimal(1),
        *,
        condition_id: str | None = None,
        token_ids: tuple[str, str] | None = None,
        gamma_id: str | None = None,
    ) -> SimMarket:
        """List a binary market and create its two empty books (`fee_*`: see `SimMarket`).
        `condition_id`, `token_ids` and `gamma_id` keep a recorded market's ids (replay)."""
        n = len(self.markets)
        if condition_id in self.markets_by_cid or any(
            t in self._market_of_token for t in token_ids or ()
        ):
            raise ValueError(f"market {condition_id} or one of its tokens is already listed")
        m = SimMarket(
            gamma_id=gamma_id or str(500000 + n),
            question=question,
            slug=slug,
            condition_id=condition_id or self.engine.new_hash(),
            question_id=self.engine.new_hash(),
            token_ids=token_ids or (self._token_id(), self._token_id()),
            tick_size=Decimal(tick_size),
            min_size=Decimal(min_size),
            neg_risk=neg_risk,
            end_date=end_date or datetime.now(UTC) + timedelta(days=30),
            accepting_orders=accepting_orders,
            tags=tuple(tags),
            outcomes=outcomes,
            volume=Decimal(volume),
            liquidity=Decimal(liquidity),
            created=datetime.now(UTC),
            closed=closed,
            event_id=str(90000 + n),
            fee_rate=Decimal(fee_rate),
            fee_exponent=Decimal(fee_exponent),
        )
        for t in m.token_ids:
            m.books[t] = self.engine.books[t] = Book(t, m.condition_id)
            self._market_of_token[t] = m
        self.engine.pair(*m.token_ids)
        self.markets.append(m)
        self.markets_by_cid[m.condition_id] = m
        return m

    def market_of_token(self, token_id: str) -> SimMarket | None:
        return self._market_of_token.get(token_id)

    def fee_of(self, token_id: str) -> tuple[Decimal, Decimal]:
        """The taker fee schedule of `token_id`'s market: (rate, exponent)."""
        m = self._market_of_token[token_id]
        return m.fee_rate, m.fee_exponent

    def tick_of(self, token_id: str) -> Decimal:
        return self._market_of_token[token_id].tick_size

    def domain(self, contract: str) -> bytes:
        d = self._domains.get(contract)
        if d is None:
            d = self._domains[contract] = domain_separator(self.chain_id, contract)
        return d

    def set_accepting_orders(self, condition_id: str, accepting: bool) -> None:
        self.markets_by_cid[condition_id].accepting_orders = accepting

    # balances, orders --------------------------------------------------------------------
    def fund(
        self,
        address: str,
        collateral: Decimal | None = None,
        *,
        token_id: str | None = None,
        shares: Decimal | None = None,
    ) -> None:
        """Credit pUSD (`collateral`) and/or outcome tokens (`token_id` + `shares`)."""
        if collateral is not None:
            self.engine.credit(address, Decimal(collateral))
        if token_id is not None:
            if token_id not in self.engine.books:
                raise ValueError(f"unknown token {token_id}")
            self.engine.credit_shares(address, token_id, Decimal(shares or 0))

    def _seed_owner(self, maker: str) -> str:
        o = self._seeded_owners.get(maker.lower())
        if o is None:
            o = self._seeded_owners[maker.lower()] = self.engine.new_uuid()
        return o

    def submit(self, order: Order) -> list[Trade]:
        eng = self.engine
        trades = eng.submit(order)
        for t in trades:
            self._later(self.settle_delay_s, eng.advance_trade, t, "MINED")
            self._later(2 * self.settle_delay_s, eng.advance_trade, t, "CONFIRMED")
        self.history.trim_orders(eng.orders)
        self.history.trim_trades(eng.trades, eng.trades_by_id)
        return trades

    def _is_client(self, who: str) -> bool:
        """Whether an order owner or a lower-case wallet address is an API client's (its
        records are kept longer: `simulator.history`)."""
        if who in self.keys:
            return True
        return any(k.address.lower() == who for k in self.keys.values()) or any(
            f.lower() == who for f in self.funders.values()
        )

    def seed_order(
        self,
        maker: str,
        token_id: str,
        side: str,
        price: Decimal,
        size: Decimal,
        order_type: str = "GTC",
    ) -> str:
        """Rest (or match) an unsigned order from a simulated maker, funding it first."""
        m = self._market_of_token.get(token_id)
        if m is None:
            raise ValueError(f"unknown token {token_id}")
        price, size = Decimal(price), Decimal(size)
        if side not in ("BUY", "SELL"):
            raise ValueError("side must be BUY or SELL")
        if price % m.tick_size != 0 or not (m.tick_size <= price <= 1 - m.tick_size):
            raise ValueError(f"price {price} is off the {m.tick_size} grid")
        if m.closed or not m.accepting_orders:
            raise ValueError(f"market {m.slug} is not accepting orders")
        if side == "BUY":
            self.engine.credit(maker, price * size)
        else:
            self.engine.credit_shares(maker, token_id, size)
        o = Order(
            id=self.engine.new_hash(),
            owner=self._seed_owner(maker),
            maker=maker,
            signer=maker,
            token_id=token_id,
            market=m.condition_id,
            outcome=m.outcome_of(token_id),
            side=side,
            price=price,
            original_size=size,
            order_type=order_type,
            expiration=0,
            created_at=int(time.time()),
            seeded=True,
            maker_amount=price * size,
        )
        self.submit(o)
        return o.id

    def cancel_seeded(self, order_id: str) -> bool:
        """Cancel a seeded order; False if it is no longer open."""
        return self.engine.cancel(order_id) is not None

    def _on_rest(self, o: Order) -> None:
        if o.order_type == "GTD" and o.expiration:
            delay = max(0.0, o.expiration - 60 - time.time())
            self._later(delay, self._expire, o.id)

    def _expire(self, order_id: str) -> None:
        self.engine.cancel(order_id)

    def trade_as(
        self,
        wallet: str,
        token_id: str,
        side: str,
        price: Decimal,
        size: Decimal,
        *,
        at: int | None = None,
    ) -> str:
        """Record a scripted wallet's trade (Data API + `last_trade_price`); returns its tx hash.

        `at` backdates it (unix seconds): a wallet's history from before a follower started."""
        m = self._market_of_token[token_id]
        tx = self.engine.new_hash()
        price, size = Decimal(price), Decimal(size)
        self.data_rows.append(
            DataRow(wallet, side, token_id, m, size, price, at or int(time.time()), tx, True)
        )
        m.books[token_id].last_trade_price = price
        m.volume += price * size
        self.history.trim_rows(self.data_rows)
        self.sink.last_trade(token_id, price, size, side, tx)
        return tx

    def record_fill(self, t: Trade) -> None:
        """Data API rows of a trade, per maker order taken: the taker's (its token, side and
        price for that leg) and the maker's (its own token, side and price)."""
        tk = t.taker_order
        m = self._market_of_token[tk.token_id]
        m.volume += t.cash
        for mf in t.makers:
            mk, when, tx = mf.order, t.match_time, t.transaction_hash
            self.data_rows.append(
                DataRow(tk.maker, tk.side, tk.token_id, m, mf.size, mf.taker_price, when, tx, True)
            )
            self.data_rows.append(
                DataRow(mk.maker, mk.side, mk.token_id, m, mf.size, mf.price, when, tx, False)
            )
        self.history.trim_rows(self.data_rows)

    # books -------------------------------------------------------------------------------
    def book_summary(self, token_id: str) -> Json:
        """The REST `/book` payload (every key py-clob-client needs; best level last)."""
        m = self._market_of_token[token_id]
        b = self.engine.books[token_id]
        bids, asks = b.levels_best_last()
        d: Json = {
            "market": m.condition_id,
            "asset_id": token_id,
            "timestamp": str(now_ms()),
            "hash": "",
            "bids": bids,
            "asks": asks,
            "min_order_size": fmt(m.min_size),
            "tick_size": fmt(m.tick_size),
            "neg_risk": m.neg_risk,
            "last_trade_price": fmt(b.last_trade_price) if b.last_trade_price is not None else "",
        }
        # SHA-1 over compact JSON with hash "" in this key order (py-clob-client utilities).
        d["hash"] = hashlib.sha1(orjson.dumps(d)).hexdigest()
        return d

    def book_event(self, token_id: str) -> Json:
        d = self.book_summary(token_id)
        return {
            "market": d["market"],
            "asset_id": d["asset_id"],
            "timestamp": d["timestamp"],
            "hash": d["hash"],
            "bids": d["bids"],
            "asks": d["asks"],
            "tick_size": d["tick_size"],
            "event_type": "book",
            "last_trade_price": d["last_trade_price"],
        }

    def clob_market_row(self, m: SimMarket) -> Json:
        return m.clob_row()

    # faults ------------------------------------------------------------------------------
    def apply_fault_sync(self, spec: dict[str, Any]) -> None:
        reg = self.faults.registry
        reg.validate(spec)
        kind = spec["kind"]
        count = int(spec.get("count", 1))
        seconds = float(spec.get("seconds", 0))
        route = str(spec.get("route", "*"))
        if kind == "clear":
            reg.clear()
        elif kind in ("status", "latency", "late_response", "accept_then_status", "drop"):
            ra = spec.get("retry_after")
            reg.add_http(
                Fault(
                    kind,
                    route=route,
                    status=int(spec.get("status", 500)),
                    count=count,
                    seconds=seconds,
                    retry_after=int(ra) if ra is not None else None,
                    body=spec.get("body"),
                )
            )
        elif kind == "engine_restart":
            reg.start_restart(seconds, float(spec.get("post_only_s", 120)))
        elif kind in ("data_api", "data_api_garbage"):
            reg.add_data(Fault(kind, route=route, status=int(spec.get("status", 500)), count=count))
        elif kind in ("ws_drop", "ws_stall", "ws_malformed"):
            channel = str(spec.get("channel", "all"))
            self.server.ws_fault(kind, channel, seconds, int(spec.get("count", 5)))
        elif kind == "ws_frame":
            frame = spec.get("frame")
            if not isinstance(frame, str):
                raise ValueError("ws_frame needs `frame`: the text to send")
            self.server.send_raw_frame(str(spec.get("channel", "all")), frame.encode())

    async def apply_fault(self, spec: dict[str, Any]) -> None:
        self.apply_fault_sync(spec)
        await asyncio.sleep(0)

    # ledger ------------------------------------------------------------------------------
    @property
    def api_keys(self) -> list[ApiKey]:
        """Registered API credentials."""
        return list(self.keys.values())

    def ledger(self) -> Json:
        """Authoritative state: every order and trade kept, every balance, what was evicted
        and the totals over everything (`simulator.history.ledger`)."""
        return history_ledger(self.engine, self.history)

    # what reached the venue ---------------------------------------------------------------
    def record_received(self, path: str, raw: bytes) -> None:
        """Keep an order-carrying request body as it reached the venue."""
        self.received.append((path, raw))
        self.received_total += 1

    def order_hash(self, o: Json, m: SimMarket) -> str:
        """The order's EIP-712 hash on its market's exchange: the venue's order id."""
        contract = CHAIN_CONTRACTS[self.chain_id][1 if m.neg_risk else 0]
        return "0x" + order_digest(self.domain(contract), order_struct_hash(o)).hex()

    def read_order(self, item: object) -> tuple[str | None, str | None]:
        """(owner, order id) of one order body; None for what cannot be read."""
        if not isinstance(item, dict):
            return None, None
        owner = item.get("owner")
        o = item.get("order")
        m = self.market_of_token(str(o.get("tokenId", ""))) if isinstance(o, dict) else None
        if not isinstance(o, dict) or m is None:
            return owner if isinstance(owner, str) else None, None
        try:
            oid: str | None = self.order_hash(o, m)
        except (ValueError, KeyError, TypeError, InvalidOperation, SignatureError):
            oid = None
        return owner if isinstance(owner, str) else None, oid

    def order_ids(self, raw: bytes) -> list[str]:
        """The venue's ids of the readable orders in an order-carrying request body."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        items = body if isinstance(body, list) else [body]
        return [oid for oid in (self.read_order(x)[1] for x in items) if oid is not None]

    def received_orders(self) -> list[ReceivedOrder]:
        """Every order the venue received (a batch counts each of its orders), oldest first."""
        out: list[ReceivedOrder] = []
        for path, raw in self.received:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                out.append(ReceivedOrder(path, raw, None, None))
                continue
            if path == "/orders" and isinstance(body, list):
                for item in body:
                    owner, oid = self.read_order(item)
                    out.append(ReceivedOrder(path, orjson.dumps(item), owner, oid))
            else:
                owner, oid = self.read_order(body)
                out.append(ReceivedOrder(path, raw, owner, oid))
        return out

    def orders_of(self, owner: str) -> list[Order]:
        return [o for o in self.engine.orders.values() if o.owner == owner]
