"""Tick refusals, re-pricing and resolution: the pure rules, the real venue payloads they read
(captures under the shared fixtures: NT's closed-market rows from PR #4164, the docs'
`market_resolved` example) and the resolution state across a restart."""

from __future__ import annotations

import copy
import json
from decimal import Decimal as D
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import cli_views
from execution.market_rules import MarketRules
from execution.ports import MarketMeta
from execution.positions import PositionBook
from execution.repricing import REPRICE_SUFFIX, refused_tick, repriced
from execution.resolution import Resolutions, valid_payouts
from execution.settlement import Settlement
from execution.tracker import OrderTracker
from models import OrderStatus, OrderType, Position, Side
from observability.metrics import Metrics
from storage import Repositories
from storage.reports import Reports
from tests.helpers import FIXTURES, TOKEN, make_order
from venue.clob.wire import clob_payouts, meta_from_market
from venue.gamma import resolution_payouts
from venue.market_feed.parsing import parse_market_resolved

OTHER = "2" * 70
CONDITION = "0x" + "ab" * 32
REFUSAL = "order 0xabc is invalid. Price (0.555) breaks minimum tick size rule: 0.01"


def fixture(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text())


def meta(**kw: Any) -> MarketMeta:
    base: dict[str, Any] = {
        "token_id": TOKEN,
        "condition_id": CONDITION,
        "tick_size": D("0.01"),
        "min_size": D("5"),
        "neg_risk": False,
    }
    return MarketMeta(**(base | kw))


# --- the refusal and the re-price --------------------------------------------------------
def test_the_venue_refusal_names_its_tick_and_other_reasons_do_not() -> None:
    assert refused_tick(REFUSAL) == D("0.01")
    assert refused_tick("order 0x1 is invalid. Price (0.5) breaks minimum tick size rule: 0.001")
    assert refused_tick("not enough balance / allowance") is None
    assert refused_tick("... breaks minimum tick size rule: 7") is None


@pytest.mark.parametrize(
    ("side", "price", "tick", "want"),
    [
        (Side.BUY, "0.555", "0.01", "0.55"),  # a BUY never pays more than asked
        (Side.SELL, "0.555", "0.01", "0.56"),  # a SELL never takes less
        (Side.BUY, "0.9751", "0.001", "0.975"),
        (Side.SELL, "0.04", "0.1", "0.1"),
    ],
)
def test_repricing_moves_to_the_grid_never_looser(
    side: Side, price: str, tick: str, want: str
) -> None:
    req = make_order(side=side, price=D(price), size=D("10"), order_type=OrderType.GTC)
    new = repriced(req, D(tick))
    assert not isinstance(new, str)
    assert new.price == D(want)
    assert new.client_order_id == req.client_order_id + REPRICE_SUFFIX
    assert (new.side, new.size, new.token_id) == (req.side, req.size, req.token_id)


def test_repricing_gives_up_outside_the_range_or_on_the_same_price() -> None:
    low = make_order(side=Side.BUY, price=D("0.005"), size=D("10"), order_type=OrderType.GTC)
    assert repriced(low, D("0.01")) == "re-priced 0.005 on tick 0.01 is 0.00, outside [0.01, 0.99]"
    high = make_order(side=Side.SELL, price=D("0.995"), size=D("10"), order_type=OrderType.GTC)
    assert "outside [0.01, 0.99]" in str(repriced(high, D("0.01")))
    same = make_order(side=Side.BUY, price=D("0.55"), size=D("10"), order_type=OrderType.GTC)
    assert "on tick 0.01 already" in str(repriced(same, D("0.01")))


def test_a_long_client_order_id_stays_within_64_characters() -> None:
    req = make_order(price=D("0.555"), client_order_id="c" * 64, order_type=OrderType.GTC)
    new = repriced(req, D("0.01"))
    assert not isinstance(new, str)
    assert len(new.client_order_id) == 64 and new.client_order_id.endswith(REPRICE_SUFFIX)


# --- market rules ------------------------------------------------------------------------
class Venue:
    """A metadata source whose answer the test changes (the venue's current tick)."""

    def __init__(self, tick: D) -> None:
        self.tick = tick
        self.calls = 0

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        self.calls += 1
        return [meta(tick_size=self.tick), meta(token_id=OTHER, tick_size=self.tick)]


async def test_a_price_off_the_cached_grid_refetches_the_tick_before_refusing() -> None:
    venue = Venue(D("0.01"))
    rules = MarketRules(source=venue)
    await rules.ensure(TOKEN)
    venue.tick = D("0.001")  # the price went above 0.96 and the change was missed
    req = make_order(price=D("0.975"), order_type=OrderType.GTC)
    got, reason = await rules.admit(req)
    assert reason is None and got is not None and got.tick_size == D("0.001")
    assert venue.calls == 2
    off = make_order(price=D("0.9755"), order_type=OrderType.GTC)
    _, reason = await rules.admit(off)
    assert reason == "price 0.9755 is not on the tick grid 0.001"  # still off: refused


