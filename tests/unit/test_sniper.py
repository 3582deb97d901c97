"""Sniper decisions against a BookStore and a recording OrderSink (the executor's seam)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from errors import ConfigError
from models import Market, OrderRequest, OrderResult, OrderStatus, OrderType, Position, Side
from strategies.base import OrderSink
from strategies.sniper import Sniper, SniperRule, load_rules, parse_rules
from venue.order_book import BookStore

YES = "1" * 70
NO = "2" * 70
CID = "0x" + "ab" * 32
ROOT = Path(__file__).resolve().parents[2]


class RecordingExecutor:
    """Implements OrderSink/PositionSource/TickSizeSink; answers with a scripted status.

    A BUY's fill reaches the position with its answer, or (`fills_later`) only when the test
    calls `deliver_fills()`, as when the ack beats the user websocket's fill live.
    """

    def __init__(self, status: OrderStatus = OrderStatus.FILLED, fills_later: bool = False) -> None:
        self.status = status
        self.fills_later = fills_later
        self.requests: list[OrderRequest] = []
        self.gate: asyncio.Event | None = None
        self.ticks: dict[str, D] = {}
        self.held: dict[str, D] = {}
        self.undelivered: list[tuple[str, D]] = []

    async def submit(self, request: OrderRequest) -> OrderResult:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        filled = request.size if self.status is OrderStatus.FILLED else D(0)
        if request.side is Side.BUY and filled:
            self.undelivered.append((request.token_id, filled))
            if not self.fills_later:
                self.deliver_fills()
        return OrderResult(
            client_order_id=request.client_order_id,
            status=self.status if request.side is Side.BUY else OrderStatus.LIVE,
            filled_size=filled,
            avg_price=request.price if filled else None,
            reason="risk: max exposure" if self.status is OrderStatus.REJECTED else "",
        )

    def deliver_fills(self) -> None:
        for token, size in self.undelivered:
            self.held[token] = self.held.get(token, D(0)) + size
        self.undelivered.clear()

    def position(self, token_id: str, *, strategy: str) -> Position:
        return Position(token_id=token_id, strategy=strategy, size=self.held.get(token_id, D(0)))

    @property
    def sells(self) -> list[OrderRequest]:
        return [r for r in self.requests if r.side is Side.SELL]

    def set_tick_size(self, token_id: str, tick_size: D) -> None:
        self.ticks[token_id] = tick_size

    @property
    def buys(self) -> list[OrderRequest]:
        return [r for r in self.requests if r.side is Side.BUY]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rule(**kw: Any) -> SniperRule:
    base: dict[str, Any] = {
        "name": "r1",
        "select": {"token_ids": [YES]},
        "min_price": "0.90",
        "max_price": "0.95",
        "min_size": "10",
        "max_notional": "19",
        "cooldown_s": 0,
        "max_entries": 5,
    }
    base.update(kw)
    return SniperRule.model_validate(base)


def market(**kw: Any) -> Market:
    base: dict[str, Any] = {
        "condition_id": CID,
        "token_ids": (YES, NO),
        "tick_size": D("0.01"),
        "min_size": D("5"),
        "end_date": datetime.now(UTC) + timedelta(minutes=10),
    }
    base.update(kw)
    return Market(**base)


def set_book(
    store: BookStore,
    asks: dict[str, str],
    bids: dict[str, str] | None = None,
    token: str = YES,
) -> None:
    b = store.ensure(token)
    b.replace(
        {D(p): D(s) for p, s in (bids or {"0.5": "10"}).items()},
        {D(p): D(s) for p, s in asks.items()},
        book_hash="",
        timestamp_ms=0,
        now=0.0,
    )
    store.notify([token])


@contextlib.asynccontextmanager
async def sniper_running(
    rules: list[SniperRule],
    sink: OrderSink,
    *,
    mkt: Market | None = None,
    clock: Clock | None = None,
    fill_wait_s: float = 5.0,
) -> AsyncIterator[tuple[Sniper, BookStore]]:
    store = BookStore(stale_after_s=60)
    sn = Sniper(
        rules=rules, books=store, orders=sink, clock=clock or Clock(), fill_wait_s=fill_wait_s
    )
    sn.set_market(mkt or market())
    task = asyncio.create_task(sn.run())
    await asyncio.sleep(0)
    try:
        yield sn, store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_opportunity_fires_exactly_once_while_it_persists() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule()], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        for size in ("90", "80", "70"):  # the same opportunity keeps changing size
            set_book(store, {"0.93": size})
            await settle()
    assert len(ex.buys) == 1
    req = ex.buys[0]
    assert (req.side, req.price, req.order_type) == (Side.BUY, D("0.95"), OrderType.FAK)
    assert req.size == D("20.00")  # 19 / 0.95, below the depth of 100


async def test_opportunity_gone_then_back_fires_again() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule()], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        set_book(store, {"0.97": "100"})  # the ask moves out of the band
        await settle()
        set_book(store, {"0.92": "100"})
        await settle()
    assert [r.price for r in ex.buys] == [D("0.95"), D("0.95")]


async def test_cooldown_delays_next_entry_until_a_change_after_it() -> None:
    ex = RecordingExecutor()
    clock = Clock()
    async with sniper_running([rule(cooldown_s=30)], ex, clock=clock) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        set_book(store, {"0.99": "100"})
        await settle()
        set_book(store, {"0.93": "100"})  # a new opportunity, inside the cooldown
        await settle()
        assert len(ex.buys) == 1
        clock.now += 31
        set_book(store, {"0.93": "99"})
        await settle()
    assert len(ex.buys) == 2


async def test_max_entries_caps_accepted_entries_per_token() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule(max_entries=2)], ex) as (_, store):
        for _ in range(4):
            set_book(store, {"0.93": "100"})
            await settle()
            set_book(store, {"0.99": "100"})
            await settle()
    assert len(ex.buys) == 2


async def test_risk_refusal_is_not_retried_and_not_counted_as_entry() -> None:
    ex = RecordingExecutor(status=OrderStatus.REJECTED)
    async with sniper_running([rule(max_entries=1)], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        set_book(store, {"0.93": "50"})  # same opportunity: no retry of a refused order
        await settle()
        assert len(ex.buys) == 1
        ex.status = OrderStatus.FILLED
        set_book(store, {"0.99": "100"})
        await settle()
        set_book(store, {"0.93": "100"})  # a new opportunity may still enter (0 entries so far)
        await settle()
    assert len(ex.buys) == 2


async def test_in_flight_submission_blocks_a_second_order_for_the_token() -> None:
    ex = RecordingExecutor(status=OrderStatus.REJECTED)  # nothing filled: the book still holds
    ex.gate = asyncio.Event()
    second = rule(name="r2", min_price="0.91")
    async with sniper_running([rule(), second], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        assert len(ex.buys) == 1  # r2 also matches but waits for the in-flight order
        ex.gate.set()
        await settle()
    assert len(ex.buys) == 2


async def test_after_our_fill_the_token_waits_for_the_feed_to_show_its_book_again() -> None:
    ex = RecordingExecutor()
    ex.gate = asyncio.Event()
    second = rule(name="r2", min_price="0.91")
    async with sniper_running([rule(), second], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        ex.gate.set()
        await settle()
        # The book still shows the asks our FAK took: r2 must not fire a second FAK on it.
        assert len(ex.buys) == 1
        set_book(store, {"0.93": "60"})  # the feed's next book for the token
        await settle()
    assert len(ex.buys) == 2


async def test_a_feed_change_that_came_before_our_fills_answer_still_re_arms_the_rule() -> None:
    """The executor answers at the venue's ack, which can come after the feed's update showing
    our fill. That update (no opportunity left) re-arms the rule even though the answer then
    marks the token as just filled, so the next opportunity fires."""
    ex = RecordingExecutor()
    ex.gate = asyncio.Event()
    async with sniper_running([rule()], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
        assert len(ex.buys) == 1
        ex.gate.set()  # the answer (filled) is on its way ...
        set_book(store, {"0.99": "100"})  # ... and the feed's update, nothing in band, with it
        await settle()
        assert len(ex.buys) == 1
        set_book(store, {"0.93": "100"})  # a new opportunity
        await settle()
    assert len(ex.buys) == 2


async def test_unusable_or_unsnapshotted_book_never_fires() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule()], ex) as (_, store):
        store.ensure(YES).asks[D("0.93")] = D("100")  # levels but no snapshot
        store.notify([YES])
        await settle()
        set_book(store, {"0.93": "100"})
        store.mark_all_unusable([YES])  # e.g. the shard reconnects before we evaluate
        await settle()
    assert ex.buys == []


@pytest.mark.parametrize(
    ("asks", "fires"),
    [
        ({"0.89": "100"}, False),  # below min_price
        ({"0.96": "100"}, False),  # above max_price
        ({"0.93": "5", "0.95": "4"}, False),  # depth 9 < min_size 10
        ({"0.93": "5", "0.95": "5", "0.96": "100"}, True),  # depth at or under max is 10
    ],
)
async def test_band_and_depth_conditions(asks: dict[str, str], fires: bool) -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule()], ex) as (_, store):
        set_book(store, asks)
        await settle()
    assert bool(ex.buys) is fires


async def test_size_is_capped_by_depth_and_rounded_down() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule(max_notional="1000", min_size="5")], ex) as (_, store):
        set_book(store, {"0.93": "12.345"})
        await settle()
    assert ex.buys[0].size == D("12.34")


async def test_market_ending_outside_window_does_not_fire() -> None:
    ex = RecordingExecutor()
    late = market(end_date=datetime.now(UTC) + timedelta(hours=3))
    async with sniper_running([rule(ends_within_minutes=30)], ex, mkt=late) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
    assert ex.buys == []
    ex2 = RecordingExecutor()
    async with sniper_running([rule(ends_within_minutes=30)], ex2) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
    assert len(ex2.buys) == 1


async def test_take_profit_rests_gtc_sell_rounded_up_to_tick() -> None:
    ex = RecordingExecutor()
    async with sniper_running([rule(take_profit="0.015", order_type="FOK")], ex) as (_, store):
        set_book(store, {"0.93": "100"})
        await settle()
    buy, sell = ex.requests
    assert buy.order_type is OrderType.FOK
    assert (sell.side, sell.order_type) == (Side.SELL, OrderType.GTC)
    assert sell.price == D("0.97")  # 0.95 * 1.015 = 0.96425 -> 0.97
    assert sell.size == buy.size


async def test_take_profit_waits_until_the_position_shows_the_fill() -> None:
    # Live, the BUY's ack can come before its fill (user websocket); risk would refuse a SELL of
    # shares the position does not hold yet.
    ex = RecordingExecutor(fills_later=True)
    both = market()
    r = rule(take_profit="0.02")
    async with sniper_running([r], ex, mkt=both) as (_, store):
        set_book(store, {"0.93": "100"})
        await asyncio.sleep(0.1)
        assert len(ex.buys) == 1 and ex.sells == []
        set_book(store, {"0.93": "100"}, token=NO)  # other books are still evaluated meanwhile
        await settle()
        assert [b.token_id for b in ex.buys] == [YES, NO]
        ex.deliver_fills()
        await asyncio.sleep(0.1)
        assert sorted((s.token_id, s.size) for s in ex.sells) == [(YES, D("20")), (NO, D("20"))]


async def test_take_profit_goes_to_risk_after_the_deadline_if_the_fill_never_shows() -> None:
    ex = RecordingExecutor(fills_later=True)
    async with sniper_running([rule(take_profit="0.02")], ex, fill_wait_s=0.1) as (_, store):
        set_book(store, {"0.93": "100"})
        await asyncio.sleep(0.05)
        assert ex.sells == []
        await asyncio.sleep(0.2)
        assert len(ex.sells) == 1  # risk decides (and journals its refusal), not the sniper


async def test_tick_size_change_is_honoured_by_next_order() -> None:
    ex = RecordingExecutor()
    r = rule(min_price="0.950", max_price="0.955")
    async with sniper_running([r], ex) as (_, store):
        set_book(store, {"0.95": "100"})
        await settle()
        store.get(YES).tick_size = D("0.001")  # type: ignore[union-attr]
        set_book(store, {"0.99": "100"})
        await settle()
        set_book(store, {"0.951": "100"})
        await settle()
    assert [b.price for b in ex.buys] == [D("0.95"), D("0.955")]


async def test_outcome_filter_watches_only_that_token() -> None:
    store = BookStore(stale_after_s=60)
    sn = Sniper(rules=[rule(outcome="No")], books=store, orders=RecordingExecutor())
    sn.set_market(market())
    assert sn.watched_tokens() == {NO}


def test_rules_file_errors_name_rule_and_field(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_text(
        '[[rules]]\nname = "ok"\nmin_price = "0.9"\nmax_price = "0.95"\nmin_size = "5"\n'
        'max_notional = "10"\nselect = { slugs = ["x"] }\n\n'
        '[[rules]]\nname = "bad-one"\nmin_price = "0.9"\nmax_price = "1.5"\nmin_size = "5"\n'
        'max_notional = "10"\nselect = { slugs = ["x"] }\n'
    )
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    assert any("'bad-one'" in line and "max_price" in line for line in e.value.problems), (
        e.value.problems
    )


def test_inverted_price_band_is_refused_naming_the_rule_and_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_rules([{**rule().model_dump(), "min_price": "0.95", "max_price": "0.90"}])
    assert e.value.problems == [
        "SNIPER_RULES_PATH: rule 'r1' (#1) field max_price: must not be below min_price (0.95)"
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ends_within_minutes", "inf"),
        ("ends_within_minutes", "1e9"),  # finite but past a year: Gamma's window would overflow
        ("select.ends_within_minutes", "inf"),
        ("cooldown_s", "inf"),
        ("cooldown_s", "nan"),
        ("max_book_age_s", "inf"),
    ],
)
def test_infinite_or_unbounded_durations_are_refused_at_load(
    tmp_path: Path, field: str, value: str
) -> None:
    table, _, key = field.rpartition(".")
    body = (
        '[[rules]]\nname = "r"\nmin_price = "0.9"\nmax_price = "0.98"\nmin_size = "5"\n'
        'max_notional = "20"\n'
    )
    line = f"{key} = {value}\n"
    body += ("" if table else line) + '[rules.select]\nslugs = ["x"]\n' + (line if table else "")
    p = tmp_path / "rules.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_rules(p)
    assert any(f"rule 'r' (#1) field {field}:" in line for line in e.value.problems), (
        e.value.problems
    )


def test_rules_without_selector_or_with_typo_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_rules(
            [
                {
                    "name": "x",
                    "min_price": "0.9",
                    "max_price": "0.95",
                    "min_size": "1",
                    "max_notional": "5",
                    "select": {},
                }
            ]
        )
    assert "select" in e.value.problems[0]
    with pytest.raises(ConfigError) as e:
        parse_rules(
            [
                {
                    "name": "x",
                    "min_price": "0.9",
                    "max_price": "0.95",
                    "min_size": "1",
                    "max_notional": "5",
                    "select": {"slugs": ["a"]},
                    "max_prize": "1",
                }
            ]
        )
    assert "max_prize" in e.value.problems[0]


def test_unreadable_or_invalid_rules_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        load_rules(bad)


def test_json_rules_file_loads(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "name": "j",
                        "min_price": 0.9,
                        "max_price": 0.95,
                        "min_size": 5,
                        "max_notional": "10",
                        "select": {"token_ids": [YES]},
                    }
                ]
            }
        )
    )
    (r,) = load_rules(p)
    assert r.min_price == D("0.9")


def test_example_rules_file_is_valid() -> None:
    rules = load_rules(ROOT / "deploy" / "sniper-rules.example.toml")
    assert rules
    assert all(isinstance(r, SniperRule) for r in rules)


def _nth_market(i: int) -> Market:
    return market(
        condition_id="0x" + f"{i + 1:064x}",
        token_ids=(f"{3 * 10**69 + 2 * i}", f"{3 * 10**69 + 2 * i + 1}"),
    )


async def test_slots_of_tokens_no_longer_watched_stay_bounded() -> None:
    ex = RecordingExecutor()
    store = BookStore(stale_after_s=60)
    sn = Sniper(rules=[rule()], books=store, orders=ex, clock=Clock(), retired_slots=3)
    task = asyncio.create_task(sn.run())
    try:
        for i in range(50):  # discovery moves on to a new market every pass
            m = _nth_market(i)
            sn.set_markets({"r1": [m]})
            for tok in m.token_ids:
                set_book(store, {"0.93": "100"}, token=tok)
            await settle()
            assert sn._slots.live <= 2 and sn._slots.retired <= 3
            assert len(sn._took) <= 2  # tokens we filled on, while still watched
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(ex.buys) == 100  # every market was traded while it was watched
    assert len(sn._slots) <= 5


async def test_a_token_watched_again_keeps_its_entries_and_cooldown() -> None:
    ex = RecordingExecutor()
    clock = Clock()
    store = BookStore(stale_after_s=60)
    a, b = _nth_market(0), _nth_market(1)
    r = rule(max_entries=1, cooldown_s=30, outcome="Yes")
    sn = Sniper(rules=[r], books=store, orders=ex, clock=clock, retired_slots=3)
    task = asyncio.create_task(sn.run())
    try:
        sn.set_markets({"r1": [a]})
        set_book(store, {"0.93": "100"}, token=a.token_ids[0])
        await settle()
        assert len(ex.buys) == 1
        sn.set_markets({"r1": [b]})  # a drops out of discovery for a pass ...
        await settle()
        sn.set_markets({"r1": [a]})  # ... and comes back
        set_book(store, {"0.99": "100"}, token=a.token_ids[0])
        await settle()
        clock.now += 31
        set_book(store, {"0.93": "100"}, token=a.token_ids[0])  # a new opportunity on a
        await settle()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(ex.buys) == 1  # max_entries = 1 still holds for a
