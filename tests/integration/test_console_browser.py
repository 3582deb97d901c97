"""The web console in a real headless Chromium against a real daemon trading on the simulator.

The page is opened and unlocked with the control token; the sniper's fill happens after the page
is live and must appear in its fills table without a reload (server-sent events), then its
position's mark from the daemon's next account snapshot; the operator
halts from the page (with its confirmation); `/health` and the audit log then say HALTED, with
the console as the actor. No script error, console error or Content-Security-Policy violation
may happen on the way. The screenshot is kept in the test's folder; with
`POLYD_CONSOLE_SCREENSHOT=<path>` it is also written there (how docs/console.png was made).
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from demo import funded_key, simulator_overrides
from models import Fill
from observability.logging import Redactor
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from simulator.testing import add_fee_market
from storage import Database, Repositories
from tests.browser import chromium, open_tab
from tests.helpers import make_settings, until
from tests.integration.test_names_daemon import MAKER, RULES

D = Decimal
TOKEN = "console-browser-token-0123456789abcdef"
# The history seeded before the daemon starts: (trade id, side, price, days ago).
SEEDED = (("h1", "BUY", "0.40", 3), ("h2", "SELL", "0.55", 1))


async def seed_history(db_path: Path, token_id: str) -> None:
    """A manual round trip on earlier days, so the 7-day chart has a bar to draw."""
    now = datetime.now(UTC)
    async with Database(db_path) as db:
        fills = Repositories.over(db).fills
        for trade, side, price, days in SEEDED:
            await fills.record(
                Fill(
                    trade_id=trade,
                    venue_order_id=f"0x{trade}",
                    token_id=token_id,
                    side=side,
                    price=D(price),
                    size=D("20"),
                    fee=D("0.05"),
                    ts=now - timedelta(days=days),
                )
            )


async def drive_the_page(base: str, tmp: Path, fill: Any) -> dict[str, Any]:
    """Unlock the page, see the fill arrive live, halt from the page; what it saw."""
    seen: dict[str, Any] = {}
    async with chromium(tmp) as browser, open_tab(browser, width=1280, height=1000) as tab:
        await tab.navigate(f"{base}/ui")
        await tab.wait_for("document.getElementById('live').textContent === 'locked'")
        await tab.evaluate(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        await tab.wait_for("document.getElementById('live').textContent === 'live'")
        await tab.wait_for("document.querySelectorAll('.uplot canvas').length >= 2")
        seen["before"] = await tab.evaluate(
            "document.querySelectorAll('#trades tr[data-trade-id]').length"
        )
        await fill()  # the sniper's market gets an ask it buys: a fill while the page is live
        # The seeded history is the same market's other outcome, so the new row is the one whose
        # trade id is not a seeded one (both name "Close soon?").
        seen["fill_row"] = await tab.wait_for(
            "[...document.querySelectorAll('#trades tr[data-trade-id]')]"
            f".filter((r) => !{json.dumps([t[0] for t in SEEDED])}.includes(r.dataset.tradeId))"
            ".map((r) => r.textContent).find((t) => t.includes('Close soon?')) || ''"
        )
        seen["position_row"] = await tab.wait_for(
            "[...document.querySelectorAll('#positions tbody tr')]"
            ".map((r) => r.textContent).find((t) => t.includes('Close soon?')) || ''"
        )
        # The daemon's next account snapshot (every 5 s) marks the new position.
        seen["marked_row"] = await tab.wait_for(
            "[...document.querySelectorAll('#positions tbody tr')].map((r) => r.cells[6]"
            " && r.textContent.includes('Close soon?') ? r.cells[6].textContent : '')"
            ".find((t) => t && t !== '—') || ''",
            timeout_s=15,
        )
        await tab.evaluate("document.querySelector('button[data-action=halt]').click(); true")
        await tab.wait_for("document.getElementById('confirm').open")
        seen["confirm"] = await tab.evaluate("document.getElementById('confirm-text').textContent")
        await tab.evaluate("document.getElementById('confirm-yes').click(); true")
        await tab.wait_for("document.getElementById('state').textContent === 'HALTED'")
        seen["result"] = await tab.evaluate("document.getElementById('control-result').textContent")
        seen["stored_token"] = await tab.evaluate(
            "sessionStorage.getItem('polyd.console.token') !== null && document.cookie === ''"
        )
        seen["body_has_token"] = await tab.evaluate(
            f"document.documentElement.outerHTML.includes({json.dumps(TOKEN)})"
        )
        seen["screenshot"] = await tab.screenshot()
        seen["errors"] = list(tab.errors)
    return seen


async def test_the_console_shows_a_fill_live_and_halts_the_daemon(tmp_path: Path) -> None:
    result: dict[str, Any] = {}
    async with Simulator(seed=5, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = add_fee_market(sim, question="Close soon?", slug="fee-soon", end_date=soon)
        tok = m.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
        sim.seed_order(MAKER, tok, "BUY", D("0.80"), D("50"))  # a bid: the book has a mid
        rules = tmp_path / "sniper.toml"
        rules.write_text(RULES)
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, funded_key(sim, D(1000))),
            copy_enabled=False,
            sniper_rules_path=rules,
            control_token=TOKEN,
            shutdown_timeout_s=3,
        )
        await seed_history(settings.db_path, m.token_ids[1])
        daemon: Daemon

        def script(ctx: Context) -> None:
            assert ctx.sidecar is not None
            base = f"http://127.0.0.1:{ctx.sidecar.bound_port}"

            async def fill() -> None:
                store = ctx.books
                assert store is not None
                await until(lambda: store.usable_book(tok) is not None, 10.0)
                sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))

            async def run() -> None:
                try:
                    result.update(await drive_the_page(base, tmp_path, fill))
                    async with aiohttp.ClientSession() as s, s.get(f"{base}/health") as r:
                        result["health"] = (r.status, await r.json())
                except BaseException as e:  # handed to the test, which fails with it
                    result["failed"] = e
                finally:
                    daemon.request_stop("test done")

            ctx.services.append(("test:browser", run))

        daemon = Daemon(settings, redactor=Redactor([]), on_ready=script)
        assert await daemon.run() == EXIT_OK
    if "failed" in result:
        raise result["failed"]

    shot: bytes = result["screenshot"]
    (tmp_path / "console.png").write_bytes(shot)
    if target := os.environ.get("POLYD_CONSOLE_SCREENSHOT"):
        Path(target).write_bytes(shot)  # noqa: ASYNC240 - once, after the daemon stopped
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 30_000, len(shot)
    assert result["errors"] == []  # no script error, no CSP violation, no failed load
    assert result["before"] == 2  # the seeded history; the sniper's fill came after
    assert "Yes" in result["fill_row"] and "BUY" in result["fill_row"]
    assert "near-close" in result["fill_row"] or "sniper" in result["fill_row"]
    assert 0 < float(result["marked_row"]) < 1  # a mark (the book's mid), not a dash
    assert result["confirm"] == "Halt trading (no new orders)?"
    assert "HALTED" in result["result"]
    assert result["stored_token"] is True and result["body_has_token"] is False
    status, health = result["health"]
    assert status == 503 and health["status"] == "degraded"
    assert health["checks"]["executor"]["detail"]["trading_state"] == "HALTED"
    with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT detail FROM audit_log WHERE event = 'trading_state' ORDER BY id"
        ).fetchall()
    moves = [json.loads(r[0]) for r in rows]
    assert moves and moves[-1]["to"] == "HALTED" and moves[-1]["actor"] == "console", moves
