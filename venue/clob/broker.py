"""The live broker (`ClobBroker`): prepare (sign once), send, cancel, look up, reconcile reads,
heartbeats and market rules, against the CLOB or the simulator.

* Signing (CPU) and HTTP (blocking `httpx`) run on small dedicated thread pools, never on the
  event loop: nothing blocks the loop.
* An order is signed once, in `prepare`, which also computes its EIP-712 hash (the venue's order
  id) locally; `send` posts the same serialized bytes on every attempt (never a new signature).
* The order body is the one the SDK's own `post_order(order, order_type, post_only)` sends,
  byte for byte, with its default `deferExec: false` (`order_to_json_v2` in py-clob-client-v2,
  `py_clob_client_v2/order_utils/model/order_data_v2.py`); a unit test holds the identity.
  The SDK's client-side polling of `/data/trades` after a match is not the body's concern: the
  daemon never calls `post_order`, it posts these bytes itself.
* The broker owns its HTTP client (`ClobHttp`, timeout `http_timeout_s`) and, when given one,
  takes the venue's rate-limit bucket for each request before it leaves (`limiter`).
* Vendor errors become `errors` classes (see `venue.clob.translate`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import ApiCreds
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.model.order_data_v2 import (
    OrderDataV2,
    OrderV2,
    SignedOrderV2,
    order_to_json_v2,
)
from py_clob_client_v2.order_utils.model.side import Side as SdkSide
from py_clob_client_v2.order_utils.model.signature_type_v2 import SignatureTypeV2

from errors import FatalError, OrderRejected, OutcomeUnknown, TransientError
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
from venue.clob.signing import (
    BYTES32_ZERO,
    MICRO,
    ORDER_KEYS,
    DigestSigner,
    domain_separator,
    micro,
    order_digest,
    order_hash,
    serialize,
)
from venue.clob.translate import translate
from venue.clob.transport import END_CURSOR, INITIAL_CURSOR, ClobHttp
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
"""`deferExec` as the SDK's `ClobClient.post_order` sends it by default."""

T = TypeVar("T")


