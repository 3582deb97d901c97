"""Which daemon an order belongs to, and which account it was journaled for.

Several daemons can share one database (and one venue account). A fill or a venue order is looked
up by its venue order id; the answer must name the daemon that journaled the order, because only
that daemon settles it and books its fills. A lookup that hid another daemon's order would book
its fills as unattributed (or cancel it as unknown); one that claimed it would settle an order the
other daemon is still working.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from models import OrderStatus
from storage import Repositories
from storage.journal import JournalRow, LeftUnsettled, OrderJournal
from tests.helpers import journal_row, make_fill, make_order


async def test_an_order_found_by_venue_id_is_owned_only_by_the_daemon_that_journaled_it(
    repos: Repositories,
) -> None:
    """Every daemon finds the order by its venue id (so a fill of it is booked to its strategy);
    only its own daemon finds it when asking for its own orders (what it may settle or cancel)."""
    east = OrderJournal(db=repos.db, daemon_id="east")
    west = OrderJournal(db=repos.db, daemon_id="west")
    order = make_order(strategy="copy")
    await east.record(order, venue_order_id="0xeast")

    for daemon in (east, west):
        row = await daemon.get_by_venue_id("0xeast")
        assert row is not None, daemon.daemon_id
        assert (row.client_order_id, row.daemon_id) == (order.client_order_id, "east")

    mine = await east.get_by_venue_id("0xeast", own=True)
    assert mine is not None and mine.client_order_id == order.client_order_id
    assert await west.get_by_venue_id("0xeast", own=True) is None

    assert east.owns(mine)
    assert not west.owns(mine)

    for daemon in (east, west):
        assert await daemon.get_by_venue_id("0xnobody") is None
        assert await daemon.get_by_venue_id("0xnobody", own=True) is None


async def test_each_daemon_owns_its_own_orders_on_a_shared_database(repos: Repositories) -> None:
    """Two daemons each journal an order: each owns its own and not the other's."""
    east = OrderJournal(db=repos.db, daemon_id="east")
    west = OrderJournal(db=repos.db, daemon_id="west")
    await east.record(make_order(), venue_order_id="0xe")
    await west.record(make_order(), venue_order_id="0xw")
    e = await west.get_by_venue_id("0xe")
    w = await east.get_by_venue_id("0xw")
    assert e is not None and w is not None
    assert (east.owns(e), east.owns(w)) == (True, False)
    assert (west.owns(e), west.owns(w)) == (False, True)
    assert (await west.get_by_venue_id("0xw", own=True)) == w
    assert (await east.get_by_venue_id("0xw", own=True)) is None


async def test_an_order_journaled_before_the_account_is_named_carries_no_account(
    repos: Repositories,
) -> None:
    """Until the broker names the venue account, orders are journaled with none: they must not
    be counted against an account they may not have been signed for."""
    journal = OrderJournal(db=repos.db, daemon_id="east")
    assert journal.account == ""
    early = make_order()
    await journal.record(early)
    journal.for_account("0x" + "AB" * 20)
    later = make_order()
    await journal.record(later)

    first = await journal.get(early.client_order_id)
    second = await journal.get(later.client_order_id)
    assert first is not None and second is not None
    assert first.account == ""
    assert second.account == "0x" + "ab" * 20


ACCOUNT = "0x" + "aa" * 20
OTHER_ACCOUNT = "0x" + "bb" * 20


