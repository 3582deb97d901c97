"""The sniper over the real feed, Gamma discovery and (last test) the real executor, against the
simulator on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config import Settings
from demo import funded_key, simulator_overrides
from models import OrderRequest, OrderResult, Position, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from orchestrator import EXIT_CONFIG, EXIT_OK, Context, Daemon
from resilience.backoff import Backoff
from simulator import SimMarket, Simulator
from storage import Database
from strategies.sniper import Sniper, SniperRule
from tests.helpers import NEAR_CLOSE_SNIPER_RULES, filled_in_full, make_settings, until
from venue.gamma import Discovery, GammaClient
from venue.market_feed import ClobBookFetcher, MarketFeed
from venue.order_book import BookStore

D = Decimal
MAKER = "0x" + "8c" * 20


class RecordingExecutor:
    """OrderSink + PositionSource + TickSizeSink; records what the sniper saw when it sent."""

    def __init__(self, store: BookStore) -> None:
        self.store = store
        self.requests: list[OrderRequest] = []
        self.snapshots_at_submit: list[int] = []
        self.ticks: dict[str, Decimal] = {}

    async def submit(self, request: OrderRequest) -> OrderResult:
        self.requests.append(request)
        book = self.store.get(request.token_id)
        self.snapshots_at_submit.append(book.snapshots if book is not None else -1)
        return filled_in_full(request)

    def position(self, token_id: str, *, strategy: str) -> Position:
        return Position(token_id=token_id, strategy=strategy)

    def set_tick_size(self, token_id: str, tick_size: Decimal) -> None:
        self.ticks[token_id] = tick_size


@dataclass
class Rig:
    sim: Simulator
    market: SimMarket
    store: BookStore
    feed: MarketFeed
    sniper: Sniper
    ex: RecordingExecutor
    discovery: Discovery

    @property
    def yes(self) -> str:
        return self.market.token_ids[0]


def rule(**kw: Any) -> SniperRule:
    base: dict[str, Any] = {
        "name": "snipe",
        "select": {"ends_within_minutes": 30, "tags": ["crypto"]},
        "outcome": "Yes",
        "min_price": "0.90",
        "max_price": "0.95",
        "min_size": "10",
        "max_notional": "19",
        "cooldown_s": 0,
        "max_entries": 5,
        "ends_within_minutes": 20,
    }
    base.update(kw)
    return SniperRule.model_validate(base)


@contextlib.asynccontextmanager
async def rig(r: SniperRule | None = None, stale_after_s: float = 2.0) -> AsyncIterator[Rig]:
    async with Simulator(seed=11, settle_delay_s=0.02) as sim, aiohttp.ClientSession() as http:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = sim.add_market(question="Ends soon?", slug="ends-soon", tags=("crypto",), end_date=soon)
        sim.add_market(question="Ends late?", slug="ends-late", tags=("crypto",))
        sim.add_market(question="Other topic?", slug="other", tags=("sports",), end_date=soon)
        sim.seed_order(MAKER, m.token_ids[0], "BUY", D("0.80"), D("50"))
        sim.seed_order(MAKER, m.token_ids[0], "SELL", D("0.97"), D("50"))
        store = BookStore(stale_after_s=stale_after_s)
        ex = RecordingExecutor(store)
        feed = MarketFeed(
            url=sim.market_ws_url,
            store=store,
            metrics=Metrics(),
            tick_sink=ex,
            fetcher=ClobBookFetcher(session=http, base_url=sim.clob_url),
            stale_after_s=stale_after_s,
            ping_interval_s=min(1.0, stale_after_s / 2),
            backoff=lambda: Backoff(0.2, 2.0),
        )
        sniper = Sniper(rules=[r or rule()], books=store, orders=ex)
        sniper.on_watch = lambda toks: feed.watch("sniper", toks)
        gamma = GammaClient(base_url=sim.gamma_url, session=http)
        discovery = Discovery(
            gamma=gamma,
            queries=sniper.market_queries(),
            on_update=sniper.set_markets,
            interval_s=60,
        )
        tasks = [
            asyncio.create_task(feed.run(), name="test:feed"),
            asyncio.create_task(sniper.run(), name="test:sniper"),
            asyncio.create_task(discovery.run(), name="test:discovery"),
        ]
        try:
            rg = Rig(sim, m, store, feed, sniper, ex, discovery)
            await until(lambda: store.usable_book(rg.yes) is not None)
            yield rg
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t


async def quiet(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


async def test_discovery_selects_only_tagged_markets_ending_in_window() -> None:
    async with rig() as rg:
        assert rg.sniper.watched_tokens() == {rg.yes}
        assert rg.feed.watched() == {rg.yes}


async def test_sniper_fires_exactly_once_per_opportunity_over_the_wire() -> None:
    async with rig() as rg:
        sim, tok = rg.sim, rg.yes
        ask = sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
        await until(lambda: len(rg.ex.requests) == 1)
        sim.seed_order(MAKER, tok, "SELL", D("0.94"), D("30"))  # same opportunity, more depth
        await quiet()
        assert len(rg.ex.requests) == 1
        sim.cancel_seeded(ask)
        sim.seed_order(MAKER, tok, "BUY", D("0.94"), D("30"))  # takes the 0.94 ask: gone
        await until(lambda: rg.store.best_ask(tok) == (D("0.97"), D("50")))
        sim.seed_order(MAKER, tok, "SELL", D("0.92"), D("100"))  # a new opportunity
        await until(lambda: len(rg.ex.requests) == 2)
        await quiet()
    req = rg.ex.requests[0]
    assert (req.side, req.price, req.size) == (Side.BUY, D("0.95"), D("20"))
    assert len(rg.ex.requests) == 2


async def test_no_trigger_during_reconnect_and_resume_after_fresh_snapshot() -> None:
    async with rig() as rg:
        sim, tok = rg.sim, rg.yes
        snaps = rg.store.get(tok).snapshots  # type: ignore[union-attr]
        await sim.drop_websockets("market")
        await until(lambda: rg.store.usable_book(tok) is None, 1.0)
        # The opportunity appears while we are disconnected; our stale copy must not trade.
        sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
        stale = rg.store.get(tok)
        assert stale is not None
        stale.asks[D("0.93")] = D("100")  # even if the stale copy showed it
        rg.store.notify([tok])
        await quiet(0.05)
        assert rg.ex.requests == []
        await until(lambda: len(rg.ex.requests) == 1, 10.0)
    assert rg.ex.snapshots_at_submit == [snaps + 1]


async def test_silent_stall_is_detected_and_sniper_resumes() -> None:
    async with rig(stale_after_s=1.0) as rg:
        sim, tok = rg.sim, rg.yes
        stop = asyncio.Event()

        async def churn() -> None:
            while not stop.is_set():
                oid = sim.seed_order(MAKER, tok, "BUY", D("0.70"), D("1"))
                await asyncio.sleep(0.05)
                sim.cancel_seeded(oid)

        mover = asyncio.create_task(churn())
        try:
            await until(lambda: rg.feed.shards[0].data_frames > 5)
            sim.stall_websockets("market", seconds=30)
            sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))  # held back by the stall
            # Detected while the venue is still silent (the stall lasts 30 s); how soon is a
            # figure of `python -m bench feed` (stall_detected_*), not a test bound.
            await until(lambda: rg.store.usable_book(tok) is None, 15.0)
            assert rg.ex.requests == []
            await until(lambda: len(rg.ex.requests) == 1, 3.0)
        finally:
            stop.set()
            await mover


async def test_tick_size_change_is_honoured_by_next_order() -> None:
    r = rule(min_price="0.940", max_price="0.955")
    async with rig(r) as rg:
        sim, tok = rg.sim, rg.yes
        a = sim.seed_order(MAKER, tok, "SELL", D("0.95"), D("100"))
        await until(lambda: len(rg.ex.requests) == 1)
        assert rg.ex.requests[0].price == D("0.95")  # 0.955 is off the 0.01 grid
        sim.cancel_seeded(a)
        await until(lambda: rg.store.best_ask(tok) == (D("0.97"), D("50")))
        sim.set_tick_size(tok, D("0.001"))
        await until(lambda: rg.ex.ticks.get(tok) == D("0.001"))
        sim.seed_order(MAKER, tok, "SELL", D("0.951"), D("100"))
        await until(lambda: len(rg.ex.requests) == 2)
    assert rg.ex.requests[1].price == D("0.955")


# --- the daemon, live against the simulator, through the real executor ----------------------


def write_rules(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "sniper.toml"
    p.write_text(body)
    return p


GOOD_RULES = NEAR_CLOSE_SNIPER_RULES


def daemon_settings(sim: Simulator, tmp_path: Path, rules: Path) -> Settings:
    return make_settings(
        tmp_path,
        **simulator_overrides(sim, funded_key(sim, D("1000"))),
        copy_enabled=False,
        sniper_rules_path=rules,
        feed_ping_interval_s=1.0,
        shutdown_timeout_s=3,
    )


async def sniper_orders(db_path: Path) -> list[dict[str, Any]]:
    """The sniper's journal rows."""
    async with Database(db_path) as db:
        rows = await db.fetchall("SELECT * FROM orders WHERE strategy='sniper'")
    return [dict(r) for r in rows]


