"""Fills at the edges of attribution and replay.

A fill moves the position of the strategy whose order it fills; a sale no order of ours explains
takes the unattributed shares first and then the strategies' (each audited); a trade that fails
is taken out by replaying the token's other fills. Each mistake here books money to the wrong
strategy, leaves a failed trade's shares on the books, or leaves the operator without the record
of what left a strategy's holding.
"""

from __future__ import annotations

from decimal import Decimal

from models import UNATTRIBUTED, Position, TradeStatus
from storage import Repositories
from tests.helpers import TOKEN, make_order
from tests.helpers import make_fill as _fill

D = Decimal


async def _journal(repos: Repositories, strategy: str, venue_order_id: str) -> str:
    """Journal an order of `strategy` known to the venue as `venue_order_id`; its client id."""
    order = make_order(strategy=strategy, token_id=TOKEN)
    await repos.orders.record(order, venue_order_id=venue_order_id, payload_hash=venue_order_id)
    return order.client_order_id


async def _book(repos: Repositories) -> dict[str, Position]:
    return {p.strategy: p for p in await repos.fills.positions_in(TOKEN)}


async def _taken(repos: Repositories) -> list[tuple[str | None, dict[str, object]]]:
    entries = await repos.audit.tail(event="unattributed_sell_took_from_strategy")
    return sorted(((e.strategy, e.detail) for e in entries), key=lambda x: str(x[0]))


# -- attribution --------------------------------------------------------------------------------


async def test_a_fill_naming_our_order_is_booked_to_its_strategy_before_its_venue_id_is_known(
    repos: Repositories,
) -> None:
    """The feed can report a fill before the journal has the order's venue id (the order is
    still PENDING): its client order id alone must book it to the order's strategy, not to
    `unattributed`."""
    order = make_order(strategy="sniper", token_id=TOKEN)
    await repos.orders.record(order)  # PENDING, no venue order id yet
    pos = await repos.fills.record(
        _fill("t1", "0xnew", "BUY", "0.40", "10", client_order_id=order.client_order_id)
    )
    assert pos is not None and (pos.strategy, pos.size) == ("sniper", D("10"))
    assert {k: p.size for k, p in (await _book(repos)).items()} == {"sniper": D("10")}


async def test_a_client_order_id_outranks_another_orders_venue_id(repos: Repositories) -> None:
    """A fill is booked by the order its client order id names; the venue id is the fallback
    for fills that name none."""
    sniper = make_order(strategy="sniper", token_id=TOKEN)
    await repos.orders.record(sniper)
    await _journal(repos, "copy", "0xc")
    pos = await repos.fills.record(
        _fill("t1", "0xc", "BUY", "0.40", "3", client_order_id=sniper.client_order_id)
    )
    assert pos is not None and pos.strategy == "sniper"
    fallback = await repos.fills.record(_fill("t2", "0xc", "BUY", "0.40", "2"))
    assert fallback is not None and fallback.strategy == "copy"


async def test_a_failed_fill_stays_with_the_strategy_it_was_first_booked_to(
    repos: Repositories,
) -> None:
    """A fill of an order the journal did not know yet was booked unattributed; when the order
    is journaled later and the trade then fails, the shares come out of `unattributed` (where
    they were booked), not out of the order's strategy."""
    await repos.fills.record(_fill("t1", "0xlate", "BUY", "0.40", "5"))
    await _journal(repos, "sniper", "0xlate")
    failed = await repos.fills.record(
        _fill("t1", "0xlate", "BUY", "0.40", "5", status=TradeStatus.FAILED)
    )
    assert failed is not None
    assert (failed.strategy, failed.size) == (UNATTRIBUTED, D("0"))
    assert {k: p.size for k, p in (await _book(repos)).items()} == {UNATTRIBUTED: D("0")}
    [entry] = await repos.audit.tail(event="fill_failed")
    assert entry.detail["strategy"] == UNATTRIBUTED
    assert (entry.detail["position_before"], entry.detail["position_after"]) == ("5", "0")


async def test_a_strategys_only_fill_failing_flattens_that_strategy_alone(
    repos: Repositories,
) -> None:
    """When the failed trade was the strategy's only fill in the token, the replay has nothing
    of that strategy: its position must still go to zero, and the other holdings stay."""
    cid = await _journal(repos, "sniper", "0xs")
    await repos.fills.record(_fill("m1", "0xm", "BUY", "0.30", "2"))  # by hand
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "10", client_order_id=cid))
    failed = await repos.fills.record(
        _fill("t1", "0xs", "BUY", "0.40", "10", client_order_id=cid, status=TradeStatus.FAILED)
    )
    assert failed is not None
    assert (failed.strategy, failed.size, failed.avg_cost) == ("sniper", D("0"), D("0"))
    book = await _book(repos)
    assert book["sniper"].size == D("0")
    assert (book[UNATTRIBUTED].size, book[UNATTRIBUTED].avg_cost) == (D("2"), D("0.30"))


