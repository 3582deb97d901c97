"""The simulator's matching engine against the real py-clob-client-v2 over loopback.

What the venue does, with the public sources (docs/venue-mechanics.md §1, §2, §6):
- mint and merge across the two tokens of a condition: `_deriveMatchType` and
  `CalculatorHelper._isCrossing` in
  https://github.com/Polymarket/ctf-exchange/blob/main/src/exchange/mixins/Trading.sol;
- one trade per taker order with one `maker_orders` entry per maker, each in the maker's own
  token (the real 2024 capture in tests/fixtures/ws_user; NautilusTrader's
  `make_composite_trade_id`);
- a BUY's price improvement paid as extra shares (py-clob-client-v2 issue #89: a FAK BUY of 5 at
  0.99 against an ask at 0.98 filled 5.051019 shares);
- the taker fee `C x rate x (p(1-p))^e` in pUSD at match, floored to 0.00001, makers pay 0
  (https://docs.polymarket.com/trading/fees; `fees.py` of py-clob-client-v2);
- `maker_orders[].side` optional on user-channel fills, always on REST rows (`MakerOrder.side?`
  in https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts).

Every test checks that collateral is conserved: the pUSD of all wallets (the fee receiver's
included) moves only by the full sets minted or merged, and each token's supply moves by the
same number of sets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest
import websockets
from py_clob_client_v2.clob_types import MarketOrderArgsV2, OrderArgsV2, OrderType
from py_clob_client_v2.exceptions import PolyApiException

from simulator import SimMarket, Simulator
from simulator.engine import FEE_RECEIVER
from simulator.testing import new_trader

P = ParamSpec("P")
R = TypeVar("R")
D = Decimal
MAKER = "0x" + "ab" * 20
MAKER2 = "0x" + "cd" * 20
NONE = D(0)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11, settle_delay_s=0.02) as s:
        yield s


@pytest.fixture
def market(sim: Simulator) -> SimMarket:
    return sim.add_market(question="Will X?", slug="will-x")


async def run(fn: Callable[P, R], /, *a: P.args, **kw: P.kwargs) -> R:
    return await asyncio.to_thread(fn, *a, **kw)


def supply(sim: Simulator, market: SimMarket) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(all pUSD, Yes supply, No supply, net sets minted) from the venue's ledger."""
    led = sim.ledger()
    yes, no = market.token_ids
    bal = led["balances"].values()
    return (
        sum((b["collateral"] for b in bal), D(0)),
        sum((b["tokens"].get(yes, D(0)) for b in bal), D(0)),
        sum((b["tokens"].get(no, D(0)) for b in bal), D(0)),
        led["sets_minted"].get(market.condition_id, D(0)),
    )


def assert_conserved(
    before: tuple[Decimal, Decimal, Decimal, Decimal],
    after: tuple[Decimal, Decimal, Decimal, Decimal],
    sets: Decimal,
    *,
    funded: Decimal = NONE,
    funded_yes: Decimal = NONE,
    funded_no: Decimal = NONE,
) -> None:
    """Between `before` and `after`, pUSD and each token's supply moved only by the `sets`
    minted (negative: merged), besides what was funded from outside the venue meanwhile."""
    c0, y0, n0, s0 = before
    c1, y1, n1, s1 = after
    assert s1 - s0 == sets
    assert c1 == c0 + funded - sets  # pUSD locked into (or released from) full sets
    assert (y1 - y0, n1 - n0) == (sets + funded_yes, sets + funded_no)


def wallet(sim: Simulator, address: str) -> dict[str, Any]:
    b: dict[str, Any] = sim.ledger()["balances"][address.lower()]
    return b


