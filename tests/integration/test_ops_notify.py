"""The webhook notifier against a loopback aiohttp server: delivery, dedupe, rate limit,
redaction, and a down or slow endpoint that never slows the caller."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

from observability.logging import REDACTED, Redactor
from observability.metrics import Metrics
from observability.notify import Notifier, TradingWatch
from observability.sidecar import Health
from orchestrator import StrategySupervisor
from tests.helpers import free_port

BOT_TOKEN = "123456789:AAHf3kq9ZxSecretBotTokenValue00000"
PRIVATE_KEY = "0x" + "ab" * 32


@dataclass
class Hook:
    """A loopback webhook that records what it received."""

    base: str
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delay_s: float = 0.0
    status: int = 200
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, n: int, within_s: float = 5) -> None:
        async with asyncio.timeout(within_s):
            while len(self.received) < n:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    port = free_port()
    h = Hook(base=f"http://127.0.0.1:{port}")

    async def handler(request: web.Request) -> web.Response:
        h.received.append((request.path, await request.json()))
        h.arrived.set()
        if h.delay_s:
            await asyncio.sleep(h.delay_s)
        return web.json_response({"ok": h.status < 300}, status=h.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield h
    finally:
        await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcomes(m: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in m.notifications_total.collect():
        for s in fam.samples:
            if s.name.endswith("_total"):
                out[s.labels["outcome"]] = s.value
    return out


async def until_counted(m: Metrics, outcome: str, n: int, within_s: float = 5) -> None:
    async with asyncio.timeout(within_s):
        while outcomes(m).get(outcome, 0) < n:  # noqa: ASYNC110  # a counter has no event
            await asyncio.sleep(0.01)


async def with_sender(n: Notifier, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(n.run(), name="notify")
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.wait([task])
        await n.close()


async def test_generic_webhook_receives_the_message_as_json(hook: Hook) -> None:
    m = Metrics()
    n = Notifier(url=hook.base + "/hook", metrics=m, mode="live")

    async def body() -> None:
        assert n.notify("halt", "halt", "trading halted: manual", reason="manual")
        await until_counted(m, "sent", 1)

    await with_sender(n, body)
    path, payload = hook.received[0]
    assert path == "/hook"
    assert payload["source"] == "polyd"
    assert payload["kind"] == "halt"
    assert payload["mode"] == "live"
    assert payload["text"] == "trading halted: manual"
    assert payload["fields"] == {"reason": "manual"}
    assert outcomes(m) == {"sent": 1.0}


async def test_telegram_and_discord_get_their_own_payloads(hook: Hook) -> None:
    tg = Notifier(url=f"{hook.base}/bot{BOT_TOKEN}", kind="telegram", telegram_chat_id="-1001")
    dc = Notifier(url=f"{hook.base}/api/webhooks/42/{'d' * 40}", kind="discord")

    async def body() -> None:
        tg.notify("breaker_open", "b", "breaker opened")
        await hook.wait_for(1)

    await with_sender(tg, body)

    async def body2() -> None:
        dc.notify("strategy_crash", "c", "sniper crashed @everyone")
        await hook.wait_for(2)

    await with_sender(dc, body2)
    (tg_path, tg_body), (dc_path, dc_body) = hook.received
    assert tg_path == f"/bot{BOT_TOKEN}/sendMessage"
    assert tg_body["chat_id"] == "-1001"
    assert tg_body["text"].startswith("polyd breaker_open") and "breaker opened" in tg_body["text"]
    assert dc_path.startswith("/api/webhooks/42/")
    assert "sniper crashed" in dc_body["content"]
    assert dc_body["allowed_mentions"] == {"parse": []}  # no pings from message text


async def test_same_key_within_min_interval_is_deduped_then_sent_again(hook: Hook) -> None:
    m, clock = Metrics(), FakeClock()
    n = Notifier(url=hook.base + "/h", metrics=m, min_interval_s=60, clock=clock)

    async def body() -> None:
        assert n.notify("strategy_crash", "strategy_crash:sniper", "crash 1")
        assert not n.notify("strategy_crash", "strategy_crash:sniper", "crash 2")
        assert n.notify("strategy_crash", "strategy_crash:copy", "other key")
        clock.now += 61
        assert n.notify("strategy_crash", "strategy_crash:sniper", "crash 3")
        await until_counted(m, "sent", 3)

    await with_sender(n, body)
    assert [p["text"] for _, p in hook.received] == ["crash 1", "other key", "crash 3"]
    assert outcomes(m) == {"sent": 3.0, "deduped": 1.0}


async def test_more_than_the_rate_limit_is_throttled(hook: Hook) -> None:
    m, clock = Metrics(), FakeClock()
    n = Notifier(url=hook.base + "/h", metrics=m, max_per_window=3, window_s=60, clock=clock)

    async def body() -> None:
        accepted = [n.notify("k", f"key{i}", f"m{i}") for i in range(5)]
        assert accepted == [True, True, True, False, False]
        clock.now += 60
        assert n.notify("k", "key9", "after the window")
        await until_counted(m, "sent", 4)

    await with_sender(n, body)
    assert len(hook.received) == 4
    assert outcomes(m) == {"sent": 4.0, "throttled": 2.0}


async def test_secrets_are_redacted_from_text_fields_and_logs(hook: Hook) -> None:
    m = Metrics()
    url = f"{hook.base}/bot{BOT_TOKEN}"
    n = Notifier(url=url, kind="generic", metrics=m, redactor=Redactor([PRIVATE_KEY]))

    async def body() -> None:
        n.notify(
            "strategy_crash",
            "k",
            f"boom: key={PRIVATE_KEY} raw={PRIVATE_KEY[2:]} hook={url} token={BOT_TOKEN}",
            api_secret="s3cr3t-value-here",
            detail={"passphrase": "hunter2hunter2", "note": f"see {url}"},
            client_order_id="abc",
        )
        await hook.wait_for(1)

    await with_sender(n, body)
    _, payload = hook.received[0]
    text = str(payload)
    for secret in (PRIVATE_KEY, PRIVATE_KEY[2:], BOT_TOKEN, url, "s3cr3t", "hunter2"):
        assert secret not in text
    assert payload["text"].count(REDACTED) == 4
    assert payload["fields"]["api_secret"] == REDACTED
    assert payload["fields"]["detail"]["passphrase"] == REDACTED
    assert payload["fields"]["client_order_id"] == "abc"


async def test_down_endpoint_costs_the_caller_nothing_and_counts_failures() -> None:
    m = Metrics()
    url = f"http://127.0.0.1:{free_port()}/bot{BOT_TOKEN}"  # nothing listens there
    n = Notifier(url=url, metrics=m, min_interval_s=0, max_per_window=1000, timeout_s=0.5)
    with structlog.testing.capture_logs() as logs:

        async def body() -> None:
            # No I/O on the caller's path: `notify` is a plain call that only enqueues, so 50 of
            # them finish before the sender task runs even once (nothing has failed yet).
            assert not inspect.iscoroutinefunction(n.notify)
            accepted = [n.notify("halt", f"k{i}", "x") for i in range(50)]
            assert accepted == [True] * 50
            assert outcomes(m) == {}
            await until_counted(m, "failed", 50, within_s=10)

        await with_sender(n, body)
    assert outcomes(m) == {"failed": 50.0}
    assert all(BOT_TOKEN not in str(e) for e in logs)
    assert any(e["event"] == "notification_failed" for e in logs)


async def test_slow_endpoint_fills_the_bounded_queue_and_drops_without_blocking(
    hook: Hook,
) -> None:
    hook.delay_s = 5.0
    m = Metrics()
    n = Notifier(
        url=hook.base + "/slow",
        metrics=m,
        min_interval_s=0,
        max_per_window=1000,
        queue_size=5,
        timeout_s=0.3,
    )
    ticks = 0
    nonlocal_ticks: list[int] = []

    async def ticker() -> None:  # stands in for trading: it must keep running
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def body() -> None:
        t = asyncio.create_task(ticker())
        try:
            # Every call returns at once with a verdict (queued or dropped), never awaiting the
            # stuck endpoint; the loop keeps serving the ticker while a send hangs for 5 s.
            verdicts = []
            for i in range(20):
                verdicts.append(n.notify("halt", f"k{i}", "x"))
                await asyncio.sleep(0)
            assert all(isinstance(v, bool) for v in verdicts)
            before = ticks
            await asyncio.sleep(1.0)
            nonlocal_ticks.append(ticks - before)
        finally:
            t.cancel()
            await asyncio.wait([t])

    await with_sender(n, body)
    got = outcomes(m)
    # One in flight when the rest arrived, five queued, the rest dropped; timeouts count failed.
    assert got.get("dropped", 0) >= 10, got
    assert got.get("failed", 0) >= 1, got
    # The loop kept running while the endpoint hung (not a rate: any progress at all proves it).
    assert nonlocal_ticks and nonlocal_ticks[0] > 0, nonlocal_ticks


async def test_disabled_notifier_accepts_nothing_and_counts_nothing() -> None:
    m = Metrics()
    n = Notifier(metrics=m)
    assert not n.enabled
    assert n.notify("halt", "halt", "x") is False
    # It idles rather than returning, so a settings reload can give it a URL later.
    task = asyncio.create_task(n.run())
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await n.close()
    assert outcomes(m) == {}


async def test_trading_watch_notifies_on_halt_breaker_and_daily_loss(hook: Hook) -> None:
    m = Metrics()
    n = Notifier(url=hook.base + "/w", metrics=m, min_interval_s=0)
    watch = TradingWatch(notifier=n, metrics=m, warn_fraction=0.8, reason=lambda: "manual")
    m.trading_state.set(0)
    m.daily_loss_limit_usd.set(100)
    m.daily_pnl_usd.set(-10)
    m.breaker_state.labels("venue").set(0)
    watch.check()
    assert n.pending == 0  # nothing to say yet
    m.trading_state.set(2)
    m.breaker_state.labels("venue").set(2)
    m.daily_pnl_usd.set(-85)
    watch.check()
    watch.check()  # edge-triggered: no repeats
    m.trading_state.set(0)
    watch.check()

    async def body() -> None:
        await hook.wait_for(4)

    await with_sender(n, body)
    kinds = [p["kind"] for _, p in hook.received]
    assert kinds == ["halt", "breaker_open", "daily_loss", "resume"]
    assert hook.received[0][1]["text"] == "trading halted: manual"
    assert "venue" in hook.received[1][1]["text"]


async def test_trading_watch_notifies_when_heartbeats_lapse_and_recover(hook: Hook) -> None:
    m = Metrics()
    n = Notifier(url=hook.base + "/w", metrics=m, min_interval_s=0)
    watch = TradingWatch(notifier=n, metrics=m, warn_fraction=0.8)
    watch.check()
    assert n.pending == 0  # a fresh registry reads "heartbeats ok"
    m.heartbeat_ok.set(0)
    watch.check()
    watch.check()  # edge-triggered: no repeats
    m.heartbeat_ok.set(1)
    watch.check()

    async def body() -> None:
        await hook.wait_for(2)

    await with_sender(n, body)
    kinds = [p["kind"] for _, p in hook.received]
    assert kinds == ["heartbeat_lapsed", "heartbeat_recovered"]
    assert "resting orders are held" in hook.received[0][1]["text"]


async def test_supervisor_notifies_on_crash_and_on_halt() -> None:
    sent: list[tuple[str, str]] = []

    def notify(kind: str, key: str, text: str, **fields: Any) -> bool:
        sent.append((kind, key))
        return True

    class Crasher:
        name = "crasher"

        async def run(self) -> None:
            raise RuntimeError("bug")

    async def no_sleep(_s: float) -> None:
        await asyncio.sleep(0)

    sup = StrategySupervisor(
        metrics=Metrics(),
        health=Health(mode="paper", version="0"),
        max_restarts=2,
        window_s=60,
        sleep=no_sleep,
        notify=notify,
    )
    await sup.run(Crasher())
    assert sent == [
        ("strategy_crash", "strategy_crash:crasher"),
        ("strategy_crash", "strategy_crash:crasher"),
        ("strategy_halted", "strategy_halted:crasher"),
    ]
