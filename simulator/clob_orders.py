"""CLOB order routes: V2 order bodies checked (EIP-712 signature against the API key, tick,
size, amounts' precision, balance) and matched; cancels; heartbeats that cancel on a lapse.

Errors use production status codes and `{"error": "..."}` texts.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from simulator.clob_auth import Auth
from simulator.clob_http import MICRO, Json, decimals, error, json_response
from simulator.crypto import (
    CHAIN_CONTRACTS,
    SignatureError,
    order_digest,
    order_struct_hash,
    poly1271_digest,
    recover,
)
from simulator.engine import Order, OrderError, fmt
from simulator.faults import POST_ONLY_MODE
from simulator.venue import ApiKey, Venue

if TYPE_CHECKING:
    from simulator.market import SimMarket

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
DELAY_REFUSED = "order is delayed and can't be canceled"
# Whether a delayed order can be canceled is undocumented (one news report says no): refused here.


def delayed_answer(order_id: str) -> Json:
    """The answer to a marketable order on a market with a taker delay.

    `status: "delayed"` is documented (https://docs.polymarket.com/trading/orders/create;
    NautilusTrader `PolymarketOrderStatus::Delayed`, "marketable but subject to matching
    delay"). The amounts in such an answer are undocumented: empty amounts (nothing matched
    yet) are our assumption, kept here alone so it is easy to change.
    """
    return {
        "success": True,
        "errorMsg": "",
        "orderID": order_id,
        "status": "delayed",
        "makingAmount": "",
        "takingAmount": "",
    }


MAX_CANCEL = 1000
GTD_SECURITY_S = 60


class Orders:
    """Route handlers that place and cancel orders and keep heartbeats."""

    def __init__(self, venue: Venue, auth: Auth) -> None:
        self.venue = venue
        self.auth = auth

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
        m = self.venue.market_of_token(token)
        if m is None:
            raise OrderError("Invalid order payload")
        try:
            sig_type = int(o["signatureType"])
            maker_amt = Decimal(int(str(o["makerAmount"]))) / MICRO
            taker_amt = Decimal(int(str(o["takerAmount"]))) / MICRO
            expiration = int(str(o.get("expiration") or "0"))
            contract = CHAIN_CONTRACTS[self.venue.chain_id][1 if m.neg_risk else 0]
            dom = self.venue.domain(contract)
            struct = order_struct_hash(o)
        except (ValueError, KeyError, InvalidOperation, SignatureError) as e:
            raise OrderError("Invalid order payload") from e
        order_id = "0x" + order_digest(dom, struct).hex()  # as `_order_hash`
        signer, maker = str(o["signer"]), str(o["maker"])
        key_addr = key.address.lower()
        try:
            if sig_type == 3:
                if signer.lower() != maker.lower():
                    raise OrderError("invalid signature")
                digest = poly1271_digest(dom, struct, self.venue.chain_id, signer)
                if recover(digest, str(o["signature"])[:132]) != key_addr:
                    raise OrderError("invalid signature")
            elif sig_type in (0, 1, 2):
                if signer.lower() != key_addr:
                    raise OrderError(
                        "the order signer address has to be the address of the API KEY"
                    )
                if sig_type == 0 and maker.lower() != signer.lower():
                    raise OrderError("invalid signature")
                digest = order_digest(dom, struct)
                if recover(digest, str(o["signature"])) != key_addr:
                    raise OrderError("invalid signature")
            else:
                raise OrderError("Invalid order payload")
        except SignatureError as e:
            raise OrderError("invalid signature") from e
        if maker.lower() != key_addr:
            self.venue.funders[key.api_key] = maker
        if maker_amt <= 0 or taker_amt <= 0:
            raise OrderError("Invalid order payload")
        post_only = bool(body.get("postOnly", False))
        is_market = otype in ("FOK", "FAK")
        tick = self.venue.tick_of(token)
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
        eng = self.venue.engine
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
        self._check_balance(order)
        if m.taker_delay_s > 0 and eng.crosses(order.side, order.token_id, order.price):
            return self._delay(order, m.taker_delay_s)
        shares, _cash, _fee = eng.fillable(order)
        if order.order_type in ("FOK", "FAK"):
            if order.order_type == "FOK" and shares < order.original_size:
                msg = "order couldn't be fully filled. FOK orders are fully filled or killed."
                self.venue.sink.killed(order, msg)
                raise OrderError(msg)
            if order.order_type == "FAK" and shares <= 0:
                raise OrderError(
                    "no orders found to match with FAK order. FAK orders are partially filled "
                    "or killed if no match is found."
                )
        trades = self.venue.submit(order)
        if not trades:
            return {
                "success": True,
                "errorMsg": "",
                "orderID": order.id,
                "status": "live",
                "makingAmount": "",
                "takingAmount": "",
            }
        # The totals actually exchanged, fee excluded: a BUY's price improvement shows as
        # `takingAmount` above the order's size (py-clob-client-v2 issue #89).
        making, taking = (
            (trades[0].cash, trades[0].size)
            if order.side == "BUY"
            else (trades[0].size, trades[0].cash)
        )
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

    def _check_balance(self, order: Order) -> None:
        """A BUY needs its pUSD plus the taker fee of what it would match now (makers pay none);
        a SELL its shares. The one documented refusal is this 400
        (https://docs.polymarket.com/resources/error-codes; docs/venue-mechanics.md §1)."""
        eng = self.venue.engine
        if order.side == "BUY":
            _shares, _cash, fee = eng.fillable(order)
            if order.maker_amount + fee > eng.available_collateral(order.maker):
                raise OrderError("not enough balance / allowance")
        elif order.original_size > eng.available_shares(order.maker, order.token_id):
            raise OrderError("not enough balance / allowance")

    def _delay(self, order: Order, delay_s: float) -> Json:
        """Hold a marketable order for the market's taker delay, then match it against the book
        as it is then (`_run_delayed`).

        Source: the compact market record's `itode` ("taker order delay enabled") and `sd`
        ("seconds delay"), TS client `MarketDetails` in
        https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts; the outcome
        arrives later as user-feed trades and order events, FOK/FAK remainders canceled
        (docs/venue-mechanics.md §5). Meanwhile the order is on REST as `DELAYED` and its funds
        are held, so they cannot back another order.
        """
        eng = self.venue.engine
        order.status = "DELAYED"
        eng.orders[order.id] = order
        eng._reserve(order, order.left)
        self.venue._later(delay_s, self._run_delayed, order.id)
        return delayed_answer(order.id)

    def _run_delayed(self, order_id: str) -> None:
        eng = self.venue.engine
        o = eng.orders.get(order_id)
        if o is None or o.status != "DELAYED":
            return
        eng._reserve(o, -o.left)
        m = self.venue.market_of_token(o.token_id)
        why = ""
        if m is None or not m.accepting_orders or m.closed:
            why = "the market is not yet ready to process new orders"
        else:
            try:
                self._check_balance(o)
            except OrderError as e:
                why = e.message
        got, _cash, _fee = eng.fillable(o)
        if not why and o.order_type == "FOK" and got < o.original_size:
            o.status = "CANCELED"
            self.venue.sink.killed(
                o, "order couldn't be fully filled. FOK orders are fully filled or killed."
            )
            return
        if not why and o.order_type == "FAK" and got <= 0:
            why = "no orders found to match with FAK order"
        if why:
            o.status = "CANCELED"
            self.venue.sink.order_event(o, "CANCELLATION", "CANCELED")
            return
        o.status = "LIVE"
        self.venue.submit(o)  # the book as it is now; FAK remainder canceled, GTC rests

    def _post_only_window(self) -> float | None:
        phase = self.venue.faults.registry.restart_phase()
        if phase is not None and phase[0] == "post_only":
            return phase[1]
        return None

    async def post_order(self, request: web.Request) -> web.Response:
        key, raw = await self.auth.auth(request)
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
        key, raw = await self.auth.auth(request)
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
            o = self.venue.engine.orders.get(oid)
            if o is None or o.owner != key.api_key:
                not_canceled[oid] = "order not found"
            elif o.status == "CANCELED":
                not_canceled[oid] = "order already canceled"
            elif o.status == "DELAYED":
                not_canceled[oid] = DELAY_REFUSED
            elif o.status != "LIVE":
                not_canceled[oid] = "order can't be canceled, already matched"
            else:
                self.venue.engine.cancel(oid)
                canceled.append(oid)
        return {"canceled": canceled, "not_canceled": not_canceled}

    async def cancel_order(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self.auth.auth(request)
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return error("Invalid orderID")
        oid = body.get("orderID") if isinstance(body, dict) else None
        if not isinstance(oid, str) or not oid:
            return error("Invalid orderID")
        return json_response(self._cancel_many(key, [oid]))

    async def cancel_orders(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self.auth.auth(request)
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        if not isinstance(body, list) or not all(isinstance(x, str) for x in body):
            return error("Invalid payload")
        if len(body) > MAX_CANCEL:
            return error(f"Too many orders in payload, max allowed: {MAX_CANCEL}")
        return json_response(self._cancel_many(key, body))

    async def cancel_all(self, request: web.Request) -> web.Response:
        key, _ = await self.auth.auth(request)
        ids = [o.id for o in self.venue.engine.open_orders(key.api_key)]
        return json_response(self._cancel_many(key, ids))

    async def cancel_market_orders(self, request: web.Request) -> web.Response:
        try:
            key, raw = await self.auth.auth(request)
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        if not isinstance(body, dict):
            return error("Invalid payload")
        market, asset = body.get("market") or "", body.get("asset_id") or ""
        ids = [
            o.id
            for o in self.venue.engine.open_orders(key.api_key)
            if (not market or o.market == market) and (not asset or o.token_id == asset)
        ]
        return json_response(self._cancel_many(key, ids))

    async def heartbeat(self, request: web.Request) -> web.Response:
        """`POST /v1/heartbeats`: the order dead-man switch of one API key, with chained ids.

        Sources: `post_heartbeat` in py-clob-client-v2 (`py_clob_client_v2/client.py`: body
        `{"heartbeat_id": id}`, `""` the first time; the answer's `heartbeat_id` is sent next);
        `OrderHeartbeat` / `OrderHeartbeatMismatchResponse` in Polymarket/py-sdk
        (`src/polymarket/models/clob/order_heartbeats.py`: a wrong id is answered 400
        `{"error_msg": "Invalid Heartbeat ID", "heartbeat_id": <expected>}`); the older
        `{"error": ..., "heartbeat_id": ...}` shape of Polymarket/py-clob-client
        `examples/post_heartbeat.py` is served when `venue.heartbeat_legacy_error` is set; the
        10 s deadline per API key is Polymarket/ts-sdk `actions/order-heartbeats.ts` ("missing
        the ten-second deadline triggers cancellation of this API key's orders").

        The switch arms on the first valid heartbeat (undocumented; the feature is opt-in). A
        heartbeat of `""` restarts the chain. Without a valid heartbeat for
        `venue.heartbeat_timeout_s`, every resting order of the key is canceled
        (`_heartbeat_lapsed`).
        """
        try:
            key, raw = await self.auth.auth(request)
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return error("Invalid payload")
        sent = body.get("heartbeat_id") if isinstance(body, dict) else None
        if sent is not None and not isinstance(sent, str):
            return error("Invalid payload")
        current = self.venue.heartbeats.get(key.api_key)
        if current is not None and sent and sent != current[0]:
            text = "Invalid Heartbeat ID"
            if self.venue.heartbeat_legacy_error:
                return json_response({"error": text, "heartbeat_id": current[0]}, 400)
            return json_response({"error_msg": text, "heartbeat_id": current[0]}, 400)
        new_id = self.venue.engine.new_uuid()
        self._arm(key.api_key, new_id)
        return json_response({"heartbeat_id": new_id})

    async def legacy_heartbeat(self, request: web.Request) -> web.Response:
        """`POST /heartbeats` with no body: `{"status": "ok"}` (the only variant in the API
        reference, https://docs.polymarket.com/api-reference/trade/send-heartbeat). It shares the
        key's registration and resets the expected `/v1` id to empty, as the unified SDKs'
        `sendLegacyOrderHeartbeat` describes."""
        key, _ = await self.auth.auth(request)
        self._arm(key.api_key, "")
        return json_response({"status": "ok"})

    def _arm(self, api_key: str, expected_id: str) -> None:
        current = self.venue.heartbeats.get(api_key)
        if current is not None and current[1] is not None:
            current[1].cancel()
        handle = asyncio.get_running_loop().call_later(
            self.venue.heartbeat_timeout_s, self._heartbeat_lapsed, api_key
        )
        self.venue.heartbeats[api_key] = (expected_id, handle)

    def _heartbeat_lapsed(self, api_key: str) -> None:
        """The deadline passed: cancel every resting order of the key. Each gets the usual
        user-feed `order` CANCELLATION event and shows CANCELED on REST (`Engine.cancel`)."""
        self.venue.heartbeats.pop(api_key, None)
        self.venue.heartbeat_lapses += 1
        for o in list(self.venue.engine.open_orders(api_key)):
            self.venue.engine.cancel(o.id)
