"""Markets listed on the simulator and their Gamma / CLOB-market representations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from simulator.engine import Book, fmt

Json = dict[str, Any]


def iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimMarket:
    """A binary market: one condition id, two outcome tokens (decimal uint256 strings)."""

    gamma_id: str
    question: str
    slug: str
    condition_id: str
    question_id: str
    token_ids: tuple[str, str]
    tick_size: Decimal
    min_size: Decimal
    neg_risk: bool
    end_date: datetime
    accepting_orders: bool
    tags: tuple[str, ...]
    outcomes: tuple[str, str]
    volume: Decimal
    liquidity: Decimal
    created: datetime
    closed: bool = False
    event_id: str = ""
    books: dict[str, Book] = field(default_factory=dict)
    # Tick and resolution state (`simulator.lifecycle` changes it). `listed_tick` is the tick the
    # market was listed with; a 0.01 market moves to 0.001 while its price is above 0.96 or
    # below 0.04 and back when it returns (`auto_tick`).
    listed_tick: Decimal | None = None
    auto_tick: bool = True
    payouts: dict[str, Decimal] = field(default_factory=dict)  # token -> 1/0/0.5 once resolved
    resolved_at: datetime | None = None
    # Seconds a marketable order waits before it matches (0: none); see `Orders._delay`.
    taker_delay_s: float = 0.0
    fee_rate: Decimal = Decimal(0)
    """Taker fee rate (`fd.r`, Gamma `feeSchedule.rate`); 0 = a market without a fee."""
    fee_exponent: Decimal = Decimal(1)
    """Exponent of the fee formula (`fd.e`, Gamma `feeSchedule.exponent`)."""
    fee_type: str = ""
    """Gamma `feeType` (for example `crypto_fees_v2`); empty without a fee."""
    rebate_rate: Decimal = Decimal(0)
    """Gamma `feeSchedule.rebateRate`: the fees' share paid back to makers (daily, not per fill)."""
    version: str = "v1"
    """Gamma `version`: "v1" (conditional tokens) or "v2" (PositionManager; `simulator.chain`)."""

    @property
    def active(self) -> bool:
        return not self.closed

    def __post_init__(self) -> None:
        # A fee market: the taker pays C x rate x (p(1-p))^exponent per fill
        # (https://docs.polymarket.com/trading/fees).
        if not 0 <= self.fee_rate < 1:
            raise ValueError(f"fee_rate must be in [0, 1), got {self.fee_rate}")
        if self.fee_exponent <= 0:
            raise ValueError(f"fee_exponent must be greater than 0, got {self.fee_exponent}")

    @property
    def fees_enabled(self) -> bool:
        return self.fee_rate > 0

    @property
    def legacy_base_fee(self) -> int:
        """The legacy V1 base fee in bps (Gamma `takerBaseFee`, `/fee-rate` `base_fee`): 1000 on
        fee markets, 0 otherwise, as in the real captures (a 2026-03 5-minute BTC market and a
        2026-06 crypto_fees_v2 list carry `makerBaseFee`/`takerBaseFee` 1000). Not the rate
        charged: the SDK reads it only for V1 orders."""
        return 1000 if self.fees_enabled else 0

    def _fee_schedule(self) -> Json:
        """Gamma `feeSchedule`, as in the real sports capture (NautilusTrader's
        gamma_market_sports_market_money_line.json): numbers, not strings."""
        return {
            "exponent": _num(self.fee_exponent),
            "rate": _num(self.fee_rate),
            "rebateRate": _num(self.rebate_rate),
            "takerOnly": True,
        }

    def _gamma_fee_fields(self) -> Json:
        """`feeSchedule` and `feeType` appear on fee-enabled markets only (the real captures of
        markets without a fee have neither)."""
        if not self.fees_enabled:
            return {}
        return {"feeSchedule": self._fee_schedule(), "feeType": self.fee_type or "fees"}

    @property
    def resolved(self) -> bool:
        return bool(self.payouts)

    @property
    def is_50_50(self) -> bool:
        return self.resolved and all(p == Decimal("0.5") for p in self.payouts.values())

    def outcome_of(self, token_id: str) -> str:
        return self.outcomes[self.token_ids.index(token_id)]

    def _price(self, token_id: str) -> Decimal:
        b = self.books[token_id]
        bb, ba = b.best_bid(), b.best_ask()
        if bb is not None and ba is not None:
            return (bb + ba) / 2
        if b.last_trade_price is not None:
            return b.last_trade_price
        return Decimal("0.5")

    def gamma_dict(self) -> Json:
        """A Gamma `/markets` row: same keys and value types as production."""
        yes = self.books[self.token_ids[0]]
        bb, ba = yes.best_bid(), yes.best_ask()
        p0 = self._price(self.token_ids[0]).quantize(Decimal("0.0001")).normalize()
        prices = [fmt(p0), fmt(Decimal(1) - p0)]
        if self.resolved:  # NT's gamma_market_closed_binary_* captures: "1"/"0" (or "0.5")
            prices = [fmt(self.payouts[t]) for t in self.token_ids]
        ltp = yes.last_trade_price
        start = self.created
        tick = float(self.tick_size)
        minsz = int(self.min_size) if self.min_size == int(self.min_size) else float(self.min_size)
        return (
            {
                "id": self.gamma_id,
                "question": self.question,
                "conditionId": self.condition_id,
                "slug": self.slug,
                "resolutionSource": "",
                "endDate": iso_z(self.end_date),
                "liquidity": fmt(self.liquidity),
                "startDate": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "image": "",
                "icon": "",
                "description": self.question,
                "outcomes": '["' + '", "'.join(self.outcomes) + '"]',
                "outcomePrices": '["' + '", "'.join(prices) + '"]',
                "volume": fmt(self.volume),
                "active": self.active,
                "closed": self.closed,
                "marketMakerAddress": "",
                "createdAt": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "updatedAt": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "new": False,
                "featured": False,
                "archived": False,
                "restricted": True,
                "groupItemThreshold": "0",
                "questionID": self.question_id,
                "enableOrderBook": True,
                "orderPriceMinTickSize": tick,
                "orderMinSize": minsz,
                "volumeNum": float(self.volume),
                "liquidityNum": float(self.liquidity),
                "endDateIso": self.end_date.astimezone(UTC).strftime("%Y-%m-%d"),
                "startDateIso": start.astimezone(UTC).strftime("%Y-%m-%d"),
                "hasReviewedDates": True,
                "volume24hr": float(self.volume),
                "volume1wk": float(self.volume),
                "volume1mo": float(self.volume),
                "volume1yr": float(self.volume),
                "clobTokenIds": '["' + '", "'.join(self.token_ids) + '"]',
                "volume24hrClob": float(self.volume),
                "volume1wkClob": float(self.volume),
                "volume1moClob": float(self.volume),
                "volume1yrClob": float(self.volume),
                "volumeClob": float(self.volume),
                "liquidityClob": float(self.liquidity),
                "makerBaseFee": self.legacy_base_fee,
                "takerBaseFee": self.legacy_base_fee,
                "acceptingOrders": self.accepting_orders,
                "negRisk": self.neg_risk,
                "ready": False,
                "funded": False,
                "acceptingOrdersTimestamp": iso_z(start),
                "cyom": False,
                "competitive": 0.9,
                "pagerDutyNotificationEnabled": False,
                "approved": True,
                "rewardsMinSize": 0,
                "rewardsMaxSpread": 0.0,
                "spread": float(ba - bb) if bb is not None and ba is not None else 1.0,
                "lastTradePrice": float(ltp) if ltp is not None else 0.0,
                "bestBid": float(bb) if bb is not None else 0.0,
                "bestAsk": float(ba) if ba is not None else 1.0,
                "automaticallyActive": True,
                "clearBookOnStart": True,
                "showGmpSeries": False,
                "showGmpOutcome": False,
                "manualActivation": False,
                "negRiskOther": False,
                "umaResolutionStatuses": '["proposed"]' if self.resolved else "[]",
                "pendingDeployment": False,
                "deploying": False,
                "rfqEnabled": False,
                "holdingRewardsEnabled": False,
                "feesEnabled": self.fees_enabled,
                "requiresTranslation": False,
                "makerRebatesFeeShareBps": 0,
                "tags": self._tags(),
            }
            | self._resolution_fields()
            | self._gamma_fee_fields()
            | self._version_fields()
        )

    def _version_fields(self) -> Json:
        """Protocol V2 (docs `migrate/polymarket-v2/api-integrations`): `version`, and for "v2"
        markets `positionIds` as a real array."""
        if self.version != "v2":
            return {"version": self.version}
        return {"version": "v2", "positionIds": list(self.token_ids)}

    def _resolution_fields(self) -> Json:
        """What Gamma adds once a market resolved, as in NT's real capture
        `gamma_market_closed_binary_accepting_false.json` (PR #4164): `closed` (set by the
        lifecycle), `umaResolutionStatus`, `closedTime`, `outcomePrices` "1"/"0"."""
        if not self.resolved or self.resolved_at is None:
            return {}
        return {
            "umaResolutionStatus": "resolved",
            "closedTime": self.resolved_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00"),
        }

    def _tags(self) -> list[Json]:
        published = self.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        return [
            {
                "id": _tag_id(t),
                "label": t.title(),
                "slug": t,
                "forceShow": False,
                "publishedAt": published,
                "forceHide": False,
            }
            for t in self.tags
        ]

    def event_dict(self, with_markets: bool = True) -> Json:
        """A Gamma `/events` row wrapping this market (one event per simulated market)."""
        start = self.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        d: Json = {
            "id": self.event_id,
            "ticker": self.slug,
            "slug": self.slug,
            "title": self.question,
            "description": self.question,
            "resolutionSource": "",
            "startDate": start,
            "creationDate": start,
            "endDate": iso_z(self.end_date),
            "image": "",
            "icon": "",
            "active": self.active,
            "closed": self.closed,
            "archived": False,
            "new": False,
            "featured": False,
            "restricted": True,
            "liquidity": float(self.liquidity),
            "volume": float(self.volume),
            "openInterest": 0,
            "createdAt": start,
            "updatedAt": start,
            "competitive": 0.9,
            "volume24hr": float(self.volume),
            "volume1wk": float(self.volume),
            "volume1mo": float(self.volume),
            "volume1yr": float(self.volume),
            "enableOrderBook": True,
            "liquidityClob": float(self.liquidity),
            "negRisk": self.neg_risk,
            "commentCount": 0,
            "cyom": False,
            "showAllOutcomes": True,
            "showMarketImages": True,
            "enableNegRisk": self.neg_risk,
            "automaticallyActive": True,
            "negRiskAugmented": False,
            "pendingDeployment": False,
            "deploying": False,
            "requiresTranslation": False,
            "cumulativeMarkets": False,
            "tags": self._tags(),
        }
        if with_markets:
            m = self.gamma_dict()
            m.pop("tags", None)
            d["markets"] = [m]
        return d

    def clob_tokens(self) -> list[Json]:
        """CLOB `/markets` `tokens`; once resolved `price` 1/0 (0.5 each for a 50-50 outcome)
        and `winner`, as in the real capture `market_closed_accepting_orders_false` (NT PR
        #4164)."""
        return [
            {
                "token_id": t,
                "outcome": o,
                "price": float(self.payouts.get(t, Decimal("0.5"))),
                "winner": self.payouts.get(t) == 1,
            }
            for t, o in zip(self.token_ids, self.outcomes, strict=True)
        ]

    def clob_row(self) -> Json:
        """A CLOB `/markets/{condition_id}` row."""
        return {
            "enable_order_book": not self.resolved,
            "active": self.active,
            "closed": self.closed,
            "archived": False,
            "accepting_orders": self.accepting_orders,
            "accepting_order_timestamp": None,
            "minimum_order_size": float(self.min_size),
            "minimum_tick_size": float(self.tick_size),
            "condition_id": self.condition_id,
            "question_id": self.question_id,
            "question": self.question,
            "description": self.question,
            "market_slug": self.slug,
            "end_date_iso": self.end_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "game_start_time": None,
            "seconds_delay": self.seconds_delay,
            "fpmm": "",
            "maker_base_fee": self.legacy_base_fee,
            "taker_base_fee": self.legacy_base_fee,
            "notifications_enabled": False,
            "neg_risk": self.neg_risk,
            "neg_risk_market_id": self.question_id if self.neg_risk else "",
            "neg_risk_request_id": "",
            "icon": "",
            "image": "",
            "rewards": {"rates": None, "min_size": 0, "max_spread": 0},
            "is_50_50_outcome": self.is_50_50,  # resolved: price 1/0 and winner, as in NT's capture
            "tokens": self.clob_tokens(),
            "tags": list(self.tags),
        }

    def clob_market_dict(self) -> Json:
        """`GET /clob-markets/{condition_id}` compact shape used by py-clob-client-v2.

        `fd: {r, e, to}` is the platform fee (rate, exponent, taker only) and is absent on a
        market without a fee; `mbf`/`tbf` are the legacy base fees. Source: `MarketDetails` in
        https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts, read by the
        SDK's `get_clob_market_info` (`fd.r`, `fd.e`).
        """
        d: Json = {
            "t": [{"t": t, "o": o} for t, o in zip(self.token_ids, self.outcomes, strict=True)],
            "mts": float(self.tick_size),
            "mos": float(self.min_size),
            "nr": self.neg_risk,
            "mbf": self.legacy_base_fee,
            "tbf": self.legacy_base_fee,
            "itode": self.taker_delay_s > 0,
            "rfqe": False,
            "gst": None,
            "oas": self.accepting_orders,
        } | self.delay_fields()
        if self.fees_enabled:
            d["fd"] = {"r": _num(self.fee_rate), "e": _num(self.fee_exponent), "to": True}
        return d

    def delay_fields(self) -> Json:
        """`sd` ("seconds delay", TS client `MarketDetails`), served with `itode` only when the
        market delays takers (https://github.com/Polymarket/clob-client-v2, src/types/clob.ts)."""
        return {"sd": self.seconds_delay} if self.taker_delay_s > 0 else {}

    @property
    def seconds_delay(self) -> int | float:
        """The delay as `/markets` serves it (`seconds_delay`, an integer in NT's captures)."""
        d = self.taker_delay_s
        return int(d) if d == int(d) else d


def _num(d: Decimal) -> int | float:
    """A JSON number as the venue writes it: an integer when whole (`"exponent": 1`)."""
    return int(d) if d == d.to_integral_value() else float(d)


def _tag_id(tag: str) -> str:
    return str(100000 + sum(ord(c) * (i + 1) for i, c in enumerate(tag)) % 900000)


def tag_id(tag: str) -> str:
    """The numeric Gamma tag id the simulator assigns to a tag slug."""
    return _tag_id(tag)