class ClobBroker:
    """A `Broker` that trades on the CLOB (or the simulator) with `py-clob-client-v2`'s signer
    and order builder, over its own HTTP client."""

    name = "clob"

    def __init__(
        self,
        *,
        client: ClobClient,
        host: str,
        chain_id: int,
        signer_threads: int = 2,
        http_threads: int = 8,
        http_timeout_s: float = 5.0,
        limiter: RateLimiter | None = None,
        malformed: parse.MalformedLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing()
        if client.signer is None or client.creds is None:
            raise FatalError("the CLOB client needs a private key and API credentials")
        self.client = client
        self.host = host.rstrip("/")
        self.chain_id = chain_id
        self._signer = client.signer
        self._creds: ApiCreds = client.creds
        self.owner = self._creds.api_key
        self.funder: str = client.builder.funder
        self.address: str = client.signer.address()
        self.signature_type = SignatureTypeV2(client.builder.signature_type)
        cfg = get_contract_config(chain_id)
        self._builders = {
            neg: ExchangeOrderBuilderV2(
                cfg.neg_risk_exchange_v2 if neg else cfg.exchange_v2, chain_id, self._signer
            )
            for neg in (False, True)
        }
        self._domains = {
            neg: domain_separator(chain_id, cfg.neg_risk_exchange_v2 if neg else cfg.exchange_v2)
            for neg in (False, True)
        }
        # Types 0-2 sign the order digest directly; POLY_1271 (deposit wallets) wraps it in an
        # ERC-7739 envelope, which the SDK builds.
        self._fast_signer = (
            DigestSigner(self._signer.private_key)
            if self.signature_type != SignatureTypeV2.POLY_1271
            else None
        )
        self._http = ClobHttp(self.host, timeout_s=http_timeout_s)
        self._limiter = limiter
        self._malformed = malformed or parse.MalformedLog("rest")
        """Told of every REST row refused for a number out of bounds (`venue.parse`)."""
        self._sign_pool = ThreadPoolExecutor(signer_threads, thread_name_prefix="clob-sign")
        self._http_pool = ThreadPoolExecutor(http_threads, thread_name_prefix="clob-http")
        self.heartbeat_id = ""

    # plumbing ---------------------------------------------------------------------------
    async def _off_loop(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def _budget(self, bucket: str) -> None:
        """Wait for room in the venue's rate-limit `bucket` (no limiter: no wait)."""
        if self._limiter is not None:
            with self._tracing.span("rate_limit_wait", bucket=bucket):
                await self._limiter.acquire(bucket)

    def set_creds(self, *, api_key: str, api_secret: str, api_passphrase: str) -> None:
        """Use new API credentials from the next request on (a rotation; see `wiring.reload`).

        One attribute swap, read once per request on the HTTP threads: a request signs with the
        old or the new credentials, never a mix. An order signed before the swap carries the old
        key as `owner` in its signed bytes.
        """
        creds = ApiCreds(api_key=api_key, api_secret=api_secret, api_passphrase=api_passphrase)
        self.client.set_api_creds(creds)
        self._creds = creds
        self.owner = creds.api_key

    def _request(self, method: str, path: str, body: str | None = None) -> Any:
        """One L2-authenticated request (blocking: run it through `_call`)."""
        headers = self._http.l2_headers(self._signer, self._creds, method, path, body)
        return self._http.request(method, path, headers=headers, body=body)

    async def _call(
        self,
        bucket: str,
        fn: Callable[[], T],
        *,
        sends: bool = False,
        order_id: str | None = None,
    ) -> T:
        """Take room in `bucket`, then run `fn` on the HTTP pool. For reads (`sends=False`) a
        lost answer is transient."""
        await self._budget(bucket)
        try:
            return await self._off_loop(self._http_pool, fn)
        except (PolyApiException, PolyException) as e:
            err = translate(e, order_id=order_id)
            if isinstance(err, OutcomeUnknown) and not sends:
                err = TransientError(f"read got no answer: {err}")
            raise err from e

    async def _pages(self, bucket: str, path: str, params: dict[str, Any]) -> list[Any]:
        """Every row of a cursor-paginated L2 read, one bucket token per page. The headers are
        signed once for the whole read, as the SDK does (the HMAC covers the path, no query)."""
        headers = self._http.l2_headers(self._signer, self._creds, "GET", path)
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
        data = OrderDataV2(
            maker=self.funder,
            tokenId=req.token_id,
            makerAmount=micro(maker_amt),
            takerAmount=micro(taker_amt),
            side=SdkSide.BUY if req.side is Side.BUY else SdkSide.SELL,
            signer=self.funder
            if self.signature_type == SignatureTypeV2.POLY_1271
            else self.address,
            signatureType=self.signature_type,
            metadata=BYTES32_ZERO,
            builder=BYTES32_ZERO,
            expiration=str(req.expiration or 0),
        )
        builder = self._builders[meta.neg_risk]
        if self._fast_signer is None:
            signed = builder.build_signed_order(data)
            oid = order_hash(signed, self._domains[meta.neg_risk])
        else:
            order = builder.build_order(data)
            digest = order_digest(order, self._domains[meta.neg_risk])
            signed = SignedOrderV2(**vars(order), signature=self._fast_signer.sign(digest))
            oid = "0x" + digest.hex()
        body = order_to_json_v2(
            signed, self.owner, req.order_type.value, req.post_only, SDK_DEFER_EXEC
        )
        payload = serialize(body)
        # Journaled for a re-send after a crash: everything but the owner (the API key id).
        stored = {k: v for k, v in body.items() if k != "owner"}
        return Prepared(
            req, oid, hashlib.sha256(payload).hexdigest(), payload, serialize(stored).decode()
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
            struct = OrderV2(
                salt=str(order["salt"]),
                maker=str(order["maker"]),
                signer=str(order["signer"]),
                tokenId=str(order["tokenId"]),
                makerAmount=str(order["makerAmount"]),
                takerAmount=str(order["takerAmount"]),
                side=SdkSide.BUY if order["side"] == "BUY" else SdkSide.SELL,
                signatureType=SignatureTypeV2(int(order["signatureType"])),
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
        return await self._off_loop(self._sign_pool, lambda: self._sign(request, meta))

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
        params = {"asset_type": "COLLATERAL", "signature_type": int(self.signature_type)}
        headers = self._http.l2_headers(self._signer, self._creds, "GET", "/balance-allowance")
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
        self._sign_pool.shutdown(wait=False, cancel_futures=True)
        self._http_pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()


def _expected_heartbeat_id(e: OrderRejected) -> str | None:
    """The id a heartbeat refusal names as the one to send (None if it names none)."""
    cause = e.__cause__
    msg = cause.error_msg if isinstance(cause, PolyApiException) else None
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
) -> ClobClient:
    """Build an L2 client, deriving API credentials through L1 when none are configured.

    Blocking (network and signing): call it off the event loop.
    """
    client = ClobClient(
        host, chain_id, key=private_key, signature_type=signature_type, funder=funder
    )
    if creds is None:
        assert client.signer is not None  # built with a key
        http = ClobHttp(host, timeout_s=http_timeout_s)
        try:
            derived = http.api_creds(client.signer)
        except (PolyApiException, PolyException) as e:
            raise translate(e) from None
        finally:
            http.close()
        client.set_api_creds(derived)
    else:
        client.set_api_creds(ApiCreds(*creds))
    return client
