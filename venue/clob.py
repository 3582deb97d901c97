"""The live broker over `py-clob-client-v2` — the only module that imports the SDK.

* Signing (CPU) and HTTP (the SDK is synchronous) run on small dedicated thread pools, never on
  the event loop (DESIGN invariant 5).
* An order is signed once, in `prepare`, which also computes its EIP-712 hash (the venue's order
  id) locally; `send` posts the same serialized bytes on every attempt (invariant 2).
* `deferExec` is always set, so a match never makes the SDK poll `/data/trades` for 30 s.
* The SDK's module-level httpx client (5 s timeout) is replaced by one with `HTTP_TIMEOUT_S`.
* Vendor errors become `errors` classes: 429 -> RateLimited, 425/503/403 -> VenueUnavailable,
  other 5xx -> TransientError, other 4xx -> OrderRejected(source="venue"), a transport failure
  after the request may have left -> OutcomeUnknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, TypeVar

import coincurve
import httpx
import structlog
from eth_hash.auto import keccak
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, OpenOrderParams, RequestArgs, TradeParams
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.headers.headers import create_level_2_headers
from py_clob_client_v2.http_helpers import helpers as sdk_http
from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.model.order_data_v2 import (
    OrderDataV2,
    OrderV2,
    SignedOrderV2,
    order_to_json_v2,
)
from py_clob_client_v2.order_utils.model.side import Side as SdkSide
from py_clob_client_v2.order_utils.model.signature_type_v2 import SignatureTypeV2
from pydantic import ValidationError

from errors import (
    FatalError,
    OrderRejected,
    OutcomeUnknown,
    PolydError,
    RateLimited,
    TransientError,
    VenueUnavailable,
)
from execution.market_rules import order_amounts as order_amounts  # re-exported: wire rounding
from execution.ports import (
    Ack,
    BatchItem,
    CancelResult,
    MarketMeta,
    Prepared,
    StoredOrderMismatch,
    VenueOrder,
    VenueStatus,
)
from models import (
    MONEY_MAX_DIGITS,
    ZERO,
    Fill,
    Level,
    LiquidityRole,
    OrderRequest,
    Side,
    TradeStatus,
)

log = structlog.get_logger("venue.clob")

T = TypeVar("T")
MICRO = Decimal(1_000_000)
BYTES32_ZERO = "0x" + "00" * 32

_ORDER_TYPE_HASH = keccak(
    b"Order(uint256 salt,address maker,address signer,uint256 tokenId,"
    b"uint256 makerAmount,uint256 takerAmount,uint8 side,uint8 signatureType,"
    b"uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
_DOMAIN_TYPE_HASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def _u256(v: int) -> bytes:
    return v.to_bytes(32, "big")


def _addr(a: str) -> bytes:
    return bytes(12) + bytes.fromhex(a[2:])


def _b32(h: str) -> bytes:
    return bytes.fromhex(h[2:] if h.startswith("0x") else h).rjust(32, b"\x00")


def domain_separator(chain_id: int, exchange: str, version: str = "2") -> bytes:
    """The CTF Exchange EIP-712 domain separator."""
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(b"Polymarket CTF Exchange")
        + keccak(version.encode())
        + _u256(chain_id)
        + _addr(exchange)
    )


def order_digest(order: OrderV2, domain_sep: bytes) -> bytes:
    """The order's EIP-712 digest (what is signed; its hex is the venue's order id)."""
    struct = keccak(
        _ORDER_TYPE_HASH
        + _u256(int(order.salt))
        + _addr(order.maker)
        + _addr(order.signer)
        + _u256(int(order.tokenId))
        + _u256(int(order.makerAmount))
        + _u256(int(order.takerAmount))
        + _u256(int(order.side))
        + _u256(int(order.signatureType))
        + _u256(int(order.timestamp))
        + _b32(order.metadata)
        + _b32(order.builder)
    )
    return keccak(b"\x19\x01" + domain_sep + struct)


def order_hash(order: OrderV2, domain_sep: bytes) -> str:
    """The order's EIP-712 hash: `0x` + 64 hex, the id the venue gives it."""
    return "0x" + order_digest(order, domain_sep).hex()