async def test_buy_crosses_the_other_tokens_resting_buy_as_a_mint(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    maker_oid = sim.seed_order(maker=MAKER, token_id=no, side="BUY", price=D("0.45"), size=D("20"))
    client, acct = await run(new_trader, sim, D("100"))
    before = supply(sim, market)
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.55, 10, "BUY"))
    assert res["status"] == "matched"
    assert (res["makingAmount"], res["takingAmount"]) == ("5.5", "10")
    assert_conserved(before, supply(sim, market), D("10"))
    assert wallet(sim, acct.address) == {"collateral": D("94.5"), "tokens": {yes: D("10")}}
    mk = wallet(sim, MAKER)
    assert (mk["collateral"], mk["tokens"][no]) == (D("9") - D("4.5"), D("10"))
    (trade,) = await run(client.get_trades)
    assert (trade["side"], trade["asset_id"], trade["size"], trade["price"]) == (
        "BUY",
        yes,
        "10",
        "0.55",
    )
    (m,) = trade["maker_orders"]
    assert (m["order_id"], m["asset_id"], m["outcome"], m["side"], m["price"]) == (
        maker_oid,
        no,
        "No",
        "BUY",  # same side as the taker: a mint
        "0.45",
    )
    assert m["matched_amount"] == "10"
    book = await run(client.get_order_book, no)
    assert [(b["price"], b["size"]) for b in book["bids"]] == [("0.45", "10")]


async def test_sell_crosses_the_other_tokens_resting_sell_as_a_merge(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    sim.seed_order(maker=MAKER, token_id=no, side="SELL", price=D("0.30"), size=D("10"))
    client, acct = await run(new_trader, sim, D("0"))
    sim.fund(acct.address, token_id=yes, shares=D("10"))
    before = supply(sim, market)
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.65, 10, "SELL"))
    # The SELL sells its 10 shares; the merge pays it 1 - 0.30 = 0.70 a share, above its limit.
    assert (res["status"], res["makingAmount"], res["takingAmount"]) == ("matched", "10", "7")
    assert_conserved(before, supply(sim, market), D("-10"))
    assert wallet(sim, acct.address) == {"collateral": D("7"), "tokens": {yes: D("0")}}
    mk = wallet(sim, MAKER)
    assert (mk["collateral"], mk["tokens"][no]) == (D("3"), D("0"))
    (trade,) = await run(client.get_trades)
    (m,) = trade["maker_orders"]
    assert (m["asset_id"], m["side"], m["price"], m["matched_amount"]) == (no, "SELL", "0.3", "10")


async def test_price_time_priority_runs_across_both_books(
    sim: Simulator, market: SimMarket
) -> None:
    yes, no = market.token_ids
    a = sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.56"), size=D("5"))
    b = sim.seed_order(maker=MAKER2, token_id=no, side="BUY", price=D("0.44"), size=D("5"))
    c = sim.seed_order(maker=MAKER2, token_id=no, side="BUY", price=D("0.46"), size=D("5"))
    client, _ = await run(new_trader, sim, D("100"))
    before = supply(sim, market)
    res = await run(
        client.create_and_post_market_order,
        MarketOrderArgsV2(yes, amount=8.3, side="BUY", price=0.56, order_type=OrderType.FAK),
    )
    assert (res["status"], res["makingAmount"], res["takingAmount"]) == ("matched", "8.3", "15")
    assert_conserved(before, supply(sim, market), D("10"))
    (trade,) = await run(client.get_trades)
    # No at 0.46 ranks as 0.54 (best); then 0.56 twice: the Yes ask is older than the No bid.
    assert [(m["order_id"], m["price"]) for m in trade["maker_orders"]] == [
        (c, "0.46"),
        (a, "0.56"),
        (b, "0.44"),
    ]
    assert [m["side"] for m in trade["maker_orders"]] == ["BUY", "SELL", "BUY"]
    assert (trade["size"], trade["price"]) == ("15", "0.54")  # top level: the best level taken


async def test_a_buy_receives_its_price_improvement_as_extra_shares(
    sim: Simulator, market: SimMarket
) -> None:
    """py-clob-client-v2 issue #89: FAK BUY 5 at 0.99, ask at 0.98, 5.051019 shares filled.
    The simulator floors 4.95 / 0.98 to 6 decimals: 5.05102 (the live answer was 1e-6 lower)."""
    yes, _ = market.token_ids
    sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.98"), size=D("100"))
    client, acct = await run(new_trader, sim, D("100"))
    before = supply(sim, market)
    res = await run(
        client.create_and_post_market_order,
        MarketOrderArgsV2(yes, amount=4.95, side="BUY", price=0.99, order_type=OrderType.FAK),
    )
    assert (res["makingAmount"], res["takingAmount"]) == ("4.9499996", "5.05102")
    assert D(res["takingAmount"]) > 5
    assert wallet(sim, acct.address)["tokens"][yes] == D("5.05102")
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["size_matched"]) == ("MATCHED", "5.05102")
    assert_conserved(before, supply(sim, market), D("0"))


