"""Venue JSON -> our types: order rows and events, trades, `POST /order` answers, cancel
answers and market rules.

Nothing here raises on a malformed row: what cannot be read is logged and skipped (an order row
becomes None, a fill is dropped, market rules become []), except the answer to a sent order,
which is a clear refusal (`OrderRejected`) or `OutcomeUnknown`, never a guess.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import structlog
from pydantic import ValidationError

from errors import DuplicateOrder, OrderRejected, OutcomeUnknown
from execution.fees import NO_FEE, FeeSchedule, FeeSource
from execution.ports import Ack, CancelResult, MarketMeta, VenueOrder, VenueStatus
from models import (
    MONEY_MAX_DIGITS,
    ZERO,
    Fill,
    LiquidityRole,
    OrderRequest,
    Side,
    TradeStatus,
)
from venue import parse
from venue.clob.signing import MICRO
from venue.clob.translate import is_duplicate
from venue.parse import MalformedLog, OutOfBounds, Unreadable

log = structlog.get_logger("venue.clob")

_RAW_MAX_DIGITS: Final = MONEY_MAX_DIGITS + 6  # a money value in the REST API's 6-decimal units


def _num(v: Any, default: Decimal = ZERO) -> Decimal:
    """A finite, non-negative Decimal below 1e21 from a wire value; `default` when absent.

    Raise `Unreadable` for anything else (NaN, infinities, negatives, absurd magnitudes, bools,
    lists...): `Decimal("NaN") > 0` raises and `1e999999` overflows later arithmetic.
    """
    return parse.amount(v, max_digits=_RAW_MAX_DIGITS, default=default)


def _money(d: Decimal) -> Decimal:
    """`d` if it is within `parse.MAX_SHARES` (a size; the venue's pUSD amounts share the bound),
    else `OutOfBounds`."""
    if d > parse.MAX_SHARES:
        raise OutOfBounds(f"{d:.6g} above {parse.MAX_SHARES:f}")
    return d


def _size(raw: Any, expected: Decimal | None) -> Decimal:
    """Human size from `raw`, which the REST API may send in 6-decimal units (an `original_size`
    of `"10000000"` for 10 shares)."""
    d = _num(raw)
    text = str(raw or "")
    if expected is not None and "." not in text and d >= MICRO and d == expected * MICRO:
        return d / MICRO
    if expected is None and "." not in text and d >= MICRO * 1000:
        return d / MICRO
    return d


def venue_order(
    d: dict[str, Any],
    *,
    expected_size: Decimal | None = None,
    malformed: MalformedLog | None = None,
) -> VenueOrder | None:
    """Translate a REST OpenOrder or a user-WS `order` event; None if it is not an order, or if
    a number in it is unreadable or out of bounds (NaN, infinite, negative, a size above
    `parse.MAX_SHARES`, a price above 1), which is also told to `malformed`."""
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
        price = parse.price(d.get("price") or 0)
    except Unreadable as e:
        log.warning("venue_order_unreadable", venue_order_id=oid[:80], why=str(e))
        if malformed is not None:
            malformed(f"order: {e}", d)
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
    """A trade's time from epoch seconds or milliseconds; now if it cannot be read."""
    return parse.epoch_datetime(v) or datetime.now(UTC)


def _fill(trade_id: str, malformed: MalformedLog | None, **fields: Any) -> Fill | None:
    """A `Fill`, or None (logged) if the row does not make one: a missing or unreadable token
    id, price or size. The trade's other fills, and the frame's other events, still count."""
    try:
        price, size = _num(fields.pop("price")), _money(_num(fields.pop("size")))
        if not 0 < price < 1:
            raise Unreadable("price outside (0, 1)")
        return Fill(trade_id=trade_id, price=price, size=size, **fields)
    except (Unreadable, ValidationError) as e:
        why = str(e) if isinstance(e, Unreadable) else f"{e.error_count()} invalid field(s)"
        log.warning("trade_fill_skipped", trade_id=trade_id[:80], why=why)
        if malformed is not None:
            malformed(f"trade {trade_id[:80]}: {why}", fields)
        return None


def _maker_side(m: dict[str, Any], taker_side: Side, taker_asset: str, trade_id: str) -> Side:
    """A maker order's side, derived from the asset ids (NautilusTrader's `determine_order_side`,
    the fix of its issues #3126 / #3357; docs/venue-mechanics.md §2).

    A maker on the taker's token is on the other side (a plain transfer); a maker on the other
    token of the market is on the **same** side (two BUYs mint, two SELLs merge). The wire's
    `side` is optional on user-channel fills and only cross-checked.
    """
    asset = str(m.get("asset_id") or taker_asset)
    opposite = Side.SELL if taker_side is Side.BUY else Side.BUY
    derived = taker_side if asset != taker_asset else opposite
    wire = str(m.get("side", "")).upper()
    if wire in ("BUY", "SELL") and wire != derived.value:
        log.warning(
            "maker_side_disagrees",
            trade_id=trade_id[:80],
            venue_order_id=str(m.get("order_id", ""))[:80],
            wire_side=wire,
            derived_side=derived.value,
        )
    return derived


def _taker_legs(
    makers: Any, taker_asset: str, trade_id: str, malformed: MalformedLog | None = None
) -> tuple[Decimal, Decimal, tuple[tuple[Decimal, Decimal], ...]] | None:
    """(shares, average price, legs) of a taker fill from its `maker_orders`, in the taker's
    token; `legs` is (shares, price) per maker order, which the fee is charged on.

    Each leg counts at the maker's price when the maker is on the taker's token and at `1 -
    price` when it is on the other token (a mint or merge leg); shares are `sum(matched_amount)`.
    None when the legs cannot be read (then the top-level `price` and `size` are used).
    """
    if not isinstance(makers, list) or not makers:
        return None
    shares = notional = ZERO
    legs: list[tuple[Decimal, Decimal]] = []
    try:
        for m in makers:
            if not isinstance(m, dict):
                raise Unreadable("maker order is not an object")
            n, p = _num(m.get("matched_amount")), _num(m.get("price"))
            if not 0 < p < 1:
                raise Unreadable("maker price outside (0, 1)")
            cross = str(m.get("asset_id") or taker_asset) != taker_asset
            mine = (1 - p) if cross else p
            shares += n
            notional += n * mine
            if n > 0:
                legs.append((n, mine))
    except Unreadable as e:
        log.warning("taker_legs_unreadable", trade_id=trade_id[:80], why=str(e))
        if malformed is not None:
            malformed(f"trade {trade_id[:80]} maker_orders: {e}", makers)
        return None
    if shares <= 0:
        return None
    return shares, notional / shares, tuple(legs)


def fills_from_trade(
    t: dict[str, Any], *, owner: str, address: str, malformed: MalformedLog | None = None
) -> list[Fill]:
    """Our fills in one REST `/data/trades` row or user-WS `trade` event (as taker or maker).

    The top level is the taker's view; `maker_orders` has one entry per maker order, each in the
    maker's own token. Our taker fill is the size-weighted average over the maker legs (the
    top-level `price` is not that average when the taker swept several levels), with size
    `sum(matched_amount)`. Our maker fill is booked on the maker's `asset_id` at the maker's
    `price`, on the side derived from the asset ids (`_maker_side`). A fill that cannot be read
    (no token id, a missing or unreadable price or size) is logged and skipped; nothing here
    raises on a malformed row; what is out of bounds is also told to `malformed`.
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
    makers = t.get("maker_orders")
    if str(t.get("trader_side", "TAKER")).upper() == "TAKER" and (
        t.get("owner") == owner or str(t.get("maker_address", "")).lower() == address.lower()
    ):
        price, size = t.get("price"), t.get("size")
        taken = _taker_legs(makers, token_id, trade_id, malformed)
        legs: tuple[tuple[Decimal, Decimal], ...] = ()
        if taken is not None:
            size, price, legs = taken
            try:
                top: Decimal | None = _num(t.get("size"))
            except Unreadable:
                top = None
            if top != size:
                log.warning(
                    "taker_size_disagrees",
                    trade_id=trade_id[:80],
                    top=str(t.get("size"))[:40],
                    legs=str(size),
                )
        fill = _fill(
            trade_id,
            malformed,
            venue_order_id=str(t.get("taker_order_id", "")),
            token_id=token_id,
            side=taker_side,
            price=price,
            size=size,
            role=LiquidityRole.TAKER,
            status=status,
            ts=when,
            legs=legs,
        )
        return [fill] if fill is not None else out
    for m in makers if isinstance(makers, list) else ():
        if not isinstance(m, dict):
            continue
        if m.get("owner") != owner and str(m.get("maker_address", "")).lower() != address.lower():
            continue
        fill = _fill(
            trade_id,
            malformed,
            venue_order_id=str(m.get("order_id", "")),
            token_id=str(m.get("asset_id") or token_id),
            side=_maker_side(m, taker_side, token_id, trade_id),
            price=m.get("price"),
            size=m.get("matched_amount"),
            role=LiquidityRole.MAKER,
            status=status,
            ts=when,
        )
        if fill is not None:
            out.append(fill)
    return out


def order_answer(res: Any, req: OrderRequest, oid: str) -> Ack:
    """Read the venue's answer to a sent order.

    A clear refusal (`success: false`, or an error with no order id) is `OrderRejected`; the
    venue saying it already holds this order is `DuplicateOrder`. Anything else this cannot
    read is `OutcomeUnknown("unreadable answer")`, never a refusal: the order was sent and may
    have matched, so it is looked up by hash.
    """
    if not isinstance(res, dict):
        raise OutcomeUnknown(f"unreadable answer ({type(res).__name__})", order_id=oid)
    err = str(res.get("errorMsg") or "")
    if res.get("success", True) is False or (err and not res.get("orderID")):
        if is_duplicate(err):
            raise DuplicateOrder(err, order_id=oid)
        raise OrderRejected(err or "order not accepted", source="venue")
    try:
        return _read_ack(res, req, oid)
    except Unreadable as e:
        log.warning("order_answer_unreadable", venue_order_id=oid, why=str(e))
        raise OutcomeUnknown(f"unreadable answer: {e}", order_id=oid) from None


def _read_ack(res: dict[str, Any], req: OrderRequest, oid: str) -> Ack:
    if not isinstance(res.get("success", True), bool):
        raise Unreadable("success is not a boolean")
    order_id = res.get("orderID") or oid
    if not isinstance(order_id, str):
        raise Unreadable("orderID is not a string")
    raw_status = res.get("status")
    status = VenueStatus.parse(raw_status)
    if status is None:
        if raw_status not in (None, ""):
            raise Unreadable("unknown status")
        status = VenueStatus.LIVE
    making, taking = _num(res.get("makingAmount")), _num(res.get("takingAmount"))
    shares, cash = (taking, making) if req.side is Side.BUY else (making, taking)
    matched = _money(shares) if status is VenueStatus.MATCHED else ZERO
    avg = (cash / shares) if matched > 0 else None
    if avg is not None and avg > 1:
        raise Unreadable("average price above 1")
    trade_ids = res.get("tradeIDs")
    if trade_ids in (None, ""):
        trade_ids = []
    if not isinstance(trade_ids, list) or not all(
        isinstance(t, str | int) and not isinstance(t, bool) for t in trade_ids
    ):
        raise Unreadable("tradeIDs is not a list of ids")
    return Ack(
        venue_order_id=order_id,
        status=status,
        size_matched=min(matched, req.size) if req.order_type.rests else matched,
        avg_price=avg,
        trade_ids=tuple(str(t) for t in trade_ids),
    )


def cancel_answer(res: Any) -> CancelResult:
    """Read a cancel answer (`{canceled: [...], not_canceled: {id: why}}`); empty if unreadable."""
    if not isinstance(res, dict):
        return CancelResult()
    canceled = res.get("canceled")
    nc = res.get("not_canceled")
    return CancelResult(
        tuple(x for x in canceled if isinstance(x, str)) if isinstance(canceled, list) else (),
        {str(k): str(v) for k, v in nc.items()} if isinstance(nc, dict) else {},
    )


def meta_from_market(
    condition_id: str, m: Any, *, malformed: MalformedLog | None = None
) -> list[MarketMeta]:
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
            raise OutOfBounds("tick size outside (0, 1)")
        # Marketable orders wait this long before matching (`sd` on /clob-markets).
        delay = float(_num(m.get("seconds_delay") or 0))
    except Unreadable as e:
        log.warning("market_meta_unreadable", condition_id=condition_id[:80], why=str(e))
        if malformed is not None and isinstance(e, OutOfBounds):
            malformed(f"market {condition_id[:80]}: {e}", m)
        return []
    out: list[MarketMeta] = []
    payouts = clob_payouts(m)
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
                payout=payouts.get(str(tid)),
                taker_delay_s=delay,
            )
        )
    return out


def fee_from_clob_market(condition_id: str, d: Any) -> FeeSchedule | None:
    """The taker fee in a `/clob-markets/{condition_id}` record: `fd: {r: rate, e: exponent,
    to: taker_only}`, absent when the market has no fee (`MarketDetails` in
    https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts; the SDK's
    `get_clob_market_info` reads `fd.r` and `fd.e`).

    None (logged) if the record cannot be read, so the caller falls back to Gamma's schedule.
    """
    if not isinstance(d, dict) or not isinstance(d.get("t"), list):
        log.warning("clob_market_unreadable", condition_id=condition_id[:80], why="no tokens")
        return None
    fd = d.get("fd")
    if fd is None:
        return FeeSchedule(source=FeeSource.CLOB)
    try:
        if not isinstance(fd, dict):
            raise Unreadable("fd is not an object")
        rate = parse.amount(fd.get("r"), max_digits=1)
        exponent = parse.amount(fd.get("e"), max_digits=2, default=Decimal(1))
        to = fd.get("to", True)
        if not isinstance(to, bool):
            raise Unreadable("fd.to is not a boolean")
        if rate == 0:
            return FeeSchedule(source=FeeSource.CLOB)
        return FeeSchedule(rate=rate, exponent=exponent, taker_only=to, source=FeeSource.CLOB)
    except (Unreadable, ValueError) as e:
        log.warning("clob_market_fee_unreadable", condition_id=condition_id[:80], why=str(e))
        return None


def with_fee(metas: list[MarketMeta], fee: FeeSchedule | None) -> list[MarketMeta]:
    """`metas` with the market's fee set (unchanged when `fee` is None: not read)."""
    if fee is None or fee == NO_FEE:
        return metas
    return [replace(m, fee=fee) for m in metas]


def clob_payouts(m: dict[str, Any]) -> dict[str, Decimal]:
    """Payout per token of a resolved CLOB `/markets` row, {} while unresolved or unclear.

    Resolved: `closed` and either `is_50_50_outcome` (0.5 each) or exactly one of two tokens
    with `winner: true` (1 and 0), as in NT's real capture of a closed market (PR #4164).
    """
    tokens = m.get("tokens")
    if m.get("closed") is not True or not isinstance(tokens, list) or len(tokens) != 2:
        return {}
    ids = [t.get("token_id") if isinstance(t, dict) else None for t in tokens]
    if not all(isinstance(t, str) and t for t in ids):
        return {}
    if m.get("is_50_50_outcome") is True:
        return {str(t): Decimal("0.5") for t in ids}
    winners = [t.get("winner") is True for t in tokens]
    if sum(winners) != 1:
        return {}
    return {str(t): Decimal(1) if w else Decimal(0) for t, w in zip(ids, winners, strict=True)}