class DigestSigner:
    """Sign a 32-byte EIP-712 digest with libsecp256k1 (coincurve) directly.

    The SDK's path (`encode_typed_data` + `Account.sign_message`) rebuilds and re-hashes the
    typed data in pure Python on every order (~0.7 ms); the digest is already computed here for
    the order id, so signing it is one ~50 us call. RFC 6979 nonces and low-s normalisation are
    the same as eth-keys' coincurve backend, so the signature is byte-identical to the SDK's
    (a unit test holds this).
    """

    def __init__(self, private_key: str) -> None:
        self._key = coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x")))

    def sign(self, digest: bytes) -> str:
        sig = self._key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
        return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")


def _micro(v: Decimal) -> str:
    return str(int((v * MICRO).to_integral_value(rounding=ROUND_DOWN)))


class _Unreadable(ValueError):
    """A wire value that is present but cannot be used (not a finite, non-negative number in
    range, or the wrong type). The caller treats the whole answer or row as unreadable."""


_RAW_MAX_DIGITS = MONEY_MAX_DIGITS + 6  # a money value in the REST API's 6-decimal units


def _num(v: Any, default: Decimal = ZERO) -> Decimal:
    """A finite, non-negative Decimal below 1e21 from a wire value; `default` when absent.

    Raise `_Unreadable` for anything else (NaN, infinities, negatives, absurd magnitudes, bools,
    lists...): `Decimal("NaN") > 0` raises and `1e999999` overflows later arithmetic.
    """
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise _Unreadable(f"not a number ({type(v).__name__})")
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        raise _Unreadable("not a number") from None
    if not d.is_finite() or d < 0 or (d and d.adjusted() >= _RAW_MAX_DIGITS):
        raise _Unreadable("number out of range")
    return d


def _money(d: Decimal) -> Decimal:
    """`d` if it is a usable money value (below 1e15, like `models.Money`), else `_Unreadable`."""
    if d and d.adjusted() >= MONEY_MAX_DIGITS:
        raise _Unreadable("number out of range")
    return d


def _size(raw: Any, expected: Decimal | None) -> Decimal:
    """Human size from `raw`, which the REST API may send in 6-decimal units (reference §1.7)."""
    d = _num(raw)
    text = str(raw or "")
    if expected is not None and "." not in text and d >= MICRO and d == expected * MICRO:
        return d / MICRO
    if expected is None and "." not in text and d >= MICRO * 1000:
        return d / MICRO
    return d


def venue_order(d: dict[str, Any], *, expected_size: Decimal | None = None) -> VenueOrder | None:
    """Translate a REST OpenOrder or a user-WS `order` event; None if it is not an order, or if
    a number in it is unreadable (NaN, infinite, negative, out of range, a price above 1)."""
    status = VenueStatus.parse(d.get("status"))
    oid = d.get("id")
    if status is None or not isinstance(oid, str) or not oid:
        return None
    try:
        original = _money(_size(d.get("original_size"), expected_size))
        scale_micro = original != _num(d.get("original_size"))
        matched = _num(d.get("size_matched"))
        if scale_micro:
            matched = matched / MICRO
        _money(matched)
        price = _num(d.get("price"))
        if price > 1:
            raise _Unreadable("price above 1")
    except _Unreadable as e:
        log.warning("venue_order_unreadable", venue_order_id=oid[:80], why=str(e))
        return None
    side_raw = str(d.get("side", "")).upper()
    return VenueOrder(
        venue_order_id=oid,
        status=status,
        original_size=original,
        size_matched=matched,
        price=price,
        token_id=str(d.get("asset_id", "")),
        side=Side(side_raw) if side_raw in ("BUY", "SELL") else None,
        order_type=str(d.get("order_type", "")),
    )


def _ts(v: Any) -> datetime:
    try:
        n = int(str(v))
        if n > 10**11:  # milliseconds
            n //= 1000
        return datetime.fromtimestamp(n, UTC)
    except (ValueError, OverflowError, OSError):  # unreadable or out of datetime's range
        return datetime.now(UTC)


def _fill(trade_id: str, **fields: Any) -> Fill | None:
    """A `Fill`, or None (logged) if the row does not make one: a missing or unreadable token
    id, price or size. The trade's other fills, and the frame's other events, still count."""
    try:
        price, size = _num(fields.pop("price")), _money(_num(fields.pop("size")))
        if not 0 < price < 1:
            raise _Unreadable("price outside (0, 1)")
        return Fill(trade_id=trade_id, price=price, size=size, **fields)
    except (_Unreadable, ValidationError) as e:
        why = str(e) if isinstance(e, _Unreadable) else f"{e.error_count()} invalid field(s)"
        log.warning("trade_fill_skipped", trade_id=trade_id[:80], why=why)
        return None