async def test_daemon_sniper_buys_through_executor_once(tmp_path: Path) -> None:
    async with Simulator(seed=12, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = sim.add_market(
            question="Close soon?", slug="close-soon", tags=("crypto",), end_date=soon
        )
        tok = m.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
        settings = daemon_settings(sim, tmp_path, write_rules(tmp_path, GOOD_RULES))

        def dip_when_ready(ctx: Context) -> None:
            async def later() -> None:
                store = ctx.books
                assert store is not None  # on_ready runs once market data is built
                await until(lambda: store.usable_book(tok) is not None, 5.0)
                sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))

            ctx.services.append(("test:dip", later))

        daemon = Daemon(settings, redactor=Redactor([]), duration_s=3.0, on_ready=dip_when_ready)
        assert await daemon.run() == EXIT_OK
    rows = await sniper_orders(settings.db_path)
    assert len(rows) == 1, rows
    assert (rows[0]["side"], D(rows[0]["price"])) == ("BUY", D("0.95"))
    assert rows[0]["status"] == "FILLED"


async def test_daemon_take_profit_rests_a_gtc_sell_for_the_filled_size(tmp_path: Path) -> None:
    # The BUY's ack (POST /order) arrives before its fill (user websocket); the take-profit
    # must wait for the position, or risk refuses it ("SELL exceeds the position").
    async with Simulator(seed=13, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = sim.add_market(question="Close soon?", slug="tp-soon", tags=("crypto",), end_date=soon)
        tok = m.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
        rules = write_rules(
            tmp_path, GOOD_RULES.replace("[rules.select]", 'take_profit = "0.02"\n[rules.select]')
        )
        settings = daemon_settings(sim, tmp_path, rules)
        done = asyncio.Event()

        def dip_when_ready(ctx: Context) -> None:
            async def later() -> None:
                store = ctx.books
                assert store is not None  # on_ready runs once market data is built
                await until(lambda: store.usable_book(tok) is not None, 5.0)
                sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
                await until(lambda: any(o["side"] == "SELL" for o in ours()), 5.0)
                done.set()

            ctx.services.append(("test:dip", later))

        def ours() -> list[dict[str, Any]]:
            return [o for o in sim.ledger()["orders"] if not o["seeded"]]

        daemon = Daemon(settings, redactor=Redactor([]), duration_s=4.0, on_ready=dip_when_ready)
        assert await daemon.run() == EXIT_OK
        assert done.is_set(), ours()
        venue = {o["side"]: o for o in ours()}
    buy, sell = venue["BUY"], venue["SELL"]
    assert buy["size_matched"] > 0
    assert (sell["order_type"], sell["status"]) == ("GTC", "LIVE")
    assert sell["original_size"] == buy["size_matched"].quantize(D("0.01"), rounding="ROUND_FLOOR")
    assert sell["price"] == D("0.95")  # 0.93 x 1.02 = 0.9486, up to the tick
    rows = await sniper_orders(settings.db_path)
    assert sorted((r["side"], r["status"]) for r in rows) == [("BUY", "FILLED"), ("SELL", "LIVE")]


async def test_daemon_with_bad_sniper_rules_exits_2(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, GOOD_RULES.replace('max_price = "0.95"', 'max_price = "1.5"'))
    settings = make_settings(
        tmp_path,
        copy_enabled=False,
        sniper_rules_path=rules,
        gamma_api_url="http://127.0.0.1:9",
        clob_host="http://127.0.0.1:9",
    )
    daemon = Daemon(settings, redactor=Redactor([]), duration_s=1.0)
    assert await daemon.run() == EXIT_CONFIG


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNIPER_RULES_PATH", raising=False)


async def test_demo_scenario_markets_are_sniped_by_demo_rules(tmp_path: Path) -> None:
    from demo import write_sniper_rules as write_demo_rules

    async with Simulator(seed=7, scenario="demo", settle_delay_s=0.02) as sim:
        overrides = write_demo_rules(sim, tmp_path)
        settings = daemon_settings(sim, tmp_path, overrides["sniper_rules_path"])
        daemon = Daemon(settings, redactor=Redactor([]), duration_s=6.0)
        assert await daemon.run() == EXIT_OK
    rows = await sniper_orders(settings.db_path)
    ending = (
        {t for m in sim.scenario.ending_markets for t in m.token_ids} if sim.scenario else set()
    )
    assert rows, "the demo scenario produced no sniper order"
    assert {r["token_id"] for r in rows} <= ending
