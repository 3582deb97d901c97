"""The simulator's order and trade records and their wire shapes, and the venue's amounts.

`Order` is one order in the ledger, accounted in its maker amount (`left`); `Trade` is one taker
order's match with a `MakerFill` per maker order taken, and renders the REST `/data/trades` row
and the user-channel `trade` event (docs/venue-mechanics.md §2, §6). `taker_fee` is the venue's
fee formula (§1). The matching engine (`simulator.engine`) creates and moves them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

ZERO = Decimal(0)
ONE = Decimal(1)
SHARE_UNIT = Decimal("0.000001")  # shares and pUSD have 6 decimals on chain
FEE_UNIT = Decimal("0.00001")  # fees are charged to 5 decimals; smaller ones round to 0
FEE_RECEIVER = "0xfee0000000000000000000000000000000000000"

Json = dict[str, Any]


FMT_CACHE_MAX = 4_096
"""How many formatted amounts `fmt` keeps. The values it sees first (the book's prices, the
round sizes) are the ones it sees again; the rest are formatted each time. Each entry also keeps
its Decimal alive: at 100,000 the cache held some 20 MB and filled for hours in a demo, a good
part of the growth the 10x soak measured."""
_FMT_CACHE: dict[Decimal, str] = {}


def fmt(d: Decimal) -> str:
    """Format a Decimal the way Polymarket prints prices and sizes ("0.5", "100", "192.3")."""
    s = _FMT_CACHE.get(d)
    if s is None:
        s = str(d.quantize(ONE)) if d == d.to_integral_value() else format(d.normalize(), "f")
        if len(_FMT_CACHE) < FMT_CACHE_MAX:
            _FMT_CACHE[d] = s
    return s


def floor_shares(d: Decimal) -> Decimal:
    """`d` rounded down to the 6-decimal unit of an on-chain amount."""
    return d.quantize(SHARE_UNIT, rounding=ROUND_DOWN)


def taker_fee(shares: Decimal, price: Decimal, rate: Decimal, exponent: Decimal) -> Decimal:
    """The venue's taker fee for `shares` matched at `price`: `C x rate x (p(1-p))^exponent`,
    floored to 0.00001 pUSD.

    The formula is the SDK's (`platform_fee_rate = fee_rate * (price * (1 - price)) **
    fee_exponent`, https://github.com/Polymarket/py-clob-client-v2/blob/main/py_clob_client_v2/fees.py);
    the 5-decimal precision and the 0.00001 minimum are https://docs.polymarket.com/trading/fees.
    Which way the venue rounds is undocumented; the charge is floored (docs/venue-mechanics.md §1).
    """
    if rate <= 0 or shares <= 0:
        return ZERO
    return (shares * rate * (price * (ONE - price)) ** exponent).quantize(
        FEE_UNIT, rounding=ROUND_DOWN
    )


def rate_bps(rate: Decimal) -> str:
    """A fee rate as the `fee_rate_bps` string of trade rows and feed events (0.072 -> "720")."""
    return fmt(rate * 10_000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class OrderError(Exception):
    """A refusal with the production HTTP status and `error` text."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class Order:
    """One order in the ledger (resting, filled, killed or cancelled)."""

    id: str
    owner: str
    maker: str
    signer: str
    token_id: str
    market: str
    outcome: str
    side: str
    price: Decimal
    original_size: Decimal
    order_type: str
    expiration: int
    created_at: int
    post_only: bool = False
    seeded: bool = False
    size_matched: Decimal = ZERO
    status: str = "LIVE"
    associate_trades: list[str] = field(default_factory=list)
    seq: int = 0
    maker_amount: Decimal = ZERO
    # What is left of the order's maker amount: pUSD for a BUY, shares for a SELL. The exchange
    # tracks an order's remaining quantity in its maker amount (`_updateOrderStatus`).
    left: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.left == 0 and self.size_matched == 0:
            self.left = self.maker_amount if self.side == "BUY" else self.original_size

    @property
    def remaining(self) -> Decimal:
        """Shares still open. A SELL: its shares left. A BUY: what its pUSD left buys at its
        limit, but no more than its size still unmatched. A BUY that took better prices has
        spent less than its size x limit, and its surplus pUSD buys extra shares only while it
        takes; once it holds its size it is complete (what a GTC remainder does with surplus
        pUSD is unobserved: it rests the rest of its size, the surplus stays in the wallet)."""
        if self.side == "BUY":
            if self.price <= 0:
                return ZERO
            return max(ZERO, min(floor_shares(self.left / self.price), self.unmatched))
        return self.left

    @property
    def unmatched(self) -> Decimal:
        return max(ZERO, self.original_size - self.size_matched)

    def rest_dict(self) -> Json:
        """The REST OpenOrder shape (`/data/orders`, `/data/order/{id}`)."""
        return {
            "id": self.id,
            "status": self.status,
            "owner": self.owner,
            "maker_address": self.maker,
            "market": self.market,
            "asset_id": self.token_id,
            "side": self.side,
            "original_size": fmt(self.original_size),
            "size_matched": fmt(self.size_matched),
            "price": fmt(self.price),
            "outcome": self.outcome,
            "expiration": str(self.expiration),
            "order_type": self.order_type,
            "associate_trades": list(self.associate_trades),
            "created_at": self.created_at,
        }

    def ledger_dict(self) -> Json:
        d = self.rest_dict()
        d["maker"] = self.maker
        d["token_id"] = self.token_id
        d["post_only"] = self.post_only
        d["seeded"] = self.seeded
        return d

    def ws_dict(self, kind: str, status: str | None = None) -> Json:
        """The user-channel `order` event."""
        return {
            "asset_id": self.token_id,
            "associate_trades": list(self.associate_trades) if self.associate_trades else None,
            "created_at": str(self.created_at),
            "event_type": "order",
            "expiration": str(self.expiration),
            "id": self.id,
            "maker_address": self.maker,
            "market": self.market,
            "order_owner": self.owner,
            "order_type": self.order_type,
            "original_size": fmt(self.original_size),
            "outcome": self.outcome,
            "owner": self.owner,
            "price": fmt(self.price),
            "side": self.side,
            "size_matched": fmt(self.size_matched),
            "status": status or self.status,
            "timestamp": str(now_ms()),
            "type": kind,
        }


@dataclass(slots=True)
class MakerFill:
    """One maker order's part of a trade, in the maker's own token.

    `price` is the maker's own limit (what it pays or receives per share); `taker_price` is what
    the taker pays or receives per share for this leg, in the taker's token: the same price for
    a maker on the taker's token (a plain transfer), `1 - price` for a maker on the other token
    (a mint for two BUYs, a merge for two SELLs). `taker_fee` is the taker's fee for this leg.
    """

    order: Order
    size: Decimal
    price: Decimal
    taker_price: Decimal
    cross: bool
    taker_fee: Decimal = ZERO


@dataclass(slots=True)
class Trade:
    """One taker order's match: every maker it took, in one trade with one id.

    Production sends one trade message for a taker order that takes several levels or makers
    (NautilusTrader's `make_composite_trade_id`: "Polymarket sends one trade message with a
    single ID for all fills"; the real 2024 capture in tests/fixtures has six `maker_orders`).
    `size` is the taker's total shares, `cash` the pUSD it paid (BUY) or received (SELL) before
    its fee, `price` the top-level price: the best level it took, in its own token. What the
    venue puts there when the levels differ is undocumented; it is deliberately not the average,
    which a client computes from `maker_orders`.
    """

    id: str
    taker_order: Order
    makers: list[MakerFill]
    size: Decimal
    price: Decimal
    cash: Decimal
    fee: Decimal
    fee_rate_bps: str
    match_time: int
    transaction_hash: str
    status: str = "MATCHED"
    last_update: int = 0

    def ledger_rows(self) -> list[Json]:
        """The ledger's rows for this trade, one per (trade, maker order): `price` and `fee` are
        the taker's for that leg (`fee` is the exact fee charged), `maker_price` the maker's."""
        t = self.taker_order
        return [
            {
                "id": self.id,
                "taker_order_id": t.id,
                "maker_order_id": mf.order.id,
                "taker": t.maker,
                "maker": mf.order.maker,
                "token_id": t.token_id,
                "maker_token_id": mf.order.token_id,
                "side": t.side,
                "maker_side": mf.order.side,
                "price": mf.taker_price,
                "maker_price": mf.price,
                "size": mf.size,
                "fee": mf.taker_fee,
                "status": self.status,
                "transaction_hash": self.transaction_hash,
                "match_time": self.match_time,
            }
            for mf in self.makers
        ]

    def owners(self) -> list[str]:
        """The API keys this trade concerns: the taker's, then each maker's once."""
        out = [self.taker_order.owner]
        for mf in self.makers:
            if mf.order.owner not in out:
                out.append(mf.order.owner)
        return out

    def _maker_entry(self, mf: MakerFill, with_side: bool) -> Json:
        m = mf.order
        d: Json = {
            "order_id": m.id,
            "owner": m.owner,
            "maker_address": m.maker,
            "matched_amount": fmt(mf.size),
            "price": fmt(mf.price),
            "fee_rate_bps": self.fee_rate_bps,
            "asset_id": m.token_id,
            "outcome": m.outcome,
        }
        if with_side:
            d["side"] = m.side
        return d

    def rest_dict(self, viewer_owner: str | None = None, *, maker_side: bool = True) -> Json:
        """The REST `/data/trades` row, seen by the taker (TAKER) or a maker (MAKER).

        The top level is the taker's view (its side, token, total size); each maker's entry is
        in its own token. REST rows always carry `maker_orders[].side` (NautilusTrader's
        `PolymarketMakerOrder`: "CLOB V2 REST trade responses always include it").
        """
        t = self.taker_order
        mine = next(
            (mf.order for mf in self.makers if viewer_owner and mf.order.owner == viewer_owner),
            None,
        )
        is_maker = mine is not None and viewer_owner != t.owner
        return {
            "id": self.id,
            "taker_order_id": t.id,
            "market": t.market,
            "asset_id": t.token_id,
            "side": t.side,
            "size": fmt(self.size),
            "fee_rate_bps": self.fee_rate_bps,
            "price": fmt(self.price),
            "status": self.status,
            "match_time": str(self.match_time),
            "last_update": str(self.last_update or self.match_time),
            "outcome": t.outcome,
            "bucket_index": 0,
            "owner": mine.owner if is_maker and mine is not None else t.owner,
            "maker_address": mine.maker if is_maker and mine is not None else t.maker,
            "transaction_hash": self.transaction_hash,
            "maker_orders": [self._maker_entry(mf, maker_side) for mf in self.makers],
            "trader_side": "MAKER" if is_maker else "TAKER",
        }

    def ws_dict(
        self, viewer_owner: str, *, maker_side: bool = True, empty_maker_fee_bps: bool = False
    ) -> Json:
        """The user-channel `trade` event for one party of the trade.

        `maker_side=False` drops `maker_orders[].side`, as some user-channel fills do (the TS
        client types it `side?: Side`; the real 2024 capture has it on no maker).
        `empty_maker_fee_bps` sends `"fee_rate_bps": ""` on the maker entries, as the user feed
        sometimes does (NautilusTrader's `PolymarketMakerOrder`, docs/venue-mechanics.md §1).
        """
        d = self.rest_dict(viewer_owner, maker_side=maker_side)
        if empty_maker_fee_bps:
            for m in d["maker_orders"]:
                m["fee_rate_bps"] = ""
        del d["match_time"]
        d["matchtime"] = str(self.match_time)
        d["bucket_index"] = "0"
        d["event_type"] = "trade"
        d["type"] = "TRADE"
        d["trade_owner"] = d["owner"]
        d["timestamp"] = str(now_ms())
        return d