async def test_a_price_outside_the_cached_range_refetches_the_tick_and_nothing_else_does() -> None:
    """0.995 is outside [0.01, 0.99] on the cached tick but on the finer one the venue moved to;
    a refusal that is not about the price (a size under the minimum) asks the venue nothing."""
    venue = Venue(D("0.01"))
    rules = MarketRules(source=venue)
    await rules.ensure(TOKEN)
    small = make_order(price=D("0.50"), size=D("1"), order_type=OrderType.GTC)
    _, reason = await rules.admit(small)
    assert reason == "size 1 is under the market minimum 5" and venue.calls == 1
    venue.tick = D("0.001")
    got, reason = await rules.admit(make_order(price=D("0.995"), order_type=OrderType.GTC))
    assert reason is None and got is not None and got.tick_size == D("0.001")
    assert venue.calls == 2


async def test_a_resolution_keeps_what_was_known_of_the_market_and_records_an_unknown_one() -> None:
    """Resolved: not accepting orders, closed, the payout; the tick, minimum, fee and condition
    of a known token stay, and a token never seen gets the venue's defaults."""
    rules = MarketRules()
    known = meta(tick_size=D("0.001"), min_size=D("15"), neg_risk=True)
    rules.put(known)
    rules.mark_resolved(TOKEN, "0x" + "cd" * 32, D("0.5"))
    assert rules.get(TOKEN) == MarketMeta(
        TOKEN, CONDITION, D("0.001"), D("15"), True, False, True, D("0.5")
    )
    rules.mark_resolved(OTHER, CONDITION, D(0))
    assert rules.get(OTHER) == MarketMeta(
        OTHER, CONDITION, D("0.01"), D("5"), False, False, True, D(0)
    )


async def test_a_resolved_token_refuses_every_order_and_keeps_it_across_refreshes() -> None:
    venue = Venue(D("0.01"))
    rules = MarketRules(source=venue)
    await rules.ensure(TOKEN)
    rules.mark_resolved(TOKEN, CONDITION, D(1))
    rules.set_tick_size(TOKEN, D("0.001"))
    _, reason = await rules.admit(make_order(price=D("0.5"), order_type=OrderType.GTC))
    assert reason == "market resolved (this token pays 1): no new orders"
    await rules.refresh(TOKEN)  # the venue's row says nothing of it: the resolution stays
    got = rules.get(TOKEN)
    assert got is not None and got.payout == D(1) and not got.tradable
    rules.mark_resolved("9" * 70, CONDITION, D(0))  # never seen before: still refused
    assert MarketRules.check(make_order(token_id="9" * 70), rules.get("9" * 70)) is not None


# --- what the venue says -----------------------------------------------------------------
def test_clob_winner_from_the_real_closed_market_row() -> None:
    row = fixture("clob_rest/market_closed_accepting_orders_false_2026.json")
    yes, no = (t["token_id"] for t in row["tokens"])
    assert clob_payouts(row) == {yes: D(0), no: D(1)}
    metas = meta_from_market(row["condition_id"], row)
    assert [(m.payout, m.tradable) for m in metas] == [(D(0), False), (D(1), False)]
    half = copy.deepcopy(row) | {"is_50_50_outcome": True}
    assert clob_payouts(half) == {yes: D("0.5"), no: D("0.5")}
    undecided = copy.deepcopy(row)
    for t in undecided["tokens"]:
        t["winner"] = False
    assert clob_payouts(undecided) == {}
    assert clob_payouts(row | {"closed": False}) == {}


def test_gamma_resolution_needs_closed_resolved_and_one_outcome_at_1() -> None:
    row = fixture("gamma/market_closed_binary_accepting_false_2026.json")
    yes, no = json.loads(row["clobTokenIds"])
    assert resolution_payouts(row) == {yes: D(0), no: D(1)}
    # Closed but the oracle has not said "resolved" (NT's accepting-true capture): keep polling.
    assert (
        resolution_payouts(fixture("gamma/market_closed_binary_accepting_true_2026.json")) is None
    )
    assert (
        resolution_payouts(fixture("gamma/market_closed_outcome_prices_zero_zero_2020.json"))
        is None
    )
    assert resolution_payouts(row | {"outcomePrices": '["0.58", "0.42"]'}) is None
    assert resolution_payouts(row | {"umaResolutionStatus": "disputed"}) is None
    assert resolution_payouts(row | {"outcomePrices": "not json"}) is None


def test_market_resolved_gives_its_winner() -> None:
    ev = fixture("ws_market/market_resolved_DOC_EXAMPLE.json")
    parsed = parse_market_resolved(ev)
    assert parsed.winner == ev["winning_asset_id"] and parsed.token_ids == ev["assets_ids"]
    assert parse_market_resolved(ev | {"winning_asset_id": "someone else"}).winner is None


