"""The `Simulator`: the venue's four loopback servers, its websocket hubs and its life cycle.

The state it serves (markets, engine, balances, keys, faults, ...) is the `Venue` it extends
(`simulator.venue`); the route handlers live in `simulator.clob` and `simulator.offchain`. This
module turns engine events into websocket frames, binds the servers and implements the
`Server` protocol (request-log middleware, websocket faults) the state and handlers call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from recording.reader import Recording
from simulator.chain import Chain
from simulator.clob import Clob
from simulator.engine import LevelChange, Order, Trade, fmt, now_ms, rate_bps
from simulator.history import Retention
from simulator.lifecycle import Lifecycle
from simulator.market import SimMarket
from simulator.offchain import DataApi, Gamma
from simulator.relayer import Relayer
from simulator.replay import Replay
from simulator.rpc import chain_app
from simulator.scenario import Scenario
from simulator.venue import (
    ApiKey,
    DataRow,
    Faults,
    Handler,
    Json,
    RequestRecord,
    Venue,
    VenueSink,
)
from simulator.ws import Conn, Hub

__all__ = ["DataRow", "Faults", "RequestRecord", "Retention", "Simulator"]


class _Sink(VenueSink):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.best: dict[str, tuple[Decimal | None, Decimal | None]] = {}

    def level_changes(self, market: str, changes: list[LevelChange]) -> None:
        sim = self.sim
        if sim.market_quiet:
            return  # a replay is applying a recorded frame: that frame is the announcement
        hub = sim.market_hub
        sim.lifecycle.recompute_tick(market)  # the 0.96 / 0.04 rule, before the book events
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

    def tick_changed(self, market: SimMarket, old: Decimal) -> None:
        """One `tick_size_change` per token to its subscribers (NT's capture
        `tick_size_change.json`)."""
        ts = str(now_ms())
        for t in market.token_ids:
            ev = {
                "asset_id": t,
                "event_type": "tick_size_change",
                "market": market.condition_id,
                "new_tick_size": fmt(market.tick_size),
                "old_tick_size": fmt(old),
                "timestamp": ts,
            }
            self.sim.market_hub.to_assets(t, orjson.dumps(ev))

    def market_resolved(self, market: SimMarket, winner: str | None, announce: bool) -> None:
        """`market_resolved` once per connection subscribed (with `custom_feature_enabled`) to a
        token of the market; the shape of the docs' example and NT's `ws_market_resolved_msg`."""
        if not announce:
            return
        ev: Json = {
            "event_type": "market_resolved",
            "id": market.gamma_id,
            "market": market.condition_id,
            "assets_ids": list(market.token_ids),
            "winning_asset_id": winner or "",
            "winning_outcome": market.outcome_of(winner) if winner else "",
            "timestamp": str(now_ms()),
            "tags": list(market.tags),
        }
        frame = orjson.dumps(ev)
        for c in self.sim.market_hub.conns:
            if c.custom and c.assets.intersection(market.token_ids):
                c.push(frame)

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
        market = trade.taker_order.market
        side, empty = sim.engine.feed_maker_side, sim.engine.feed_empty_maker_fee_bps
        for owner in trade.owners():
            ev = trade.ws_dict(owner, maker_side=side, empty_maker_fee_bps=empty)
            hub.to_owner(owner, market, orjson.dumps(ev))

    def last_trade(self, token_id: str, price: Decimal, size: Decimal, side: str, tx: str) -> None:
        self.sim.emit_last_trade(token_id, price, size, side, tx)

    def book_traded(self, token_id: str) -> None:
        if self.sim.market_hub.conns and not self.sim.market_quiet:
            self.sim.market_hub.to_assets(token_id, orjson.dumps(self.sim.book_event(token_id)))


class Simulator(Venue):
    """A Polymarket-compatible venue on loopback (CLOB REST, WS, Gamma, Data API)."""

    def __init__(
        self,
        seed: int = 1,
        scenario: str | None = None,
        settle_delay_s: float = 0.05,
        *,
        chain_id: int = 137,
        page_size: int = 100,
        heartbeat_timeout_s: float = 10.0,
        ws_idle_timeout_s: float = 10.0,
        ws_subscribe_timeout_s: float = 10.0,
        replay: str | Path | None = None,
        speed: float = 1.0,
        port: int = 0,
        retention: Retention | None = None,
    ) -> None:
        if scenario not in (None, "demo"):
            raise ValueError(f"unknown scenario: {scenario!r}")
        if scenario is not None and replay is not None:
            raise ValueError("a scenario and a replay cannot run together")
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed!r}")
        super().__init__(
            seed=seed,
            settle_delay_s=settle_delay_s,
            chain_id=chain_id,
            page_size=page_size,
            heartbeat_timeout_s=heartbeat_timeout_s,
            sink=_Sink(self),
            server=self,
            retention=retention,
        )
        self.scenario_name = scenario
        self.replay_path = Path(replay) if replay is not None else None
        self.replay_speed = speed  # the replay's (or the demo scenario's) speed-up
        self.replay: Replay | None = None
        """While True, book changes send no market-channel frames (a replay is applying one)."""
        self.lifecycle = Lifecycle(self)
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
        self._runners: list[web.AppRunner] = []
        self.scenario: Scenario | None = None
        self.port = port  # 0: ephemeral; N: CLOB N, Gamma N+1, Data N+2, WS N+3, chain N+4
        self.clob_url = self.gamma_url = self.data_url = self.geoblock_url = ""
        self.market_ws_url = self.user_ws_url = ""
        self.chain = Chain(self)  # JSON-RPC and relayer (`simulator.rpc`, `simulator.relayer`)
        self.relayer = Relayer(self.chain)
        self.rpc_url = self.relayer_url = ""

    # lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the four servers on 127.0.0.1 (ephemeral ports, or `port` and the three after
        it) and start the scenario or the replay (a recording that cannot be read raises before
        anything is bound)."""
        if self.replay_path is not None:
            self.replay = Replay(
                self, self.market_hub, Recording(self.replay_path), speed=self.replay_speed
            )
            self.replay.list_markets()
        ws_app = web.Application(middlewares=[self.log_middleware("ws")])
        ws_app.router.add_get("/ws/market", self.market_hub.handle)
        ws_app.router.add_get("/ws/user", self.user_hub.handle)
        apps = {
            "clob": self.clob.app(),
            "gamma": Gamma(self).app(),
            "data": DataApi(self).app(),
            "ws": ws_app,
            "chain": chain_app(self.chain, self.relayer, self.log_middleware("chain")),
        }
        ports: dict[str, int] = {}
        for i, (name, app) in enumerate(apps.items()):
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port + i if self.port else 0)
            try:
                await site.start()
            except OSError:
                await runner.cleanup()
                await self.stop()
                raise
            self._runners.append(runner)
            server = site._server
            assert server is not None
            assert isinstance(server, asyncio.base_events.Server)
            ports[name] = server.sockets[0].getsockname()[1]
        self.clob_url = f"http://127.0.0.1:{ports['clob']}"
        self.gamma_url = f"http://127.0.0.1:{ports['gamma']}"
        self.data_url = f"http://127.0.0.1:{ports['data']}"
        self.geoblock_url = f"{self.gamma_url}/api/geoblock"
        self.market_ws_url = f"ws://127.0.0.1:{ports['ws']}/ws/market"
        self.user_ws_url = f"ws://127.0.0.1:{ports['ws']}/ws/user"
        self.rpc_url = f"http://127.0.0.1:{ports['chain']}"
        self.relayer_url = f"{self.rpc_url}/relayer"
        if self.scenario_name == "demo":
            self.scenario = Scenario(self, speed=self.replay_speed)
            self.scenario.start()
        if self.replay is not None:
            self.replay.start()

    async def stop(self) -> None:
        """Stop the scenario, close websockets and servers, cancel timers."""
        if self.scenario is not None:
            await self.scenario.stop()
        if self.replay is not None:
            await self.replay.stop()
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()
        for _, h in list(self.heartbeats.values()):
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

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        """Relist the market at a new tick (both tokens); emits `tick_size_change` per token.
        The automatic 0.96 / 0.04 rule applies only to markets (re)listed at 0.01."""
        self.lifecycle.set_tick(self._market_of_token[token_id], Decimal(tick_size), relist=True)

    def resolve_market(
        self, condition_id: str, winner: str | None, *, announce: bool = True
    ) -> None:
        """Resolve now (`winner` token id, None for 50-50); see `simulator.lifecycle`."""
        self.lifecycle.resolve(condition_id, winner, announce=announce)

    def schedule_resolution(
        self, condition_id: str, winner: str | None, at: datetime, *, announce: bool = True
    ) -> None:
        """Resolve at wall-clock time `at`; see `simulator.lifecycle`."""
        self.lifecycle.schedule(condition_id, winner, at, announce=announce)

    def emit_last_trade(
        self, token_id: str, price: Decimal, size: Decimal, side: str, tx: str
    ) -> None:
        if not self.market_hub.conns:
            return
        m = self._market_of_token[token_id]
        ev = {
            "asset_id": token_id,
            "event_type": "last_trade_price",
            "fee_rate_bps": rate_bps(m.fee_rate),
            "market": m.condition_id,
            "price": fmt(price),
            "side": side,
            "size": fmt(size),
            "timestamp": str(now_ms()),
            "transaction_hash": tx,
        }
        self.market_hub.to_assets(token_id, orjson.dumps(ev))

    # websockets --------------------------------------------------------------------------
    def _market_subscribe(self, conn: Conn, body: Json) -> str | None:
        if body.get("type", "market").lower() != "market":
            return "invalid subscription"
        assets = body.get("assets_ids")
        if not isinstance(assets, list):
            return "invalid subscription"
        conn.custom = bool(body.get("custom_feature_enabled", False))
        self._add_assets(conn, [str(a) for a in assets], body.get("initial_dump", True))
        self.market_subscribed.set()
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
        key: ApiKey | None = self.keys.get(str(auth.get("apiKey", "")))
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

    def send_raw_frame(self, channel: str, frame: bytes) -> None:
        """Send `frame` as it is, once, on every connection of `channel`."""
        for hub in self._hubs(channel):
            for c in hub.conns:
                c.push_frame(frame)

    def _hubs(self, channel: str) -> list[Hub]:
        if channel == "market":
            return [self.market_hub]
        if channel == "user":
            return [self.user_hub]
        if channel == "all":
            return [self.market_hub, self.user_hub]
        raise ValueError(f"unknown channel {channel!r}")

    def ws_fault(self, kind: str, channel: str, seconds: float, count: int) -> None:
        if kind == "ws_drop":
            for hub in self._hubs(channel):
                for c in list(hub.conns):
                    c.abort()
        elif kind == "ws_stall":
            self.stall_websockets(channel, seconds or 20.0)
        elif kind == "ws_malformed":
            self.send_malformed(channel, count)
