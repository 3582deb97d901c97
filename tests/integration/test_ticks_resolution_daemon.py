"""The daemon, live against the simulator, through tick size changes and a market resolution
(docs/venue-mechanics.md §4 and §7; the venue's behaviour and its sources are in
`simulator/lifecycle.py`: the 0.96 / 0.04 tick rule from the market channel docs, the refusal
text from https://docs.polymarket.com/resources/error-codes, `CANCELED_MARKET_RESOLVED` from
https://github.com/hbr-l/polypy/issues/11, Gamma's resolved row from NT's PR #4164 captures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import cli
import cli_views
from demo import funded_key, simulator_overrides
from executor import Executor
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.logging import Redactor
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from storage import Database
from tests.helpers import make_settings

D = Decimal
LEADER = "0x" + "5e" * 20
MAKER = "0x" + "6a" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=21, settle_delay_s=0.02) as s:
        yield s


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- names the condition that failed
    try:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110 -- polls daemon state no event announces
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


async def drive(settings: Any, script: Callable[[Context], Awaitable[None]]) -> None:
    """Run the daemon until `script(ctx)` (started once it is ready) ends; raise its error."""
    errors: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []
    daemon: Daemon

    async def wrapped(ctx: Context) -> None:
        try:
            await script(ctx)
        except BaseException as e:
            errors.append(e)
        finally:
            daemon.request_stop("test script done")

    def on_ready(ctx: Context) -> None:
        tasks.append(asyncio.get_running_loop().create_task(wrapped(ctx)))

    daemon = Daemon(settings, redactor=Redactor([]), duration_s=120, on_ready=on_ready)
    code = await daemon.run()
    if errors:
        raise errors[0]
    assert code == EXIT_OK
    assert tasks and tasks[0].done()


def settings_for(sim: Simulator, tmp_path: Path, **kw: Any) -> Any:
    return make_settings(
        tmp_path,
        **simulator_overrides(sim, funded_key(sim, D("1000"))),
        sniper_enabled=False,
        shutdown_timeout_s=3,
        **kw,
    )


async def journal(db_path: Path) -> list[dict[str, Any]]:
    async with Database(db_path) as db:
        return [dict(r) for r in await db.fetchall("SELECT * FROM orders ORDER BY rowid")]


def executor_of(ctx: Context) -> Executor:
    assert ctx.executor is not None
    return ctx.executor


def watched(ctx: Context, token: str) -> bool:
    books = ctx.books
    return books is not None and (b := books.get(token)) is not None and b.usable


# --- ticks -------------------------------------------------------------------------------
async def test_tick_changes_at_096_on_a_copied_token_never_leave_the_daemon_refusing(
    sim: Simulator, tmp_path: Path
) -> None:
    m = sim.add_market(question="Near certain?", slug="near-certain", tags=("crypto",))
    yes = m.token_ids[0]
    sim.seed_order(MAKER, yes, "SELL", D("0.95"), D("10"))
    high_ask = sim.seed_order(MAKER, yes, "SELL", D("0.96"), D("500"))
    rules = tmp_path / "copy.toml"
    rules.write_text(
        f'[[wallets]]\naddress = "{LEADER}"\nlabel = "leader"\nratio = "0.1"\n'
        'max_slippage = "0.02"\nbackfill_s = 30\nmax_trade_notional = "20"\n'
    )
    settings = settings_for(sim, tmp_path, copy_rules_path=rules, copy_poll_interval_s=0.2)

    async def script(ctx: Context) -> None:
        ex = executor_of(ctx)
        sim.trade_as(wallet=LEADER, token_id=yes, side="BUY", price=D("0.93"), size=D("100"))
        await until(lambda: ex.position(yes, strategy="copy").size == D("10"), "first copy filled")
        # Held now: the feed watches the token although no strategy asked for it.
        await until(lambda: watched(ctx, yes), "the held token's book on the feed")
        sim.cancel_seeded(high_ask)
        above = sim.seed_order(MAKER, yes, "SELL", D("0.98"), D("500"))  # price 0.98 > 0.96
        assert m.tick_size == D("0.001")
        await until(lambda: ex.rules.get(yes).tick_size == D("0.001"), "rules at 0.001")  # type: ignore[union-attr]
        sim.trade_as(wallet=LEADER, token_id=yes, side="BUY", price=D("0.975"), size=D("100"))
        # The copy's 9.95 pUSD at 0.995 take the 0.98 ask: 10.153061 shares (a BUY's price
        # improvement comes as extra shares, docs/venue-mechanics.md §6).
        second = D("10") + D("10.153061")
        await until(
            lambda: ex.position(yes, strategy="copy").size == second, "copy at 0.995 (0.001 grid)"
        )
        sim.cancel_seeded(above)
        sim.seed_order(MAKER, yes, "SELL", D("0.95"), D("500"))  # back under 0.96: 0.01
        assert m.tick_size == D("0.01")
        await until(lambda: ex.rules.get(yes).tick_size == D("0.01"), "rules back at 0.01")  # type: ignore[union-attr]
        sim.trade_as(wallet=LEADER, token_id=yes, side="BUY", price=D("0.935"), size=D("100"))
        await until(
            lambda: ex.position(yes, strategy="copy").size == second + 10,
            "copy at 0.95 (0.01 grid)",
        )

    await drive(settings, script)
    rows = await journal(settings.db_path)
    assert [(r["status"], D(r["price"])) for r in rows] == [
        ("FILLED", D("0.95")),
        ("FILLED", D("0.995")),
        ("FILLED", D("0.95")),  # 0.955 snapped down on the coarser grid, never refused
    ]


async def test_a_venue_tick_refusal_is_repriced_once_as_a_new_order(
    sim: Simulator, tmp_path: Path
) -> None:
    m = sim.add_market(question="Stale tick?", slug="stale-tick")
    yes = m.token_ids[0]
    settings = settings_for(sim, tmp_path)
    results: list[Any] = []

    async def script(ctx: Context) -> None:
        ex = executor_of(ctx)
        assert (await ex.rules.ensure(yes)) is not None
        ex.rules.set_tick_size(yes, D("0.001"))  # a stale finer tick: the venue is at 0.01
        req = OrderRequest(
            strategy="test", token_id=yes, side=Side.BUY, price=D("0.555"), size=D("10"),
            order_type=OrderType.GTC,
        )  # fmt: skip
        results.append(await ex.submit(req))
        results.append(req)
        # A re-priced order refused again is not re-priced a second time.
        low = OrderRequest(
            strategy="test", token_id=yes, side=Side.BUY, price=D("0.005"), size=D("10"),
            order_type=OrderType.GTC,
        )  # fmt: skip
        ex.rules.set_tick_size(yes, D("0.001"))
        results.append(await ex.submit(low))

    await drive(settings, script)
    result, req, low_result = results
    assert result.client_order_id == req.client_order_id + "-rp"
    assert result.status is OrderStatus.LIVE
    rows = {r["client_order_id"]: r for r in await journal(settings.db_path)}
    first = rows[req.client_order_id]
    assert first["status"] == "REJECTED"
    assert "breaks minimum tick size rule: 0.01" in first["detail"] + first["reason"]
    assert D(rows[result.client_order_id]["price"]) == D("0.55")  # BUY rounded down, not up
    received = [o for o in sim.received_orders() if o.order_id is not None]
    assert len({o.order_id for o in received}) == len(received)  # a new signature, never resent
    # A 0.005 BUY on 0.01 rounds down to 0: outside [0.01, 0.99], so it gives up, saying why.
    assert low_result.status is OrderStatus.REJECTED
    assert "not re-priced" in low_result.reason and "outside [0.01, 0.99]" in low_result.reason
    assert not any(c.endswith("-rp") for c in rows if c.startswith(low_result.client_order_id))


# --- resolution --------------------------------------------------------------------------
async def buy_and_rest(ex: Executor, token: str) -> tuple[Any, Any]:
    filled = await ex.submit(
        OrderRequest(
            strategy="test", token_id=token, side=Side.BUY, price=D("0.40"), size=D("10"),
            order_type=OrderType.GTC,
        )
    )  # fmt: skip
    resting = await ex.submit(
        OrderRequest(
            strategy="test", token_id=token, side=Side.BUY, price=D("0.30"), size=D("10"),
            order_type=OrderType.GTC,
        )
    )  # fmt: skip
    return filled, resting


async def resolution_run(
    sim: Simulator, tmp_path: Path, *, announce: bool, rest: bool, **kw: Any
) -> tuple[Any, dict[str, Any]]:
    m = sim.add_market(question="Resolves mid-run?", slug="resolves", tags=("stocks",))
    yes, no = m.token_ids
    sim.seed_order(MAKER, yes, "SELL", D("0.40"), D("10"))
    settings = settings_for(sim, tmp_path, **kw)
    seen: dict[str, Any] = {}

    async def script(ctx: Context) -> None:
        ex = executor_of(ctx)
        filled, resting = await buy_and_rest(ex, yes)
        assert filled.status is OrderStatus.FILLED
        assert resting.status is OrderStatus.LIVE
        if not rest:
            assert await ex.cancel(resting.client_order_id)
        await until(lambda: ex.position(yes, strategy="test").size == D("10"), "position of 10")
        await until(lambda: watched(ctx, yes), "the held token's book on the feed")
        sim.resolve_market(m.condition_id, yes, announce=announce)
        await until(lambda: ex.positions.payout(yes) == 1, "the daemon knows the payout")
        sent = len(sim.received_orders())
        after = await ex.submit(
            OrderRequest(
                strategy="test",
                token_id=no,
                side=Side.BUY,
                price=D("0.5"),
                size=D("5"),
                order_type=OrderType.GTC,
            )
        )
        seen.update(
            after=after,
            sent_before=sent,
            sent_after=len(sim.received_orders()),
            unrealized=ex.positions.unrealized(),
            redeemable=ex.positions.redeemable(),
            metrics=ctx.metrics.render().decode(),
            resting=resting,
        )

    await drive(settings, script)
    return settings, seen


async def test_a_market_resolving_mid_run_settles_pnl_and_sends_nothing_after(
    sim: Simulator, tmp_path: Path
) -> None:
    settings, seen = await resolution_run(sim, tmp_path, announce=True, rest=False)
    assert seen["after"].status is OrderStatus.REJECTED
    assert "market resolved" in seen["after"].reason
    assert seen["sent_after"] == seen["sent_before"]  # refused before anything left
    assert seen["unrealized"] == D("6.0")  # 10 x (1 - 0.40): settled at the payout
    assert seen["redeemable"] == D("10")
    assert "polyd_redeemable_pusd 10.0" in seen["metrics"]
    assert 'polyd_markets_resolved_total{source="market_feed"} 1.0' in seen["metrics"]
    summary = cli.db_summary(settings)
    assert D(summary.redeemable) == 10
    text = cli._render_status({"daemon": {"running": False}, "database": asdict(summary),
                               "url": "-", "db_path": "-"})  # fmt: skip
    assert "redeemable:    10 pUSD" in text
    assert summary.by_strategy["test"].redeemable == "10"  # the payout applies per strategy
    positions = cli_views.positions(settings)
    assert [(p["payout"], D(p["redeemable"])) for p in positions] == [("1", D(10))]
    assert "redeemable: 10 pUSD (not cash)" in cli_views.render_positions(positions)


async def test_resolution_is_found_by_polling_gamma_when_market_resolved_is_withheld(
    sim: Simulator, tmp_path: Path
) -> None:
    _, seen = await resolution_run(sim, tmp_path, announce=False, rest=False, resolution_poll_s=0.2)
    assert 'polyd_markets_resolved_total{source="gamma"} 1.0' in seen["metrics"]
    assert seen["redeemable"] == D("10")
    assert seen["after"].status is OrderStatus.REJECTED


async def test_a_canceled_market_resolved_order_event_leads_to_the_clob_winner(
    sim: Simulator, tmp_path: Path
) -> None:
    """market_resolved withheld and Gamma never polled in time: the user feed's
    CANCELED_MARKET_RESOLVED makes the daemon read the CLOB market's `tokens[].winner`."""
    settings, seen = await resolution_run(
        sim, tmp_path, announce=False, rest=True, resolution_poll_s=3600
    )
    assert 'polyd_markets_resolved_total{source="clob"} 1.0' in seen["metrics"]
    rows = {r["client_order_id"]: r for r in await journal(settings.db_path)}
    assert rows[seen["resting"].client_order_id]["status"] == "CANCELED"
