"""Gamma (`gamma-api.polymarket.com`) and Data API (`data-api.polymarket.com`, v1 routes)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.engine import ZERO
from simulator.history import fold_position
from simulator.market import SimMarket, tag_id

if TYPE_CHECKING:
    from simulator.venue import DataRow, Venue

Json = dict[str, Any]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _bool(v: str | None) -> bool | None:
    if v is None:
        return None
    return v.lower() in ("true", "1")


def _dt(v: str) -> datetime | None:
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(v: str | None, default: int) -> int:
    try:
        return int(v) if v is not None else default
    except ValueError:
        return default


class Gamma:
    """`/markets` and `/events` with the production filters the daemon uses."""

    def __init__(self, sim: Venue) -> None:
        self.sim = sim

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.sim.server.log_middleware("gamma")])
        app.router.add_get("/markets", self.markets)
        app.router.add_get("/markets/slug/{slug}", self.market_by_slug)
        app.router.add_get("/markets/{id}", self.market_by_id)
        app.router.add_get("/events", self.events)
        app.router.add_get("/events/slug/{slug}", self.event_by_slug)
        # polymarket.com's geoblock check, served here (https://docs.polymarket.com/api-reference/geoblock)
        app.router.add_get("/api/geoblock", self.geoblock)
        return app

    async def geoblock(self, request: web.Request) -> web.Response:
        """`{blocked, ip, country, region}` for the caller, as `GET /api/geoblock` answers."""
        return web.json_response(self.sim.geoblock)

    def _filter(self, request: web.Request, events: bool) -> list[SimMarket] | web.Response:
        q = request.query
        out = []
        closed = _bool(q.get("closed"))
        closed = False if closed is None else closed
        active = _bool(q.get("active"))
        slugs = set(q.getall("slug", []))
        cids = set(q.getall("condition_ids", []))
        toks = set(q.getall("clob_token_ids", []))
        tags = set(q.getall("tag", [])) | set(q.getall("tag_slug", []))
        tag_ids = set(q.getall("tag_id", []))
        end_min = _dt(q["end_date_min"]) if "end_date_min" in q else None
        end_max = _dt(q["end_date_max"]) if "end_date_max" in q else None
        liq_key = "liquidity_min" if events else "liquidity_num_min"
        vol_key = "volume_min" if events else "volume_num_min"
        try:
            liq_min = Decimal(q[liq_key]) if liq_key in q else None
            vol_min = Decimal(q[vol_key]) if vol_key in q else None
        except ArithmeticError:
            return _json({"error": "invalid number"}, 422)
        for m in self.sim.markets:
            if m.closed != closed:
                continue
            if active is not None and m.active != active:
                continue
            if slugs and m.slug not in slugs:
                continue
            if cids and m.condition_id not in cids:
                continue
            if toks and not toks.intersection(m.token_ids):
                continue
            if tags and not tags.intersection(m.tags):
                continue
            if tag_ids and not tag_ids.intersection(tag_id(t) for t in m.tags):
                continue
            if end_min is not None and m.end_date < end_min:
                continue
            if end_max is not None and m.end_date > end_max:
                continue
            if liq_min is not None and m.liquidity < liq_min:
                continue
            if vol_min is not None and m.volume < vol_min:
                continue
            out.append(m)
        offset = _int(q.get("offset"), 0)
        limit = _int(q.get("limit"), 500)
        return out[offset : offset + limit]

    async def markets(self, request: web.Request) -> web.Response:
        ms = self._filter(request, events=False)
        if isinstance(ms, web.Response):
            return ms
        return _json([m.gamma_dict() for m in ms])

    async def events(self, request: web.Request) -> web.Response:
        ms = self._filter(request, events=True)
        if isinstance(ms, web.Response):
            return ms
        return _json([m.event_dict() for m in ms])

    async def market_by_id(self, request: web.Request) -> web.Response:
        for m in self.sim.markets:
            if m.gamma_id == request.match_info["id"]:
                return _json(m.gamma_dict())
        return _json({"type": "not found error", "error": "id not found"}, 404)

    async def market_by_slug(self, request: web.Request) -> web.Response:
        for m in self.sim.markets:
            if m.slug == request.match_info["slug"]:
                return _json(m.gamma_dict())
        return _json({"type": "not found error", "error": "slug not found"}, 404)

    async def event_by_slug(self, request: web.Request) -> web.Response:
        for m in self.sim.markets:
            if m.slug == request.match_info["slug"]:
                return _json(m.event_dict())
        return _json({"type": "not found error", "error": "slug not found"}, 404)


PROFILE = {
    "name": "",
    "pseudonym": "",
    "bio": "",
    "profileImage": "",
    "profileImageOptimized": "",
}


class DataApi:
    """`/trades`, `/activity`, `/positions` for every wallet (daemon's and scripted).

    A position in a resolved market is `redeemable: true` with `curPrice` its payout and
    `currentValue = size x payout`, and `?redeemable=true` lists only those, as the docs' "Get
    current positions for a user" page and the real capture `positions_2025_redeemable_and_open`
    show (a lost position: `curPrice` 0, `currentValue` 0, `redeemable` true).
    """

    def __init__(self, sim: Venue) -> None:
        self.sim = sim

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.sim.server.log_middleware("data"), self._faults_mw])
        app.router.add_get("/trades", self.trades)
        app.router.add_get("/activity", self.activity)
        app.router.add_get("/positions", self.positions)
        return app

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        reg = self.sim.faults.registry
        f = reg.take(reg.data, request.method, request.path, {"data_api"})
        if f is not None:
            return _json({"error": "internal server error"}, f.status)
        g = reg.take(reg.data, request.method, request.path, {"data_api_garbage"})
        resp: web.StreamResponse = await handler(request)
        if g is not None and isinstance(resp, web.Response) and resp.body is not None:
            rows = orjson.loads(bytes(resp.body))  # type: ignore[arg-type]  # body is bytes here
            if isinstance(rows, list):
                resp = _json(self._garble(rows))
        return resp

    def _garble(self, rows: list[Json]) -> list[Json]:
        rng = self.sim.rng
        junk: list[Json] = [
            {"proxyWallet": None, "timestamp": "yesterday", "size": "NaN"},
            {"transactionHash": "0xzz", "price": -1, "side": "HOLD"},
            {},
        ]
        for r in rows[:2]:
            bad = dict(r)
            for k in list(bad)[: max(1, len(bad) // 3)]:
                if rng.random() < 0.5:
                    bad.pop(k)
                else:
                    bad[k] = None
            junk.append(bad)
        out = list(rows)
        for j in junk:
            out.insert(rng.randrange(len(out) + 1), j)
        return out

    def _rows(
        self, request: web.Request, *, any_user: bool = False
    ) -> list[DataRow] | web.Response:
        q = request.query
        user = (q.get("user") or "").lower()
        markets = set(filter(None, (q.get("market") or "").split(",")))
        if not user and not (any_user and markets):
            return _json({"error": "user is required"}, 400)
        rows = [r for r in self.sim.data_rows if not user or r.wallet.lower() == user]
        if markets:
            rows = [r for r in rows if r.market.condition_id in markets]
        if q.get("side"):
            rows = [r for r in rows if r.side == q["side"]]
        if q.get("start"):
            rows = [r for r in rows if r.timestamp >= _int(q["start"], 0)]
        if q.get("end"):
            rows = [r for r in rows if r.timestamp <= _int(q["end"], 1 << 62)]
        return rows

    def _page(self, request: web.Request, rows: list[Json], default_limit: int = 100) -> list[Json]:
        q = request.query
        desc = (q.get("sortDirection") or "DESC").upper() != "ASC"
        if desc:
            rows.reverse()  # ties (same second) newest first; list.sort is stable
        rows.sort(key=lambda r: r["timestamp"], reverse=desc)
        off = _int(q.get("offset"), 0)
        lim = _int(q.get("limit"), default_limit)
        return rows[off : off + lim]

    def _cid(self, token_id: str) -> str | None:
        m = self.sim.market_of_token(token_id)
        return m.condition_id if m is not None else None

    @staticmethod
    def _common(r: DataRow) -> Json:
        m = r.market
        idx = m.token_ids.index(r.token_id)
        return {
            "proxyWallet": r.wallet,
            "side": r.side,
            "asset": r.token_id,
            "conditionId": m.condition_id,
            "size": float(r.size),
            "price": float(r.price),
            "timestamp": r.timestamp,
            "title": m.question,
            "slug": m.slug,
            "icon": "",
            "eventSlug": m.slug,
            "outcome": m.outcomes[idx],
            "outcomeIndex": idx,
            **PROFILE,
            "transactionHash": r.tx,
        }

    async def trades(self, request: web.Request) -> web.Response:
        # `/trades?market=...` without `user` is a market's trade feed, every wallet's rows
        # ("Get trades for a user or markets": `user` is optional there, not on /activity).
        rows = self._rows(request, any_user=True)
        if isinstance(rows, web.Response):
            return rows
        if (request.query.get("takerOnly") or "true").lower() != "false":
            rows = [r for r in rows if r.is_taker]
        return _json(self._page(request, [self._common(r) for r in rows]))

    async def activity(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        if isinstance(rows, web.Response):
            return rows
        types = set(filter(None, (request.query.get("type") or "").split(",")))
        if types and "TRADE" not in types:
            return _json([])
        out = []
        for r in rows:
            c = self._common(r)
            out.append(
                {
                    "proxyWallet": c["proxyWallet"],
                    "timestamp": c["timestamp"],
                    "conditionId": c["conditionId"],
                    "type": "TRADE",
                    "size": c["size"],
                    "usdcSize": float(r.size * r.price),
                    "transactionHash": c["transactionHash"],
                    "price": c["price"],
                    "asset": c["asset"],
                    "side": c["side"],
                    "outcomeIndex": c["outcomeIndex"],
                    "title": c["title"],
                    "slug": c["slug"],
                    "icon": "",
                    "eventSlug": c["eventSlug"],
                    "outcome": c["outcome"],
                    **PROFILE,
                }
            )
        return _json(self._page(request, out))

    async def positions(self, request: web.Request) -> web.Response:
        rows = self._rows(request)
        if isinstance(rows, web.Response):
            return rows
        # token -> [size, bought_size, bought_cost, realized], from the wallet's evicted rows on
        user = request.query.get("user") or ""
        markets = set(filter(None, (request.query.get("market") or "").split(",")))
        agg = self.sim.history.evicted.positions_of(user)
        for token in [t for t in agg if markets and self._cid(t) not in markets]:
            del agg[token]
        for r in sorted(rows, key=lambda r: r.timestamp):
            fold_position(agg.setdefault(r.token_id, [ZERO, ZERO, ZERO, ZERO]), r)
        wallet = (
            rows[0].wallet
            if rows
            else self.sim.history.evicted.wallet_names.get(user.lower(), user)
        )
        threshold = Decimal(request.query.get("sizeThreshold") or "1")
        redeemable = _bool(request.query.get("redeemable"))
        out: list[Json] = []
        for token, (size, bought, cost, realized) in agg.items():
            if size < threshold or size <= 0:
                continue
            m = self.sim.market_of_token(token)
            if m is None:
                continue
            idx = m.token_ids.index(token)
            avg = cost / bought if bought else ZERO
            book = self.sim.engine.books[token]
            cur = book.last_trade_price if book.last_trade_price is not None else avg
            if m.resolved:  # worth its payout: 1 (winner), 0 (loser), 0.5 (50-50)
                cur = m.payouts[token]
            if redeemable is not None and redeemable != m.resolved:
                continue
            initial = size * avg
            current = size * cur
            out.append(
                {
                    "proxyWallet": wallet,
                    "asset": token,
                    "conditionId": m.condition_id,
                    "size": float(size),
                    "avgPrice": float(avg),
                    "initialValue": float(initial),
                    "currentValue": float(current),
                    "cashPnl": float(current - initial),
                    "percentPnl": float((current - initial) / initial * 100) if initial else 0.0,
                    "totalBought": float(bought),
                    "realizedPnl": float(realized),
                    "percentRealizedPnl": 0.0,
                    "curPrice": float(cur),
                    "redeemable": m.resolved,
                    "mergeable": False,
                    "title": m.question,
                    "slug": m.slug,
                    "icon": "",
                    "eventId": m.event_id,
                    "eventSlug": m.slug,
                    "outcome": m.outcomes[idx],
                    "outcomeIndex": idx,
                    "oppositeOutcome": m.outcomes[1 - idx],
                    "oppositeAsset": m.token_ids[1 - idx],
                    "endDate": m.end_date.strftime("%Y-%m-%d"),
                    "negativeRisk": m.neg_risk,
                }
            )
        q = request.query
        off, lim = _int(q.get("offset"), 0), _int(q.get("limit"), 100)
        out.sort(key=lambda r: r["size"], reverse=True)
        return _json(out[off : off + lim])