async def test_a_takeover_owns_the_unsettled_orders_a_gone_daemon_left_on_this_account(
    repos: Repositories,
) -> None:
    """The daemon that takes a strategy over becomes the owner of the orders of it that a daemon
    no longer running left unsettled on its account: open ones, and a FILLED one whose fill was
    never booked (the venue answered the post, the daemon died before the trade event). Settled
    orders keep the daemon that placed them; a live daemon's orders stay its own; an order on
    another account is reported, not taken."""
    west = OrderJournal(db=repos.db, daemon_id="west")  # gone
    east = OrderJournal(db=repos.db, daemon_id="east")  # holds a lease: live
    north = OrderJournal(db=repos.db, daemon_id="north")  # takes "copy" over
    for j in (west, east, north):
        j.for_account(ACCOUNT)

    async def order(
        j: OrderJournal, status: str, matched: str = "0", strategy: str = "copy"
    ) -> str:
        req = make_order(strategy=strategy)
        await j.record(req, venue_order_id=f"0x{req.client_order_id}")
        if status != "PENDING":
            await j.transition(
                req.client_order_id, OrderStatus(status), size_matched=Decimal(matched)
            )
        return req.client_order_id

    open_one = await order(west, "LIVE")
    pending = await order(west, "PENDING")
    unbooked = await order(west, "FILLED", "10")
    part_booked = await order(west, "CANCELED", "6")
    half_share = await order(west, "CANCELED", "0.5")  # no fill booked
    booked = await order(west, "FILLED", "10")
    booked_in_two = await order(west, "FILLED", "10")
    # Share quantities have six decimals: a millionth short is unbooked, none short is booked.
    millionth_short = await order(west, "FILLED", "10.000001")
    to_the_millionth = await order(west, "FILLED", "10.000001")
    other_kind = await order(west, "LIVE", strategy="alpha")  # taken over too, below
    rejected = await order(west, "REJECTED")
    other_strategy = await order(west, "LIVE", strategy="sniper")
    live_daemons = await order(east, "LIVE")
    mine_already = await order(north, "LIVE")
    fills = [(booked, "10", "t1"), (part_booked, "5", "t2")]
    fills += [(booked_in_two, "4", "t3"), (booked_in_two, "6", "t4")]
    fills += [(millionth_short, "10", "t5"), (to_the_millionth, "4.000001", "t6")]
    fills += [(to_the_millionth, "6", "t7")]
    for coid, size, trade in fills:
        await repos.fills.record_moves(
            make_fill(trade, f"0x{coid}", "BUY", "0.5", size, client_order_id=coid)
        )
    west.for_account(OTHER_ACCOUNT)
    elsewhere = await order(west, "LIVE")
    west.for_account("")  # journaled before accounts were named: no one can look it up
    no_account = await order(west, "LIVE")

    left = await north.left_unsettled({"copy", "alpha"}, live={"east", "north"})
    taken = [open_one, pending, unbooked, part_booked, half_share, millionth_short, other_kind]
    assert [r.client_order_id for r in left.ours] == taken
    for r in left.ours:  # as read: still west's until taken
        assert r == await north.get(r.client_order_id)
    assert left.daemons == ["west"]
    assert [(r.client_order_id, r.daemon_id) for r in left.elsewhere] == [(elsewhere, "west")]
    assert no_account not in {r.client_order_id for r in left.ours + left.elsewhere}

    got_them = await north.take_over(left.ours)

    assert [r.client_order_id for r in got_them] == taken
    for r in got_them:  # as the journal now holds them
        assert r == await north.get(r.client_order_id)
    assert {r.daemon_id for r in got_them} == {"north"}
    owner = {
        coid: (await north.get(coid) or pytest.fail(coid)).daemon_id
        for coid in (*taken, booked, booked_in_two, to_the_millionth, rejected)
    }
    assert owner == {
        **dict.fromkeys(taken, "north"),
        **dict.fromkeys((booked, booked_in_two, to_the_millionth, rejected), "west"),
    }
    for coid, daemon in ((other_strategy, "west"), (live_daemons, "east"), (elsewhere, "west")):
        row = await north.get(coid)
        assert row is not None and row.daemon_id == daemon, coid
    # North now settles them: its open orders, and a fill of one of them is its own to book.
    assert {r.client_order_id for r in await north.non_terminal()} == {
        open_one,
        pending,
        other_kind,
        mine_already,
    }
    got = await north.get_by_venue_id(f"0x{unbooked}", own=True)
    assert got is not None and got.client_order_id == unbooked
    # One audit entry per daemon the orders came from, in the same transaction.
    entries = await repos.audit.tail(event="orders_taken_over")
    assert [(e.detail["from_daemon"], e.detail["to_daemon"]) for e in entries] == [
        ("west", "north")
    ]
    assert sorted(entries[0].detail["orders"]) == sorted(taken)
    # Once taken, nothing is left to take; with no strategy named, nothing is read; taking
    # the same rows again changes nothing (they are north's now), nor writes an audit entry.
    again = await north.left_unsettled({"copy", "alpha"}, live={"east", "north"})
    assert (again.ours, [r.client_order_id for r in again.elsewhere]) == ([], [elsewhere])
    assert await north.left_unsettled(set(), live=set()) == LeftUnsettled()
    assert await north.take_over(left.ours) == []
    assert await north.take_over([]) == []
    assert len(await repos.audit.tail(event="orders_taken_over")) == 1


