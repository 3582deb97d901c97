"""Which daemon an order belongs to, and which account it was journaled for.

Several daemons can share one database (and one venue account). A fill or a venue order is looked
up by its venue order id; the answer must name the daemon that journaled the order, because only
that daemon settles it and books its fills. A lookup that hid another daemon's order would book
its fills as unattributed (or cancel it as unknown); one that claimed it would settle an order the
other daemon is still working.
"""

from __future__ import annotations

from storage import Repositories
from storage.journal import OrderJournal
from tests.helpers import make_order


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
