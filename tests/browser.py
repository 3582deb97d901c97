"""Headless Chromium for the browser tests, driven over the DevTools protocol (a websocket),
which reports every uncaught exception, `console.error`, failed resource load and Content
Security Policy violation as an event.

Protocol reference: https://chromedevtools.github.io/devtools-protocol/ (Target.attachToTarget
with `flatten`, Runtime.exceptionThrown, Runtime.consoleAPICalled, Log.entryAdded,
Runtime.evaluate, Page.captureScreenshot).
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
from pathlib import Path
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tests.helpers import require_tool


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


@dataclass
class Tab:
    """One page of the browser: DevTools calls on its session, and every error it reported."""

    ws: ClientConnection
    session: str = ""
    errors: list[str] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def read(self) -> None:
        async for raw in self.ws:
            msg = orjson.loads(raw)
            if "id" in msg and msg["id"] in self._pending:
                self._pending.pop(msg["id"]).set_result(msg)
                continue
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = params["exceptionDetails"]
                text = d.get("exception", {}).get("description") or d.get("text")
                self.errors.append(f"exception: {text}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                args = [a.get("value", a.get("description")) for a in params["args"]]
                self.errors.append(f"console.{params['type']}: {args}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append(f"log: {params['entry']['text']}")

    async def call(self, method: str, *, browser: bool = False, **params: Any) -> Any:
        """Send one DevTools command (to the page's session unless `browser`); its result."""
        i = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        msg: dict[str, Any] = {"id": i, "method": method, "params": params}
        if self.session and not browser:
            msg["sessionId"] = self.session
        await self.ws.send(orjson.dumps(msg).decode())
        answer = await asyncio.wait_for(fut, 30)
        assert "error" not in answer, answer
        return answer.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        got = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in got, got["exceptionDetails"]
        return got["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Poll `expression` until it is truthy; its value (an AssertionError on timeout). An
        expression that throws (the page is still loading) counts as not yet."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            got = await self.call(
                "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
            )
            value = got.get("exceptionDetails", {}).get("text") or got["result"].get("value")
            if value and "exceptionDetails" not in got:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {expression!r}: {value!r}")

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """The full page as PNG (or the `clip` rectangle {x, y, width, height, scale})."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = clip
        shot = await self.call("Page.captureScreenshot", **params)
        return base64.b64decode(shot["data"])


@contextlib.asynccontextmanager
async def open_tab(browser_ws: str, *, width: int = 1200, height: int = 900) -> AsyncIterator[Tab]:
    """A new blank page of `width` x `height` CSS pixels with its error events on."""
    async with websockets.connect(browser_ws, max_size=None) as ws:
        tab = Tab(ws)
        task = asyncio.create_task(tab.read())
        try:
            target = (await tab.call("Target.createTarget", url="about:blank"))["targetId"]
            attached = await tab.call("Target.attachToTarget", targetId=target, flatten=True)
            tab.session = attached["sessionId"]
            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await tab.call(domain)
            await tab.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield tab
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