async def test_a_row_that_changed_hands_meanwhile_is_not_taken(repos: Repositories) -> None:
    """Two daemons taking the same gone daemon's order (they cannot both hold the strategy's
    lease, but the journal does not count on it): the second finds it is no longer the gone
    daemon's and leaves it."""
    west = OrderJournal(db=repos.db, daemon_id="west")
    west.for_account(ACCOUNT)
    req = make_order(strategy="copy")
    await west.record(req, venue_order_id="0xw")
    north = OrderJournal(db=repos.db, daemon_id="north")
    south = OrderJournal(db=repos.db, daemon_id="south")
    for j in (north, south):
        j.for_account(ACCOUNT)
    seen_by_south = (await south.left_unsettled(["copy"], live=[])).ours
    assert [r.client_order_id for r in await north.take_over(seen_by_south)] == [
        req.client_order_id
    ]
    assert await south.take_over(seen_by_south) == []
    row = await south.get(req.client_order_id)
    assert row is not None and row.daemon_id == "north"
    (entry,) = await repos.audit.tail(event="orders_taken_over")
    assert entry.detail == {
        "from_daemon": "west",
        "orders": [req.client_order_id],
        "to_daemon": "north",
    }


async def test_a_daemon_with_no_account_takes_no_order_over(repos: Repositories) -> None:
    """A paper daemon (no venue account) cannot settle a venue order: every unsettled order of a
    gone daemon is reported as elsewhere, none changes hands."""
    west = OrderJournal(db=repos.db, daemon_id="west")
    west.for_account(ACCOUNT)
    req = make_order(strategy="copy")
    await west.record(req, venue_order_id="0xw")
    paper = OrderJournal(db=repos.db, daemon_id="paper")
    found = await paper.left_unsettled(["copy"], live=[])
    assert found.ours == []
    assert [r.client_order_id for r in found.elsewhere] == [req.client_order_id]
    row = await paper.get(req.client_order_id)
    assert row is not None and row.daemon_id == "west"


def _row(coid: str, daemon: str, created: str) -> JournalRow:
    return journal_row(
        client_order_id=coid,
        strategy="copy",
        token_id="t",
        created_at=created,
        updated_at=created,
        daemon_id=daemon,
        account=ACCOUNT,
    )


def test_fills_are_read_again_from_before_the_first_that_may_be_unbooked() -> None:
    """Where a takeover moves the fills checkpoint back to (`LeftUnsettled.fills_from`): for
    each gone daemon, the later of its oldest order taken and its own checkpoint (it booked
    every fill of its orders before that), less the overlap; the earliest over the daemons."""
    t = 1_800_000_000
    iso = {n: datetime.fromtimestamp(t + n, UTC).isoformat() for n in (0, 100, 500)}
    west_old, west_new = _row("w1", "west", iso[0]), _row("w2", "west", iso[500])
    south = _row("s1", "south", iso[100])
    left = LeftUnsettled(ours=[west_new, south, west_old])
    assert left.daemons == ["south", "west"]
    # No checkpoints: from each daemon's oldest order; the earliest wins.
    assert left.fills_from({}) == t - 60
    assert left.fills_from({}, overlap_s=5) == t - 5
    # West read its fills up to t + 300: nothing of its before that is unbooked.
    assert left.fills_from({"west": t + 300, "south": None}) == t + 100 - 60
    assert left.fills_from({"west": t + 300, "south": t + 400}) == t + 300 - 60
    # A checkpoint older than the oldest order counts for nothing.
    assert left.fills_from({"west": t - 1000, "south": t + 900}) == t - 60
    # Never before 0; an unreadable creation time reads from the checkpoint or from 0.
    assert LeftUnsettled(ours=[_row("x", "west", "yesterday")]).fills_from({}) == 0
    assert LeftUnsettled(ours=[_row("x", "west", "yesterday")]).fills_from({"west": t}) == t - 60
    assert LeftUnsettled().fills_from({"west": t}) == 0