def test_only_1_0_and_half_half_are_settled() -> None:
    assert valid_payouts({"a": D(1), "b": D(0)})
    assert valid_payouts({"a": D("0.5"), "b": D("0.5")})
    assert not valid_payouts({"a": D(0), "b": D(0)})
    assert not valid_payouts({"a": D("0.58"), "b": D("0.42")})
    assert not valid_payouts({"a": D(1)})


# --- positions and the resolution state --------------------------------------------------
def test_a_resolved_position_is_marked_at_its_payout_and_counted_redeemable() -> None:
    book = PositionBook()
    book.set_position(Position(token_id=TOKEN, size=D("10"), avg_cost=D("0.4")))
    book.set_position(Position(token_id=OTHER, size=D("4"), avg_cost=D("0.5")))
    assert book.redeemable() == 0 and book.unrealized() == 0  # no books: no marks
    book.set_payout(TOKEN, D(1))
    book.set_payout(OTHER, D("0.5"))
    assert book.mark(TOKEN) == D(1)
    assert book.unrealized() == D("6.0")  # 10 x (1 - 0.4) + 4 x (0.5 - 0.5)
    assert book.redeemable() == D("12.0")


def resolutions(repos: Repositories) -> tuple[Resolutions, MarketRules, PositionBook, Metrics]:
    metrics = Metrics(registry=CollectorRegistry())
    rules, positions = MarketRules(), PositionBook()
    tracker = OrderTracker(
        journal=repos.orders, positions=positions, metrics=metrics, on_storage_failure=print
    )
    settle = Settlement(repos=repos, tracker=tracker, metrics=metrics, on_storage_failure=print)
    res = Resolutions(rules=rules, positions=positions, repos=repos, settle=settle, metrics=metrics)
    return res, rules, positions, metrics


async def test_a_resolution_is_applied_once_stored_and_restored(repos: Repositories) -> None:
    res, _, positions, metrics = resolutions(repos)
    positions.set_position(Position(token_id=TOKEN, size=D("10"), avg_cost=D("0.4")))
    assert not await res.resolved(CONDITION, {TOKEN: D(0), OTHER: D(0)}, "gamma")  # no winner
    assert await res.resolved(CONDITION, {TOKEN: D(1), OTHER: D(0)}, "market_feed")
    assert not await res.resolved(CONDITION, {TOKEN: D(1), OTHER: D(0)}, "clob")  # known
    assert positions.redeemable() == D(10)
    assert res.tokens_of_interest() == {TOKEN} and res.tokens_to_watch() == set()
    assert 'polyd_markets_resolved_total{source="market_feed"} 1.0' in metrics.render().decode()
    again, rules2, positions2, _ = resolutions(repos)  # a restart
    positions2.set_position(Position(token_id=TOKEN, size=D("10"), avg_cost=D("0.4")))
    await again.load()
    assert again.payout(TOKEN) == D(1) and positions2.redeemable() == D(10)
    assert MarketRules.check(make_order(), rules2.get(TOKEN)) is not None
    audit = await repos.audit.tail(event="market_resolved")
    assert len(audit) == 1 and audit[0].detail["condition_id"] == CONDITION


async def test_reports_show_the_payout_and_the_redeemable_value(
    repos: Repositories, tmp_path: Any
) -> None:
    res, *_ = resolutions(repos)
    assert await res.resolved(CONDITION, {TOKEN: D("0.5"), OTHER: D("0.5")}, "clob")
    with Reports.open(tmp_path / "polyd.db") as r:
        assert r.payouts() == {TOKEN: D("0.5"), OTHER: D("0.5")}


def test_cli_amounts_print_fixed_point() -> None:
    assert cli_views.q("10.00", 2) == "10"
    assert cli_views.q("1E+1", 2) == "10"
    assert cli_views.q("12.345", 2) == "12.34"


async def test_a_resolution_marks_our_resting_orders_canceled_and_refuses_new_ones(
    repos: Repositories,
) -> None:
    """Without any venue event: the journal's open orders in the resolved market end CANCELED."""
    from tests.unit.test_executor_paper import COND, DictBooks, make_executor
    from tests.unit.test_executor_paper import TOKEN as PAPER_TOKEN

    ex = make_executor(repos, DictBooks())
    await ex.start()
    resting = await ex.submit(make_order(token_id=PAPER_TOKEN, price=D("0.30")))
    assert resting.status is OrderStatus.LIVE and ex.positions.open_count == 1
    res = Resolutions(
        rules=ex.rules, positions=ex.positions, repos=repos, settle=ex.settle, metrics=ex.metrics
    )
    assert await res.resolved(COND, {PAPER_TOKEN: D(0), OTHER: D(1)}, "gamma")
    row = await repos.orders.get(resting.client_order_id)
    assert row is not None and row.status is OrderStatus.CANCELED
    assert ex.positions.open_count == 0
    again = await ex.submit(make_order(token_id=PAPER_TOKEN, price=D("0.30")))
    assert again.status is OrderStatus.REJECTED
    assert again.reason == "rules: market resolved (this token pays 0): no new orders"
