"""Copy trader: decisions, sizing, exits, filters and the exactly-once ledger (fakes at seams)."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from errors import ConfigError, FeedError, OrderRejected, TransientError
from models import OrderRequest, OrderResult, OrderStatus, Position, Side
from observability.metrics import Metrics
from resilience.clock import FakeClock
from storage import Repositories
from strategies.copy_trader import (
    CopyRules,
    CopyTrader,
    DefaultTick,
    MarketMemory,
    StaticMarketInfo,
    TagIndex,
    WalletRule,
    client_order_id_for,
    limit_price,
    load_rules,
    parse_rules,
)
from tests.helpers import filled_in_full
from venue.data_api import Fetched, LeaderPosition, LeaderTrade

LEADER = "0x" + "ab" * 20
TOKEN = "1" * 77
TOKEN_NO = "2" * 77
COND = "0x" + "cd" * 32
_tx_counter = [0]


def trade(
    side: Side = Side.BUY,
    size: str = "100",
    price: str = "0.50",
    *,
    age_s: float = 2,
    token: str = TOKEN,
    slug: str = "some-market",
    tx: str | None = None,
    cond: str = COND,
) -> LeaderTrade:
    _tx_counter[0] += 1
    return LeaderTrade(
        wallet=LEADER,
        tx_hash=tx or "0x" + f"{_tx_counter[0]:064x}",
        token_id=token,
        condition_id=cond,
        side=side,
        size=Decimal(size),
        price=Decimal(price),
        timestamp=int(time.time() - age_s),
        slug=slug,
        event_slug=slug,
    )


class FakeApi:
    def __init__(self) -> None:
        self.trades: list[LeaderTrade] = []
        self.holdings: dict[str, Decimal] = {}
        self.fail_next = 0
        self.starts: list[int | None] = []

    async def activity_trades(
        self, wallet: str, *, start: int | None = None
    ) -> Fetched[LeaderTrade]:
        self.starts.append(start)
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError("Data API answered 500", status=500)
        rows = [t for t in self.trades if start is None or t.timestamp >= start]
        return Fetched(rows=sorted(rows, key=lambda t: t.timestamp))

    async def positions(self, wallet: str, *, market: str | None = None) -> Fetched[LeaderPosition]:
        return Fetched(
            rows=[LeaderPosition(wallet, t, COND, s) for t, s in self.holdings.items() if s > 0]
        )


class RecordingSink:
    """OrderSink + PositionSource: records requests, fills them fully, tracks positions."""

    def __init__(self) -> None:
        self.requests: list[OrderRequest] = []
        self.positions: dict[str, Position] = {}
        self.reject: str | None = None
        self.fill = True
        self.raise_once: BaseException | None = None

    async def submit(self, request: OrderRequest) -> OrderResult:
        if self.raise_once is not None:
            e, self.raise_once = self.raise_once, None
            raise e
        self.requests.append(request)
        if self.reject:
            raise OrderRejected(self.reject, source="risk")
        if not self.fill:
            return OrderResult(client_order_id=request.client_order_id, status=OrderStatus.CANCELED)
        self.positions[request.token_id] = self.position(
            request.token_id, strategy=request.strategy
        ).apply(request.side, request.price, request.size)
        return filled_in_full(request)

    def position(self, token_id: str, *, strategy: str) -> Position:
        return self.positions.get(token_id, Position(token_id=token_id, strategy=strategy))


def rule(**kw: Any) -> WalletRule:
    base: dict[str, Any] = {"address": LEADER, "ratio": "0.1", "min_leader_notional": "0"}
    base.update(kw)
    return WalletRule.model_validate(base)


class FakeTags:
    """A TagSource: every market carries `tags` (None: tags cannot be known)."""

    def __init__(self, tags: frozenset[str] | None = frozenset({"politics"})) -> None:
        self.value = tags

    async def tags(self, condition_id: str) -> frozenset[str] | None:
        return self.value

    async def warm(self) -> None:
        return None


def make(
    repos: Repositories, r: WalletRule, api: FakeApi, sink: RecordingSink, **kw: Any
) -> CopyTrader:
    kw.setdefault("tags", FakeTags())
    return CopyTrader(
        rules=CopyRules(wallets=(r,)),
        data_api=api,
        sink=sink,
        positions=sink,
        repos=repos,
        metrics=kw.pop("metrics", Metrics()),
        markets=StaticMarketInfo(),
        **kw,
    )


def skipped(m: Metrics, reason: str) -> float:
    v = m.copy_skipped_total.labels(reason)._value.get()
    return float(v)


# -- sizing ------------------------------------------------------------------------------------


async def test_ratio_sizing_copies_leader_size_times_ratio(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade(size="100", price="0.50")]
    t = make(repos, rule(ratio="0.1", max_slippage="0.02"), api, sink)
    assert await t.poll_once(t.rules.wallets[0]) == 1
    (req,) = sink.requests
    assert (req.side, req.size, req.price) == (Side.BUY, Decimal("10.00"), Decimal("0.52"))
    assert req.order_type.value == "FAK"
    assert req.client_order_id == client_order_id_for(api.trades[0].dedupe_key)


async def test_fixed_notional_sizing_spends_the_fixed_amount(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade(size="1000", price="0.40")]
    t = make(
        repos, rule(sizing="fixed_notional", fixed_notional="10", max_slippage="0.1"), api, sink
    )
    await t.poll_once(t.rules.wallets[0])
    (req,) = sink.requests
    assert req.price == Decimal("0.50") and req.size == Decimal("20.00")


async def test_percent_sizing_clamps_to_min_and_max(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    # 10% of 50 pUSD = 5 -> raised to min 6; 10% of 500 = 50 -> lowered to max 20.
    api.trades = [trade(size="100", price="0.50"), trade(size="1000", price="0.50")]
    r = rule(
        sizing="percent",
        percent="10",
        percent_min_notional="6",
        percent_max_notional="20",
        max_slippage="0",
        max_market_exposure="1000",
    )
    t = make(repos, r, api, sink)
    await t.poll_once(r)
    assert [q.size * q.price for q in sink.requests] == [Decimal("6.00"), Decimal("20.00")]


async def test_max_trade_notional_caps_every_mode(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade(size="10000", price="0.50")]
    t = make(repos, rule(ratio="1", max_trade_notional="15", max_slippage="0"), api, sink)
    await t.poll_once(t.rules.wallets[0])
    assert sink.requests[0].size == Decimal("30.00")


async def test_market_exposure_limit_shrinks_then_skips(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade(size="100", price="0.50") for _ in range(3)]
    r = rule(ratio="0.5", max_market_exposure="40", max_slippage="0", max_trade_notional="25")
    t = make(repos, r, api, sink, metrics=m)
    await t.poll_once(r)
    assert [q.size * q.price for q in sink.requests] == [Decimal("25.00"), Decimal("15.00")]
    assert skipped(m, "exposure_limit") == 1


# -- exits ---------------------------------------------------------------------------------------


async def test_leader_sell_mirrors_same_fraction_of_our_holding(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    sink.positions[TOKEN] = Position(token_id=TOKEN, size=Decimal("40"), avg_cost=Decimal("0.5"))
    api.holdings = {TOKEN: Decimal("75")}  # after selling 25 of 100
    api.trades = [trade(Side.SELL, size="25", price="0.60")]
    t = make(repos, rule(max_slippage="0.02"), api, sink)
    await t.poll_once(t.rules.wallets[0])
    (req,) = sink.requests
    assert (req.side, req.size, req.price) == (Side.SELL, Decimal("10.00"), Decimal("0.58"))


async def test_leader_full_exit_sells_all_ours_never_more(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    sink.positions[TOKEN] = Position(token_id=TOKEN, size=Decimal("33.33"), avg_cost=Decimal("0.5"))
    api.holdings = {}  # sold out: no position row any more
    api.trades = [trade(Side.SELL, size="500", price="0.60")]
    t = make(repos, rule(), api, sink)
    await t.poll_once(t.rules.wallets[0])
    assert sink.requests[0].size == Decimal("33.33")


async def test_two_sells_in_one_batch_use_holding_before_each(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    sink.positions[TOKEN] = Position(token_id=TOKEN, size=Decimal("100"), avg_cost=Decimal("0.5"))
    api.holdings = {TOKEN: Decimal("50")}  # 200 -> sell 100 -> 100 -> sell 50 -> 50
    api.trades = [
        trade(Side.SELL, size="100", price="0.6", age_s=3),
        trade(Side.SELL, size="50", price="0.6", age_s=2),
    ]
    t = make(repos, rule(), api, sink)
    await t.poll_once(t.rules.wallets[0])
    assert [q.size for q in sink.requests] == [Decimal("50.00"), Decimal("25.00")]


async def test_leader_sell_without_our_position_skips_no_position(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade(Side.SELL)]
    t = make(repos, rule(), api, sink, metrics=m)
    await t.poll_once(t.rules.wallets[0])
    assert not sink.requests and skipped(m, "no_position") == 1


# -- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "tr", "reason"),
    [
        ({"sides": ["SELL"]}, {}, "side_not_copied"),
        ({}, {"age_s": 90}, "too_old"),
        ({"min_leader_notional": "100"}, {"size": "10"}, "leader_notional_too_small"),
        ({"block_slugs": ["bad-market"]}, {"slug": "bad-market"}, "market_blocked"),
        ({"allow_slugs": ["good"]}, {"slug": "other"}, "market_not_allowed"),
        ({"allow_tags": ["crypto"]}, {}, "market_not_allowed"),
        ({"block_tags": ["Politics"]}, {}, "market_blocked"),
        ({"ratio": "0.01"}, {"size": "100"}, "below_min_size"),
    ],
)
async def test_filter_skips_with_reason(
    repos: Repositories, kw: dict[str, Any], tr: dict[str, Any], reason: str
) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade(**tr)]
    t = make(repos, rule(**kw), api, sink, metrics=m, max_trade_age_s=60)
    await t.poll_once(t.rules.wallets[0])
    assert not sink.requests
    assert skipped(m, reason) == 1
    entries = await repos.audit.tail(event="copy_skipped")
    assert entries[0].detail["reason"] == reason


async def test_book_beyond_slippage_skips_slippage(repos: Repositories) -> None:
    class Books:
        def asks(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
            return [(Decimal("0.60"), Decimal("100"))]

        def bids(self, token_id: str) -> list[tuple[Decimal, Decimal]] | None:
            return None

    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade(price="0.50")]
    t = make(repos, rule(max_slippage="0.05"), api, sink, metrics=m, books=Books())
    await t.poll_once(t.rules.wallets[0])
    assert not sink.requests and skipped(m, "slippage") == 1


def test_limit_price_stays_on_grid_and_inside_bounds() -> None:
    tick = Decimal("0.01")
    assert limit_price(Decimal("0.567891"), Decimal("0.02"), tick, Side.BUY) == Decimal("0.58")
    assert limit_price(Decimal("0.567891"), Decimal("0.02"), tick, Side.SELL) == Decimal("0.55")
    assert limit_price(Decimal("0.985"), Decimal("0.02"), tick, Side.BUY) == Decimal("0.99")
    assert limit_price(Decimal("0.015"), Decimal("0.02"), tick, Side.SELL) == Decimal("0.01")
    assert limit_price(Decimal("0.5"), Decimal("0.003"), Decimal("0.001"), Side.BUY) == Decimal(
        "0.503"
    )


# -- exactly once --------------------------------------------------------------------------------


async def test_same_trade_seen_twice_is_copied_once(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    t = make(repos, rule(), api, sink)
    await t.poll_once(t.rules.wallets[0])
    await t.poll_once(t.rules.wallets[0])
    t2 = make(repos, rule(), api, sink)  # a restart: fresh memory, same database
    await t2.poll_once(t2.rules.wallets[0])
    assert len(sink.requests) == 1


async def test_cursor_persists_and_next_poll_starts_there(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade(age_s=5)]
    t = make(repos, rule(), api, sink)
    await t.poll_once(t.rules.wallets[0])
    await t.poll_once(t.rules.wallets[0])
    assert api.starts[-1] == api.trades[0].timestamp


async def test_first_start_copies_nothing_older_than_max_age(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade(age_s=3600), trade(age_s=90), trade(age_s=1)]
    t = make(repos, rule(), api, sink, max_trade_age_s=60)
    await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 1
    assert api.starts[0] is not None and api.starts[0] >= int(time.time()) - 122


async def test_crash_after_intent_before_submit_sends_once_after_restart(
    repos: Repositories,
) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    sink.raise_once = KeyboardInterrupt()  # the process dies inside submit, before sending
    t = make(repos, rule(), api, sink)
    with pytest.raises(KeyboardInterrupt):
        await t.poll_once(t.rules.wallets[0])
    assert sink.requests == []
    t2 = make(repos, rule(), api, sink)
    assert await t2.recover() == 1
    await t2.poll_once(t2.rules.wallets[0])
    assert len(sink.requests) == 1
    assert await t2.recover() == 0


async def test_intent_already_in_journal_is_not_sent_again(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    sink.raise_once = KeyboardInterrupt()
    t = make(repos, rule(), api, sink)
    with pytest.raises(KeyboardInterrupt):
        await t.poll_once(t.rules.wallets[0])
    (intent,) = await t._ledger.pending()
    await repos.orders.record(intent.request)  # the executor had journaled it before dying
    t2 = make(repos, rule(), api, sink)
    assert await t2.recover() == 0
    assert sink.requests == [] and await t2._ledger.pending() == []


async def test_transient_submit_error_is_retried_on_next_poll(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    sink.raise_once = TransientError("venue hiccup")
    t = make(repos, rule(), api, sink)
    with pytest.raises(TransientError):
        await t.poll_once(t.rules.wallets[0])
    await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 1 and await t._ledger.pending() == []


async def test_data_api_error_loses_no_trade(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    api.fail_next = 1
    t = make(repos, rule(), api, sink)
    with pytest.raises(TransientError):
        await t.poll_once(t.rules.wallets[0])
    await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 1


async def test_rejected_copy_is_recorded_with_reason(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade()]
    sink.reject = "max order notional"
    t = make(repos, rule(), api, sink, metrics=m)
    await t.poll_once(t.rules.wallets[0])
    assert skipped(m, "rejected") == 1 and await t._ledger.pending() == []


async def test_fak_with_no_fill_counts_unfilled(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade()]
    sink.fill = False
    t = make(repos, rule(), api, sink, metrics=m)
    await t.poll_once(t.rules.wallets[0])
    assert skipped(m, "unfilled") == 1
    assert m.copy_copied_total._value.get() == 0


async def test_copied_trade_observes_lag(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    leader = trade(age_s=2)
    api.trades = [leader]
    # The wall clock is the test's: the lag is exact, whatever the machine's load.
    t = make(repos, rule(), api, sink, metrics=m, wall=lambda: leader.timestamp + 2.5)
    await t.poll_once(t.rules.wallets[0])
    assert m.copy_copied_total._value.get() == 1
    assert list(t.lags) == [2.5]
    assert m.copy_lag_seconds._sum.get() == 2.5


# -- rules file ----------------------------------------------------------------------------------


def test_example_rules_file_is_valid() -> None:
    rules = load_rules(Path(__file__).resolve().parents[2] / "deploy" / "copy-rules.example.toml")
    assert len(rules.wallets) == 3 and len(rules.active) == 2


def test_bad_rule_error_names_wallet_and_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_rules({"wallets": [{"address": LEADER, "label": "w1", "ratio": "-1"}]})
    assert any("w1" in p and "ratio" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        parse_rules({"wallets": [{"address": "0x12", "ratio": "1"}]})
    assert any("address" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        parse_rules({"wallets": [{"address": LEADER, "sizing": "percent"}]})
    assert any("percent" in p for p in e.value.problems)
    with pytest.raises(ConfigError):
        parse_rules({"wallets": [{"address": LEADER, "ratio": 0.1}]})  # float money refused


def test_rules_file_in_json_and_unreadable_files(tmp_path: Path) -> None:
    p = tmp_path / "rules.json"
    p.write_text(json.dumps({"wallets": [{"address": LEADER, "ratio": "0.5"}]}))
    assert load_rules(p).wallets[0].ratio == Decimal("0.5")
    bad = tmp_path / "bad.toml"
    bad.write_text("wallets = [")
    with pytest.raises(ConfigError):
        load_rules(bad)
    with pytest.raises(ConfigError):
        load_rules(tmp_path / "missing.toml")


def test_default_tick_is_the_common_grid() -> None:
    assert DefaultTick().tick_size == Decimal("0.01")


# -- tags ---------------------------------------------------------------------------------------


async def test_tags_unknown_fail_closed_for_allow_and_block(repos: Repositories) -> None:
    for kw, reason in (
        ({"allow_tags": ["crypto"]}, "market_not_allowed"),
        ({"block_tags": ["x"]}, "market_blocked"),
    ):
        api, sink, m = FakeApi(), RecordingSink(), Metrics()
        api.trades = [trade()]
        t = make(repos, rule(**kw), api, sink, metrics=m, tags=FakeTags(None))
        await t.poll_once(t.rules.wallets[0])
        assert not sink.requests and skipped(m, reason) == 1


async def test_allowed_tag_is_copied(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    api.trades = [trade()]
    t = make(repos, rule(allow_tags=["politics"], block_tags=["sports"]), api, sink)
    await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 1


def test_tag_rules_without_a_tag_source_are_refused(repos: Repositories) -> None:
    with pytest.raises(ConfigError) as e:
        make(
            repos, rule(label="whale", block_tags=["sports"]), FakeApi(), RecordingSink(), tags=None
        )
    assert "whale" in str(e.value.problems) and "tag source" in str(e.value.problems)
    make(repos, rule(), FakeApi(), RecordingSink(), tags=None)  # no tag lists: fine without


def test_backfill_longer_than_the_default_max_trade_age_is_refused(repos: Repositories) -> None:
    with pytest.raises(ConfigError) as e:
        make(
            repos,
            rule(label="whale", backfill_s=90),
            FakeApi(),
            RecordingSink(),
            max_trade_age_s=60,
        )
    assert "whale" in str(e.value.problems) and "backfill_s (90)" in str(e.value.problems)
    make(repos, rule(backfill_s=60), FakeApi(), RecordingSink(), max_trade_age_s=60)


class Lister:
    def __init__(self, table: dict[str, set[str]]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.fail: type[Exception] | None = None

    async def __call__(self, tag: str) -> set[str]:
        self.calls.append(tag)
        if self.fail is not None:
            raise self.fail("gamma down")
        return set(self.table.get(tag, set()))


async def test_tag_index_reports_only_watched_tags_and_caches() -> None:
    clock = FakeClock()
    lister = Lister({"crypto": {"0xa"}, "sports": {"0xb"}, "politics": {"0xa"}})
    idx = TagIndex(tags=["Crypto", "sports"], lister=lister, clock=clock)
    await idx.warm()
    assert await idx.tags("0xa") == frozenset({"crypto"})
    assert await idx.tags("0xb") == frozenset({"sports"})
    assert lister.calls == ["crypto", "sports"]  # cached: no reload within the miss window


async def test_tag_index_reloads_on_a_miss_after_the_miss_window_and_after_ttl() -> None:
    clock = FakeClock()
    lister = Lister({"crypto": {"0xa"}})
    idx = TagIndex(tags=["crypto"], lister=lister, clock=clock, ttl_s=300, miss_refresh_s=30)
    assert await idx.tags("0xnew") == frozenset()
    lister.table["crypto"].add("0xnew")  # a market listed since
    clock.advance(10)
    assert await idx.tags("0xnew") == frozenset()  # too soon to reload for a miss
    clock.advance(25)
    assert await idx.tags("0xnew") == frozenset({"crypto"})
    assert len(lister.calls) == 2
    clock.advance(301)
    assert await idx.tags("0xa") == frozenset({"crypto"})
    assert len(lister.calls) == 3  # ttl reload even for a hit


async def test_tag_index_unknown_until_first_load_then_keeps_old_set_on_failure() -> None:
    clock = FakeClock()
    lister = Lister({"crypto": {"0xa"}})
    lister.fail = TransientError
    idx = TagIndex(tags=["crypto"], lister=lister, clock=clock, retry_after_s=5)
    assert await idx.tags("0xa") is None
    assert await idx.tags("0xa") is None
    assert len(lister.calls) == 1  # no hammering inside retry_after_s
    clock.advance(6)
    lister.fail = None
    assert await idx.tags("0xa") == frozenset({"crypto"})
    lister.fail = FeedError
    clock.advance(400)
    assert await idx.tags("0xa") == frozenset({"crypto"})  # stale beats unknown


# -- bounded memory ------------------------------------------------------------------------------


async def test_recent_copies_and_lags_keep_only_the_last_n(repos: Repositories) -> None:
    api, sink, m = FakeApi(), RecordingSink(), Metrics()
    api.trades = [trade(size="20", age_s=2) for _ in range(12)]
    t = make(repos, rule(ratio="1", max_market_exposure="1000"), api, sink, metrics=m, recent=4)
    await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 12 and m.copy_copied_total._value.get() == 12
    assert list(t.copied) == sink.requests[-4:]
    assert len(t.lags) == 4


async def test_market_memory_stays_bounded_and_keeps_held_markets(repos: Repositories) -> None:
    api, sink = FakeApi(), RecordingSink()
    t = make(repos, rule(ratio="1", max_market_exposure="1000"), api, sink, max_markets=5)
    api.trades = [trade(size="20", age_s=3)]  # bought: we hold TOKEN in COND from now on
    await t.poll_once(t.rules.wallets[0])
    sink.fill = False  # later copies find nothing: their markets hold nothing of ours
    for i in range(40):
        cond = "0x" + f"{i + 1:064x}"
        api.trades.append(trade(size="20", age_s=2, token=f"{5 * 10**70 + i}", cond=cond))
        await t.poll_once(t.rules.wallets[0])
    assert len(sink.requests) == 41
    assert len(t._memory) <= 5 and t._memory.locks == 0
    assert t._memory.condition_of(TOKEN) == COND
    assert t._memory.exposure(COND) == Decimal("10.40")  # 20 @ 0.52, still counted


async def test_market_locks_exist_only_while_a_decision_holds_or_waits() -> None:
    memory = MarketMemory(RecordingSink(), strategy="copy", max_markets=2)
    order: list[str] = []

    async def decide(name: str) -> None:
        async with memory.locked(COND):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(decide("a"), decide("b"))
    assert order == ["a in", "a out", "b in", "b out"]
    assert memory.locks == 0
    for i in range(100):
        memory.note("0x" + f"{i:064x}", str(i))
    assert len(memory) == 2


def test_market_memory_keeps_a_market_while_a_copy_reserves_room_in_it() -> None:
    memory = MarketMemory(RecordingSink(), strategy="copy", max_markets=1)
    memory.note(COND, TOKEN)
    memory.book(COND, Decimal("2"))
    memory.reserve(COND, "cp-open", Decimal("5"), until=60.0)
    assert memory.exposure(COND) == Decimal("7")
    memory.note("0x" + "01" * 32, "1")  # past the bound: the reserving market stays
    assert memory.condition_of(TOKEN) == COND and memory.exposure(COND) == Decimal("7")
    assert memory.reservations() == [("cp-open", 60.0)]
    memory.adjust("cp-open", Decimal("4"))
    assert memory.exposure(COND) == Decimal("6")
    memory.settle("cp-open", Decimal("1.5"))  # ended: what filled is booked, the rest freed
    memory.settle("cp-open", Decimal("1.5"))  # a second settling books nothing more
    assert memory.exposure(COND) == Decimal("3.5") and memory.reservations() == []
    memory.note("0x" + "02" * 32, "2")
    assert memory.condition_of(TOKEN) is None  # nothing reserved or held: forgotten
