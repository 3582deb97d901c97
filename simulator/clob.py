"""The CLOB REST server (`clob.polymarket.com`), strict like production: its route table and
the middlewares in front of every route (injected HTTP faults, the engine-restart window,
order-error answers, the record of order bodies received).

The routes themselves live by concern in `clob_auth` (L1/L2 and API keys), `clob_reads`
(books, prices, markets, the caller's orders, trades and balances), `clob_orders` (placing and
cancelling orders, heartbeats) and `clob_admin` (`/_sim/*`); the state is the `Venue`'s.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiohttp import web

from simulator.clob_admin import Admin
from simulator.clob_auth import Auth
from simulator.clob_http import error, json_response
from simulator.clob_orders import Orders
from simulator.clob_reads import Reads
from simulator.engine import OrderError
from simulator.faults import CANCEL_ONLY, CLOUDFLARE_403, ORDER_ROUTES
from simulator.venue import ApiKey, ReceivedOrder, Venue

__all__ = ["ApiKey", "Clob", "ReceivedOrder"]
ORDER_POSTS = ("/order", "/orders")


class Clob:
    """The CLOB server's application; route handlers by concern, state on the `Venue`."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.auth = Auth(venue)
        self.reads = Reads(venue, self.auth)
        self.orders = Orders(venue, self.auth)
        self.admin = Admin(venue)

    # what reached the venue (kept on the venue) ---------------------------------------------
    @property
    def received(self) -> deque[tuple[str, bytes]]:
        """Every order-carrying request body, as received (the newest ones)."""
        return self.venue.received

    @property
    def received_total(self) -> int:
        """How many order-carrying requests ever reached the venue."""
        return self.venue.received_total

    def received_orders(self) -> list[ReceivedOrder]:
        """Every order the venue received (a batch counts each of its orders), oldest first."""
        return self.venue.received_orders()

    # app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                self.venue.server.log_middleware("clob"),
                self._faults_mw,
                self._order_errors_mw,
            ]
        )
        r = app.router
        r.add_get("/", self.reads.ok)
        r.add_get("/ok", self.reads.ok)
        r.add_get("/time", self.reads.time)
        r.add_get("/version", self.reads.version)
        r.add_post("/auth/api-key", self.auth.create_api_key)
        r.add_get("/auth/derive-api-key", self.auth.derive_api_key)
        r.add_get("/auth/api-keys", self.auth.list_api_keys)
        r.add_delete("/auth/api-key", self.auth.delete_api_key)
        r.add_get("/book", self.reads.book)
        r.add_post("/books", self.reads.books)
        r.add_get("/tick-size", self.reads.tick_size)
        r.add_get("/neg-risk", self.reads.neg_risk)
        r.add_get("/fee-rate", self.reads.fee_rate)
        r.add_get("/midpoint", self.reads.midpoint)
        r.add_get("/price", self.reads.price)
        r.add_get("/spread", self.reads.spread)
        r.add_get("/last-trade-price", self.reads.last_trade_price)
        r.add_get("/markets-by-token/{token}", self.reads.markets_by_token)
        r.add_get("/clob-markets/{cid}", self.reads.clob_market)
        r.add_get("/markets/{cid}", self.reads.market)
        r.add_post("/order", self.orders.post_order)
        r.add_post("/orders", self.orders.post_orders)
        r.add_delete("/order", self.orders.cancel_order)
        r.add_delete("/orders", self.orders.cancel_orders)
        r.add_delete("/cancel-all", self.orders.cancel_all)
        r.add_delete("/cancel-market-orders", self.orders.cancel_market_orders)
        r.add_get("/data/orders", self.reads.data_orders)
        r.add_get("/data/order/{oid}", self.reads.data_order)
        r.add_get("/data/trades", self.reads.data_trades)
        r.add_get("/balance-allowance", self.reads.balance_allowance)
        r.add_get("/balance-allowance/update", self.reads.balance_allowance_update)
        r.add_post("/v1/heartbeats", self.orders.heartbeat)
        r.add_post("/heartbeats", self.orders.legacy_heartbeat)
        r.add_post("/_sim/fund", self.admin.admin_fund)
        r.add_get("/_sim/ledger", self.admin.admin_ledger)
        r.add_post("/_sim/conditions", self.admin.admin_conditions)
        r.add_get("/_sim/received_orders", self.admin.admin_received_orders)
        r.add_post("/_sim/fault", self.admin.admin_fault)
        r.add_post("/_sim/seed_orders", self.admin.admin_seed_orders)
        r.add_post("/_sim/market", self.admin.admin_market)
        r.add_post("/_sim/resolve", self.admin.admin_resolve)
        r.add_post("/_sim/tick", self.admin.admin_tick)
        r.add_post("/_sim/options", self.admin.admin_options)
        return app

    @web.middleware
    async def _order_errors_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answer an `OrderError` raised by a route with its production status and text."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except OrderError as e:
            return error(e.message, e.status)

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/"):
            if request.remote not in ("127.0.0.1", "::1", None):
                return error("forbidden", 403)
            resp: web.StreamResponse = await handler(request)
            return resp
        faults = self.venue.faults.registry
        route = f"{request.method} {path}"
        raw = b""
        if request.method == "POST" and path in ORDER_POSTS:
            raw = await request.read()  # aiohttp keeps it for the handler
            self.venue.record_received(path, raw)
            failing = faults.failing_after_accept
            if failing:
                for oid in self.venue.order_ids(raw):
                    if oid in failing:
                        stuck = failing[oid]
                        return self._status_fault(stuck.status, stuck.retry_after, stuck.body)
        phase = faults.restart_phase()
        if phase is not None and phase[0] == "425" and route in ORDER_ROUTES:
            return web.Response(status=425, text="service not ready")
        f = faults.take(faults.http, request.method, path, {"latency"})
        if f is not None:
            await asyncio.sleep(f.seconds)
        f = faults.take(faults.http, request.method, path, {"status"})
        if f is not None:
            return self._status_fault(f.status, f.retry_after, f.body)
        if faults.take(faults.http, request.method, path, {"drop"}) is not None:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError  # never written: the connection is gone
        accepted = faults.take(faults.http, request.method, path, {"accept_then_status"})
        late = faults.take(faults.http, request.method, path, {"late_response"})
        resp = await handler(request)
        if accepted is not None:
            # The engine has acted on the order; the answer is lost behind a 5xx, and so is the
            # answer to every re-send of the same order.
            for oid in self.venue.order_ids(raw):
                faults.failing_after_accept[oid] = accepted
            return self._status_fault(accepted.status, accepted.retry_after, accepted.body)
        if late is not None:
            await asyncio.sleep(late.seconds)
        return resp

    @staticmethod
    def _status_fault(status: int, retry_after: int | None, body: str | None) -> web.Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        if body is not None:
            return web.Response(status=status, text=body, headers=headers)
        if status == 429:
            return json_response(
                {"error": "Too Many Requests"}, 429, headers or {"Retry-After": "1"}
            )
        if status == 425:
            return web.Response(status=425, text="service not ready", headers=headers)
        if status == 503:
            return json_response({"error": CANCEL_ONLY}, 503, headers)
        if status == 403:
            return web.Response(
                status=403, text=CLOUDFLARE_403, content_type="text/html", headers=headers
            )
        if status == 500:
            return json_response({"error": "could not run the execution"}, 500, headers)
        return json_response({"error": "simulated fault"}, status, headers)
