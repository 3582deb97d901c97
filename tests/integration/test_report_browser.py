"""The vet report opened in a real headless Chromium: figures drawn, screenshot taken, no console
errors (the browser is driven over the DevTools protocol: `tests.browser`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from backtest import report as rp
from backtest.cli import report_data
from simulator import Simulator
from tests.browser import chromium, open_tab
from tests.integration.test_vet_sim import LEADER, OTHER, fetch_and_simulate

D = Decimal
DAY = 86_400


@dataclass
class PageRun:
    """What the browser saw: errors of any kind, the screenshot, the number of plots drawn."""

    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    plots: int = 0


async def open_page(
    browser_ws: str, page: Path, *, plots: int, clip: dict[str, float] | None = None
) -> PageRun:
    """Load `page`, wait until `plots` plotly figures are drawn, screenshot the full page (or
    the `clip` rectangle {x, y, width, height, scale}: how docs/vet-report.png was made)."""
    run = PageRun()
    async with open_tab(browser_ws) as tab:
        await tab.navigate(page.as_uri())  # an absolute path (tmp_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run.plots = int(
                await tab.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
                or 0
            )
            if run.plots >= plots:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # let the last figure finish its layout
        run.screenshot = await tab.screenshot(clip)
        run.errors = tab.errors
    return run


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=3, settle_delay_s=0.02) as s:
        yield s


async def vet_report(sim: Simulator, out: Path) -> Path:
    now = int(time.time())
    m = sim.add_market(question="Will the report render?", slug="report-renders")
    yes = m.token_ids[0]
    for i in range(6):
        t = now - 2 * DAY + i * 7200
        sim.trade_as(LEADER, yes, "BUY", D("0.40") + D(i) / 100, D(50), at=t)
        sim.trade_as(OTHER, yes, "BUY", D("0.41") + D(i) / 100, D(5), at=t + 1)
        sim.trade_as(LEADER, yes, "SELL", D("0.45") + D(i) / 100, D(25), at=t + 3600)
    sim.resolve_market(m.condition_id, yes)
    r = await fetch_and_simulate(
        sim, {"sizing": "fixed_notional", "fixed_notional": "10"}, lag_s=2, end=now + 60
    )
    page, _ = rp.write_report(report_data(r), out, stem="vet")
    return page


async def test_report_renders_in_headless_chromium_without_console_errors(
    sim: Simulator, tmp_path: Path
) -> None:
    page = await vet_report(sim, tmp_path / "report")
    async with chromium(tmp_path) as browser:
        run = await open_page(browser, page, plots=4)
    assert run.errors == []
    assert run.plots >= 4  # equity, drawdown, per market, one price chart
    assert run.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(run.screenshot) > 20_000  # charts drawn, not a blank page
    (tmp_path / "report.png").write_bytes(run.screenshot)


async def test_browser_check_sees_a_broken_page(tmp_path: Path) -> None:
    """The check above can fail: a page with a script error and a console error is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel=icon href="data:,"></head><body>'
        "<script>console.error('drawn wrong'); notAFunction();</script></body></html>"
    )
    async with chromium(tmp_path) as browser:
        run = await open_page(browser, page, plots=0)
    assert any("drawn wrong" in e for e in run.errors), run.errors
    assert any("notAFunction" in e for e in run.errors), run.errors
