"""The vet report opened in a real headless Chromium: figures drawn, screenshot taken, no console
errors. The browser is driven over the DevTools protocol (a websocket), which reports every
uncaught exception, `console.error` and failed resource load as an event.

Protocol reference: https://chromedevtools.github.io/devtools-protocol/ (Target.attachToTarget
with `flatten`, Runtime.exceptionThrown, Runtime.consoleAPICalled, Log.entryAdded,
Page.captureScreenshot).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from backtest import report as rp
from backtest.cli import report_data
from simulator import Simulator
from tests.helpers import require_tool
from tests.integration.test_vet_sim import LEADER, OTHER, fetch_and_simulate

D = Decimal
DAY = 86_400


@dataclass
class PageRun:
    """What the browser saw: errors of any kind, the screenshot, the number of plots drawn."""

    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    plots: int = 0


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[str]:
    """Start headless Chromium with DevTools on a free port; yield the browser websocket URL."""
    exe = require_tool("chromium", "chromium")
    proc = subprocess.Popen(
        [
            exe,
            "--headless",
            "--no-sandbox",  # tests run as root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            line = (await asyncio.to_thread(proc.stderr.readline)).decode(errors="replace")
            if not line and proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else ""
        assert url, "chromium did not open its DevTools port"
        # Keep draining stderr (dbus noise) so the browser never blocks on a full pipe.
        drain = asyncio.create_task(asyncio.to_thread(proc.stderr.read))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    await drain


async def open_page(
    browser_ws: str, page: Path, *, plots: int, clip: dict[str, float] | None = None
) -> PageRun:
    """Load `page`, wait until `plots` plotly figures are drawn, screenshot the full page (or
    the `clip` rectangle {x, y, width, height, scale}: how docs/vet-report.png was made)."""
    run = PageRun()
    ids = itertools.count(1)
    async with websockets.connect(browser_ws, max_size=None) as ws:
        pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

        async def reader() -> None:
            async for raw in ws:
                msg = orjson.loads(raw)
                if "id" in msg and msg["id"] in pending:
                    pending.pop(msg["id"]).set_result(msg)
                    continue
                method, params = msg.get("method"), msg.get("params", {})
                if method == "Runtime.exceptionThrown":
                    d = params["exceptionDetails"]
                    text = d.get("exception", {}).get("description") or d.get("text")
                    run.errors.append(f"exception: {text}")
                elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                    args = [a.get("value", a.get("description")) for a in params["args"]]
                    run.errors.append(f"console.{params['type']}: {args}")
                elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                    run.errors.append(f"log: {params['entry']['text']}")

        async def call(method: str, session: str | None = None, **params: Any) -> Any:
            i = next(ids)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            pending[i] = fut
            msg: dict[str, Any] = {"id": i, "method": method, "params": params}
            if session:
                msg["sessionId"] = session
            await ws.send(orjson.dumps(msg).decode())
            answer = await asyncio.wait_for(fut, 30)
            assert "error" not in answer, answer
            return answer.get("result", {})

        task = asyncio.create_task(reader())
        try:
            target = (await call("Target.createTarget", url="about:blank"))["targetId"]
            sid = (await call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await call(domain, sid)
            await call(
                "Emulation.setDeviceMetricsOverride",
                sid,
                width=1200,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await call("Page.navigate", sid, url=page.as_uri())  # an absolute path (tmp_path)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = await call(
                    "Runtime.evaluate",
                    sid,
                    expression="document.querySelectorAll('.js-plotly-plot .main-svg').length",
                    returnByValue=True,
                )
                run.plots = int(got["result"].get("value") or 0)
                if run.plots >= plots:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # let the last figure finish its layout
            shot = await call(
                "Page.captureScreenshot",
                sid,
                format="png",
                captureBeyondViewport=True,
                **({"clip": clip} if clip else {}),
            )
            run.screenshot = base64.b64decode(shot["data"])
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
