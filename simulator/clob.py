"""The CLOB REST API (`clob.polymarket.com`), strict like production.

Auth: L1 (EIP-712 `ClobAuth`) for API-key creation, L2 (HMAC over the raw body) for the rest.
Orders: V2 bodies only; the EIP-712 signature is recovered and checked against the API key.
Errors use production status codes and `{"error": "..."}` texts from the API reference.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator import crypto
from simulator.engine import ZERO, Order, OrderError, fmt
from simulator.faults import CANCEL_ONLY, CLOUDFLARE_403, ORDER_ROUTES, POST_ONLY_MODE

if TYPE_CHECKING:
    from simulator.market import SimMarket
    from simulator.sim import Simulator

Json = dict[str, Any]
MICRO = Decimal(1_000_000)
START_CURSOR = "MA=="
END_CURSOR = "LTE="
V1_FIELDS = ("nonce", "feeRateBps", "taker")
V2_FIELDS = (
    "salt",
    "maker",
    "signer",
    "tokenId",
    "makerAmount",
    "takerAmount",
    "side",
    "signatureType",
    "timestamp",
    "metadata",
    "builder",
    "signature",
)
ORDER_TYPES = ("GTC", "GTD", "FOK", "FAK")
MAX_BATCH = 15
MAX_CANCEL = 1000
GTD_SECURITY_S = 60
RECEIVED_MAX = 10_000
ORDER_POSTS = ("/order", "/orders")


@dataclass(frozen=True)
class ApiKey:
    """Registered L2 credentials and the address that owns them."""

    api_key: str
    secret: str
    passphrase: str
    address: str  # checksummed, as sent in POLY_ADDRESS
    nonce: int


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error(message: str, status: int = 400, **extra: object) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


def decimals(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return max(0, -int(exp))


def encode_cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if cursor == END_CURSOR:
        return -1
    try:
        return max(0, int(base64.b64decode(cursor).decode()))
    except (ValueError, binascii.Error) as e:
        raise OrderError("invalid next_cursor") from e


def paginate(rows: list[Json], cursor: str | None, page_size: int) -> Json:
    off = decode_cursor(cursor)
    if off < 0:
        return {"limit": page_size, "next_cursor": END_CURSOR, "count": 0, "data": []}
    page = rows[off : off + page_size]
    nxt = off + page_size
    return {
        "limit": page_size,
        "next_cursor": encode_cursor(nxt) if nxt < len(rows) else END_CURSOR,
        "count": len(page),
        "data": page,
    }


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


class Clob:
    """Route handlers of the CLOB server; state lives on the `Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.keys: dict[str, ApiKey] = {}
        self.keys_by_addr_nonce: dict[tuple[str, int], ApiKey] = {}
        self.heartbeats: dict[str, tuple[str, asyncio.TimerHandle | None]] = {}
        self.funders: dict[str, str] = {}  # api key -> funder seen on its orders
        # Every order-carrying request body, as received (the last RECEIVED_MAX of them).
        self.received: deque[tuple[str, bytes]] = deque(maxlen=RECEIVED_MAX)
        self.received_total = 0

    # app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self.sim.log_middleware("clob"), self._faults_mw, self._order_errors_mw]
        )
        r = app.router
        r.add_get("/", self.ok)
        r.add_get("/ok", self.ok)
        r.add_get("/time", self.time)
        r.add_get("/version", self.version)
        r.add_post("/auth/api-key", self.create_api_key)
        r.add_get("/auth/derive-api-key", self.derive_api_key)
        r.add_get("/auth/api-keys", self.list_api_keys)
        r.add_get("/book", self.book)
        r.add_post("/books", self.books)
        r.add_get("/tick-size", self.tick_size)
        r.add_get("/neg-risk", self.neg_risk)
        r.add_get("/fee-rate", self.fee_rate)
        r.add_get("/midpoint", self.midpoint)
        r.add_get("/price", self.price)
        r.add_get("/spread", self.spread)
        r.add_get("/last-trade-price", self.last_trade_price)
        r.add_get("/markets-by-token/{token}", self.markets_by_token)
        r.add_get("/clob-markets/{cid}", self.clob_market)
        r.add_get("/markets/{cid}", self.market)
        r.add_post("/order", self.post_order)
        r.add_post("/orders", self.post_orders)
        r.add_delete("/order", self.cancel_order)
        r.add_delete("/orders", self.cancel_orders)
        r.add_delete("/cancel-all", self.cancel_all)
        r.add_delete("/cancel-market-orders", self.cancel_market_orders)
        r.add_get("/data/orders", self.data_orders)
        r.add_get("/data/order/{oid}", self.data_order)
        r.add_get("/data/trades", self.data_trades)
        r.add_get("/balance-allowance", self.balance_allowance)
        r.add_get("/balance-allowance/update", self.balance_allowance_update)
        r.add_post("/v1/heartbeats", self.heartbeat)
        r.add_post("/_sim/fund", self.admin_fund)
        r.add_get("/_sim/ledger", self.admin_ledger)
        r.add_get("/_sim/received_orders", self.admin_received_orders)
        r.add_post("/_sim/fault", self.admin_fault)
        r.add_post("/_sim/seed_orders", self.admin_seed_orders)
        r.add_post("/_sim/market", self.admin_market)
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
        faults = self.sim.faults.registry
        route = f"{request.method} {path}"
        raw = b""
        if request.method == "POST" and path in ORDER_POSTS:
            raw = await request.read()  # aiohttp keeps it for the handler
            self.received.append((path, raw))
            self.received_total += 1
            failing = faults.failing_after_accept
            if failing:
                for oid in self._order_ids(raw):
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
        accepted = faults.take(faults.http, request.method, path, {"accept_then_status"})
        late = faults.take(faults.http, request.method, path, {"late_response"})
        resp = await handler(request)
        if accepted is not None:
            # The engine has acted on the order; the answer is lost behind a 5xx, and so is the
            # answer to every re-send of the same order.
            for oid in self._order_ids(raw):
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

    # what reached the venue ---------------------------------------------------------------
    def _order_hash(self, o: Json, m: SimMarket) -> str:
        """The order's EIP-712 hash on its market's exchange: the venue's order id."""
        contract = crypto.CHAIN_CONTRACTS[self.sim.chain_id][1 if m.neg_risk else 0]
        return (
            "0x" + crypto.order_digest(self.sim.domain(contract), crypto.order_struct_hash(o)).hex()
        )

    def _read_order(self, item: object) -> tuple[str | None, str | None]:
        """(owner, order id) of one order body; None for what cannot be read."""
        if not isinstance(item, dict):
            return None, None
        owner = item.get("owner")
        o = item.get("order")
        m = self.sim.market_of_token(str(o.get("tokenId", ""))) if isinstance(o, dict) else None
        if not isinstance(o, dict) or m is None:
            return owner if isinstance(owner, str) else None, None
        try:
            oid: str | None = self._order_hash(o, m)
        except (ValueError, KeyError, TypeError, InvalidOperation, crypto.SignatureError):
            oid = None
        return owner if isinstance(owner, str) else None, oid

    def _order_ids(self, raw: bytes) -> list[str]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        items = body if isinstance(body, list) else [body]
        return [oid for oid in (self._read_order(x)[1] for x in items) if oid is not None]

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
                    owner, oid = self._read_order(item)
                    out.append(ReceivedOrder(path, orjson.dumps(item), owner, oid))
            else:
                owner, oid = self._read_order(body)
                out.append(ReceivedOrder(path, raw, owner, oid))
        return out

    # auth --------------------------------------------------------------------------------
    def _l1(self, request: web.Request) -> tuple[str, int]:
        h = request.headers
        addr, sig, ts = h.get("POLY_ADDRESS"), h.get("POLY_SIGNATURE"), h.get("POLY_TIMESTAMP")
        nonce_s = h.get("POLY_NONCE", "0")
        if not addr or not sig or not ts:
            raise OrderError("Invalid L1 Request headers", 401)
        try:
            nonce = int(nonce_s)
            digest = crypto.clob_auth_digest(addr, ts, nonce, self.sim.chain_id)
            signer = crypto.recover(digest, sig)
        except (ValueError, crypto.SignatureError) as e:
            raise OrderError("Invalid L1 Request headers", 401) from e
        if signer != addr.lower():
            raise OrderError("Invalid L1 Request headers", 401)
        return addr, nonce

    def _derive(self, address: str, nonce: int) -> ApiKey:
        seed = hashlib.sha256(f"{self.sim.seed}:{address.lower()}:{nonce}".encode()).digest()
        h = seed.hex()
        key = f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        secret = base64.urlsafe_b64encode(hashlib.sha256(seed + b"secret").digest()).decode()
        passphrase = hashlib.sha256(seed + b"pass").hexdigest()
        return ApiKey(key, secret, passphrase, address, nonce)

    def _l2(self, request: web.Request, body: str) -> ApiKey:
        h = request.headers
        key = self.keys.get(h.get("POLY_API_KEY", ""))
        if (
            key is None
            or h.get("POLY_PASSPHRASE") != key.passphrase
            or (h.get("POLY_ADDRESS") or "").lower() != key.address.lower()
        ):
            raise OrderError("Unauthorized/Invalid api key", 401)
        ts, sig = h.get("POLY_TIMESTAMP", ""), h.get("POLY_SIGNATURE", "")
        try:
            ok = crypto.verify_hmac(key.secret, ts, request.method, request.path, body, sig)
        except (ValueError, binascii.Error):
            ok = False
        if not ok:
            raise OrderError("Unauthorized/Invalid api key", 401)
        return key

    async def _auth(self, request: web.Request) -> tuple[ApiKey, str]:
        raw = await request.read()
        body = raw.decode("utf-8", errors="replace")
        return self._l2(request, body), body

    # public ------------------------------------------------------------------------------
    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text='"OK"', content_type="application/json")

    async def time(self, request: web.Request) -> web.Response:
        return web.Response(text=str(int(time.time())), content_type="application/json")

    async def version(self, request: web.Request) -> web.Response:
        return json_response({"version": 2})

    async def create_api_key(self, request: web.Request) -> web.Response:
        addr, nonce = self._l1(request)
        if (addr.lower(), nonce) in self.keys_by_addr_nonce:
            return error("Could not create api key", 400)
        key = self._derive(addr, nonce)
        self.keys[key.api_key] = key
        self.keys_by_addr_nonce[(addr.lower(), nonce)] = key
        return json_response(
            {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}
        )

    async def derive_api_key(self, request: web.Request) -> web.Response:
        addr, nonce = self._l1(request)
        key = self.keys_by_addr_nonce.get((addr.lower(), nonce))
        if key is None:
            return error("Could not derive api key!", 400)
        return json_response(
            {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}
        )

    async def list_api_keys(self, request: web.Request) -> web.Response:
        key, _ = await self._auth(request)
        mine = [k.api_key for k in self.keys.values() if k.address.lower() == key.address.lower()]
        return json_response({"apiKeys": mine})

    def _market_for(self, request: web.Request) -> tuple[str, SimMarket]:
        token = request.query.get("token_id", "")
        if not token or not token.isdigit():
            raise OrderError("Invalid token id", 400)
        m = self.sim.market_of_token(token)
        if m is None:
            raise OrderError("No orderbook exists for the requested token id", 404)
        return token, m

    async def book(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        return json_response(self.sim.book_summary(token))

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
            if self.sim.market_of_token(token) is None:
                return error("No orderbook exists for the requested token id", 404)
            out.append(self.sim.book_summary(token))
        return json_response(out)

    def _param_market(self, request: web.Request, not_found: str) -> tuple[str, SimMarket]:
        token = request.query.get("token_id", "")
        if not token or not token.isdigit():
            raise OrderError("Invalid token id", 400)
        m = self.sim.market_of_token(token)
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
        self._param_market(request, "fee rate not found for market")
        return json_response({"base_fee": 0})

    async def midpoint(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.sim.engine.books[token]
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
        b = self.sim.engine.books[token]
        p = b.best_bid() if side == "BUY" else b.best_ask()
        if p is None:
            return error("No orderbook exists for the requested token id", 404)
        return json_response({"price": fmt(p)})

    async def spread(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.sim.engine.books[token]
        bb, ba = b.best_bid(), b.best_ask()
        if bb is None or ba is None:
            return error("No orderbook exists for the requested token id", 404)
        return json_response({"spread": fmt(ba - bb)})

    async def last_trade_price(self, request: web.Request) -> web.Response:
        token, _ = self._market_for(request)
        b = self.sim.engine.books[token]
        p = b.last_trade_price
        return json_response({"price": fmt(p) if p is not None else "0.5", "side": ""})

    async def markets_by_token(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        m = self.sim.market_of_token(token)
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
        m = self.sim.markets_by_cid.get(request.match_info["cid"])
        if m is None:
            return error("market not found", 404)
        return json_response(m.clob_market_dict())

    async def market(self, request: web.Request) -> web.Response:
        m = self.sim.markets_by_cid.get(request.match_info["cid"])
        if m is None:
            return error("market not found", 404)
        return json_response(self.sim.clob_market_row(m))

    # orders ------------------------------------------------------------------------------
    def _build_order(self, body: object, key: ApiKey) -> tuple[Order, Json, SimMarket]:
        if not isinstance(body, dict) or not isinstance(body.get("order"), dict):
            raise OrderError("Invalid order payload")
        o = body["order"]
        if any(f in o for f in V1_FIELDS):
            raise OrderError("order_version_mismatch")
        if any(f not in o for f in V2_FIELDS):
            raise OrderError("Invalid order payload")
        if body.get("owner") != key.api_key:
            raise OrderError("the order owner has to be the owner of the API KEY")
        otype = body.get("orderType", "GTC")
        if otype not in ORDER_TYPES:
            raise OrderError("Invalid order payload")
        side = o["side"]
        if side not in ("BUY", "SELL"):
            raise OrderError("Invalid order payload")
        token = str(o["tokenId"])
        m = self.sim.market_of_token(token)
        if m is None:
            raise OrderError("Invalid order payload")
        try:
            sig_type = int(o["signatureType"])
            maker_amt = Decimal(int(str(o["makerAmount"]))) / MICRO
            taker_amt = Decimal(int(str(o["takerAmount"]))) / MICRO
            expiration = int(str(o.get("expiration") or "0"))
            contract = crypto.CHAIN_CONTRACTS[self.sim.chain_id][1 if m.neg_risk else 0]
            dom = self.sim.domain(contract)
            struct = crypto.order_struct_hash(o)
        except (ValueError, KeyError, InvalidOperation, crypto.SignatureError) as e:
            raise OrderError("Invalid order payload") from e
        order_id = "0x" + crypto.order_digest(dom, struct).hex()  # as `_order_hash`
        signer, maker = str(o["signer"]), str(o["maker"])
        key_addr = key.address.lower()
        try:
            if sig_type == 3:
                if signer.lower() != maker.lower():
                    raise OrderError("invalid signature")
                digest = crypto.poly1271_digest(dom, struct, self.sim.chain_id, signer)
                if crypto.recover(digest, str(o["signature"])[:132]) != key_addr:
                    raise OrderError("invalid signature")
            elif sig_type in (0, 1, 2):
                if signer.lower() != key_addr:
                    raise OrderError(
                        "the order signer address has to be the address of the API KEY"
                    )
                if sig_type == 0 and maker.lower() != signer.lower():
                    raise OrderError("invalid signature")
                digest = crypto.order_digest(dom, struct)
                if crypto.recover(digest, str(o["signature"])) != key_addr:
                    raise OrderError("invalid signature")
            else:
                raise OrderError("Invalid order payload")
        except crypto.SignatureError as e:
            raise OrderError("invalid signature") from e
        if maker.lower() != key_addr:
            self.funders[key.api_key] = maker
        if maker_amt <= 0 or taker_amt <= 0:
            raise OrderError("Invalid order payload")
        post_only = bool(body.get("postOnly", False))
        is_market = otype in ("FOK", "FAK")
        tick = self.sim.tick_of(token)
        amt_dec = decimals(tick) + 2
        if side == "BUY":
            dollars, shares = maker_amt, taker_amt
        else:
            shares, dollars = maker_amt, taker_amt
        md, td = decimals(maker_amt), decimals(taker_amt)
        if is_market:
            if md > 2 or td > 4:
                word = "buy" if side == "BUY" else "sell"
                raise OrderError(
                    f"invalid amounts, the market {word} orders maker amount supports a max "
                    "accuracy of 2 decimals, taker amount a max of 4 decimals"
                )
        elif side == "BUY" and (md > amt_dec or td > 2):
            raise OrderError(
                f"invalid amounts, the buy orders maker amount supports a max accuracy of "
                f"{amt_dec} decimals, taker amount a max of 2 decimals"
            )
        elif side == "SELL" and (md > 2 or td > amt_dec):
            raise OrderError(
                f"invalid amounts, the sell orders maker amount supports a max accuracy of "
                f"2 decimals, taker amount a max of {amt_dec} decimals"
            )
        price = dollars / shares
        if not is_market:
            if price % tick != 0:
                if decimals(price) <= 4:
                    raise OrderError(
                        f"order {order_id} is invalid. Price ({fmt(price)}) breaks minimum tick "
                        f"size rule: {fmt(tick)}"
                    )
                rounded = price.quantize(tick)
                which = "maker" if side == "BUY" else "taker"
                raise OrderError(
                    f"invalid amounts, the {which} amount for a ${fmt(rounded)} order of size "
                    f"{fmt(shares)} should be '{fmt(rounded * shares)}' but the value submited "
                    f"is '{fmt(dollars)}'"
                )
            if price < tick or price > 1 - tick:
                raise OrderError(
                    f"order {order_id} is invalid. Price ({fmt(price)}) breaks minimum tick size "
                    f"rule: {fmt(tick)}"
                )
            if shares < m.min_size:
                raise OrderError(
                    f"order {order_id} is invalid. Size ({fmt(shares)}) lower than the minimum: "
                    f"{fmt(m.min_size)}"
                )
        else:
            if price >= 1 or price <= 0:
                raise OrderError(
                    f"order {order_id} is invalid. Price ({fmt(price)}) breaks minimum tick size "
                    f"rule: {fmt(tick)}"
                )
            if side == "BUY" and dollars < 1:
                raise OrderError(
                    f"invalid amount for a marketable BUY order (${fmt(dollars)}), min size: $1"
                )
        now = int(time.time())
        if otype == "GTD" and expiration <= now + GTD_SECURITY_S:
            raise OrderError("invalid expiration")
        order = Order(
            id=order_id,
            owner=key.api_key,
            maker=maker,
            signer=signer,
            token_id=token,
            market=m.condition_id,
            outcome=m.outcome_of(token),
            side=side,
            price=price,
            original_size=shares,
            order_type=otype,
            expiration=expiration if otype == "GTD" else 0,
            created_at=now,
            post_only=post_only,
            maker_amount=dollars,
        )
        return order, body, m

    def _execute(self, order: Order, m: SimMarket) -> Json:
        """Run the venue-state checks and the match. Raises OrderError on refusal."""
        eng = self.sim.engine
        if not m.accepting_orders or m.closed:
            raise OrderError("the market is not yet ready to process new orders")
        if order.id in eng.orders:
            raise OrderError(f"order {order.id} is invalid. Duplicated.")
        if order.post_only:
            if order.order_type not in ("GTC", "GTD"):
                raise OrderError(
                    "invalid post-only order: only GTC and GTD orders can be post-only"
                )
            if eng.crosses(order.side, order.token_id, order.price):
                raise OrderError("invalid post-only order: order crosses book")
        if order.side == "BUY":
            if order.maker_amount > eng.available_collateral(order.maker):
                raise OrderError("not enough balance / allowance")
        elif order.original_size > eng.available_shares(order.maker, order.token_id):
            raise OrderError("not enough balance / allowance")
        if order.order_type in ("FOK", "FAK"):
            got = eng.fillable(order.side, order.token_id, order.price, order.original_size)
            if order.order_type == "FOK" and got < order.original_size:
                msg = "order couldn't be fully filled. FOK orders are fully filled or killed."
                self.sim.sink.killed(order, msg)
                raise OrderError(msg)
            if order.order_type == "FAK" and got <= 0:
                raise OrderError(
                    "no orders found to match with FAK order. FAK orders are partially filled "
                    "or killed if no match is found."
                )
        trades = self.sim.submit(order)
        if not trades:
            return {
                "success": True,
                "errorMsg": "",
                "orderID": order.id,
                "status": "live",
                "makingAmount": "",
                "takingAmount": "",
            }
        shares = sum((t.size for t in trades), ZERO)
        cash = sum((t.size * t.price for t in trades), ZERO)
        making, taking = (cash, shares) if order.side == "BUY" else (shares, cash)
        return {
            "success": True,
            "errorMsg": "",
            "orderID": order.id,
            "status": "matched",
            "makingAmount": fmt(making),
            "takingAmount": fmt(taking),
            "transactionsHashes": [trades[0].transaction_hash],
            "tradeIDs": [t.id for t in trades],
        }

    def _post_only_window(self) -> float | None:
        phase = self.sim.faults.registry.restart_phase()
        if phase is not None and phase[0] == "post_only":
            return phase[1]
        return None

    async def post_order(self, request: web.Request) -> web.Response:
        key, raw = await self._auth(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error("Invalid order payload")
        window = self._post_only_window()
        if window is not None and not (isinstance(body, dict) and body.get("postOnly")):
            secs = max(1, int(window + 0.999))
            return json_response(
                {"error": POST_ONLY_MODE, "code": "post_only_mode", "retry_after_seconds": secs},
                503,
                {"Retry-After": str(secs)},
            )
        order, _, m = self._build_order(body, key)
        result = self._execute(order, m)
        return json_response(result)

    async def post_orders(self, request: web.Request) -> web.Response:
        key, raw = await self._auth(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error("Invalid order payload")
        if not isinstance(body, list):
            return error("Invalid order payload")
        if len(body) > MAX_BATCH:
            return error(f"Too many orders in payload: {len(body)}, max allowed: {MAX_BATCH}")
        window = self._post_only_window()
        out: list[Json] = []
        for item in body:
            if window is not None and not (isinstance(item, dict) and item.get("postOnly")):
                out.append(
                    {
                        "success": True,
                        "errorMsg": POST_ONLY_MODE,
                        "orderID": "",
                        "status": "",
                        "makingAmount": "",
                        "takingAmount": "",
                    }
                )
                continue
            order_id = ""
            try:
                order, _, m = self._build_order(item, key)
                order_id = order.id
                out.append(self._execute(order, m))
            except OrderError as e:
                if e.message == "order_version_mismatch":
                    return error(e.message, e.status)
                out.append(
                    {
                        "success": False,
                        "errorMsg": e.message,
                        "orderID": order_id,
                        "status": "",
                        "makingAmount": "",
                        "takingAmount": "",
                    }
                )
        return json_response(out)

    def _cancel_many(self, key: ApiKey, ids: list[str]) -> Json:
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for oid in ids:
            o = self.sim.engine.orders.get(oid)
            if o is None or o.owner != key.api_key:
                not_canceled[oid] = "order not found"
            elif o.status == "CANCELED":
                not_canceled[oid] = "order already canceled"
            elif o.status != "LIVE":
                not_canceled[oid] = "order can't be canceled, already matched"
            else:
                self.sim.engine.cancel(oid)
                canceled.append(oid)
        return {"canceled": canceled, "not_canceled": not_canceled}

    async def cancel_order(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self._auth(request)
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return error("Invalid orderID")
        oid = body.get("orderID") if isinstance(body, dict) else None
        if not isinstance(oid, str) or not oid:
            return error("Invalid orderID")
        return json_response(self._cancel_many(key, [oid]))

    async def cancel_orders(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self._auth(request)
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        if not isinstance(body, list) or not all(isinstance(x, str) for x in body):
            return error("Invalid payload")
        if len(body) > MAX_CANCEL:
            return error(f"Too many orders in payload, max allowed: {MAX_CANCEL}")
        return json_response(self._cancel_many(key, body))

    async def cancel_all(self, request: web.Request) -> web.Response:
        key, _ = await self._auth(request)
        ids = [o.id for o in self.sim.engine.open_orders(key.api_key)]
        return json_response(self._cancel_many(key, ids))

    async def cancel_market_orders(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self._auth(request)
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        if not isinstance(body, dict):
            return error("Invalid payload")
        market, asset = body.get("market") or "", body.get("asset_id") or ""
        ids = [
            o.id
            for o in self.sim.engine.open_orders(key.api_key)
            if (not market or o.market == market) and (not asset or o.token_id == asset)
        ]
        return json_response(self._cancel_many(key, ids))

    async def data_orders(self, request: web.Request) -> web.Response:
        key, _ = await self._auth(request)
        q = request.query
        rows = [
            o.rest_dict()
            for o in self.sim.engine.open_orders(key.api_key)
            if (not q.get("id") or o.id == q["id"])
            and (not q.get("market") or o.market == q["market"])
            and (not q.get("asset_id") or o.token_id == q["asset_id"])
        ]
        return json_response(paginate(rows, q.get("next_cursor"), self.sim.page_size))

    async def data_order(self, request: web.Request) -> web.Response:
        """One order by id. An unknown id answers 200 with `null` (UNCERTAIN in production)."""
        key, _ = await self._auth(request)
        o = self.sim.engine.orders.get(request.match_info["oid"])
        if o is None or o.owner != key.api_key:
            return json_response(None)
        return json_response(o.rest_dict())

    async def data_trades(self, request: web.Request) -> web.Response:
        key, _ = await self._auth(request)
        q = request.query
        owner = key.api_key
        after = int(q["after"]) if q.get("after", "").isdigit() else None
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        rows: list[Json] = []
        for t in reversed(self.sim.engine.trades):
            if t.taker_order.owner != owner and t.maker_order.owner != owner:
                continue
            if q.get("id") and t.id != q["id"]:
                continue
            if q.get("market") and t.taker_order.market != q["market"]:
                continue
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
        return json_response(paginate(rows, q.get("next_cursor"), self.sim.page_size))

    def _funder(self, key: ApiKey, sig_type: str | None) -> str:
        if sig_type not in (None, "", "0", "-1"):
            return self.funders.get(key.api_key, key.address)
        return key.address

    async def balance_allowance(self, request: web.Request) -> web.Response:
        key, _ = await self._auth(request)
        q = request.query
        addr = self._funder(key, q.get("signature_type"))
        eng = self.sim.engine
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
        contracts = crypto.CHAIN_CONTRACTS[self.sim.chain_id]
        unlimited = str((1 << 256) - 1)
        return json_response(
            {
                "balance": str(int(bal * MICRO)),
                "allowances": {contracts[0]: unlimited, contracts[1]: unlimited},
            }
        )

    async def balance_allowance_update(self, request: web.Request) -> web.Response:
        await self._auth(request)
        return web.Response(text="")

    async def heartbeat(self, request: web.Request) -> web.Response:
        """Heartbeats: once started, a lapse cancels every open order of the API key."""
        try:
            key, raw = await self._auth(request)
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        sent = body.get("heartbeat_id") if isinstance(body, dict) else None
        current = self.heartbeats.get(key.api_key)
        if current is not None and sent and sent != current[0]:
            return error("Invalid heartbeat id", 400, heartbeat_id=current[0])
        if current is not None and current[1] is not None:
            current[1].cancel()
        new_id = self.sim.engine.new_uuid()
        handle = asyncio.get_running_loop().call_later(
            self.sim.heartbeat_timeout_s, self._heartbeat_lapsed, key.api_key
        )
        self.heartbeats[key.api_key] = (new_id, handle)
        return json_response({"heartbeat_id": new_id})

    def _heartbeat_lapsed(self, api_key: str) -> None:
        self.heartbeats.pop(api_key, None)
        for o in list(self.sim.engine.open_orders(api_key)):
            self.sim.engine.cancel(o.id)

    # admin -------------------------------------------------------------------------------
    async def admin_fund(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            addr = str(body["address"])
            if body.get("token_id"):
                self.sim.fund(
                    addr, token_id=str(body["token_id"]), shares=Decimal(str(body["shares"]))
                )
            if body.get("collateral") is not None:
                self.sim.fund(addr, collateral=Decimal(str(body["collateral"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation, ValueError) as e:
            return error(f"bad fund request: {e}", 400)
        return json_response({"ok": True})

    async def admin_ledger(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.sim.ledger(), default=str), content_type="application/json"
        )

    async def admin_received_orders(self, request: web.Request) -> web.Response:
        """`{"total": n, "orders": [...]}`: what `received_orders()` holds; `total` counts the
        order requests ever received (above the kept ones' when the oldest were dropped)."""
        return json_response(
            {
                "total": self.received_total,
                "kept": len(self.received),
                "orders": [r.as_json() for r in self.received_orders()],
            }
        )

    async def admin_fault(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("fault must be an object")
            if body.get("kind") == "clear":
                self.sim.faults.clear()
            else:
                await self.sim.apply_fault(body)
        except (orjson.JSONDecodeError, ValueError, TypeError) as e:
            return error(str(e), 400)
        return json_response({"ok": True})

    async def admin_market(self, request: web.Request) -> web.Response:
        """List a market: `{"question","slug","tick_size"?,"min_size"?,"neg_risk"?}`."""
        try:
            body = orjson.loads(await request.read())
            m = self.sim.add_market(
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
                self.sim.seed_order(
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
