"""The simulator's own `/_sim/*` routes (loopback only): fund, ledger, received orders,
faults, seeded orders, new markets, tick changes, resolutions and wire options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import orjson
from aiohttp import web

from simulator.clob_http import error, json_response
from simulator.lifecycle import Lifecycle
from simulator.venue import Venue


class Admin:
    """Route handlers that drive the venue from a test or a demo."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.lifecycle = Lifecycle(venue)

    async def admin_fund(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            addr = str(body["address"])
            if body.get("token_id"):
                self.venue.fund(
                    addr, token_id=str(body["token_id"]), shares=Decimal(str(body["shares"]))
                )
            if body.get("collateral") is not None:
                self.venue.fund(addr, collateral=Decimal(str(body["collateral"])))
            if body.get("pol") is not None:  # gas money on the chain (`simulator.chain`)
                getattr(self.venue, "chain").fund_pol(addr, Decimal(str(body["pol"])))  # noqa: B009  # Venue has no chain, the Simulator does
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation, ValueError) as e:
            return error(f"bad fund request: {e}", 400)
        return json_response({"ok": True})

    async def admin_ledger(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.venue.ledger(), default=str), content_type="application/json"
        )

    async def admin_received_orders(self, request: web.Request) -> web.Response:
        """`{"total": n, "orders": [...]}`: what `received_orders()` holds; `total` counts the
        order requests ever received (above the kept ones' when the oldest were dropped)."""
        return json_response(
            {
                "total": self.venue.received_total,
                "kept": len(self.venue.received),
                "orders": [r.as_json() for r in self.venue.received_orders()],
            }
        )

    async def admin_fault(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("fault must be an object")
            if body.get("kind") == "clear":
                self.venue.faults.clear()
            else:
                await self.venue.apply_fault(body)
        except (orjson.JSONDecodeError, ValueError, TypeError) as e:
            return error(str(e), 400)
        return json_response({"ok": True})

    async def admin_market(self, request: web.Request) -> web.Response:
        """List a market: `{"question","slug","tick_size"?,"min_size"?,"neg_risk"?}`."""
        try:
            body = orjson.loads(await request.read())
            m = self.venue.add_market(
                question=str(body["question"]),
                slug=str(body["slug"]),
                tick_size=Decimal(str(body.get("tick_size", "0.01"))),
                min_size=Decimal(str(body.get("min_size", "5"))),
                neg_risk=bool(body.get("neg_risk", False)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation) as e:
            return error(f"bad market request: {e}", 400)
        return json_response({"condition_id": m.condition_id, "token_ids": list(m.token_ids)})

    async def admin_seed_orders(self, request: web.Request) -> web.Response:
        """Seed many resting orders at once: `[{"maker","token_id","side","price","size"}]`."""
        try:
            body = orjson.loads(await request.read())
            ids = [
                self.venue.seed_order(
                    maker=str(x["maker"]),
                    token_id=str(x["token_id"]),
                    side=str(x["side"]),
                    price=Decimal(str(x["price"])),
                    size=Decimal(str(x["size"])),
                )
                for x in body
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation, ValueError) as e:
            return error(f"bad seed request: {e}", 400)
        return json_response({"order_ids": ids})

    async def admin_resolve(self, request: web.Request) -> web.Response:
        """Resolve a market: `{"condition_id", "winner": token id | null (50-50),
        "announce"?: true, "in_s"?: seconds from now}` (see `simulator.lifecycle`)."""
        try:
            body = orjson.loads(await request.read())
            cid, winner = str(body["condition_id"]), body.get("winner")
            if winner is not None and not isinstance(winner, str):
                raise ValueError("winner must be a token id or null")
            announce = bool(body.get("announce", True))
            if body.get("in_s") is not None:
                at = datetime.now(UTC) + timedelta(seconds=float(body["in_s"]))
                self.lifecycle.schedule(cid, winner, at, announce=announce)
            else:
                self.lifecycle.resolve(cid, winner, announce=announce)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return error(f"bad resolve request: {e}", 400)
        return json_response({"ok": True})

    async def admin_tick(self, request: web.Request) -> web.Response:
        """Relist a market at a new tick: `{"token_id", "tick_size"}`."""
        try:
            body = orjson.loads(await request.read())
            m = self.venue.market_of_token(str(body["token_id"]))
            if m is None:
                raise ValueError(f"unknown token {body['token_id']}")
            self.lifecycle.set_tick(m, Decimal(str(body["tick_size"])), relist=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation, ValueError) as e:
            return error(f"bad tick request: {e}", 400)
        return json_response({"ok": True})

    async def admin_conditions(self, request: web.Request) -> web.Response:
        """Set what an account check sees: `{"geoblock": {"blocked": true, "country": "US",
        "region": "NY"}}` (merged into `/api/geoblock`'s answer), `{"clock_offset_s": 120}`
        (added to `/time`), `{"revoke_allowance": "0x..."}` (that address's pUSD allowances
        answer 0) and `{"grant_allowance": "0x..."}` (unlimited again)."""
        v = self.venue
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("conditions must be an object")
            if isinstance(body.get("geoblock"), dict):
                v.geoblock = {**v.geoblock, **body["geoblock"]}
            if body.get("clock_offset_s") is not None:
                v.clock_offset_s = float(body["clock_offset_s"])
            if body.get("revoke_allowance") is not None:
                v.no_allowance.add(str(body["revoke_allowance"]).lower())
            if body.get("grant_allowance") is not None:
                v.no_allowance.discard(str(body["grant_allowance"]).lower())
        except (orjson.JSONDecodeError, ValueError, TypeError) as e:
            return error(f"bad conditions request: {e}", 400)
        return json_response({"geoblock": v.geoblock, "clock_offset_s": v.clock_offset_s})

    async def admin_options(self, request: web.Request) -> web.Response:
        """Set wire options of user-channel trade events: `{"feed_maker_side": false}` drops
        `maker_orders[].side`, `{"feed_empty_maker_fee_bps": true}` sends `fee_rate_bps: ""`
        on maker entries, as some live fills do (REST rows keep both)."""
        eng = self.venue.engine
        known = ("feed_maker_side", "feed_empty_maker_fee_bps")
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict) or set(body) - set(known):
                raise ValueError(f"options: only {', '.join(known)} are known")
            if any(not isinstance(v, bool) for v in body.values()):
                raise ValueError("options: values must be booleans")
        except (orjson.JSONDecodeError, ValueError) as e:
            return error(f"bad options request: {e}", 400)
        if "feed_maker_side" in body:
            eng.feed_maker_side = body["feed_maker_side"]
        if "feed_empty_maker_fee_bps" in body:
            eng.feed_empty_maker_fee_bps = body["feed_empty_maker_fee_bps"]
        return json_response({k: getattr(eng, k) for k in known})
