"""CLOB read routes: server time and version, books and prices, market metadata, the caller's
orders and trades (`/data/*`) and balances (`/balance-allowance`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from simulator.clob_auth import Auth
from simulator.clob_http import MICRO, Json, error, json_response, paginate
from simulator.crypto import CHAIN_CONTRACTS
from simulator.engine import ZERO, OrderError, fmt
from simulator.venue import ApiKey, Venue

if TYPE_CHECKING:
    from simulator.market import SimMarket


class Reads:
    """Route handlers that read the venue's state."""

    def __init__(self, venue: Venue, auth: Auth) -> None:
        self.venue = venue
        self.auth = auth

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text='"OK"', content_type="application/json")

    async def time(self, request: web.Request) -> web.Response:
        now = int(time.time() + self.venue.clock_offset_s)
        return web.Response(text=str(now), content_type="application/json")

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": 2})

    def _market_for(self, request: web.Request) -> tuple[str, SimMarket]:
        token = request.query.get("token_id", "")
        if not token or not token.isdigit():
            raise OrderError("Invalid token id", 400)
        m = self.venue.market_of_token(token)
        if m is None:
            raise OrderError("No orderbook exists for the requested token id", 404)
        return token, m

    async def book(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        return json_response(self.venue.book_summary(token))

    async def books(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error("Invalid payload", 400)
        if not isinstance(body, list):
            return error("Invalid payload", 400)
        if len(body) > 500:
            return error("Payload exceeds the limit", 400)
        out = []
        for item in body:
            token = str(item.get("token_id", "")) if isinstance(item, dict) else ""
            if not token.isdigit():
                return error("Invalid token id", 400)
            if self.venue.market_of_token(token) is None:
                return error("No orderbook exists for the requested token id", 404)
            out.append(self.venue.book_summary(token))
        return json_response(out)

    def _param_market(self, request: web.Request, not_found: str) -> tuple[str, SimMarket]:
        token = request.query.get("token_id", "")
        if not token or not token.isdigit():
            raise OrderError("Invalid token id", 400)
        m = self.venue.market_of_token(token)
        if m is None:
            raise OrderError(not_found, 404)
        return token, m

    async def tick_size(self, request: web.Request) -> web.Response:
        _, m = self._param_market(request, "market not found")
        return json_response({"minimum_tick_size": float(m.tick_size)})

    async def neg_risk(self, request: web.Request) -> web.Response:
        _, m = self._param_market(request, "market not found")
        return json_response({"neg_risk": m.neg_risk})

    async def fee_rate(self, request: web.Request) -> web.Response:
        """`/fee-rate`: the legacy V1 `base_fee` (bps signed into V1 orders; the SDK reads it
        for `version == 1` only, `__resolve_fee_rate_bps`). Non-zero on fee markets, but not
        the rate charged: that is `fd` on `/clob-markets`."""
        _, m = self._param_market(request, "fee rate not found for market")
        return json_response({"base_fee": m.legacy_base_fee})

    async def midpoint(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.venue.engine.books[token]
        bb, ba = b.best_bid(), b.best_ask()
        if bb is None or ba is None:
            return error("No orderbook exists for the requested token id", 404)
        return json_response({"mid": fmt((bb + ba) / 2)})

    async def price(self, request: web.Request) -> web.Response:
        """Best price on the named side of the book (BUY = best bid, SELL = best ask)."""
        token, _ = self._market_for(request)
        side = request.query.get("side", "")
        if side not in ("BUY", "SELL"):
            return error("Invalid side", 400)
        b = self.venue.engine.books[token]
        p = b.best_bid() if side == "BUY" else b.best_ask()
        if p is None:
            return error("No orderbook exists for the requested token id", 404)
        return json_response({"price": fmt(p)})

    async def spread(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.venue.engine.books[token]
        bb, ba = b.best_bid(), b.best_ask()
        if bb is None or ba is None:
            return error("No orderbook exists for the requested token id", 404)
        return json_response({"spread": fmt(ba - bb)})

    async def last_trade_price(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.venue.engine.books[token]
        p = b.last_trade_price
        return json_response({"price": fmt(p) if p is not None else "0.5", "side": ""})

    async def markets_by_token(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        m = self.venue.market_of_token(token)
        if m is None:
            return error("market not found", 404)
        return json_response(
            {
                "condition_id": m.condition_id,
                "primary_token_id": m.token_ids[0],
                "secondary_token_id": m.token_ids[1],
            }
        )

    async def clob_market(self, request: web.Request) -> web.Response:
        m = self.venue.markets_by_cid.get(request.match_info["cid"])
        if m is None:
            return error("market not found", 404)
        return json_response(m.clob_market_dict())

    async def market(self, request: web.Request) -> web.Response:
        m = self.venue.markets_by_cid.get(request.match_info["cid"])
        if m is None:
            return error("market not found", 404)
        return json_response(self.venue.clob_market_row(m))

    async def data_orders(self, request: web.Request) -> web.Response:
        key, _ = await self.auth.auth(request)
        q = request.query
        rows = [
            o.rest_dict()
            for o in self.venue.engine.open_orders(key.api_key)
            if (not q.get("id") or o.id == q["id"])
            and (not q.get("market") or o.market == q["market"])
            and (not q.get("asset_id") or o.token_id == q["asset_id"])
        ]
        return json_response(paginate(rows, q.get("next_cursor"), self.venue.page_size))

    async def data_order(self, request: web.Request) -> web.Response:
        """One order by id. An unknown id answers 200 with `null` (UNCERTAIN in production)."""
        key, _ = await self.auth.auth(request)
        o = self.venue.engine.orders.get(request.match_info["oid"])
        if o is None or o.owner != key.api_key:
            return json_response(None)
        return json_response(o.rest_dict())

    async def data_trades(self, request: web.Request) -> web.Response:
        key, _ = await self.auth.auth(request)
        q = request.query
        owner = key.api_key
        after = int(q["after"]) if q.get("after", "").isdigit() else None
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        rows: list[Json] = []
        for t in reversed(self.venue.engine.trades):
            if owner not in t.owners():
                continue
            if q.get("id") and t.id != q["id"]:
                continue
            if q.get("market") and t.taker_order.market != q["market"]:
                continue
            # The venue filters `asset_id` on the taker's token: a maker fill on the other token
            # of the market is missed (NautilusTrader issue #3345); `market` finds it.
            if q.get("asset_id") and t.taker_order.token_id != q["asset_id"]:
                continue
            if after is not None and t.match_time < after:
                continue
            if before is not None and t.match_time > before:
                continue
            row = t.rest_dict(owner)
            if (
                q.get("maker_address")
                and row["maker_address"].lower() != q["maker_address"].lower()
            ):
                continue
            rows.append(row)
        return json_response(paginate(rows, q.get("next_cursor"), self.venue.page_size))

    def _funder(self, key: ApiKey, sig_type: str | None) -> str:
        if sig_type not in (None, "", "0", "-1"):
            return self.venue.funders.get(key.api_key, key.address)
        return key.address

    async def balance_allowance(self, request: web.Request) -> web.Response:
        key, _ = await self.auth.auth(request)
        q = request.query
        addr = self._funder(key, q.get("signature_type"))
        eng = self.venue.engine
        asset_type = q.get("asset_type", "COLLATERAL")
        if asset_type == "CONDITIONAL":
            token = q.get("token_id", "")
            if not token:
                return error("Invalid token id", 400)
            bal = eng.shares.get((addr.lower(), token), ZERO)
        elif asset_type == "COLLATERAL":
            bal = eng.collateral.get(addr.lower(), ZERO)
        else:
            return error("Invalid asset type", 400)
        contracts = CHAIN_CONTRACTS[self.venue.chain_id]
        unlimited = "0" if addr.lower() in self.venue.no_allowance else str((1 << 256) - 1)
        return json_response(
            {
                "balance": str(int(bal * MICRO)),
                "allowances": {contracts[0]: unlimited, contracts[1]: unlimited},
            }
        )

    async def balance_allowance_update(self, request: web.Request) -> web.Response:
        await self.auth.auth(request)
        return web.Response(text="")