# -- sales outside the daemon -------------------------------------------------------------------


async def test_a_sale_outside_the_daemon_audits_the_trade_token_and_price_per_strategy(
    repos: Repositories,
) -> None:
    """The audit entry is the only record of shares leaving a strategy's holding by a trade no
    order of ours explains: it names the trade, venue order, token, shares and price. A sale the
    largest holding covers exactly takes nothing from (and audits nothing for) the next."""
    await _journal(repos, "sniper", "0xs")
    await _journal(repos, "copy", "0xc")
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "10"))
    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4"))
    recorded = await repos.fills.record_moves(_fill("t3", "0xn", "SELL", "0.65", "10"))
    assert recorded is not None
    assert await _taken(repos) == [
        (
            "sniper",
            {
                "trade_id": "t3",
                "venue_order_id": "0xn",
                "token_id": TOKEN,
                "size": "10",
                "price": "0.65",
            },
        )
    ]
    book = await _book(repos)
    assert (book["sniper"].size, book["sniper"].realized_pnl) == (D("0"), D("2.50"))
    assert (book["copy"].size, book["copy"].realized_pnl) == (D("4"), D("0"))
    # The rows written: the unattributed holding, then the sniper's; the copy's is untouched.
    assert [(after.strategy, after.size) for _, after in recorded.moves] == [
        (UNATTRIBUTED, D("0")),
        ("sniper", D("0")),
    ]


async def test_a_sale_beyond_every_holding_takes_each_share_held_and_skips_flat_strategies(
    repos: Repositories,
) -> None:
    """A sale larger than everything held takes every strategy's holding, a single share
    included (the boundary), and writes no entry for a strategy that holds nothing."""
    await _journal(repos, "sniper", "0xs")
    await _journal(repos, "copy", "0xc")
    await _journal(repos, "alpha", "0xa")
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "3"))
    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "1"))
    await repos.fills.record(_fill("t3", "0xa", "BUY", "0.50", "2"))
    await repos.fills.record(_fill("t4", "0xa", "SELL", "0.55", "2"))  # alpha is flat
    await repos.fills.record(_fill("t5", "0xm", "BUY", "0.20", "1"))  # by hand
    await repos.fills.record(_fill("t6", "0xn", "SELL", "0.60", "7"))  # by hand
    assert [(s, d["size"]) for s, d in await _taken(repos)] == [("copy", "1"), ("sniper", "3")]
    book = await _book(repos)
    assert {k: p.size for k, p in book.items()} == {
        "alpha": D("0"),
        "copy": D("0"),
        "sniper": D("0"),
        UNATTRIBUTED: D("0"),
    }
    assert book["alpha"].realized_pnl == D("0.10")
    assert book["copy"].realized_pnl == D("0.10")
    assert book["sniper"].realized_pnl == D("0.60")


# -- replay -------------------------------------------------------------------------------------


async def test_a_trade_that_fails_and_is_restored_leaves_every_position_as_recorded(
    repos: Repositories,
) -> None:
    """Replay applies the rules recording applied: a buy by hand takes nothing from the
    strategies, and a sale by hand takes from them only what the unattributed holding lacked.
    So failing an unrelated trade removes just that trade, and restoring it gives back exactly
    the positions recording built."""
    await _journal(repos, "sniper", "0xs")
    await _journal(repos, "copy", "0xc")
    await repos.fills.record(_fill("t1", "0xs", "BUY", "0.40", "10"))
    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4"))
    await repos.fills.record(_fill("t3", "0xm", "BUY", "0.30", "3"))  # by hand
    await repos.fills.record(_fill("t4", "0xn", "SELL", "0.60", "5"))  # 3 unattributed + 2
    recorded = await _book(repos)
    assert {k: p.size for k, p in recorded.items()} == {
        "sniper": D("8"),
        "copy": D("4"),
        UNATTRIBUTED: D("0"),
    }
    assert recorded["sniper"].realized_pnl == D("0.40")  # 2 x (0.60 - 0.40)

    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4", status=TradeStatus.FAILED))
    failed = await _book(repos)
    assert {k: p.size for k, p in failed.items()} == {
        "sniper": D("8"),
        "copy": D("0"),
        UNATTRIBUTED: D("0"),
    }
    assert failed["sniper"] == recorded["sniper"]
    assert failed[UNATTRIBUTED] == recorded[UNATTRIBUTED]

    await repos.fills.record(_fill("t2", "0xc", "BUY", "0.50", "4", status=TradeStatus.CONFIRMED))
    assert await _book(repos) == recorded
