"""Each strategy owns what it bought: the sniper and the copy trader on the same token, live
against the simulator. A followed wallet's exit makes the copy trader sell its own holding and
never the sniper's (the copy trader's mirror exit sells "the same fraction of OUR holding":
ours is the copy trader's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from eth_account import Account

from demo import funded_key, simulator_overrides
from models import Side
from observability.logging import Redactor
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from storage import Database
from storage.reports import Reports
from tests.helpers import NEAR_CLOSE_SNIPER_RULES, make_settings, until

D = Decimal
MAKER = "0x" + "8d" * 20
LEADER = "0x" + "5f" * 20

SNIPER_RULES = NEAR_CLOSE_SNIPER_RULES

COPY_RULES = f"""
[[wallets]]
address = "{LEADER}"
label = "leader"
ratio = "0.1"
max_slippage = "0.02"
max_trade_notional = "20"
"""


async def test_a_leader_exit_sells_the_copy_traders_holding_and_never_the_snipers(
    tmp_path: Path,
) -> None:
    seen: dict[str, Decimal] = {}
    async with Simulator(seed=31, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = sim.add_market(
            question="Close soon?", slug="close-soon", end_date=soon, tags=("crypto",)
        )
        tok = m.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))  # above the sniper's band
        sim.seed_order(MAKER, tok, "BUY", D("0.92"), D("200"))  # where exits sell
        (tmp_path / "sniper.toml").write_text(SNIPER_RULES)
        (tmp_path / "copy.toml").write_text(COPY_RULES)
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, key := funded_key(sim, D("1000"))),
            sniper_rules_path=tmp_path / "sniper.toml",
            copy_rules_path=tmp_path / "copy.toml",
            copy_poll_interval_s=0.2,
            feed_ping_interval_s=1.0,
            shutdown_timeout_s=3,
        )
        errors: list[BaseException] = []
        daemon: Daemon

        def on_ready(ctx: Context) -> None:
            async def script() -> None:
                try:
                    await scenario(ctx)
                except BaseException as e:
                    errors.append(e)
                    raise
                finally:
                    daemon.request_stop("test script done")

            ctx.services.append(("test:script", script))

        async def scenario(ctx: Context) -> None:
            ex, store = ctx.executor, ctx.books
            assert ex is not None and store is not None

            def held(strategy: str) -> Decimal:
                return ex.position(tok, strategy=strategy).size

            def skipped(reason: str) -> float:
                value = ctx.metrics.registry.get_sample_value(
                    "polyd_copy_skipped_total", {"reason": reason}
                )
                return value or 0.0

            # 1. The sniper buys the dip.
            await until(lambda: store.usable_book(tok) is not None, 10.0)
            dip = sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
            await until(lambda: held("sniper") > 0, 10.0)
            sim.cancel_seeded(dip)
            sniper = seen["sniper"] = held("sniper")

            # 2. The demo's case: the leader buys (the copy cannot follow at 0.80: no ask within
            # its slippage) and then sells all of it. The copy trader holds none of the token:
            # it sells nothing, although the account holds the sniper's shares.
            sim.trade_as(wallet=LEADER, token_id=tok, side="BUY", price=D("0.80"), size=D("100"))
            sim.trade_as(wallet=LEADER, token_id=tok, side="SELL", price=D("0.93"), size=D("100"))
            await until(lambda: skipped("no_position") >= 1, 10.0)
            assert held("copy") == 0 and held("sniper") == sniper

            # 3. The leader buys again, the copy trader follows, and the leader exits in full:
            # the copy trader sells all of its own holding, and only that.
            sim.trade_as(wallet=LEADER, token_id=tok, side="BUY", price=D("0.96"), size=D("100"))
            await until(lambda: held("copy") > 0, 10.0)
            seen["copy"] = held("copy")
            assert ex.positions.holding(tok) == sniper + seen["copy"]
            sim.trade_as(wallet=LEADER, token_id=tok, side="SELL", price=D("0.93"), size=D("100"))
            # Sizes go on a 0.01 lot: what is left under one lot is dust no order can sell.
            await until(lambda: held("copy") < D("0.01"), 10.0)
            seen["dust"] = held("copy")
            assert held("sniper") == sniper
            assert ex.positions.holding(tok) == sniper + seen["dust"]

            def gauge(name: str, strategy: str) -> float | None:
                return ctx.metrics.registry.get_sample_value(name, {"strategy": strategy})

            # The copy trader's PnL is its own; the sniper realized nothing.
            await until(lambda: gauge("polyd_strategy_pnl_realized_usd", "copy"), 5.0)
            assert gauge("polyd_strategy_pnl_realized_usd", "sniper") == 0
            assert (gauge("polyd_strategy_exposure_usd", "sniper") or 0) > 0

        daemon = Daemon(settings, redactor=Redactor([]), duration_s=60, on_ready=on_ready)
        code = await daemon.run()
        if errors:
            raise errors[0]
        assert code == EXIT_OK
        ledger = sim.ledger()
    async with Database(settings.db_path) as db:
        orders = [dict(r) for r in await db.fetchall("SELECT * FROM orders ORDER BY rowid")]
    sells = [o for o in orders if o["side"] == Side.SELL.value]
    assert sells and {o["strategy"] for o in sells} == {"copy"}
    assert sum(D(o["size_matched"]) for o in sells) == seen["copy"] - seen["dust"]
    with Reports.open(settings.db_path) as reports:
        rows = {(p.strategy, p.token_id): p for p in reports.positions()}
    assert rows[("sniper", tok)].size == seen["sniper"]
    assert rows[("copy", tok)].size == seen["dust"] and rows[("copy", tok)].realized_pnl != 0
    # The venue holds what the two strategies hold between them, and no more.
    ours = ledger["balances"][Account.from_key(key).address.lower()]
    assert D(ours["tokens"][tok]) == seen["sniper"] + seen["dust"]
