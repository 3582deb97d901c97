"""The live broker (`ClobBroker`): prepare (sign once), send, cancel, look up, reconcile reads,
heartbeats and market rules, against the CLOB or the simulator.

* No thread hand-off per order: signing (one keccak digest and one libsecp256k1 call, ~0.1 ms)
  runs on the event loop, cheaper than a round trip through a thread pool (~0.15 ms), two
  signatures per loop iteration at most (`venue.clob.pacing`), and HTTP is `aiohttp` on the
  loop (`AsyncClobHttp`: one session, keep-alive, `http_timeout_s`).
* An order is signed once, in `prepare`, which also computes its EIP-712 hash (the venue's order
  id) locally; `send` posts the same serialized bytes on every attempt (never a new signature).
* The order body is the one the official SDK's `post_order` sends (Polymarket/py-sdk
  `_internal/actions/orders/post.py`), with `deferExec: false` and an explicit `postOnly`;
  `tests/unit/test_sdk_signer_equivalence.py` holds signature, order id and body identical.
* The broker takes the venue's rate-limit bucket for each request before it leaves
  (`limiter`), when given one.
* Vendor errors become `errors` classes (see `venue.clob.translate`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import structlog

from errors import OrderRejected, OutcomeUnknown, TransientError
from execution.fees import FeeSchedule
from execution.market_rules import order_amounts
from execution.ports import (
    Ack,
    BatchItem,
    CancelResult,
    MarketMeta,
    Prepared,
    StoredOrderMismatch,
    VenueOrder,
)
from models import Fill, OrderRequest, Side
from observability.tracing import Tracing
from resilience.rate_limit import RateLimiter
from venue import parse
from venue.clob.auth import ClobIdentity, Credentials, LocalSigner, l2_headers
from venue.clob.contracts import exchanges
from venue.clob.pacing import LoopShare
from venue.clob.signing import (
    BYTES32_ZERO,
    MICRO,
    ORDER_KEYS,
    POLY_1271,
    SIDES,
    Order,
    domain_separator,
    micro,
    new_salt,
    now_ms,
    order_digest,
    order_hash,
    poly_1271_signature,
    serialize,
)
from venue.clob.translate import VenueHttpError, translate
from venue.clob.transport import END_CURSOR, INITIAL_CURSOR, AsyncClobHttp, ClobHttp
from venue.clob.wire import (
    cancel_answer,
    fee_from_clob_market,
    fills_from_trade,
    meta_from_market,
    order_answer,
    venue_order,
    with_fee,
)
from venue.parse import Unreadable

log = structlog.get_logger("venue.clob")

SDK_DEFER_EXEC = False
"""`deferExec` as the SDKs' `post_order` send it by default."""

T = TypeVar("T")


