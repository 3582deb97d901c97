"""The `Simulator`: owns the engine, the four loopback servers and the fault knobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator import crypto
from simulator.clob import ApiKey, Clob
from simulator.engine import (
    ZERO,
    Book,
    Engine,
    LevelChange,
    Order,
    OrderError,
    Sink,
    Trade,
    fmt,
    now_ms,
)
from simulator.faults import Fault, FaultRegistry
from simulator.market import SimMarket
from simulator.offchain import DataApi, Gamma
from simulator.ws import Conn, Hub

if TYPE_CHECKING:
    from simulator.scenario import Scenario

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request that reached the venue."""

    server: str
    method: str
    path: str
    query: str
    status: int
    ts: float


@dataclass(slots=True)
class DataRow:
    """One Data API trade row (also an /activity TRADE row)."""

    wallet: str
    side: str
    token_id: str
    market: SimMarket
    size: Decimal
    price: Decimal
    timestamp: int
    tx: str
    is_taker: bool


class Faults:
    """`sim.faults`: add or clear faults (same bodies as `POST /_sim/fault`)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.registry = FaultRegistry()

    def add(self, **spec: Any) -> None:
        """Register a fault, e.g. `add(kind="status", route="POST /order", status=429)`."""
        self._sim.apply_fault_sync(spec)

    def clear(self) -> None:
        self.registry.clear()


class _Sink(Sink):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.best: dict[str, tuple[Decimal | None, Decimal | None]] = {}

    def level_changes(self, market: str, changes: list[LevelChange]) -> None:
        sim = self.sim
        hub = sim.market_hub
        by_asset: dict[str, list[LevelChange]] = {}
        for c in changes:
            by_asset.setdefault(c.token_id, []).append(c)
        ts = str(now_ms())
        for asset, cs in by_asset.items():
            book = sim.engine.books[asset]
            bb, ba = book.best_bid(), book.best_ask()
            sbb, sba = fmt(bb) if bb is not None else "0", fmt(ba) if ba is not None else "1"
            sim.stats_events += 1
            if not hub.conns:
                continue
            ev = {
                "market": market,
                "price_changes": [
                    {
                        "asset_id": asset,
                        "price": fmt(c.price),
                        "size": fmt(c.size),
                        "side": c.side,
                        "hash": c.order_id[2:42],
                        "best_bid": sbb,
                        "best_ask": sba,
                    }
                    for c in cs
                ],
                "timestamp": ts,
                "event_type": "price_change",
            }
            hub.to_assets(asset, orjson.dumps(ev))
            if self.best.get(asset) != (bb, ba) and any(c.custom for c in hub.conns):
                self.best[asset] = (bb, ba)
                spread = fmt(ba - bb) if bb is not None and ba is not None else "1"
                bba = {
                    "event_type": "best_bid_ask",
                    "market": market,
                    "asset_id": asset,
                    "best_bid": sbb,
                    "best_ask": sba,
                    "spread": spread,
                    "timestamp": ts,
                }
                hub.to_assets(asset, orjson.dumps(bba), custom_only=True)

    def order_event(self, order: Order, kind: str, status: str | None = None) -> None:
        hub = self.sim.user_hub
        if hub.conns:
            hub.to_owner(order.owner, order.market, orjson.dumps(order.ws_dict(kind, status)))

    def killed(self, order: Order, reason: str) -> None:
        """A FOK order was killed: production reports it with a `CANCELED_<reason>` status."""
        hub = self.sim.user_hub
        if hub.conns:
            d = order.ws_dict("CANCELLATION", f"CANCELED_{reason}")
            d["size_matched"] = ""
            d["associate_trades"] = []
            hub.to_owner(order.owner, order.market, orjson.dumps(d))

    def trade_event(self, trade: Trade) -> None:
        sim = self.sim
        if trade.status == "MATCHED":
            sim.record_fill(trade)
        hub = sim.user_hub
        if not hub.conns:
            return
        t_owner, m_owner = trade.taker_order.owner, trade.maker_order.owner
        market = trade.taker_order.market
        hub.to_owner(t_owner, market, orjson.dumps(trade.ws_dict(t_owner)))
        if m_owner != t_owner:
            hub.to_owner(m_owner, market, orjson.dumps(trade.ws_dict(m_owner)))

    def last_trade(self, token_id: str, price: Decimal, size: Decimal, side: str, tx: str) -> None:
        self.sim.emit_last_trade(token_id, price, size, side, tx)

    def book_traded(self, token_id: str) -> None:
        if self.sim.market_hub.conns:
            self.sim.market_hub.to_assets(token_id, orjson.dumps(self.sim.book_event(token_id)))


class Simulator:
    """A Polymarket-compatible venue on loopback (CLOB REST, WS, Gamma, Data API)."""

    def __init__(
        self,
        seed: int = 1,
        scenario: str | None = None,
        settle_delay_s: float = 0.05,
        *,
        chain_id: int = 137,
        page_size: int = 100,
        heartbeat_timeout_s: float = 15.0,
        ws_idle_timeout_s: float = 10.0,
        ws_subscribe_timeout_s: float = 10.0,
    ) -> None:
        if scenario not in (None, "demo"):
            raise ValueError(f"unknown scenario: {scenario!r}")
        self.seed = seed
        self.scenario_name = scenario
        self.settle_delay_s = settle_delay_s
        self.chain_id = chain_id
        self.page_size = page_size
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.rng = random.Random(seed)
        self.sink = _Sink(self)
        self.engine = Engine(self.rng, self.sink)
        self.engine.on_rest = self._on_rest
        self.faults = Faults(self)
        self.markets: list[SimMarket] = []
        self.markets_by_cid: dict[str, SimMarket] = {}
        self._market_of_token: dict[str, SimMarket] = {}
        self.request_log: list[RequestRecord] = []
        self.data_rows: list[DataRow] = []
        self.clob = Clob(self)
        self.market_hub = Hub(
            "market",
            idle_timeout_s=ws_idle_timeout_s,
            subscribe_timeout_s=ws_subscribe_timeout_s,
            on_subscribe=self._market_subscribe,
            on_dynamic=self._market_dynamic,
        )
        self.user_hub = Hub(
            "user",
            idle_timeout_s=ws_idle_timeout_s,
            subscribe_timeout_s=ws_subscribe_timeout_s,
            on_subscribe=self._user_subscribe,
            on_dynamic=self._user_dynamic,
        )
        self._seeded_owners: dict[str, str] = {}
        self._domains: dict[str, bytes] = {}
        self._runners: list[web.AppRunner] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self.stats_events = 0
        self.scenario: Scenario | None = None
        self.clob_url = self.gamma_url = self.data_url = ""
        self.market_ws_url = self.user_ws_url = ""

    # lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the four servers on 127.0.0.1 (ephemeral ports) and start the scenario."""
        ws_app = web.Application(middlewares=[self.log_middleware("ws")])
        ws_app.router.add_get("/ws/market", self.market_hub.handle)
        ws_app.router.add_get("/ws/user", self.user_hub.handle)
        apps = {
            "clob": self.clob.app(),
            "gamma": Gamma(self).app(),
            "data": DataApi(self).app(),
            "ws": ws_app,
        }
        ports: dict[str, int] = {}
        for name, app in apps.items():
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            server = site._server
            assert server is not None
            assert isinstance(server, asyncio.base_events.Server)
            ports[name] = server.sockets[0].getsockname()[1]
        self.clob_url = f"http://127.0.0.1:{ports['clob']}"
        self.gamma_url = f"http://127.0.0.1:{ports['gamma']}"
        self.data_url = f"http://127.0.0.1:{ports['data']}"
        self.market_ws_url = f"ws://127.0.0.1:{ports['ws']}/ws/market"
        self.user_ws_url = f"ws://127.0.0.1:{ports['ws']}/ws/user"
        if self.scenario_name == "demo":
            from simulator.scenario import Scenario

            self.scenario = Scenario(self)
            self.scenario.start()

    async def stop(self) -> None:
        """Stop the scenario, close websockets and servers, cancel timers."""
        if self.scenario is not None:
            await self.scenario.stop()
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()
        for _, h in list(self.clob.heartbeats.values()):
            if h is not None:
                h.cancel()
        for hub in (self.market_hub, self.user_hub):
            for c in list(hub.conns):
                with contextlib.suppress(Exception):
                    await c.ws.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    def log_middleware(self, server: str) -> Any:
        @web.middleware
        async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except web.HTTPException as e:
                status = e.status
                raise
            finally:
                self.request_log.append(
                    RequestRecord(
                        server,
                        request.method,
                        request.path,
                        request.query_string,
                        status,
                        time.time(),
                    )
                )

        return mw

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
    ) -> SimMarket:
        """List a binary market and create its two empty books."""
        n = len(self.markets)
        m = SimMarket(
            gamma_id=str(500000 + n),
            question=question,
            slug=slug,
            condition_id=self.engine.new_hash(),
            question_id=self.engine.new_hash(),
            token_ids=(self._token_id(), self._token_id()),
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
        )
        for i, t in enumerate(m.token_ids):
            b = Book(t, m.condition_id)
            m.books[t] = b
            self.engine.books[t] = b
            self._market_of_token[t] = m
            _ = i
        self.markets.append(m)
        self.markets_by_cid[m.condition_id] = m
        return m

    def market_of_token(self, token_id: str) -> SimMarket | None:
        return self._market_of_token.get(token_id)

    def tick_of(self, token_id: str) -> Decimal:
        return self._market_of_token[token_id].tick_size

    def domain(self, contract: str) -> bytes:
        d = self._domains.get(contract)
        if d is None:
            d = self._domains[contract] = crypto.domain_separator(self.chain_id, contract)
        return d

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """Change the market's tick (both tokens); emits `tick_size_change` per token."""
        m = self._market_of_token[token_id]
        old, m.tick_size = m.tick_size, Decimal(tick_size)
        ts = str(now_ms())
        for t in m.token_ids:
            ev = {
                "asset_id": t,
                "event_type": "tick_size_change",
                "market": m.condition_id,
                "new_tick_size": fmt(m.tick_size),
                "old_tick_size": fmt(old),
                "timestamp": ts,
            }
            self.market_hub.to_assets(t, orjson.dumps(ev))

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
        trades = self.engine.submit(order)
        for t in trades:
            self._later(self.settle_delay_s, self.engine.advance_trade, t, "MINED")
            self._later(2 * self.settle_delay_s, self.engine.advance_trade, t, "CONFIRMED")
        return trades

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

    def trade_as(self, wallet: str, token_id: str, side: str, price: Decimal, size: Decimal) -> str:
        """Record a scripted wallet's trade (Data API + `last_trade_price`); returns its tx hash."""
        m = self._market_of_token[token_id]
        tx = self.engine.new_hash()
        price, size = Decimal(price), Decimal(size)
        self.data_rows.append(
            DataRow(wallet, side, token_id, m, size, price, int(time.time()), tx, True)
        )
        m.books[token_id].last_trade_price = price
        m.volume += price * size
        self.emit_last_trade(token_id, price, size, side, tx)
        return tx

    def record_fill(self, t: Trade) -> None:
        tk, mk = t.taker_order, t.maker_order
        m = self._market_of_token[tk.token_id]
        m.volume += t.size * t.price
        self.data_rows.append(
            DataRow(
                tk.maker,
                tk.side,
                tk.token_id,
                m,
                t.size,
                t.price,
                t.match_time,
                t.transaction_hash,
                True,
            )
        )
        self.data_rows.append(
            DataRow(
                mk.maker,
                mk.side,
                mk.token_id,
                m,
                t.size,
                t.price,
                t.match_time,
                t.transaction_hash,
                False,
            )
        )

    def emit_last_trade(
        self, token_id: str, price: Decimal, size: Decimal, side: str, tx: str
    ) -> None:
        if not self.market_hub.conns:
            return
        m = self._market_of_token[token_id]
        ev = {
            "asset_id": token_id,
            "event_type": "last_trade_price",
            "fee_rate_bps": "0",
            "market": m.condition_id,
            "price": fmt(price),
            "side": side,
            "size": fmt(size),
            "timestamp": str(now_ms()),
            "transaction_hash": tx,
        }
        self.market_hub.to_assets(token_id, orjson.dumps(ev))

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
        return {
            "enable_order_book": True,
            "active": m.active,
            "closed": m.closed,
            "archived": False,
            "accepting_orders": m.accepting_orders,
            "accepting_order_timestamp": None,
            "minimum_order_size": float(m.min_size),
            "minimum_tick_size": float(m.tick_size),
            "condition_id": m.condition_id,
            "question_id": m.question_id,
            "question": m.question,
            "description": m.question,
            "market_slug": m.slug,
            "end_date_iso": m.end_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "game_start_time": None,
            "seconds_delay": 0,
            "fpmm": "",
            "maker_base_fee": 0,
            "taker_base_fee": 0,
            "notifications_enabled": False,
            "neg_risk": m.neg_risk,
            "neg_risk_market_id": m.question_id if m.neg_risk else "",
            "neg_risk_request_id": "",
            "icon": "",
            "image": "",
            "rewards": {"rates": None, "min_size": 0, "max_spread": 0},
            "is_50_50_outcome": False,
            "tokens": [
                {"token_id": t, "outcome": o, "price": 0.5, "winner": False}
                for t, o in zip(m.token_ids, m.outcomes, strict=True)
            ],
            "tags": list(m.tags),
        }

    # websockets --------------------------------------------------------------------------
    def _market_subscribe(self, conn: Conn, body: Json) -> str | None:
        if body.get("type", "market").lower() != "market":
            return "invalid subscription"
        assets = body.get("assets_ids")
        if not isinstance(assets, list):
            return "invalid subscription"
        conn.custom = bool(body.get("custom_feature_enabled", False))
        self._add_assets(conn, [str(a) for a in assets], body.get("initial_dump", True))
        return None

    def _add_assets(self, conn: Conn, assets: list[str], dump: object) -> None:
        new = [a for a in assets if a not in conn.assets and a in self.engine.books]
        conn.assets.update(assets)
        if new and dump is not False:
            conn.push_frame(orjson.dumps([self.book_event(a) for a in new]))

    def _market_dynamic(self, conn: Conn, body: Json) -> None:
        assets = [str(a) for a in body.get("assets_ids") or []]
        if "custom_feature_enabled" in body:
            conn.custom = bool(body["custom_feature_enabled"])
        if body.get("operation") == "subscribe":
            self._add_assets(conn, assets, body.get("initial_dump", True))
        elif body.get("operation") == "unsubscribe":
            conn.assets.difference_update(assets)

    def _user_subscribe(self, conn: Conn, body: Json) -> str | None:
        auth = body.get("auth")
        if not isinstance(auth, dict):
            return "invalid auth"
        key: ApiKey | None = self.clob.keys.get(str(auth.get("apiKey", "")))
        if (
            key is None
            or auth.get("secret") != key.secret
            or auth.get("passphrase") != key.passphrase
        ):
            return "invalid auth"
        conn.owner = key.api_key
        conn.markets = {str(m) for m in body.get("markets") or []}
        return None

    def _user_dynamic(self, conn: Conn, body: Json) -> None:
        markets = {str(m) for m in body.get("markets") or []}
        if body.get("operation") == "subscribe":
            conn.markets |= markets
        elif body.get("operation") == "unsubscribe":
            conn.markets -= markets

    async def drop_websockets(self, channel: str = "all") -> int:
        """Abort connections without a close frame; returns how many were dropped."""
        n = 0
        for hub in self._hubs(channel):
            n += await hub.drop()
        return n

    def stall_websockets(self, channel: str = "all", seconds: float = 20.0) -> None:
        """Keep sockets open but send nothing (PINGs unanswered) for `seconds`."""
        for hub in self._hubs(channel):
            hub.stall(seconds)

    def send_malformed(self, channel: str = "all", count: int = 5) -> None:
        """Interleave `count` garbage frames with the real ones on every connection."""
        for hub in self._hubs(channel):
            hub.malformed(count)

    def _hubs(self, channel: str) -> list[Hub]:
        if channel == "market":
            return [self.market_hub]
        if channel == "user":
            return [self.user_hub]
        if channel == "all":
            return [self.market_hub, self.user_hub]
        raise ValueError(f"unknown channel {channel!r}")

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
        elif kind in ("status", "latency", "late_response", "accept_then_status"):
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
        elif kind == "ws_drop":
            for hub in self._hubs(str(spec.get("channel", "all"))):
                for c in list(hub.conns):
                    c.abort()
        elif kind == "ws_stall":
            self.stall_websockets(str(spec.get("channel", "all")), seconds or 20.0)
        elif kind == "ws_malformed":
            self.send_malformed(str(spec.get("channel", "all")), int(spec.get("count", 5)))

    async def apply_fault(self, spec: dict[str, Any]) -> None:
        self.apply_fault_sync(spec)
        await asyncio.sleep(0)

    # ledger ------------------------------------------------------------------------------
    @property
    def api_keys(self) -> list[ApiKey]:
        """Registered API credentials."""
        return list(self.clob.keys.values())

    def ledger(self) -> Json:
        """Authoritative state: every order, every trade, every balance (Decimals)."""
        eng = self.engine
        balances: dict[str, Json] = {}
        for a, v in eng.collateral.items():
            balances.setdefault(a, {"collateral": ZERO, "tokens": {}})["collateral"] = v
        for (a, t), v in eng.shares.items():
            balances.setdefault(a, {"collateral": ZERO, "tokens": {}})["tokens"][t] = v
        return {
            "orders": [
                o.ledger_dict()
                | {
                    "price": o.price,
                    "original_size": o.original_size,
                    "size_matched": o.size_matched,
                }
                for o in eng.orders.values()
            ],
            "trades": [
                {
                    "id": t.id,
                    "taker_order_id": t.taker_order.id,
                    "maker_order_id": t.maker_order.id,
                    "taker": t.taker_order.maker,
                    "maker": t.maker_order.maker,
                    "token_id": t.taker_order.token_id,
                    "side": t.taker_order.side,
                    "price": t.price,
                    "size": t.size,
                    "status": t.status,
                    "transaction_hash": t.transaction_hash,
                    "match_time": t.match_time,
                }
                for t in eng.trades
            ],
            "balances": balances,
        }

    def orders_of(self, owner: str) -> list[Order]:
        return [o for o in self.engine.orders.values() if o.owner == owner]

    def _raise_unknown(self, token_id: str) -> None:
        raise OrderError(f"unknown token {token_id}", 404)