def fills_from_trade(t: dict[str, Any], *, owner: str, address: str) -> list[Fill]:
    """Our fills in one REST `/data/trades` row or user-WS `trade` event (as taker or maker).

    A fill that cannot be read (no token id, a missing or unreadable price or size) is logged
    and skipped; nothing here raises on a malformed row.
    """
    try:
        status = TradeStatus(str(t.get("status", "MATCHED")).upper().removeprefix("TRADE_STATUS_"))
    except ValueError:
        status = TradeStatus.MATCHED
    when = _ts(t.get("match_time") or t.get("matchtime") or t.get("timestamp") or 0)
    raw_id = t.get("id")
    trade_id = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else ""
    token_id = str(t.get("asset_id", ""))
    out: list[Fill] = []
    side_raw = str(t.get("side", "")).upper()
    if side_raw not in ("BUY", "SELL") or not trade_id:
        return out
    taker_side = Side(side_raw)
    if str(t.get("trader_side", "TAKER")).upper() == "TAKER" and (
        t.get("owner") == owner or str(t.get("maker_address", "")).lower() == address.lower()
    ):
        fill = _fill(
            trade_id,
            venue_order_id=str(t.get("taker_order_id", "")),
            token_id=token_id,
            side=taker_side,
            price=t.get("price"),
            size=t.get("size"),
            role=LiquidityRole.TAKER,
            status=status,
            ts=when,
        )
        return [fill] if fill is not None else out
    makers = t.get("maker_orders")
    for m in makers if isinstance(makers, list) else ():
        if not isinstance(m, dict):
            continue
        if m.get("owner") != owner and str(m.get("maker_address", "")).lower() != address.lower():
            continue
        ms = str(m.get("side", "")).upper()
        side = (
            Side(ms)
            if ms in ("BUY", "SELL")
            else (Side.SELL if taker_side is Side.BUY else Side.BUY)
        )
        fill = _fill(
            trade_id,
            venue_order_id=str(m.get("order_id", "")),
            token_id=str(m.get("asset_id") or token_id),
            side=side,
            price=m.get("price"),
            size=m.get("matched_amount"),
            role=LiquidityRole.MAKER,
            status=status,
            ts=when,
        )
        if fill is not None:
            out.append(fill)
    return out


_ORDER_KEYS = (
    "salt",
    "maker",
    "signer",
    "tokenId",
    "makerAmount",
    "takerAmount",
    "side",
    "expiration",
    "signatureType",
    "timestamp",
    "metadata",
    "builder",
    "signature",
)
"""The signed order's fields in the SDK's wire order (`order_to_json_v2`)."""


def _serialize(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def _message(error_msg: Any) -> str:
    """The venue's error text, short enough for a journal row and a log line.

    An HTML body (Cloudflare's 403 page) is reduced to `HTML error page (<title>)`: the page
    itself is neither kept in the journal nor logged.
    """
    if isinstance(error_msg, dict):
        text = str(error_msg.get("error") or error_msg.get("errorMsg") or error_msg)
    else:
        text = str(error_msg)
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<head", "<body")) or "<html" in head:
        m = _HTML_TITLE.search(text)
        title = " ".join(html.unescape(m.group(1)).split())[:80] if m else ""
        return f"HTML error page ({title})" if title else "HTML error page"
    return text[:300]


def _retry_after(error_msg: Any, headers: httpx.Headers | None) -> float | None:
    if headers is not None:
        ra = headers.get("Retry-After")
        if ra:
            try:
                return float(ra)
            except ValueError:
                pass
    if isinstance(error_msg, dict) and error_msg.get("retry_after_seconds") is not None:
        try:
            return float(error_msg["retry_after_seconds"])
        except (TypeError, ValueError):
            return None
    return None


def translate(e: BaseException, *, order_id: str | None = None) -> PolydError:
    """Map an SDK exception onto the daemon's exception tree (callers `raise ... from e`)."""
    if isinstance(e, PolyApiException):
        status = e.status_code
        msg = _message(e.error_msg)
        resp = getattr(e, "_response", None)
        if status is None:
            cause = e.__context__
            if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
                # The connection never opened: nothing left the process.
                return TransientError(f"connect failed: {type(cause).__name__}")
            return OutcomeUnknown(
                f"no answer ({type(cause).__name__ if cause else 'request exception'})",
                order_id=order_id,
            )
        headers = resp.headers if isinstance(resp, httpx.Response) else None
        ra = _retry_after(e.error_msg, headers)
        if status == 429:
            return RateLimited(msg, status=status, retry_after=ra)
        if status in (425, 503, 403):
            return VenueUnavailable(msg, status=status, retry_after=ra)
        if status >= 500:
            return TransientError(msg, status=status, retry_after=ra)
        if status == 401:
            return FatalError(f"venue refused our credentials: {msg}")
        return OrderRejected(msg, source="venue", status=status)
    if isinstance(e, PolyException):
        return OrderRejected(str(e.msg), source="venue")
    return TransientError(f"{type(e).__name__}")


class _KeepResponse(PolyApiException):  # type: ignore[misc]  # the SDK is untyped
    """PolyApiException that keeps the response (for Retry-After); built by `_request`."""

    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp)
        self._response = resp


