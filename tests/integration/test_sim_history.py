"""The simulator's bounded history (`simulator.history`): it evicts old records, and every total it
reports stays exact.

Two simulators with the same seed get the same calls: `small` keeps a handful of records, `full`
keeps everything (the default retention is far above what these tests make). Whatever the ledger and
the Data API report must be the same on both: totals over every trade (count, ledger rows, shares,
fees, a digest summing every row's SHA-256), balances, full sets minted, each wallet's fill totals,
`/positions`, and the newest pages of `/trades` and `/activity`. An API client's records (an order
placed with the real py-clob-client-v2) are kept past the simulated wallets' retention, so a test or
the demo comparing a daemon's journal with the venue ledger sees every fill. The containers stay
bounded however many orders go through (counted, not timed), and the demo scenario keeps at most
40 of its orders resting per book.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2

from ledger_check import compare
from simulator import Simulator
from simulator.history import RequestLog, Retention, ledger_digest, wallet_fills
from simulator.market import SimMarket
from simulator.scenario import MAX_RESTING
from simulator.testing import new_trader
from simulator.venue import RequestRecord
from simulator.ws import MAX_BUFFERED
from storage.reports import FillReport

D = Decimal
MAKERS = ["0x" + f"{i:02x}" * 20 for i in range(1, 4)]
TAKERS = ["0x" + f"{i:02x}" * 20 for i in range(0xA1, 0xA3)]
WHALE = "0x" + "ee" * 20
SMALL = Retention(orders=20, trades=10, data_rows=60, requests=40, client=100_000)


async def settled(sim: Simulator) -> None:
    """Wait until every kept trade is CONFIRMED (the settle timers have run)."""
    while any(t.status != "CONFIRMED" for t in sim.engine.trades):  # noqa: ASYNC110  # timers
        await asyncio.sleep(0.005)


async def churn(sim: Simulator, m: SimMarket, n: int, seed: int = 5) -> None:
    """`n` rounds of simulated trading on `m`: makers rest both sides, takers cross them (one
    trade, often several maker legs, on both tokens), some orders are cancelled, the whale
    trades. The same `seed` makes the same calls on any simulator."""
    rng = random.Random(seed)
    yes, no = m.token_ids
    resting: list[str] = []
    for i in range(n):
        for _ in range(2):
            tok = rng.choice((yes, no))
            resting.append(
                sim.seed_order(
                    rng.choice(MAKERS),
                    tok,
                    "SELL",
                    D(rng.randint(50, 60)) / 100,
                    D(rng.randint(5, 50)),
                )
            )
            resting.append(
                sim.seed_order(
                    rng.choice(MAKERS),
                    tok,
                    "BUY",
                    D(rng.randint(30, 40)) / 100,
                    D(rng.randint(5, 50)),
                )
            )
        # A taker BUY at 0.62 takes asks of its token and (as a mint) bids >= 0.38 of the other.
        sim.seed_order(rng.choice(TAKERS), rng.choice((yes, no)), "BUY", D("0.62"), D(40), "FAK")
        sim.seed_order(rng.choice(TAKERS), rng.choice((yes, no)), "SELL", D("0.30"), D(25), "FAK")
        if resting and rng.random() < 0.5:
            sim.cancel_seeded(resting.pop(rng.randrange(len(resting))))
        if i % 3 == 0:
            sim.trade_as(WHALE, yes, rng.choice(("BUY", "SELL")), D("0.55"), D(rng.randint(1, 9)))
        if i % 5 == 4:
            await settled(sim)
    await settled(sim)


async def book_maker_fills(
    client: Any, me: str, journal: dict[tuple[str, str], FillReport]
) -> None:
    """Book the client's maker fills from `GET /data/trades` as a daemon would, keyed (trade id,
    our order id); run after every fill, before the venue may let its trade go."""
    for t in await asyncio.to_thread(client.get_trades):
        for mo in t["maker_orders"]:
            if mo["maker_address"].lower() == me:
                journal[(t["id"], mo["order_id"])] = FillReport(
                    t["id"], mo["order_id"], mo["asset_id"], mo["side"],
                    D(mo["price"]), D(mo["matched_amount"]), D(0), "MAKER", t["status"],
                )  # fmt: skip


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Simulator, Simulator]]:
    async with (
        Simulator(seed=21, settle_delay_s=0.001, retention=SMALL) as small,
        Simulator(seed=21, settle_delay_s=0.001) as full,
    ):
        yield small, full


def _markets(*sims: Simulator) -> list[SimMarket]:
    return [s.add_market(question="Will X?", slug="will-x", fee_rate=D("0.072")) for s in sims]


def _untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]


async def test_eviction_keeps_ledger_totals_and_wallet_sums_exact(
    pair: tuple[Simulator, Simulator],
) -> None:
    small, full = pair
    ms, mf = _markets(small, full)
    for sim, m in ((small, ms), (full, mf)):
        await churn(sim, m, 60)
    a, b = small.ledger(), full.ledger()
    # The small venue let most of its history go; the full one kept it all.
    assert a["evicted"]["trades"] > 50 and a["evicted"]["orders"] > 100
    assert len(a["trades"]) < len(b["trades"]) and len(a["orders"]) < len(b["orders"])
    assert b["evicted"]["trades"] == 0 and b["evicted"]["orders"] == 0
    # Totals over everything are the same, to the last digit and the last hash.
    assert a["totals"] == b["totals"]
    assert b["totals"]["digest"] == ledger_digest(b["trades"])
    assert b["totals"]["trades"] == len({r["id"] for r in b["trades"]})
    assert b["totals"]["fees"] == sum((r["fee"] for r in b["trades"]), D(0)) > 0
    assert a["evicted"]["orders"] + len(a["orders"]) == len(b["orders"])
    assert a["balances"] == b["balances"]
    assert a["sets_minted"] == b["sets_minted"] != {}
    for w in [*MAKERS, *TAKERS]:
        assert wallet_fills(a, w) == wallet_fills(b, w)
        assert wallet_fills(b, w)["taker_legs"] + wallet_fills(b, w)["maker_legs"] > 0
    # The evicted part alone: what the full ledger has beyond the small one's kept rows.
    kept = {(r["id"], r["maker_order_id"]) for r in a["trades"]}
    gone = [r for r in b["trades"] if (r["id"], r["maker_order_id"]) not in kept]
    assert len(gone) == a["evicted"]["ledger_rows"]
    assert ledger_digest(gone) == a["evicted"]["digest"]
    # The digest adds up whatever the order: evicted plus kept is every row.
    assert ledger_digest(a["trades"], a["evicted"]["digest"]) == ledger_digest(b["trades"][::-1])
    assert sum((r["fee"] for r in gone), D(0)) == a["evicted"]["fees"]


async def test_data_api_answers_the_same_after_eviction(
    pair: tuple[Simulator, Simulator],
) -> None:
    small, full = pair
    ms, mf = _markets(small, full)
    for sim, m in ((small, ms), (full, mf)):
        await churn(sim, m, 45, seed=8)
    assert small.history.evicted.data_rows > 100
    assert len(small.data_rows) < len(full.data_rows)

    async def get(sim: Simulator, path: str, **q: str) -> Any:
        async with httpx.AsyncClient(base_url=sim.data_url) as c:
            r = await c.get(path, params=q)
        assert r.status_code == 200, r.text
        return r.json()

    for w in [*MAKERS, *TAKERS, WHALE]:
        pa, pf = await get(small, "/positions", user=w), await get(full, "/positions", user=w)
        assert pa == pf
        # Positions computed over every row: the folded part matters (it is not empty).
        assert pf == [] or small.history.evicted.positions_of(w)
        # Every row the small venue kept is served as the full one serves it: the newest page,
        # as far as the wallet's kept rows reach.
        kept = sum(1 for r in small.data_rows if r.wallet == w)
        for path in ("/trades", "/activity"):
            q = {"user": w, "limit": "10", "takerOnly": "false"}
            ta, tf = await get(small, path, **q), await get(full, path, **q)
            assert len(tf) == 10 and len(ta) == min(10, kept)
            assert _untimed(ta) == _untimed(tf)[: len(ta)]
    assert any(sum(1 for r in small.data_rows if r.wallet == w) >= 10 for w in MAKERS)
    assert await get(small, "/positions", user=MAKERS[0], market=ms.condition_id) == await get(
        full, "/positions", user=MAKERS[0], market=mf.condition_id
    )
    newest = await get(small, "/trades", market=ms.condition_id, limit="20")
    assert _untimed(newest) == _untimed(await get(full, "/trades", market=mf.condition_id))[:20]


@pytest.mark.parametrize("client_keep", [100_000, 2])
async def test_an_api_clients_orders_and_fills_outlive_the_simulated_wallets(
    client_keep: int,
) -> None:
    """Kept (the default retention of a client's records): every order and fill of ours is in
    the ledger and on `/data/trades`. Evicted too (a client retention of 2): the ledger's
    folded totals still match a journal of every fill, as `ledger_check` compares them."""
    retention = replace(SMALL, client=client_keep)
    async with Simulator(seed=4, settle_delay_s=0.001, retention=retention) as sim:
        m = sim.add_market(question="Will Y?", slug="will-y", fee_rate=D("0.072"))
        client, acct = await asyncio.to_thread(new_trader, sim, D(1000))
        me, yes = acct.address.lower(), m.token_ids[0]
        ours: list[str] = []
        journal: dict[tuple[str, str], FillReport] = {}
        for i in range(4):
            args = OrderArgsV2(yes, round(0.41 + i / 100, 2), 10, "BUY")
            resp = await asyncio.to_thread(client.create_and_post_order, args)
            ours.append(resp["orderID"])
            # A simulated taker sells into our bid: we book the fill as a daemon would.
            sim.seed_order(TAKERS[0], yes, "SELL", D("0.40"), D(10), "FAK")
            await settled(sim)
            await book_maker_fills(client, me, journal)
            # Then many rounds of simulated trading.
            await churn(sim, m, 15, seed=i)
        led = sim.ledger()
        assert led["evicted"]["trades"] > 20  # the simulated wallets' history went
        assert len(journal) == 4
        check = compare(led, list(journal.values()), {yes: D(40)}, address=acct.address)
        assert check.ok, check.mismatches
        assert wallet_fills(led, me)["bought"] == 40 and wallet_fills(led, me)["maker_legs"] == 4
        positions = await asyncio.to_thread(
            httpx.get, f"{sim.data_url}/positions", params={"user": acct.address}
        )
        assert positions.json()[0]["size"] == 40
        mine = [r for r in led["trades"] if r["maker"].lower() == me]
        rest = await asyncio.to_thread(client.get_trades)
        assert sorted(t["id"] for t in rest) == sorted({r["id"] for r in mine})
        if client_keep > 4:
            assert set(ours) <= {o["id"] for o in led["orders"]}
            assert {r["maker_order_id"] for r in mine} == set(ours)
            assert me not in led["evicted"]["wallets"]
        else:
            assert len(mine) < 4 and led["evicted"]["wallets"][me]["maker_legs"] == 4 - len(mine)


async def test_containers_stay_bounded_under_many_orders() -> None:
    retention = Retention(orders=50, trades=30, data_rows=60, requests=25, client=10)
    async with Simulator(seed=6, settle_delay_s=0.001, retention=retention) as sim:
        m = sim.add_market(question="Will Z?", slug="will-z")
        for round_ in range(10):
            await churn(sim, m, 40, seed=round_)
            live = sum(1 for o in sim.engine.orders.values() if o.status == "LIVE")
            # Retention + one batch (16) + what was still resting / unsettled at the last
            # eviction and finished since (at most a few rounds' worth); resting orders stay.
            assert len(sim.engine.orders) - live <= 50 + 16 + 20
            assert len(sim.engine.trades) <= 30 + 16 + 10
            assert len(sim.engine.trades_by_id) == len(sim.engine.trades)
            assert len(sim.data_rows) <= 60 + 16
        assert sim.engine._seq > 2000  # every order counted
        assert sim.history.evicted.orders > 1500
        assert sim.ledger()["totals"]["orders"] == sim.engine._seq
        async with httpx.AsyncClient(base_url=sim.clob_url) as c:
            mark = len(sim.request_log)
            for _ in range(60):
                assert (await c.get("/time")).status_code == 200
        assert len(sim.request_log) == mark + 60
        assert len(list(sim.request_log)) == 25
        since = sim.request_log[mark:]
        assert len(since) == 25 and all(r.path == "/time" for r in since)


def assert_bounded(sim: Simulator, r: Retention) -> None:
    """Every per-order and per-trade container of `sim` within its bound (`simulator.history`:
    a container grows one batch, `max(16, keep // 4)`, past its retention before eviction;
    resting orders and unsettled trades are never evicted)."""
    eng = sim.engine

    def batch(keep: int) -> int:
        return max(16, keep // 4)

    resting = [o for o in eng.orders.values() if o.status not in ("MATCHED", "CANCELED")]
    # Terminal orders: retention + one batch, plus the orders still resting at the last eviction
    # that finished since (a second batch covers them here); resting ones are the books'.
    assert len(eng.orders) <= r.orders + r.client + 2 * batch(r.orders) + len(resting)
    unsettled = sum(1 for t in eng.trades if t.status != "CONFIRMED")
    assert unsettled == 0 and len(sim._timers) == 0  # settled: no settle timer left
    assert len(eng.trades) <= r.trades + r.client + batch(r.trades) + 15  # 15: one settle's
    assert len(eng.trades_by_id) == len(eng.trades)
    assert len(sim.data_rows) <= r.data_rows + r.client + batch(r.data_rows)
    assert len(list(sim.request_log)) <= r.requests
    assert len(sim.received) <= r.requests
    assert len(sim.heartbeats) <= len(sim.keys)
    for book in eng.books.values():  # a price level exists only while an order rests on it
        for queues, prices, levels in (
            (book.bids, book.bid_prices, book.bid_levels),
            (book.asks, book.ask_prices, book.ask_levels),
        ):
            assert len(queues) == len(prices) == len(levels)
            assert all(queues.values())
    assert sum(
        len(q) for b in eng.books.values() for q in (*b.bids.values(), *b.asks.values())
    ) <= len(resting)


async def test_every_container_stays_bounded_and_totals_exact() -> None:
    """Two simulators, the same calls: an API client's orders filled by a simulated taker, and
    simulated trading between them. The small one evicts the client's records too (client
    retention 8); every container stays within its bound, and what the ledger check compares
    (the client's fills, fees and positions) and every total come out as on the one that keeps
    everything."""
    r = Retention(orders=40, trades=20, data_rows=60, requests=10, client=8)
    async with (
        Simulator(seed=9, settle_delay_s=0.001, retention=r) as small,
        Simulator(seed=9, settle_delay_s=0.001) as full,
    ):
        ledgers: list[dict[str, Any]] = []
        fills: list[dict[str, Any]] = []
        clients: list[str] = []
        for sim in (small, full):
            m = sim.add_market(question="Will V?", slug="will-v", fee_rate=D("0.072"))
            client, acct = await asyncio.to_thread(new_trader, sim, D(1000))
            me, yes = acct.address.lower(), m.token_ids[0]
            journal: dict[tuple[str, str], FillReport] = {}
            for i in range(12):
                args = OrderArgsV2(yes, 0.45, 10, "BUY")
                await asyncio.to_thread(client.create_and_post_order, args)
                sim.seed_order(TAKERS[0], yes, "SELL", D("0.40"), D(10), "FAK")
                await settled(sim)
                await book_maker_fills(client, me, journal)
                await churn(sim, m, 15, seed=i)
                if sim is small:
                    assert_bounded(sim, r)
            led = sim.ledger()
            check = compare(led, list(journal.values()), {yes: D(120)}, address=acct.address)
            assert check.ok, check.mismatches
            assert len(journal) == 12 and check.fees == 0  # a maker pays no fee
            ledgers.append(led)
            fills.append(wallet_fills(led, me))
            clients.append(me)
            balance = led["balances"][me]
            assert balance["collateral"] == 1000 - 12 * 10 * D("0.45")
            assert balance["tokens"] == {yes: D(120)}
        a, b = ledgers
        assert small.engine._seq > 10 * (r.orders + r.client)  # many times what it keeps
        assert a["evicted"]["orders"] > 500 and a["evicted"]["trades"] > 200
        assert b["evicted"]["orders"] == b["evicted"]["trades"] == b["evicted"]["data_rows"] == 0
        # The client's own fills were evicted too; its 12 order bodies outran `received`.
        assert a["evicted"]["wallets"][clients[0]]["maker_legs"] > 0
        assert len(small.received) == r.requests < small.received_total
        # The client's order ids are hashes of its (random) key: all but the row digest match.
        assert {k: v for k, v in a["totals"].items() if k != "digest"} == {
            k: v for k, v in b["totals"].items() if k != "digest"
        }
        assert fills[0] == fills[1] and fills[0]["bought"] == 120
        assert a["sets_minted"] == b["sets_minted"] != {}
        for w in [*MAKERS, *TAKERS, WHALE]:
            assert a["balances"].get(w) == b["balances"].get(w)
            assert wallet_fills(a, w) == wallet_fills(b, w)


def test_request_log_keeps_positions_since_start() -> None:
    log = RequestLog(keep=3)
    for i in range(5):
        log.append(RequestRecord("clob", "GET", f"/r{i}", "", 200, float(i)))
    assert len(log) == 5 and log.evicted == 2
    assert [r.path for r in log] == ["/r2", "/r3", "/r4"]
    assert [r.path for r in log[1:]] == ["/r2", "/r3", "/r4"]  # 0 and 1 are gone
    assert [r.path for r in log[3:]] == ["/r3", "/r4"]
    assert log[-1].path == "/r4" and log[2].path == "/r2"
    with pytest.raises(IndexError, match="not kept"):
        log[1]
    with pytest.raises(ValueError, match="orders must be at least 1"):
        Retention(orders=0)


async def test_demo_scenario_keeps_its_books_and_history_bounded() -> None:
    retention = Retention(orders=200, trades=100, data_rows=300, requests=50, client=10)
    async with Simulator(
        seed=3, scenario="demo", speed=100, settle_delay_s=0.001, retention=retention
    ) as sim:
        assert sim.scenario is not None and sim.scenario.speed == 100
        while sim.engine._seq < 2500:  # noqa: ASYNC110  # counts orders, whatever the pace
            await asyncio.sleep(0.05)
        # Uncapped, the ending markets' books held ~145 resting orders each by now (and ~400
        # at 8,000 orders): the makers post more often than they cancel there.
        assert MAX_RESTING == 40
        for b in sim.scenario.books:
            assert len(b.orders) <= 40 + 1
            for book in b.market.books.values():
                resting = sum(len(q) for q in (*book.bids.values(), *book.asks.values()))
                assert resting <= 40 + 2, b.market.slug
        # Orders are trimmed when their count passes the last trim's count plus the slack (50),
        # and orders live at that trim may end since: what stays bounded is the whole, the
        # books' resting orders (10 books, 42 each at most) plus 200 kept, 10 of clients, 50.
        books = sum(len(b.market.books) for b in sim.scenario.books)
        assert len(sim.engine.orders) <= books * (40 + 2) + 200 + 10 + 50
        assert len(sim.engine.trades) <= 100 + 25 + 20  # + the few not yet settled
        assert len(sim.data_rows) <= 300 + 75
        assert sim.history.evicted.orders > 1000
    with pytest.raises(ValueError, match="speed must be positive"):
        Simulator(scenario="demo", speed=0)


def test_speed_is_the_demos_knob_and_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator import main

    assert main(["--speed", "10"]) == 2
    assert "use it with --demo" in capsys.readouterr().err
    assert main(["--demo", "--speed", "0"]) == 2
    assert "--speed must be greater than 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="speed must be positive"):
        Simulator(scenario="demo", speed=-1)


async def test_a_websocket_client_that_stops_reading_is_dropped_not_buffered() -> None:
    async with Simulator(seed=5) as sim, aiohttp.ClientSession() as session:
        m = sim.add_market(question="Will W?", slug="will-w")
        tok = m.token_ids[0]
        # Subscribes, then never reads: aiohttp stops reading the socket once its queue is full.
        ws = await session.ws_connect(sim.market_ws_url, max_msg_size=0)
        await ws.send_json({"assets_ids": [tok], "type": "market"})
        while not sim.market_hub.conns:  # noqa: ASYNC110  # the server's side of it
            await asyncio.sleep(0.01)
        (conn,) = sim.market_hub.conns
        payload = b'{"event_type":"price_change","pad":"' + b"x" * 200 + b'"}'
        pushed = 0
        while not conn.closed and pushed < 2_000_000:
            sim.market_hub.to_assets(tok, payload)
            pushed += 1
            if pushed % 500 == 0:
                await asyncio.sleep(0)  # the writer sends what the socket takes
            assert len(conn.buf) <= MAX_BUFFERED
        assert conn.closed, f"{pushed} events pushed, the connection still open"
        assert conn.buf == [] and pushed > MAX_BUFFERED
        await ws.close()