class ClobBroker:
    """A `Broker` that trades on the CLOB (or the simulator): polyd's own order struct, signer
    and HTTP client, on the event loop."""

    name = "clob"

    def __init__(
        self,
        *,
        identity: ClobIdentity,
        host: str,
        http_timeout_s: float = 5.0,
        max_connections: int = 32,
        limiter: RateLimiter | None = None,
        malformed: parse.MalformedLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        self.identity = identity
        self.host = host.rstrip("/")
        self.chain_id = identity.chain_id
        self._signer = identity.signer
        self._creds: Credentials = identity.creds
        self.owner = self._creds.api_key
        self.funder: str = identity.funder
        self.address: str = identity.signer.address
        self.signature_type = identity.signature_type
        ex = exchanges(self.chain_id)
        self._domains = {
            neg: domain_separator(self.chain_id, ex.neg_risk if neg else ex.standard)
            for neg in (False, True)
        }
        # Deposit wallets (POLY_1271) sign for the wallet: the order's signer is the funder.
        self._order_signer = self.funder if self.signature_type == POLY_1271 else self.address
        self._http = AsyncClobHttp(
            self.host, timeout_s=http_timeout_s, max_connections=max_connections
        )
        self._limiter = limiter
        self._malformed = malformed or parse.MalformedLog("rest")
        """Told of every REST row refused for a number out of bounds (`venue.parse`)."""
        self._loop_share = LoopShare(per_tick=2)
        self.heartbeat_id = ""

    # plumbing ---------------------------------------------------------------------------
    async def _budget(self, bucket: str) -> None:
        """Wait for room in the venue's rate-limit `bucket` (no limiter: no wait)."""
        if self._limiter is not None:
            with self._tracing.span("rate_limit_wait", bucket=bucket):
                await self._limiter.acquire(bucket)

    def set_creds(self, *, api_key: str, api_secret: str, api_passphrase: str) -> None:
        """Use new API credentials from the next request on (a rotation; see `wiring.reload`).

        One attribute swap, read once when a request's headers are built: a request signs with
        the old or the new credentials, never a mix. An order signed before the swap carries the
        old key as `owner` in its signed bytes.
        """
        creds = Credentials(api_key, api_secret, api_passphrase)
        self.identity.creds = creds
        self._creds = creds
        self.owner = creds.api_key

    def _request(self, method: str, path: str, body: str | None = None) -> Awaitable[Any]:
        """One L2-authenticated request (run it through `_call`)."""
        headers = l2_headers(self.address, self._creds, method, path, body)
        return self._http.request(method, path, headers=headers, body=body)

    async def _call(
        self,
        bucket: str,
        fn: Callable[[], Awaitable[T]],
        *,
        sends: bool = False,
        order_id: str | None = None,
    ) -> T:
        """Take room in `bucket`, then send `fn()`. For reads (`sends=False`) a lost answer is
        transient."""
        await self._budget(bucket)
        try:
            return await fn()
        except VenueHttpError as e:
            err = translate(e, order_id=order_id)
            if isinstance(err, OutcomeUnknown) and not sends:
                err = TransientError(f"read got no answer: {err}")
            raise err from e

    async def _pages(self, bucket: str, path: str, params: dict[str, Any]) -> list[Any]:
        """Every row of a cursor-paginated L2 read, one bucket token per page. The headers are
        signed once for the whole read, as the SDK does (the HMAC covers the path, no query)."""
        headers = l2_headers(self.address, self._creds, "GET", path)
        rows: list[Any] = []
        cursor = INITIAL_CURSOR
        while cursor != END_CURSOR:
            page, cursor = await self._call(
                bucket, functools.partial(self._http.page, path, headers, params, cursor)
            )
            rows.extend(page)
        return rows

    # signing ----------------------------------------------------------------------------
    def _sign(self, req: OrderRequest, meta: MarketMeta) -> Prepared:
        maker_amt, taker_amt = order_amounts(req)
        order = Order(
            salt=new_salt(),
            maker=self.funder,
            signer=self._order_signer,
            tokenId=req.token_id,
            makerAmount=micro(maker_amt),
            takerAmount=micro(taker_amt),
            side=0 if req.side is Side.BUY else 1,
            signatureType=self.signature_type,
            timestamp=now_ms(),
            metadata=BYTES32_ZERO,
            builder=BYTES32_ZERO,
            expiration=str(req.expiration or 0),
        )
        domain = self._domains[meta.neg_risk]
        digest = order_digest(order, domain)
        if self.signature_type == POLY_1271:
            signature = poly_1271_signature(self._signer, order, domain, self.chain_id)
        else:
            signature = self._signer.sign(digest)
        body = {
            "order": order.wire(signature),
            "owner": self.owner,
            "orderType": req.order_type.value,
            "deferExec": SDK_DEFER_EXEC,
            "postOnly": req.post_only,
        }
        payload = serialize(body)
        # Journaled for a re-send after a crash: everything but the owner (the API key id).
        stored = {k: v for k, v in body.items() if k != "owner"}
        return Prepared(
            req,
            "0x" + digest.hex(),
            hashlib.sha256(payload).hexdigest(),
            payload,
            serialize(stored).decode(),
        )

    def restore(
        self,
        request: OrderRequest,
        *,
        venue_order_id: str,
        payload_hash: str,
        signed_order: str,
    ) -> Prepared:
        """Rebuild the POST body of a journaled signed order with the current owner.

        Nothing is signed: the bytes are the ones journaled before the crash, checked against
        the journaled order id (EIP-712 hash, either exchange) and payload hash.
        """
        try:
            stored = json.loads(signed_order)
            order = {k: stored["order"][k] for k in ORDER_KEYS}
            extra = {k: stored[k] for k in ("orderType", "deferExec", "postOnly")}
            struct = Order(
                salt=int(order["salt"]),
                maker=str(order["maker"]),
                signer=str(order["signer"]),
                tokenId=str(order["tokenId"]),
                makerAmount=str(order["makerAmount"]),
                takerAmount=str(order["takerAmount"]),
                side=SIDES.index(order["side"]),
                signatureType=int(order["signatureType"]),
                timestamp=str(order["timestamp"]),
                metadata=str(order["metadata"]),
                builder=str(order["builder"]),
                expiration=str(order["expiration"]),
            )
            hashes = {order_hash(struct, d) for d in self._domains.values()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoredOrderMismatch(f"stored order unreadable ({type(e).__name__})") from None
        if len(stored["order"]) != len(ORDER_KEYS) or venue_order_id not in hashes:
            raise StoredOrderMismatch("stored order does not hash to the journaled order id")
        payload = serialize({"order": order, "owner": self.owner, **extra})
        if hashlib.sha256(payload).hexdigest() != payload_hash:
            raise StoredOrderMismatch("rebuilt payload does not match the journaled payload hash")
        return Prepared(request, venue_order_id, payload_hash, payload, signed_order)

    async def prepare(self, request: OrderRequest, meta: MarketMeta) -> Prepared:
        # On the loop: ~0.1 ms of CPU, less than a round trip through a thread pool; a burst
        # takes turns (`LoopShare`) so the loop serves timers and sockets between signatures.
        await self._loop_share.turn()
        return self._sign(request, meta)

    # orders -----------------------------------------------------------------------------
    _ack = staticmethod(order_answer)
    _cancel_result = staticmethod(cancel_answer)

    async def send(self, prepared: Prepared) -> Ack:
        body = prepared.payload.decode()
        res = await self._call(
            "post_order",
            lambda: self._request("POST", "/order", body),
            sends=True,
            order_id=prepared.venue_order_id,
        )
        return order_answer(res, prepared.request, prepared.venue_order_id)

    async def send_batch(self, batch: Sequence[Prepared]) -> list[BatchItem]:
        body = "[" + ",".join(p.payload.decode() for p in batch) + "]"
        res = await self._call(
            "post_orders", lambda: self._request("POST", "/orders", body), sends=True
        )
        if not isinstance(res, list) or len(res) != len(batch):
            raise OutcomeUnknown("batch answer does not list every order")
        out: list[BatchItem] = []
        for p, r in zip(batch, res, strict=True):
            try:
                out.append(order_answer(r, p.request, p.venue_order_id))
            except (OrderRejected, OutcomeUnknown) as e:
                out.append(e)
        return out

    async def cancel(self, venue_order_ids: Sequence[str]) -> CancelResult:
        ids = list(venue_order_ids)
        if not ids:
            return CancelResult()  # nothing to ask the venue
        if len(ids) == 1:
            body = json.dumps({"orderID": ids[0]}, separators=(",", ":"))
            res = await self._call("cancel_order", lambda: self._request("DELETE", "/order", body))
        else:
            body = json.dumps(ids, separators=(",", ":"))
            res = await self._call(
                "cancel_orders", lambda: self._request("DELETE", "/orders", body)
            )
        return cancel_answer(res)

    async def cancel_all(self) -> CancelResult:
        return cancel_answer(
            await self._call("cancel_all", lambda: self._request("DELETE", "/cancel-all"))
        )

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        try:
            res = await self._call(
                "data_orders", lambda: self._request("GET", f"/data/order/{venue_order_id}")
            )
        except OrderRejected as e:
            if e.status == 404 or "not found" in e.reason.lower():
                return None
            raise TransientError(f"order lookup refused: {e.reason}", status=e.status) from e
        if not isinstance(res, dict) or not res:
            return None
        vo = venue_order(res, malformed=self._malformed)
        if vo is None and res.get("id"):
            # The venue knows the order but its row cannot be read: not "never seen", which
            # would let the lookup grace reject an order that may be live or filled.
            raise TransientError("order lookup answer unreadable")
        return vo

    async def open_orders(self) -> list[VenueOrder]:
        rows = await self._pages("data_orders", "/data/orders", {})
        return [
            vo
            for r in rows
            if isinstance(r, dict) and (vo := venue_order(r, malformed=self._malformed)) is not None
        ]

    async def fills_since(self, after_unix_s: int, *, market: str | None = None) -> list[Fill]:
        params: dict[str, Any] = {}
        if after_unix_s:
            params["after"] = after_unix_s
        if market:
            # By market only: NautilusTrader #3345, an asset filter misses our maker fills.
            params["market"] = market
        elif self.funder:
            params["maker_address"] = self.funder
        rows = await self._pages("data_trades", "/data/trades", params)
        out: list[Fill] = []
        for r in rows:
            if isinstance(r, dict):
                out.extend(
                    fills_from_trade(
                        r, owner=self.owner, address=self.funder, malformed=self._malformed
                    )
                )
        return out

    async def heartbeat(self) -> str:
        """Send one exchange heartbeat, chaining the id; the venue cancels our orders if they stop.

        A 400 naming the id the venue expects (`{"error_msg": ..., "heartbeat_id": id}` today,
        `{"error": ..., "heartbeat_id": id}` in older examples: Polymarket/py-sdk
        `order_heartbeats.py`, Polymarket/py-clob-client `examples/post_heartbeat.py`) is answered
        by adopting that id and resending at once, once. Raise on any other failure.
        """
        try:
            return await self._heartbeat_once()
        except OrderRejected as e:
            expected = _expected_heartbeat_id(e)
            if expected is None:
                raise
            log.info("heartbeat_id_adopted")
            self.heartbeat_id = expected
            return await self._heartbeat_once()

    async def _heartbeat_once(self) -> str:
        body = json.dumps({"heartbeat_id": self.heartbeat_id}, separators=(",", ":"))
        res = await self._call(
            "clob_general", lambda: self._request("POST", "/v1/heartbeats", body)
        )
        if not isinstance(res, dict) or not isinstance(res.get("heartbeat_id"), str):
            raise TransientError("heartbeat answer has no heartbeat_id")
        self.heartbeat_id = res["heartbeat_id"]
        return self.heartbeat_id

    async def collateral_balance(self) -> Decimal:
        """BalanceSource: the funder's pUSD (`GET /balance-allowance`, 6-decimal units)."""
        params = {"asset_type": "COLLATERAL", "signature_type": self.signature_type}
        headers = l2_headers(self.address, self._creds, "GET", "/balance-allowance")
        try:
            res = await self._call(
                "balance_allowance",
                lambda: self._http.request(
                    "GET", "/balance-allowance", headers=headers, params=params
                ),
            )
            raw = res.get("balance") if isinstance(res, dict) else None
            try:
                return parse.pusd(parse.amount(raw, max_digits=21) / MICRO, what="balance")
            except Unreadable as e:
                self._malformed(f"balance: {e}", res)
                raise
        except (OrderRejected, Unreadable) as e:
            raise TransientError(f"balance unreadable: {e}") from e

    # market metadata (MetadataSource) ---------------------------------------------------
    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        try:
            ref = await self._call(
                "clob_general", lambda: self._http.request("GET", f"/markets-by-token/{token_id}")
            )
            cid = ref.get("condition_id") if isinstance(ref, dict) else None
            if not cid:
                return []
            m = await self._call(
                "clob_general", lambda: self._http.request("GET", f"/markets/{cid}")
            )
        except OrderRejected:
            return []
        metas = meta_from_market(str(cid), m, malformed=self._malformed)
        return with_fee(metas, await self._clob_market_fee(str(cid)))

    async def _clob_market_fee(self, cid: str) -> FeeSchedule | None:
        """The market's taker fee from `/clob-markets/{cid}` (`fd`); None if it cannot be read
        now (the rules fall back to Gamma's schedule and ask again later)."""
        try:
            d = await self._call(
                "clob_general", lambda: self._http.request("GET", f"/clob-markets/{cid}")
            )
        except (OrderRejected, TransientError) as e:
            log.warning("clob_market_fee_unavailable", condition_id=cid, error=type(e).__name__)
            return None
        return fee_from_clob_market(cid, d)

    async def close(self) -> None:
        await self._http.close()


def _expected_heartbeat_id(e: OrderRejected) -> str | None:
    """The id a heartbeat refusal names as the one to send (None if it names none)."""
    cause = e.__cause__
    msg = cause.error_msg if isinstance(cause, VenueHttpError) else None
    if e.status == 400 and isinstance(msg, dict) and isinstance(msg.get("heartbeat_id"), str):
        return str(msg["heartbeat_id"])
    return None


def build_client(
    *,
    host: str,
    chain_id: int,
    private_key: str,
    creds: tuple[str, str, str] | None,
    signature_type: int,
    funder: str | None,
    http_timeout_s: float = 5.0,
) -> ClobIdentity:
    """The daemon's identity at the CLOB, deriving API credentials through L1 when none are
    configured. `funder` defaults to the key's own address (EOA, signature type 0).

    Blocking (network and signing): call it off the event loop.
    """
    signer = LocalSigner(private_key)
    if creds is None:
        http = ClobHttp(host, timeout_s=http_timeout_s)
        try:
            api, _ = http.api_creds(signer, chain_id)
        except VenueHttpError as e:
            raise translate(e) from None
        finally:
            http.close()
    else:
        api = Credentials(*creds)
    return ClobIdentity(
        signer=signer,
        chain_id=chain_id,
        signature_type=signature_type,
        funder=funder or signer.address,
        creds=api,
    )