def install_http_client(timeout_s: float) -> httpx.Client:
    """Replace the SDK's module-level httpx client (5 s default) with one using `timeout_s`."""
    client = httpx.Client(http2=True, timeout=httpx.Timeout(timeout_s))
    old = sdk_http._http_client
    sdk_http._http_client = client
    if old is not client:
        old.close()
    return client


class ClobBroker:
    """A `Broker` that trades on the CLOB (or the simulator) through `py-clob-client-v2`."""

    name = "clob"

    def __init__(
        self,
        *,
        client: ClobClient,
        host: str,
        chain_id: int,
        signer_threads: int = 2,
        http_threads: int = 8,
    ) -> None:
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
        self._sign_pool = ThreadPoolExecutor(signer_threads, thread_name_prefix="clob-sign")
        self._http_pool = ThreadPoolExecutor(http_threads, thread_name_prefix="clob-http")
        self.heartbeat_id = ""

    # plumbing ---------------------------------------------------------------------------
    async def _off_loop(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def _request(
        self, method: str, path: str, body: str | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        headers = create_level_2_headers(
            self._signer,
            self._creds,
            RequestArgs(method=method, request_path=path, body=body, serialized_body=body),
        )
        headers = sdk_http._overload_headers(method, headers)
        try:
            resp = sdk_http._http_client.request(
                method=method,
                url=f"{self.host}{path}",
                headers=headers,
                content=body.encode("utf-8") if body is not None else None,
                params=params,
            )
        except httpx.RequestError as exc:
            raise PolyApiException(error_msg="Request exception!") from exc
        if resp.status_code != 200:
            raise _KeepResponse(resp)
        try:
            return resp.json()
        except ValueError:
            return resp.text

    async def _call(
        self, fn: Callable[[], T], *, sends: bool = False, order_id: str | None = None
    ) -> T:
        """Run `fn` on the HTTP pool. For reads (`sends=False`) a lost answer is transient."""
        try:
            return await self._off_loop(self._http_pool, fn)
        except (PolyApiException, PolyException) as e:
            err = translate(e, order_id=order_id)
            if isinstance(err, OutcomeUnknown) and not sends:
                err = TransientError(f"read got no answer: {err}")
            raise err from e

    # signing ----------------------------------------------------------------------------
    def _sign(self, req: OrderRequest, meta: MarketMeta) -> Prepared:
        maker_amt, taker_amt = order_amounts(req)
        data = OrderDataV2(
            maker=self.funder,
            tokenId=req.token_id,
            makerAmount=_micro(maker_amt),
            takerAmount=_micro(taker_amt),
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
        body = order_to_json_v2(signed, self.owner, req.order_type.value, req.post_only, True)
        payload = _serialize(body)
        # Journaled for a re-send after a crash: everything but the owner (the API key id).
        stored = {k: v for k, v in body.items() if k != "owner"}
        return Prepared(
            req, oid, hashlib.sha256(payload).hexdigest(), payload, _serialize(stored).decode()
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
            order = {k: stored["order"][k] for k in _ORDER_KEYS}
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
        if len(stored["order"]) != len(_ORDER_KEYS) or venue_order_id not in hashes:
            raise StoredOrderMismatch("stored order does not hash to the journaled order id")
        payload = _serialize({"order": order, "owner": self.owner, **extra})
        if hashlib.sha256(payload).hexdigest() != payload_hash:
            raise StoredOrderMismatch("rebuilt payload does not match the journaled payload hash")
        return Prepared(request, venue_order_id, payload_hash, payload, signed_order)

    async def prepare(self, request: OrderRequest, meta: MarketMeta) -> Prepared:
        return await self._off_loop(self._sign_pool, lambda: self._sign(request, meta))

    # orders -----------------------------------------------------------------------------
    @staticmethod
    def _ack(res: Any, req: OrderRequest, oid: str) -> Ack:
        """Read the venue's answer to a sent order.

        A clear refusal (`success: false`, or an error with no order id) is `OrderRejected`.
        Anything else this cannot read is `OutcomeUnknown("unreadable answer")`, never a
        refusal: the order was sent and may have matched, so it is looked up by hash.
        """
        if not isinstance(res, dict):
            raise OutcomeUnknown(f"unreadable answer ({type(res).__name__})", order_id=oid)
        err = str(res.get("errorMsg") or "")
        if res.get("success", True) is False or (err and not res.get("orderID")):
            raise OrderRejected(err or "order not accepted", source="venue")
        try:
            return ClobBroker._read_ack(res, req, oid)
        except _Unreadable as e:
            log.warning("order_answer_unreadable", venue_order_id=oid, why=str(e))
            raise OutcomeUnknown(f"unreadable answer: {e}", order_id=oid) from None

    @staticmethod
    def _read_ack(res: dict[str, Any], req: OrderRequest, oid: str) -> Ack:
        if not isinstance(res.get("success", True), bool):
            raise _Unreadable("success is not a boolean")
        order_id = res.get("orderID") or oid
        if not isinstance(order_id, str):
            raise _Unreadable("orderID is not a string")
        raw_status = res.get("status")
        status = VenueStatus.parse(raw_status)
        if status is None:
            if raw_status not in (None, ""):
                raise _Unreadable("unknown status")
            status = VenueStatus.LIVE
        making, taking = _num(res.get("makingAmount")), _num(res.get("takingAmount"))
        shares, cash = (taking, making) if req.side is Side.BUY else (making, taking)
        matched = _money(shares) if status is VenueStatus.MATCHED else ZERO
        avg = (cash / shares) if matched > 0 else None
        if avg is not None and avg > 1:
            raise _Unreadable("average price above 1")
        trade_ids = res.get("tradeIDs")
        if trade_ids in (None, ""):
            trade_ids = []
        if not isinstance(trade_ids, list) or not all(
            isinstance(t, str | int) and not isinstance(t, bool) for t in trade_ids
        ):
            raise _Unreadable("tradeIDs is not a list of ids")
        return Ack(
            venue_order_id=order_id,
            status=status,
            size_matched=min(matched, req.size) if req.order_type.rests else matched,
            avg_price=avg,
            trade_ids=tuple(str(t) for t in trade_ids),
        )

    async def send(self, prepared: Prepared) -> Ack:
        body = prepared.payload.decode()
        res = await self._call(
            lambda: self._request("POST", "/order", body),
            sends=True,
            order_id=prepared.venue_order_id,
        )
        return self._ack(res, prepared.request, prepared.venue_order_id)

    async def send_batch(self, batch: Sequence[Prepared]) -> list[BatchItem]:
        body = "[" + ",".join(p.payload.decode() for p in batch) + "]"
        res = await self._call(lambda: self._request("POST", "/orders", body), sends=True)
        if not isinstance(res, list) or len(res) != len(batch):
            raise OutcomeUnknown("batch answer does not list every order")
        out: list[BatchItem] = []
        for p, r in zip(batch, res, strict=True):
            try:
                out.append(self._ack(r, p.request, p.venue_order_id))
            except (OrderRejected, OutcomeUnknown) as e:
                out.append(e)
        return out

    async def cancel(self, venue_order_ids: Sequence[str]) -> CancelResult:
        ids = list(venue_order_ids)
        if len(ids) == 1:
            body = json.dumps({"orderID": ids[0]}, separators=(",", ":"))
            res = await self._call(lambda: self._request("DELETE", "/order", body))
        else:
            body = json.dumps(ids, separators=(",", ":"))
            res = await self._call(lambda: self._request("DELETE", "/orders", body))
        return self._cancel_result(res)

    async def cancel_all(self) -> CancelResult:
        return self._cancel_result(await self._call(lambda: self._request("DELETE", "/cancel-all")))

    @staticmethod
    def _cancel_result(res: Any) -> CancelResult:
        if not isinstance(res, dict):
            return CancelResult()
        canceled = res.get("canceled")
        nc = res.get("not_canceled")
        return CancelResult(
            tuple(x for x in canceled if isinstance(x, str)) if isinstance(canceled, list) else (),
            {str(k): str(v) for k, v in nc.items()} if isinstance(nc, dict) else {},
        )

    async def lookup(self, venue_order_id: str) -> VenueOrder | None:
        try:
            res = await self._call(lambda: self._request("GET", f"/data/order/{venue_order_id}"))
        except OrderRejected as e:
            if e.status == 404 or "not found" in e.reason.lower():
                return None
            raise TransientError(f"order lookup refused: {e.reason}", status=e.status) from e
        if not isinstance(res, dict) or not res:
            return None
        vo = venue_order(res)
        if vo is None and res.get("id"):
            # The venue knows the order but its row cannot be read: not "never seen", which
            # would let the lookup grace reject an order that may be live or filled.
            raise TransientError("order lookup answer unreadable")
        return vo

    async def open_orders(self) -> list[VenueOrder]:
        rows = await self._call(lambda: self.client.get_open_orders(OpenOrderParams()))
        return [vo for r in rows if isinstance(r, dict) and (vo := venue_order(r)) is not None]

    async def fills_since(self, after_unix_s: int) -> list[Fill]:
        params = TradeParams(after=after_unix_s, maker_address=self.funder)
        rows = await self._call(lambda: self.client.get_trades(params))
        out: list[Fill] = []
        for r in rows:
            if isinstance(r, dict):
                out.extend(fills_from_trade(r, owner=self.owner, address=self.funder))
        return out

    async def heartbeat(self) -> str:
        """Send one exchange heartbeat; the venue cancels our orders if they stop."""
        body = json.dumps({"heartbeat_id": self.heartbeat_id}, separators=(",", ":"))
        try:
            res = await self._call(lambda: self._request("POST", "/v1/heartbeats", body))
        except OrderRejected as e:
            # An expired id is answered 400 with the id to use; adopt it.
            cause = e.__cause__
            msg = cause.error_msg if isinstance(cause, PolyApiException) else None
            if isinstance(msg, dict) and msg.get("heartbeat_id"):
                self.heartbeat_id = str(msg["heartbeat_id"])
                return self.heartbeat_id
            raise
        if isinstance(res, dict) and res.get("heartbeat_id"):
            self.heartbeat_id = str(res["heartbeat_id"])
        return self.heartbeat_id

    # market metadata (MetadataSource) ---------------------------------------------------
    def _get_public(self, path: str) -> Any:
        return sdk_http.get(f"{self.host}{path}")

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        try:
            ref = await self._call(lambda: self._get_public(f"/markets-by-token/{token_id}"))
            cid = ref.get("condition_id") if isinstance(ref, dict) else None
            if not cid:
                return []
            m = await self._call(lambda: self._get_public(f"/markets/{cid}"))
        except OrderRejected:
            return []
        return meta_from_market(str(cid), m)

    async def close(self) -> None:
        self._sign_pool.shutdown(wait=False, cancel_futures=True)
        self._http_pool.shutdown(wait=False, cancel_futures=True)


def build_client(
    *,
    host: str,
    chain_id: int,
    private_key: str,
    creds: tuple[str, str, str] | None,
    signature_type: int,
    funder: str | None,
) -> ClobClient:
    """Build an L2 client, deriving API credentials through L1 when none are configured.

    Blocking (network and signing): call it off the event loop.
    """
    client = ClobClient(
        host, chain_id, key=private_key, signature_type=signature_type, funder=funder
    )
    if creds is None:
        try:
            derived = client.create_or_derive_api_key()
        except (PolyApiException, PolyException) as e:
            raise translate(e) from None
        client.set_api_creds(derived)
    else:
        client.set_api_creds(ApiCreds(*creds))
    return client


def meta_from_market(condition_id: str, m: Any) -> list[MarketMeta]:
    """Market rules for both tokens from a CLOB `/markets/{condition_id}` row.

    [] (market unknown: its orders are refused by the rules) if the row cannot be read: a tick
    size outside (0, 1), a minimum size that is not a usable number, `tokens` not a list.
    """
    if not isinstance(m, dict):
        return []
    tokens = m.get("tokens")
    try:
        tick = _num(m.get("minimum_tick_size"), Decimal("0.01"))
        min_size = _money(_num(m.get("minimum_order_size"), Decimal("5")))
        if not 0 < tick < 1:
            raise _Unreadable("tick size outside (0, 1)")
    except _Unreadable as e:
        log.warning("market_meta_unreadable", condition_id=condition_id[:80], why=str(e))
        return []
    out: list[MarketMeta] = []
    for tok in tokens if isinstance(tokens, list) else ():
        tid = tok.get("token_id") if isinstance(tok, dict) else None
        if not isinstance(tid, str | int) or isinstance(tid, bool) or tid == "":
            continue
        out.append(
            MarketMeta(
                token_id=str(tid),
                condition_id=condition_id,
                tick_size=tick,
                min_size=min_size,
                neg_risk=bool(m.get("neg_risk", False)),
                accepting_orders=bool(m.get("accepting_orders", True))
                and bool(m.get("active", True)),
                closed=bool(m.get("closed", False)),
            )
        )
    return out


class PublicMarketMeta:
    """Market rules from the venue's public `/markets-by-token` + `/markets` (no credentials);
    used in paper mode."""

    def __init__(self, *, host: str, timeout_s: float = 5.0) -> None:
        self._client = httpx.AsyncClient(base_url=host.rstrip("/"), timeout=timeout_s)

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        try:
            r = await self._client.get(f"/markets-by-token/{token_id}")
            if r.status_code != 200:
                return []
            cid = r.json().get("condition_id")
            if not cid:
                return []
            m = await self._client.get(f"/markets/{cid}")
        except httpx.HTTPError as e:
            raise TransientError(f"market metadata unavailable: {type(e).__name__}") from e
        return meta_from_market(str(cid), m.json()) if m.status_code == 200 else []

    async def close(self) -> None:
        await self._client.aclose()


class RestBookSource:
    """A `BookSource` over the venue's REST `/book`, for paper trading until the feed's BookStore
    is wired in. Levels arrive best-LAST on the wire; they are reversed here."""

    def __init__(self, *, host: str, timeout_s: float = 5.0, max_age_s: float = 2.0) -> None:
        self._client = httpx.AsyncClient(base_url=host.rstrip("/"), timeout=timeout_s)
        self._max_age_s = max_age_s
        self._books: dict[str, tuple[float, list[Level], list[Level]]] = {}

    async def refresh(self, token_id: str) -> None:
        try:
            r = await self._client.get("/book", params={"token_id": token_id})
        except httpx.HTTPError as e:
            log.warning("book_fetch_failed", token_id=token_id, error=type(e).__name__)
            return
        if r.status_code != 200:
            self._books.pop(token_id, None)
            return
        d = r.json()
        bids = [(Decimal(x["price"]), Decimal(x["size"])) for x in reversed(d.get("bids") or [])]
        asks = [(Decimal(x["price"]), Decimal(x["size"])) for x in reversed(d.get("asks") or [])]
        self._books[token_id] = (time.monotonic(), bids, asks)

    def _get(self, token_id: str) -> tuple[list[Level], list[Level]] | None:
        b = self._books.get(token_id)
        if b is None or time.monotonic() - b[0] > self._max_age_s:
            return None
        return b[1], b[2]

    def bids(self, token_id: str) -> list[Level] | None:
        b = self._get(token_id)
        return b[0] if b else None

    def asks(self, token_id: str) -> list[Level] | None:
        b = self._get(token_id)
        return b[1] if b else None

    def best_ask(self, token_id: str) -> Level | None:
        asks = self.asks(token_id)
        return asks[0] if asks else None

    def best_bid(self, token_id: str) -> Level | None:
        bids = self.bids(token_id)
        return bids[0] if bids else None

    async def close(self) -> None:
        await self._client.aclose()
