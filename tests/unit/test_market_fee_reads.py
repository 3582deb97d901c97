"""Reading a market's CLOB fee after discovery loaded it from Gamma: which market is asked, what
the answer adds to the cache, what the operator is told when it cannot be read, and that the
bookkeeping of those reads stays as bounded as the cache.

The venue's precedence (`/clob-markets` `fd` first, Gamma's `feeSchedule` only as the fallback)
is sourced in `test_fee_model.py`; this file holds the cache's side of it.
"""

from __future__ import annotations

from decimal import Decimal as D

from structlog.testing import capture_logs

from errors import TransientError
from execution.fees import NO_FEE, FeeSchedule, FeeSource
from execution.market_rules import MarketRules
from execution.ports import MarketMeta
from models import Fill, LiquidityRole, Side
from tests.helpers import TOKEN
from tests.unit.test_fee_model import OTHER, market, meta

CLOB_FEE = FeeSchedule(rate=D("0.072"), source=FeeSource.CLOB)
GAMMA_FEE = FeeSchedule(rate=D("0.05"), source=FeeSource.GAMMA)


class Venue:
    """A `MetadataSource` for the one market of `TOKEN` and `OTHER`: it answers both tokens
    with the CLOB's fee, or fails `fail` times first; it records the token each read asked for."""

    def __init__(self, *, fail: int = 0) -> None:
        self.fail = fail
        self.asked: list[str] = []

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        self.asked.append(token_id)
        if self.fail:
            self.fail -= 1
            raise TransientError("venue unavailable")
        return [meta(TOKEN, CLOB_FEE), meta(OTHER, CLOB_FEE)]


async def test_the_fee_read_asks_for_the_tokens_own_market_and_returns_its_metadata() -> None:
    venue = Venue()
    rules = MarketRules(source=venue)
    rules.load_market(market(fee_rate=D("0.05")))
    assert await rules.ensure(TOKEN) == meta(TOKEN, CLOB_FEE)  # the first order reads `fd`
    assert venue.asked == [TOKEN]
    assert rules.get(OTHER) == meta(OTHER, CLOB_FEE)  # the sibling's came with it


async def test_a_sibling_the_cache_does_not_hold_is_stored_from_the_fee_read() -> None:
    """Only one token of the market was known (the other evicted, or never discovered): the
    read's row for the other one is stored as it came."""
    rules = MarketRules(source=Venue())
    rules.put(meta(TOKEN, GAMMA_FEE))
    assert await rules.ensure(TOKEN) == meta(TOKEN, CLOB_FEE)
    assert rules.get(OTHER) == meta(OTHER, CLOB_FEE)


async def test_a_fee_read_the_venue_cannot_answer_is_logged_and_gammas_fee_stays() -> None:
    rules = MarketRules(source=Venue(fail=1))
    rules.load_market(market(fee_rate=D("0.05")))
    with capture_logs() as logs:
        assert await rules.ensure(TOKEN) == meta(TOKEN, GAMMA_FEE)
    assert logs == [
        {
            "event": "market_fee_unavailable",
            "log_level": "warning",
            "token_id": TOKEN,
            "error": "TransientError",
        }
    ]


def test_a_rediscovery_without_gammas_schedule_keeps_the_gamma_fee_known_before() -> None:
    """Gamma shows a fee market's schedule on one read and not on the next (`feeSchedule`
    absent: `fee_rate` None): the fee known before stays, it is not reset to none."""
    rules = MarketRules()
    rules.load_market(market(fee_rate=D("0.05")))
    rules.load_market(market())
    assert rules.fee(TOKEN) == GAMMA_FEE and rules.fee(OTHER) == GAMMA_FEE
    fresh = MarketRules()
    fresh.load_market(market())
    assert fresh.fee(TOKEN) == NO_FEE


async def test_a_fill_of_a_market_not_yet_cached_books_the_fee_read_for_it() -> None:
    """A fill can arrive (user feed, reconcile) for a market no order of this run went through:
    its market is fetched before its fee is worked out."""
    venue = Venue()
    rules = MarketRules(source=venue)
    fill = Fill(
        trade_id="t1",
        venue_order_id="0x1",
        token_id=TOKEN,
        side=Side.BUY,
        price=D("0.97"),
        size=D(100),
        role=LiquidityRole.TAKER,
    )
    assert (await rules.with_fee(fill)).fee == D("0.20952")
    assert venue.asked == [TOKEN]


async def test_the_record_of_fee_reads_is_bounded_with_the_cache() -> None:
    """Every Gamma-discovered token whose fee read failed is remembered (so it is not asked
    again at once); an evicted token's record goes with it, so thousands of markets coming and
    going leave no more records than the cache holds tokens."""
    rules = MarketRules(source=Venue(fail=10_000), max_tokens=40)
    for i in range(1_000):
        token = f"{7 * 10**69 + i}"
        rules.put(meta(token, GAMMA_FEE, condition="0x" + f"{i + 1:064x}"))
        assert await rules.ensure(token) == meta(token, GAMMA_FEE, "0x" + f"{i + 1:064x}")
        assert rules.cached <= 40
        assert len(rules._fee_tried) <= rules.cached  # the container under test has no API