async def test_the_taker_pays_the_fee_in_pusd_and_the_maker_pays_none(
    sim: Simulator, market: SimMarket
) -> None:
    yes, _ = market.token_ids
    market.fee_rate = D("0.072")
    sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.5"), size=D("100"))
    sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.97"), size=D("7"))
    client, acct = await run(new_trader, sim, D("200"))
    before = supply(sim, market)
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.5, 100, "BUY"))
    assert res["makingAmount"] == "50"  # the fee is not in the order's amounts
    # 100 x 0.072 x 0.5 x 0.5 = 1.8, debited on top of the notional; the maker gets 50.
    assert wallet(sim, acct.address)["collateral"] == D("200") - D("50") - D("1.8")
    assert wallet(sim, MAKER)["collateral"] == D("50")
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.97, 7, "BUY"))
    # 7 x 0.072 x 0.97 x 0.03 = 0.0146664, floored to 0.00001.
    fees = [t["fee"] for t in sim.ledger()["trades"]]
    assert fees == [D("1.8"), D("0.01466")]
    assert wallet(sim, FEE_RECEIVER)["collateral"] == D("1.81466")
    assert_conserved(before, supply(sim, market), D("0"))
    trades = await run(client.get_trades)
    assert {t["fee_rate_bps"] for t in trades} == {"720"}
    assert {m["fee_rate_bps"] for t in trades for m in t["maker_orders"]} == {"720"}


async def test_a_sell_taker_receives_its_proceeds_less_the_fee(
    sim: Simulator, market: SimMarket
) -> None:
    yes, _ = market.token_ids
    market.fee_rate = D("0.072")
    sim.seed_order(maker=MAKER, token_id=yes, side="BUY", price=D("0.98"), size=D("100"))
    client, acct = await run(new_trader, sim, D("0"))
    sim.fund(acct.address, token_id=yes, shares=D("100"))
    await run(client.create_and_post_order, OrderArgsV2(yes, 0.98, 100, "SELL"))
    # 98 - 100 x 0.072 x 0.98 x 0.02 = 98 - 0.14112
    assert wallet(sim, acct.address)["collateral"] == D("97.85888")
    assert wallet(sim, MAKER)["tokens"][yes] == D("100")


async def test_a_buy_that_cannot_pay_its_fee_is_refused_before_it_matches(
    sim: Simulator, market: SimMarket
) -> None:
    yes, _ = market.token_ids
    market.fee_rate = D("0.072")
    sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.5"), size=D("100"))
    client, acct = await run(new_trader, sim, D("50"))
    with pytest.raises(PolyApiException) as e:
        await run(client.create_and_post_order, OrderArgsV2(yes, 0.5, 100, "BUY"))
    assert e.value.status_code == 400
    assert e.value.error_msg == {"error": "not enough balance / allowance"}
    assert sim.ledger()["trades"] == []
    # The same notional resting as a maker owes no fee, so the balance covers it.
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.49, 100, "BUY"))
    assert res["status"] == "live"
    sim.fund(acct.address, collateral=D("1.8"))
    await run(client.cancel_all)
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.5, 100, "BUY"))
    assert res["status"] == "matched"
    assert wallet(sim, acct.address)["collateral"] == D("0")


