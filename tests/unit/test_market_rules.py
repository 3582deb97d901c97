"""Market rules: the amounts the venue checks, the metadata cache, and every refusal at its edge."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from decimal import Decimal as D

import pytest
from structlog.testing import capture_logs

from errors import TransientError
from execution.fees import FeeSchedule, FeeSource
from execution.market_rules import MarketRules, fillable_size, order_amounts
from execution.ports import MarketMeta
from models import Market, OrderRequest
from tests.helpers import TOKEN, make_order

OTHER = "2" * 70
CONDITION = "0x" + "ab" * 32


def meta(**overrides: object) -> MarketMeta:
    fields: dict[str, object] = {
        "token_id": TOKEN,
        "condition_id": CONDITION,
        "tick_size": D("0.01"),
        "min_size": D("5"),
        "neg_risk": False,
    }
    fields.update(overrides)
    return MarketMeta(**fields)  # type: ignore[arg-type]


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "order_type", "price", "size", "maker", "taker"),
    [
        # Resting orders: exact products, no rounding.
        ("BUY", "GTC", "0.57", "10.33", "5.8881", "10.33"),
        ("SELL", "GTC", "0.57", "10.33", "10.33", "5.8881"),
        # Marketable BUY: dollars down to the cent, shares down to 4 decimals.
        ("BUY", "FOK", "0.97", "20.61", "19.99", "20.6082"),
        ("BUY", "FAK", "0.33", "7", "2.31", "7"),
        # Marketable SELL: shares down to the cent, dollars down to 4 decimals.
        ("SELL", "FAK", "0.333", "10.01", "10.01", "3.3333"),
    ],
)
def test_order_amounts_are_what_the_venue_checks(
    side: str, order_type: str, price: str, size: str, maker: str, taker: str
) -> None:
    req = make_order(side=side, order_type=order_type, price=price, size=size)
    assert order_amounts(req) == (D(maker), D(taker))


def test_marketable_buy_rounds_down_never_up() -> None:
    # 0.999 x 5.55 = 5.54445: a BUY may spend 5.54, never 5.55 (more than asked).
    req = make_order(side="BUY", order_type="FOK", price="0.999", size="5.55")
    maker, taker = order_amounts(req)
    assert maker == D("5.54")
    assert taker == D("5.5455")  # 5.54 / 0.999 = 5.54554..., down to 4 decimals
    assert maker <= req.notional and taker <= req.size


def test_fillable_size_is_the_shares_the_venue_order_can_fill() -> None:
    # A marketable BUY fills the shares its rounded dollars buy, not the size asked.
    assert fillable_size(make_order(order_type="FOK", price="0.97", size="20.61")) == D("20.6082")
    # A SELL fills its (cent-rounded) shares; a resting order its size.
    assert fillable_size(make_order(side="SELL", order_type="FAK", size="10.01")) == D("10.01")
    assert fillable_size(make_order(side="SELL", order_type="GTC", size="12.34")) == D("12.34")
    assert fillable_size(make_order(side="BUY", order_type="GTC", size="12.34")) == D("12.34")


# --- the metadata cache ----------------------------------------------------------------------


def test_load_market_records_both_tokens_with_the_market_rules() -> None:
    rules = MarketRules()
    rules.load_market(
        Market(
            condition_id=CONDITION,
            token_ids=(TOKEN, OTHER),
            tick_size=D("0.001"),
            min_size=D("15"),
            neg_risk=True,
        )
    )
    for token in (TOKEN, OTHER):
        assert rules.get(token) == MarketMeta(
            token_id=token,
            condition_id=CONDITION,
            tick_size=D("0.001"),
            min_size=D("15"),
            neg_risk=True,
            accepting_orders=True,
            closed=False,
        )


@pytest.mark.parametrize(
    ("accepting", "active", "closed", "reason"),
    [
        (True, True, False, None),
        (False, True, False, "market is not accepting orders"),
        (True, False, False, "market is not accepting orders"),  # inactive: no orders
        (True, True, True, "market is closed"),
    ],
)
def test_a_discovered_market_that_does_not_trade_refuses_orders(
    accepting: bool, active: bool, closed: bool, reason: str | None
) -> None:
    rules = MarketRules()
    rules.load_market(
        Market(
            condition_id=CONDITION,
            token_ids=(TOKEN, OTHER),
            accepting_orders=accepting,
            active=active,
            closed=closed,
        )
    )
    assert MarketRules.check(make_order(), rules.get(TOKEN)) == reason
    assert MarketRules.check(make_order(token_id=OTHER), rules.get(OTHER)) == reason


def test_tick_size_change_moves_the_grid_and_keeps_everything_else() -> None:
    rules = MarketRules()
    rules.put(meta(min_size=D("7"), neg_risk=True, accepting_orders=False, closed=True))
    rules.set_tick_size(TOKEN, D("0.001"))
    assert rules.get(TOKEN) == meta(
        tick_size=D("0.001"), min_size=D("7"), neg_risk=True, accepting_orders=False, closed=True
    )
    rules.set_tick_size(OTHER, D("0.001"))  # unknown token: fetched on first use, not invented
    assert rules.get(OTHER) is None


def test_tick_size_change_applies_to_the_next_check() -> None:
    rules = MarketRules()
    rules.put(meta())
    order = make_order(price="0.505")
    assert MarketRules.check(order, rules.get(TOKEN)) == "price 0.505 is not on the tick grid 0.01"
    rules.set_tick_size(TOKEN, D("0.001"))
    assert MarketRules.check(order, rules.get(TOKEN)) is None


class Venue:
    """A `MetadataSource` that counts fetches; `gate` holds a fetch until the test opens it."""

    def __init__(self, metas: list[MarketMeta], *, fail: int = 0) -> None:
        self.metas = metas
        self.fail = fail
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        self.calls.append(token_id)
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise TransientError("venue unavailable")
        return [m for m in self.metas if m.condition_id == CONDITION]


async def test_ensure_fetches_once_and_records_the_sibling_token() -> None:
    venue = Venue([meta(), meta(token_id=OTHER)])
    rules = MarketRules(source=venue)
    assert rules.get(TOKEN) is None
    assert await rules.ensure(TOKEN) == meta()
    assert await rules.ensure(TOKEN) == meta()
    assert await rules.ensure(OTHER) == meta(token_id=OTHER)  # came with the first fetch
    assert venue.calls == [TOKEN]


async def test_concurrent_first_uses_share_one_fetch() -> None:
    venue = Venue([meta(), meta(token_id=OTHER)])
    venue.gate.clear()
    rules = MarketRules(source=venue)
    waiting = [asyncio.create_task(rules.ensure(TOKEN)) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    venue.gate.set()
    assert await asyncio.gather(*waiting) == [meta()] * 3
    assert venue.calls == [TOKEN]


async def test_a_fetch_does_not_overwrite_what_the_feed_already_told() -> None:
    venue = Venue([meta(), meta(token_id=OTHER)])
    rules = MarketRules(source=venue)
    rules.put(meta(token_id=OTHER, tick_size=D("0.001")))  # a tick_size_change already seen
    assert await rules.ensure(TOKEN) == meta()
    assert rules.get(OTHER) == meta(token_id=OTHER, tick_size=D("0.001"))


async def test_a_failed_fetch_answers_none_and_the_next_use_tries_again() -> None:
    venue = Venue([meta()], fail=1)
    venue.gate.clear()
    rules = MarketRules(source=venue)
    first = [asyncio.create_task(rules.ensure(TOKEN)) for _ in range(2)]
    await asyncio.sleep(0)
    venue.gate.set()
    assert await asyncio.gather(*first) == [None, None]  # the waiter is released too
    assert await rules.ensure(TOKEN) == meta()
    assert venue.calls == [TOKEN, TOKEN]


async def test_an_unknown_token_is_none_and_without_a_source_nothing_is_fetched() -> None:
    assert await MarketRules(source=Venue([])).ensure(TOKEN) is None
    assert await MarketRules().ensure(TOKEN) is None


# --- the checks ------------------------------------------------------------------------------


def order(**overrides: object) -> OrderRequest:
    return make_order(**overrides)


@pytest.mark.parametrize(
    ("req", "rules", "reason"),
    [
        # Price: inside [tick, 1 - tick], both edges included.
        (order(price="0.01"), meta(), None),
        (order(price="0.99"), meta(), None),
        (order(price="0.009"), meta(), "price 0.009 outside [0.01, 0.99]"),
        (order(price="0.991"), meta(), "price 0.991 outside [0.01, 0.99]"),
        (order(price="0.001"), meta(tick_size=D("0.001")), None),
        (order(price="0.999"), meta(tick_size=D("0.001")), None),
        (order(price="0.05"), meta(tick_size=D("0.1")), "price 0.05 outside [0.1, 0.9]"),
        (order(price="0.95"), meta(tick_size=D("0.1")), "price 0.95 outside [0.1, 0.9]"),
        # Price: on the grid.
        (order(price="0.555"), meta(), "price 0.555 is not on the tick grid 0.01"),
        (order(price="0.5"), meta(tick_size=D("0.1")), None),
        # Size: at most 2 decimals.
        (order(size="10.01"), meta(), None),
        (order(size="10.001"), meta(), "size 10.001 has more than 2 decimal places"),
        (order(size="10.019"), meta(), "size 10.019 has more than 2 decimal places"),
        # Minimum size for resting orders, at, just under and just over.
        (order(size="5"), meta(), None),
        (order(size="4.99"), meta(), "size 4.99 is under the market minimum 5"),
        (order(size="5.01"), meta(), None),
        (order(order_type="FOK", size="4.99"), meta(), None),  # marketable: no minimum
        (
            order(side="SELL", size="4.99"),
            meta(),
            "size 4.99 is under the market minimum 5",
        ),
        # Marketable BUY: at least $1 after rounding down to the cent.
        (order(order_type="FOK", price="0.5", size="2"), meta(), None),
        (
            order(order_type="FOK", price="0.5", size="1.99"),
            meta(),
            "marketable BUY notional 0.995 is under $1",
        ),
        (
            order(order_type="FAK", price="0.999", size="1.01"),
            meta(tick_size=D("0.001")),
            None,
        ),
        (
            order(order_type="FAK", price="0.999", size="1"),
            meta(tick_size=D("0.001")),
            "marketable BUY notional 0.999 is under $1",
        ),
        (order(order_type="FAK", side="SELL", price="0.5", size="1"), meta(), None),
        (order(order_type="GTC", price="0.5", size="5"), meta(), None),  # $2.50 resting: fine
    ],
)
def test_check_refuses_exactly_what_the_venue_refuses(
    req: OrderRequest, rules: MarketMeta, reason: str | None
) -> None:
    assert MarketRules.check(req, rules) == reason


def test_marketable_buy_notional_rounds_down_before_the_dollar_floor() -> None:
    # 0.67 x 1.49 = 0.9983 and 0.67 x 1.5 = 1.005: the venue sees 0.99 and 1.00.
    assert MarketRules.check(order(order_type="FOK", price="0.67", size="1.5"), meta()) is None
    # 0.991 x 1.01 = 1.00091: rounds to 1.00, at the floor.
    tick = meta(tick_size=D("0.001"))
    assert MarketRules.check(order(order_type="FOK", price="0.991", size="1.01"), tick) is None
    assert (
        MarketRules.check(order(order_type="FOK", price="0.67", size="1.49"), meta())
        == "marketable BUY notional 0.9983 is under $1"
    )


@pytest.mark.parametrize(
    ("closed", "accepting", "reason"),
    [
        (True, True, "market is closed"),
        (True, False, "market is closed"),  # closed is named first
        (False, False, "market is not accepting orders"),
        (False, True, None),
    ],
)
def test_a_closed_or_paused_market_refuses_any_order(
    closed: bool, accepting: bool, reason: str | None
) -> None:
    m = meta(closed=closed, accepting_orders=accepting)
    assert MarketRules.check(order(), m) == reason
    assert MarketRules.check(order(side="SELL", order_type="FOK"), m) == reason


def test_an_unknown_market_is_refused_with_its_token() -> None:
    assert MarketRules.check(order(), None) == f"unknown market for token {TOKEN}"


def test_gtd_expiration_must_be_more_than_a_minute_ahead() -> None:
    now = time.time() + 1000  # a fixed "now"; the order's own validation needs a future expiry
    gtd = "GTD expiration must be more than 60 s ahead"
    at = int(now) + 60
    assert MarketRules.check(order(order_type="GTD", expiration=at), meta(), now=int(now)) == gtd
    assert (
        MarketRules.check(order(order_type="GTD", expiration=at + 1), meta(), now=int(now)) is None
    )
    assert (
        MarketRules.check(order(order_type="GTD", expiration=at - 1), meta(), now=int(now)) == gtd
    )


def test_gtd_check_uses_the_wall_clock_by_default() -> None:
    soon = int(time.time()) + 30  # valid as an order (future), refused by the venue's 60 s rule
    assert (
        MarketRules.check(order(order_type="GTD", expiration=soon), meta())
        == "GTD expiration must be more than 60 s ahead"
    )
    later = int(time.time()) + 3600
    assert MarketRules.check(order(order_type="GTD", expiration=later), meta()) is None


# --- rounding is always down, never to nearest -------------------------------------------------


def test_marketable_amounts_round_down_where_nearest_would_round_up() -> None:
    # BUY 20.62 @ 0.97: 20.0014 -> 20.00 pUSD; 20.00 / 0.97 = 20.618556... -> 20.6185 shares.
    buy = make_order(side="BUY", order_type="FOK", price="0.97", size="20.62")
    assert order_amounts(buy) == (D("20.00"), D("20.6185"))
    assert fillable_size(buy) == D("20.6185")
    # SELL 10.01 @ 0.555: 5.55555 pUSD -> 5.5555 (half-even would say 5.5556).
    sell = make_order(side="SELL", order_type="FAK", price="0.555", size="10.01")
    assert order_amounts(sell) == (D("10.01"), D("5.5555"))


def test_a_marketable_sell_never_offers_more_shares_than_asked() -> None:
    # 10.019 shares: the venue's 2-decimal maker amount is 10.01, not 10.02.
    sell = make_order(side="SELL", order_type="FAK", price="0.5", size="10.019")
    assert order_amounts(sell) == (D("10.01"), D("5.005"))
    assert fillable_size(sell) == D("10.01")


def test_an_order_without_expiry_is_not_held_to_the_gtd_rule() -> None:
    # The wire's "no expiration" is 0; only GTD orders carry a real one.
    for order_type in ("GTC", "FOK"):
        req = make_order(order_type=order_type, expiration=0)
        assert MarketRules.check(req, meta(), now=time.time()) is None


# --- what the operator is told -----------------------------------------------------------------


async def test_an_unavailable_venue_is_logged_with_the_token_and_error() -> None:
    rules = MarketRules(source=Venue([meta()], fail=1))
    with capture_logs() as logs:
        assert await rules.ensure(TOKEN) is None
    assert [e for e in logs if e["event"] == "market_meta_unavailable"] == [
        {
            "event": "market_meta_unavailable",
            "log_level": "warning",
            "token_id": TOKEN,
            "error": "TransientError",
        }
    ]


def test_a_tick_size_change_is_logged_with_old_and_new_grid() -> None:
    rules = MarketRules()
    rules.put(meta())
    with capture_logs() as logs:
        rules.set_tick_size(TOKEN, D("0.001"))
        rules.set_tick_size(OTHER, D("0.001"))  # unknown: nothing changed, nothing logged
    assert logs == [
        {
            "event": "tick_size_changed",
            "log_level": "info",
            "token_id": TOKEN,
            "old": "0.01",
            "new": "0.001",
        }
    ]


# --- the cache's bound ---------------------------------------------------------------------------


def test_the_cache_keeps_at_most_max_tokens_and_the_newest_written() -> None:
    rules = MarketRules(max_tokens=100)
    for i in range(1_000):
        rules.put(meta(token_id=str(i), tick_size=D("0.001") if i % 2 else D("0.01")))
        assert rules.cached <= 100
    assert rules.get("999") == meta(token_id="999", tick_size=D("0.001"))
    assert rules.get("950") == meta(token_id="950")
    assert rules.get("0") is None and rules.get("899") is None


def test_a_rewritten_token_is_the_newest_and_outlives_older_ones() -> None:
    rules = MarketRules(max_tokens=4)
    for t in "abcd":
        rules.put(meta(token_id=t))
    rules.set_tick_size("a", D("0.001"))  # discovery or the feed wrote "a" again
    rules.put(meta(token_id="e"))  # over the bound: the oldest written go first
    assert rules.get("b") is None
    assert rules.get("a") == meta(token_id="a", tick_size=D("0.001"))
    assert rules.get("e") == meta(token_id="e")
    assert rules.cached == 3


async def test_an_evicted_token_is_fetched_again_on_its_next_use() -> None:
    venue = Venue([meta(), meta(token_id=OTHER)])
    rules = MarketRules(source=venue, max_tokens=2)
    assert await rules.ensure(TOKEN) == meta()
    rules.put(meta(token_id="x", condition_id="0x" + "cd" * 32))
    rules.put(meta(token_id="y", condition_id="0x" + "cd" * 32))
    assert rules.get(TOKEN) is None and rules.cached <= 2
    assert await rules.ensure(TOKEN) == meta()
    assert venue.calls == [TOKEN, TOKEN]


# --- refresh (an off-grid price, a tick change missed) -------------------------------------------
FEE = FeeSchedule(rate=D("0.02"), source=FeeSource.CLOB)


async def test_a_refresh_takes_the_venues_tick_and_keeps_a_resolution_and_a_read_fee() -> None:
    """The venue's new tick (and the sibling's) replaces the cached one; a resolution the venue's
    row does not show and a CLOB fee it could not read this time are kept, whole."""
    resolved = meta(accepting_orders=False, closed=True, payout=D(1), fee=FEE)
    venue = Venue([meta(tick_size=D("0.001")), meta(token_id=OTHER, tick_size=D("0.001"))])
    rules = MarketRules(source=venue)
    rules.put(resolved)
    rules.put(meta(token_id=OTHER, fee=FEE))
    assert await rules.refresh(TOKEN) == replace(resolved, tick_size=D("0.001"))
    assert rules.get(OTHER) == meta(token_id=OTHER, tick_size=D("0.001"), fee=FEE)
    assert venue.calls == [TOKEN]
    # A fee the venue did read replaces the cached one; a row for a token never seen is stored.
    gamma = FeeSchedule(rate=D("0.01"), source=FeeSource.GAMMA)
    venue.metas = [meta(fee=replace(FEE, rate=D("0.03"))), meta(token_id=OTHER, fee=gamma)]
    got = await rules.refresh(TOKEN)
    assert got is not None and got.fee == replace(FEE, rate=D("0.03"))
    fresh = MarketRules(source=venue)
    assert await fresh.refresh(OTHER) == meta(token_id=OTHER, fee=gamma)


async def test_a_refresh_the_venue_cannot_answer_keeps_what_was_cached() -> None:
    venue = Venue([meta(tick_size=D("0.001"))], fail=1)
    rules = MarketRules(source=venue)
    rules.put(meta())
    with capture_logs() as logs:
        assert await rules.refresh(TOKEN) == meta()
    assert logs == [
        {
            "event": "market_meta_unavailable",
            "log_level": "warning",
            "token_id": TOKEN,
            "error": "TransientError",
        }
    ]
    offline = MarketRules()  # no venue to ask (paper without metadata): the cache answers
    offline.put(meta())
    assert await offline.refresh(TOKEN) == meta()
