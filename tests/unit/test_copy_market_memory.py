"""The copy trader's per-market memory: exposure counts every token held, every booking and every
open reservation; eviction forgets only markets nothing holds, reserves or decides on.

`MarketMemory.exposure` is what the market cap (`max_market_exposure`) is checked against: an
under-count lets copies buy past the cap. Also the copy ledger's audit entries (what a skipped
trade or a closed intent leaves for the operator).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from models import Position, Side
from storage import Repositories
from strategies.copy_trader.state import CopyLedger, MarketMemory, client_order_id_for
from venue.data_api import LeaderTrade

D = Decimal
A, B, C = "0x" + "a1" * 32, "0x" + "b2" * 32, "0x" + "c3" * 32
YES, NO, OTHER = "1" * 77, "2" * 77, "3" * 77
LEADER = "0x" + "ab" * 20


class Holdings:
    """What the copy strategy holds, per token (the executor's positions, as a fake)."""

    def __init__(self) -> None:
        self.held: dict[str, Position] = {}

    def set(self, token: str, size: str, avg_cost: str) -> None:
        self.held[token] = Position(
            token_id=token, strategy="copy", size=D(size), avg_cost=D(avg_cost)
        )

    def position(self, token_id: str, *, strategy: str) -> Position:
        assert strategy == "copy"  # only the copy trader's own holdings count
        return self.held.get(token_id, Position(token_id=token_id, strategy=strategy))


def test_exposure_sums_both_outcome_tokens_held_at_cost() -> None:
    h = Holdings()
    mem = MarketMemory(h, strategy="copy")
    mem.note(A, YES)
    mem.note(A, NO)
    h.set(YES, "10", "0.40")
    h.set(NO, "5", "0.50")
    assert mem.exposure(A) == D("6.50")


def test_exposure_of_an_unknown_market_is_zero() -> None:
    mem = MarketMemory(Holdings(), strategy="copy")
    assert mem.exposure(A) == 0
    assert mem.reserved(A) == 0
    assert mem.reservations() == []


def test_bookings_accumulate_and_reservations_add_until_settled() -> None:
    mem = MarketMemory(Holdings(), strategy="copy")
    mem.note(A, YES)
    mem.book(A, D("3"))
    mem.book(A, D("4"))
    assert mem.exposure(A) == D("7")
    mem.reserve(A, "cp-1", D("2"), until=10.0)
    mem.reserve(A, "cp-2", D("1.5"), until=20.0)
    assert mem.reserved(A) == D("3.5")
    assert mem.exposure(A) == D("10.5")
    mem.adjust("cp-1", D("0.5"))
    assert mem.exposure(A) == D("9.0")
    mem.settle("cp-2", D("1"))  # 1 filled: booked, the other 0.5 freed
    assert mem.exposure(A) == D("8.5")
    mem.release("cp-1")
    assert mem.exposure(A) == D("8")
    mem.settle("cp-1", D("99"))  # already ended: nothing happens
    assert mem.exposure(A) == D("8")


def test_exposure_is_the_larger_of_held_and_booked_plus_reserved() -> None:
    h = Holdings()
    mem = MarketMemory(h, strategy="copy")
    mem.note(A, YES)
    mem.book(A, D("2"))
    h.set(YES, "10", "0.50")
    assert mem.exposure(A) == D("5.00")  # the fill reached the positions
    mem.reserve(A, "cp-1", D("4"), until=10.0)
    assert mem.exposure(A) == D("6")


def test_reservations_are_listed_per_market() -> None:
    mem = MarketMemory(Holdings(), strategy="copy")
    mem.note(A, YES)
    mem.note(B, OTHER)
    mem.reserve(A, "cp-a", D("1"), until=1.0)
    mem.reserve(B, "cp-b", D("1"), until=2.0)
    assert mem.reservations(A) == [("cp-a", 1.0)]
    assert mem.reservations(B) == [("cp-b", 2.0)]
    assert sorted(mem.reservations()) == [("cp-a", 1.0), ("cp-b", 2.0)]


def test_a_market_holding_under_one_share_is_not_forgotten() -> None:
    h = Holdings()
    mem = MarketMemory(h, strategy="copy", max_markets=1)
    mem.note(A, YES)
    h.set(YES, "0.5", "0.40")
    mem.note(B, OTHER)
    assert mem.condition_of(YES) == A  # held (half a share): kept
    assert mem.exposure(A) == D("0.200")


def test_eviction_forgets_the_least_recent_idle_market_and_never_the_new_one() -> None:
    mem = MarketMemory(Holdings(), strategy="copy", max_markets=2)
    mem.note(A, YES)
    mem.note(B, NO)
    mem.note(A, YES)  # A traded again: B is now the least recent
    mem.note(C, OTHER)
    assert len(mem) == 2
    assert (mem.condition_of(YES), mem.condition_of(NO), mem.condition_of(OTHER)) == (A, None, C)


def test_eviction_keeps_a_reserved_market_and_forgets_an_idle_one_instead() -> None:
    mem = MarketMemory(Holdings(), strategy="copy", max_markets=2)
    mem.note(A, YES)
    mem.reserve(A, "cp-a", D("1"), until=1.0)
    mem.note(B, NO)
    mem.note(C, OTHER)
    assert (mem.condition_of(YES), mem.condition_of(NO), mem.condition_of(OTHER)) == (A, None, C)


def test_max_markets_below_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^max_markets must be at least 1$"):
        MarketMemory(Holdings(), strategy="copy", max_markets=0)


def test_client_order_id_is_cp_and_30_hex_digits_of_the_keys_hash() -> None:
    key = "0xabc:1:BUY:10:0.5"
    want = "cp" + hashlib.sha256(key.encode()).hexdigest()[:30]
    assert client_order_id_for(key) == want and len(want) == 32
    assert client_order_id_for("0xabc:1:BUY:10:0.51") != want


def test_the_market_just_noted_is_kept_even_when_every_other_is_in_use() -> None:
    mem = MarketMemory(Holdings(), strategy="copy", max_markets=1)
    mem.note(A, YES)
    mem.reserve(A, "cp-a", D("1"), until=1.0)
    mem.note(B, OTHER)  # A reserves room, B is the one being decided on: both stay
    assert (mem.condition_of(YES), mem.condition_of(OTHER)) == (A, B)
    assert len(mem) == 2


# -- the ledger's audit entries ----------------------------------------------------------------


async def test_a_skipped_trade_is_audited_with_the_leaders_fill_and_the_reason(
    repos: Repositories,
) -> None:
    ledger = CopyLedger(repos)
    trade = LeaderTrade(
        LEADER, "0x" + "ee" * 32, YES, A, Side.BUY, D("10"), D("0.45"), 1_700_000_000
    )
    assert await ledger.handle(trade, skip=("slippage", "ask 0.60 > limit 0.47"))
    assert not await ledger.handle(trade, skip=("slippage", "again"))  # handled once
    (entry,) = await repos.audit.tail(event="copy_skipped")
    assert entry.detail == {
        "wallet": LEADER,
        "dedupe_key": trade.dedupe_key,
        "token_id": YES,
        "side": "BUY",
        "leader_price": "0.45",
        "leader_size": "10",
        "reason": "slippage",
        "detail": "ask 0.60 > limit 0.47",
    }


async def test_closing_an_intent_audits_how_it_ended(repos: Repositories) -> None:
    await CopyLedger(repos).close_intent("cp-1", "copy_unfilled", filled="0", why="FAK")
    (entry,) = await repos.audit.tail(event="copy_unfilled")
    assert entry.client_order_id == "cp-1"
    assert entry.detail == {"filled": "0", "why": "FAK"}


async def test_starting_to_follow_marks_the_existing_trades_seen_once(repos: Repositories) -> None:
    ledger = CopyLedger(repos)
    old = LeaderTrade(LEADER, "0x" + "ee" * 32, YES, A, Side.BUY, D("10"), D("0.45"), 1_700_000_000)
    new = LeaderTrade(LEADER, "0x" + "ff" * 32, YES, A, Side.BUY, D("10"), D("0.45"), 1_700_000_100)
    assert await ledger.start_following(
        LEADER, cursor=1_700_000_050, existing=[old], detail={"n": 1}
    )
    assert await ledger.cursor(LEADER) == 1_700_000_050
    assert await ledger.seen(LEADER, [old, new]) == {old.dedupe_key}
    (entry,) = await repos.audit.tail(event="copy_wallet_started")
    assert entry.detail == {"wallet": LEADER, "n": 1}
    assert entry.strategy == "copy"  # found with the copy strategy's other entries
    # a second start (a restart) writes nothing
    assert not await ledger.start_following(LEADER, cursor=5, existing=[new], detail={})
    assert await ledger.cursor(LEADER) == 1_700_000_050
    assert await ledger.seen(LEADER, [new]) == set()


async def test_pruning_forgets_only_keys_handled_before_the_age(repos: Repositories) -> None:
    ledger = CopyLedger(repos)
    trade = LeaderTrade(
        LEADER, "0x" + "ee" * 32, YES, A, Side.BUY, D("10"), D("0.45"), 1_700_000_000
    )
    await ledger.handle(trade, skip=("slippage", ""))
    assert await ledger.prune(LEADER, older_than_s=3600) == 0  # handled just now: kept
    assert await ledger.seen(LEADER, [trade]) == {trade.dedupe_key}
    assert await ledger.prune(LEADER, older_than_s=-3600) == 1  # "before an hour from now"
    assert await ledger.seen(LEADER, [trade]) == set()


async def test_pruning_reads_the_age_in_utc_whatever_the_machines_time_zone(
    repos: Repositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as _time

    ledger = CopyLedger(repos)
    trade = LeaderTrade(
        LEADER, "0x" + "ee" * 32, YES, A, Side.BUY, D("10"), D("0.45"), 1_700_000_000
    )
    await ledger.handle(trade, skip=("slippage", ""))
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9: a local-time cut-off would be 9 h later
    _time.tzset()
    try:
        assert await ledger.prune(LEADER, older_than_s=3600) == 0
    finally:
        monkeypatch.undo()
        _time.tzset()
    assert await ledger.seen(LEADER, [trade]) == {trade.dedupe_key}