async def user_trades(ws: Any, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(3):
        while len(got) < n:
            raw = await ws.recv()
            if raw == "PONG":
                continue
            data = json.loads(raw)
            for e in data if isinstance(data, list) else [data]:
                if e.get("event_type") == "trade" and e.get("status") == "MATCHED":
                    got.append(e)
    return got


@pytest.mark.parametrize("feed_side", [True, False])
async def test_our_resting_buy_no_filled_by_a_buy_yes_reaches_us_as_a_maker_leg(
    sim: Simulator, market: SimMarket, feed_side: bool
) -> None:
    yes, no = market.token_ids
    market.fee_rate = D("0.03")
    options = {"feed_maker_side": feed_side, "feed_empty_maker_fee_bps": not feed_side}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{sim.clob_url}/_sim/options", json=options)
        assert (r.status_code, r.json()) == (200, options)
        bad = await http.post(f"{sim.clob_url}/_sim/options", json={"feed_maker_side": "no"})
        assert bad.status_code == 400
    client, _ = await run(new_trader, sim, D("100"))
    c = client.creds
    ours = await run(client.create_and_post_order, OrderArgsV2(no, 0.40, 10, "BUY"))
    async with (
        websockets.connect(sim.user_ws_url) as uws,
        websockets.connect(sim.market_ws_url) as mws,
    ):
        auth = {"apiKey": c.api_key, "secret": c.api_secret, "passphrase": c.api_passphrase}
        await uws.send(json.dumps({"auth": auth, "markets": [], "type": "user"}))
        await mws.send(json.dumps({"assets_ids": [yes, no], "type": "market"}))
        await uws.send("PING")
        assert await uws.recv() == "PONG"
        sim.seed_order(maker=MAKER, token_id=yes, side="BUY", price=D("0.60"), size=D("4"))
        (ev,) = await user_trades(uws, 1)
        changes: list[dict[str, Any]] = []
        async with asyncio.timeout(3):
            while not any(c["asset_id"] == no for c in changes):
                data = json.loads(await mws.recv())
                for e in data if isinstance(data, list) else [data]:
                    if e.get("event_type") == "price_change":
                        changes += e["price_changes"]
    assert (ev["trader_side"], ev["side"], ev["asset_id"]) == ("MAKER", "BUY", yes)
    (m,) = ev["maker_orders"]
    assert (m["order_id"], m["asset_id"], m["price"], m["matched_amount"]) == (
        ours["orderID"],
        no,
        "0.4",
        "4",
    )
    assert ("side" in m) is feed_side
    if feed_side:
        assert m["side"] == "BUY"
    assert ev["fee_rate_bps"] == "300"
    assert m["fee_rate_bps"] == ("300" if feed_side else "")
    no_change = next(c for c in changes if c["asset_id"] == no)
    assert (no_change["price"], no_change["size"], no_change["side"]) == ("0.4", "6", "BUY")
    (row,) = await run(client.get_trades)
    assert row["maker_orders"][0]["side"] == "BUY"  # REST rows always carry it
    assert row["maker_orders"][0]["fee_rate_bps"] == "300"


async def test_a_gtc_buy_that_took_better_prices_rests_the_rest_of_its_size(
    sim: Simulator, market: SimMarket
) -> None:
    """The surplus buys extra shares while the order takes; the remainder rests at the limit
    for the rest of its size (a GTC with surplus pUSD left is unobserved; see `Order.remaining`)."""
    yes, _ = market.token_ids
    sim.seed_order(maker=MAKER, token_id=yes, side="SELL", price=D("0.50"), size=D("4"))
    client, acct = await run(new_trader, sim, D("100"))
    res = await run(client.create_and_post_order, OrderArgsV2(yes, 0.60, 10, "BUY"))
    assert (res["status"], res["makingAmount"], res["takingAmount"]) == ("matched", "2", "4")
    book = await run(client.get_order_book, yes)
    assert [(b["price"], b["size"]) for b in book["bids"]] == [("0.6", "6")]
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["size_matched"]) == ("LIVE", "4")
    # Filled to its size by a seller at its limit, it is complete; its unspent 0.40 is free.
    sim.seed_order(maker=MAKER2, token_id=yes, side="SELL", price=D("0.60"), size=D("6"))
    order = await run(client.get_order, res["orderID"])
    assert (order["status"], order["size_matched"]) == ("MATCHED", "10")
    assert sim.engine.available_collateral(acct.address) == D("100") - D("2") - D("3.6")
    assert wallet(sim, acct.address)["tokens"][yes] == D("10")
