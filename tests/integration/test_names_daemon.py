"""Names and the account in a real daemon run against the simulator.

Discovery names the sniper's market; a holding no strategy watches (a manual buy in a market
that has since closed) is named by the resolver from Gamma (`closed=true`); the `fill_recorded`
log line carries `market=` and `outcome=` beside `token_id=`; the summary service writes the
account snapshot the views read and logs a `summary` line every `LOG_SUMMARY_INTERVAL_S`.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from demo import funded_key, simulator_overrides
from models import Fill
from observability.logging import MarketFields, Redactor, configure_logging
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from simulator.testing import add_fee_market
from storage import Database, Repositories
from storage.keys import ACCOUNT_SNAPSHOT_KEY
from storage.views import Views
from tests.helpers import NEAR_CLOSE_SNIPER_RULES, make_settings, until

D = Decimal
MAKER = "0x" + "8c" * 20
RULES = NEAR_CLOSE_SNIPER_RULES


async def test_a_daemon_names_its_markets_in_logs_and_views_and_logs_a_summary(
    tmp_path: Path,
) -> None:
    logs = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=logs)
    try:
        async with Simulator(seed=5, settle_delay_s=0.02) as sim:
            soon = datetime.now(UTC) + timedelta(minutes=10)
            m = add_fee_market(sim, question="Close soon?", slug="fee-soon", end_date=soon)
            tok = m.token_ids[0]
            sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
            sim.seed_order(MAKER, tok, "BUY", D("0.80"), D("50"))  # a bid: the book has a mid
            held = sim.add_market(
                question="Held by hand?",
                slug="by-hand",
                tags=("politics",),
                end_date=datetime.now(UTC) + timedelta(days=3),
            )
            sim.resolve_market(held.condition_id, held.token_ids[0], announce=False)
            rules = tmp_path / "sniper.toml"
            rules.write_text(RULES)
            settings = make_settings(
                tmp_path,
                **simulator_overrides(sim, funded_key(sim, D(1000))),
                copy_enabled=False,
                sniper_rules_path=rules,
                log_summary_interval_s=1.0,
                shutdown_timeout_s=3,
            )
            async with Database(settings.db_path) as db:  # bought by hand before the daemon ran
                await Repositories.over(db).fills.record(
                    Fill(
                        trade_id="manual-1",
                        venue_order_id="0xmanual",
                        token_id=held.token_ids[0],
                        side="BUY",
                        price=D("0.20"),
                        size=D("3"),
                    )
                )

            def script(ctx: Context) -> None:
                async def later() -> None:
                    store = ctx.books
                    assert store is not None
                    await until(lambda: store.usable_book(tok) is not None, 5.0)
                    sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))

                ctx.services.append(("test:script", later))

            daemon = Daemon(settings, redactor=Redactor([]), duration_s=4.0, on_ready=script)
            assert await daemon.run() == EXIT_OK
    finally:
        configure_logging(level="INFO", stream=sys.stderr)
    events = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]

    fills = [e for e in events if e["event"] == "fill_recorded"]
    assert fills, [e["event"] for e in events]
    assert all(
        (f["token_id"], f["market"], f["outcome"]) == (tok, "Close soon?", "Yes") for f in fills
    ), fills
    summaries = [e for e in events if e["event"] == "summary"]
    assert len(summaries) >= 2, [e["event"] for e in events]
    assert set(summaries[0]) >= {
        "state", "pnl_today", "realized", "exposure", "open_orders", "fills", "balance"
    }  # fmt: skip
    assert summaries[-1]["state"] == "ACTIVE"
    assert sum(s["fills"] for s in summaries) <= len(fills)  # "since the last line"
    assert summaries[-1]["balance"] is not None  # live mode reads the wallet's pUSD

    with Views.open(settings.db_path) as views:
        names = views.names()
        snap = views.snapshot()
        positions = {p.token_id: p for p in views.positions_view()}
    assert (names[tok].question, names[tok].outcome, names[tok].slug) == (
        "Close soon?", "Yes", "fee-soon"
    )  # fmt: skip
    assert names[m.token_ids[1]].outcome == "No"  # discovery names both outcomes
    by_hand = names[held.token_ids[0]]  # the resolver asked Gamma for the closed market
    assert (by_hand.question, by_hand.slug) == ("Held by hand?", "by-hand")
    assert snap is not None and snap.state == "ACTIVE"
    assert snap.pnl_today is not None and snap.daily_loss_limit == settings.risk_daily_loss_limit
    assert tok in snap.marks and snap.feeds.get("feed:market") is True
    assert positions[tok].market == "Close soon?" and positions[tok].mark is not None
    async with Database(settings.db_path) as db:
        raw: Any = await Repositories.over(db).state.get(ACCOUNT_SNAPSHOT_KEY)
    assert json.loads(raw)["marks"][tok] == str(snap.marks[tok])


def test_market_fields_name_a_token_and_leave_others_alone() -> None:
    fields = MarketFields(lambda t: {"market": "Q?", "outcome": "Yes"} if t == "1" else {})
    assert fields(None, "info", {"event": "x", "token_id": "1"}) == {
        "event": "x", "token_id": "1", "market": "Q?", "outcome": "Yes"
    }  # fmt: skip
    assert fields(None, "info", {"event": "x", "token_id": "2"}) == {"event": "x", "token_id": "2"}
    kept = {"event": "x", "token_id": "1", "market": "0xcond"}
    assert fields(None, "info", dict(kept)) == kept  # an event naming its own `market` wins
