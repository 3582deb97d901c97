"""Operator notifications: a webhook (generic JSON POST, Telegram bot, Discord) for the events a
person must hear about — a halt, an open breaker, a crashed or halted strategy, the daily loss
nearing its limit.

Trading never waits for it. `Notifier.notify()` is synchronous and O(1): it deduplicates (the same
key within `NOTIFY_MIN_INTERVAL_S` is counted as `deduped`), rate-limits (at most `max_per_window`
accepted per `window_s`, the rest `throttled`), and puts the message on a bounded queue (full:
`dropped`). One background task owned by the orchestrator's TaskGroup sends the queue with short
timeouts (`sent` / `failed`). Every text and field is passed through the log `Redactor`, and the
webhook URL itself (which carries the bot or webhook token) is registered with it as a secret.

`TradingWatch` turns metric transitions into notifications (halt, breaker open, daily loss near its
limit), so the executor needs no knowledge of the notifier; it may still call `notify()` itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import structlog

from observability.logging import Redactor
from observability.metrics import BREAKER_STATE_VALUE, TRADING_STATE_VALUE, Metrics

log = structlog.get_logger("notify")

Kind = Literal["generic", "telegram", "discord"]
TELEGRAM_LIMIT = 4096
DISCORD_LIMIT = 2000


@dataclass(frozen=True)
class Notification:
    """One message for an operator. `kind` is a small fixed word; `key` groups duplicates."""

    kind: str
    key: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    at: str = ""


def secret_parts(url: str) -> list[str]:
    """Return the parts of a webhook URL that act as credentials (tokens in path or query)."""
    parts = [url]
    try:
        split = urlsplit(url)
    except ValueError:
        return parts
    for segment in split.path.split("/"):
        # Telegram: /bot<token>/sendMessage; Discord: /api/webhooks/<id>/<token>.
        token = segment.removeprefix("bot")
        if len(token) >= 16:
            parts.extend({segment, token})
    for _, value in parse_qsl(split.query):
        if len(value) >= 8:
            parts.append(value)
    if split.password:
        parts.append(split.password)
    return parts


def telegram_url(url: str) -> str:
    """Accept either the full `.../bot<token>/sendMessage` URL or the bot base URL."""
    url = url.rstrip("/")
    return url if url.endswith("/sendMessage") else url + "/sendMessage"


class Notifier:
    """Deduplicated, rate-limited, non-blocking webhook notifications. Disabled without a URL."""

    def __init__(
        self,
        *,
        url: str | None = None,
        kind: Kind = "generic",
        telegram_chat_id: str | None = None,
        min_interval_s: float = 60.0,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
        mode: str = "",
        queue_size: int = 100,
        max_per_window: int = 20,
        window_s: float = 60.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind: Kind = kind
        self._url = (telegram_url(url) if kind == "telegram" else url) if url else None
        self._chat_id = telegram_chat_id
        self._min_interval_s = min_interval_s
        self._metrics = metrics
        self._redactor = redactor or Redactor()
        if url:
            self._redactor.add(*secret_parts(url))
        self._mode = mode
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=queue_size)
        self._max_per_window = max_per_window
        self._window_s = window_s
        self._accepted: deque[float] = deque()
        self._last_by_key: dict[str, float] = {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 3.0))
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._sinks: list[tuple[Callable[[Notification], bool], Callable[[], bool]]] = []
        self._on_reconfigure: list[Callable[[Any], None]] = []

    @classmethod
    def from_settings(cls, settings: Any, *, metrics: Metrics, redactor: Redactor) -> Notifier:
        """Build from `config.Settings` (typed loosely so this module does not import config)."""
        url = settings.notify_webhook_url
        return cls(
            url=url.get_secret_value() if url is not None else None,
            kind=settings.notify_kind,
            telegram_chat_id=settings.notify_telegram_chat_id,
            min_interval_s=settings.notify_min_interval_s,
            metrics=metrics,
            redactor=redactor,
            mode=settings.mode,
        )

    @property
    def enabled(self) -> bool:
        return self._url is not None or any(active() for _, active in self._sinks)

    def add_sink(
        self,
        sink: Callable[[Notification], bool],
        *,
        active: Callable[[], bool] = lambda: True,
        reconfigure: Callable[[Any], None] | None = None,
    ) -> None:
        """Also hand every accepted message to `sink` (e.g. the Telegram chat bot), which must
        not block and returns whether it took the message; dedupe and rate limit apply first.
        `active()` says whether it takes messages now (with no URL and no active sink, nothing
        is counted); `reconfigure` gets the new settings whenever the notifier does (a reload)."""
        self._sinks.append((sink, active))
        if reconfigure is not None:
            self._on_reconfigure.append(reconfigure)

    def reconfigure(self, settings: Any) -> None:
        """Take new webhook settings (a reload): messages from now on go to the new URL.

        A message already queued for the old URL is sent to the new one; with no URL any more,
        queued messages are dropped (counted) and new ones are refused.
        """
        url = settings.notify_webhook_url
        raw = url.get_secret_value() if url is not None else None
        self.kind = settings.notify_kind
        self._url = (telegram_url(raw) if self.kind == "telegram" else raw) if raw else None
        if raw:
            self._redactor.add(*secret_parts(raw))
        self._chat_id = settings.notify_telegram_chat_id
        self._min_interval_s = settings.notify_min_interval_s
        for listener in self._on_reconfigure:
            listener(settings)

    def services(
        self, *, warn_fraction: float, reason: Callable[[], str]
    ) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The daemon's notification tasks: the sender and a `TradingWatch` on its metrics.
        Both run without a webhook too (idle), so a settings reload can set one."""
        assert self._metrics is not None, "the daemon's notifier counts in its metrics"
        watch = TradingWatch(
            notifier=self, metrics=self._metrics, warn_fraction=warn_fraction, reason=reason
        )
        return [("notify", self.run), ("notify:watch", watch.run)]

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications_total.labels(outcome).inc()

    # -- the caller's side: never blocks, never raises on a full queue ------------------------

    def notify(self, kind: str, key: str, text: str, **fields: Any) -> bool:
        """Queue a message; return True if it was accepted. Never blocks, never awaits."""
        if not self.enabled:
            return False
        now = self._clock()
        last = self._last_by_key.get(key)
        if last is not None and now - last < self._min_interval_s:
            self._count("deduped")
            return False
        while self._accepted and now - self._accepted[0] >= self._window_s:
            self._accepted.popleft()
        if len(self._accepted) >= self._max_per_window:
            self._count("throttled")
            log.warning("notification_throttled", kind=kind, key=key)
            return False
        msg = Notification(
            kind=kind,
            key=key,
            text=self._redactor.scrub(text),
            fields=dict(self._redactor(None, "info", dict(fields))),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        taken = [sink(msg) for sink, active in self._sinks if active()]
        if self._url is not None:
            try:
                self._queue.put_nowait(msg)
                taken.append(True)
            except asyncio.QueueFull:
                self._count("dropped")
                log.warning("notification_dropped", kind=kind, key=key, reason="queue full")
        if not any(taken):
            return False
        self._accepted.append(now)
        self._last_by_key[key] = now
        if len(self._last_by_key) > 1000:  # keys come from small sets; this bounds a bad caller
            cutoff = now - self._min_interval_s
            self._last_by_key = {k: t for k, t in self._last_by_key.items() if t >= cutoff}
        return True

    # -- the background task ------------------------------------------------------------------

    async def run(self) -> None:
        """Send queued messages one at a time until cancelled (a TaskGroup service). Runs with
        no URL too (nothing is queued then), so a reload that sets one needs no new task."""
        while True:
            msg = await self._queue.get()
            await self._deliver(msg)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Send what is still queued within `timeout_s`, then close the HTTP session."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._url is not None and not self._queue.empty():
                    await self._deliver(self._queue.get_nowait())
        except TimeoutError:
            left = self._queue.qsize()
            for _ in range(left):
                self._count("dropped")
            log.warning("notifications_dropped_on_close", count=left)
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def _deliver(self, msg: Notification) -> None:
        if self._url is None:  # the URL was removed by a reload after this was queued
            self._count("dropped")
            return
        try:
            status = await self._post(self.payload(msg))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the task boundary: a broken webhook must not end the task
            self._count("failed")
            log.warning("notification_failed", kind=msg.kind, error=type(e).__name__)
            return
        if 200 <= status < 300:
            self._count("sent")
            log.info("notification_sent", kind=msg.kind, key=msg.key)
        else:
            self._count("failed")
            log.warning("notification_failed", kind=msg.kind, status=status)

    async def _post(self, body: dict[str, Any]) -> int:
        assert self._url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.post(self._url, json=body, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    def payload(self, msg: Notification) -> dict[str, Any]:
        """The JSON body for this webhook kind."""
        title = f"polyd {msg.kind}" + (f" ({self._mode})" if self._mode else "")
        if self.kind == "telegram":
            return {
                "chat_id": self._chat_id,
                "text": f"{title}: {msg.text}"[:TELEGRAM_LIMIT],
                "disable_web_page_preview": True,
            }
        if self.kind == "discord":
            return {
                "content": f"**{title}**: {msg.text}"[:DISCORD_LIMIT],
                "allowed_mentions": {"parse": []},
            }
        return {
            "source": "polyd",
            "mode": self._mode,
            "kind": msg.kind,
            "key": msg.key,
            "text": msg.text,
            "at": msg.at,
            "fields": msg.fields,
        }


class TradingWatch:
    """Watch the executor's metrics and notify on transitions: halt, breaker open, daily loss,
    exchange heartbeats lapsed and recovered.

    Reads only the metrics registry (the executor feeds `polyd_trading_state`,
    `polyd_breaker_state`, `polyd_daily_pnl_usd`), so it is decoupled from the executor's code.
    Edge-triggered: one message per transition, then the notifier's dedupe on top.
    """

    def __init__(
        self,
        *,
        notifier: Notifier,
        metrics: Metrics,
        warn_fraction: float,
        reason: Callable[[], str] = lambda: "",
        interval_s: float = 1.0,
    ) -> None:
        self._n = notifier
        self._m = metrics
        self._warn_fraction = warn_fraction
        self._reason = reason
        self._interval_s = interval_s
        self._halted: bool | None = None
        self._open: dict[str, bool] = {}
        self._loss_warned = False
        self._heartbeat_lapsed = False

    def _gauge(self, name: str) -> float | None:
        return self._m.registry.get_sample_value(name)

    def check(self) -> None:
        """One pass over the metrics; notify on what changed since the last pass."""
        state = self._gauge("polyd_trading_state")
        if state is not None:
            halted = state == TRADING_STATE_VALUE["HALTED"]
            if halted and not self._halted:
                why = self._reason() or "no reason given"
                prefix = "trading is halted" if self._halted is None else "trading halted"
                self._n.notify("halt", "halt", f"{prefix}: {why}", reason=why)
            elif self._halted and not halted:
                self._n.notify("resume", "resume", "trading resumed")
            self._halted = halted
        for family in self._m.breaker_state.collect():
            for sample in family.samples:
                name = sample.labels.get("breaker", "")
                is_open = sample.value == BREAKER_STATE_VALUE["OPEN"]
                if is_open and not self._open.get(name):
                    self._n.notify(
                        "breaker_open",
                        f"breaker_open:{name}",
                        f"circuit breaker '{name}' opened: the venue is failing, new orders "
                        "are blocked until a probe succeeds",
                        breaker=name,
                    )
                self._open[name] = is_open
        hb = self._gauge("polyd_heartbeat_ok")
        if hb is not None:
            lapsed = hb == 0
            if lapsed and not self._heartbeat_lapsed:
                self._n.notify(
                    "heartbeat_lapsed",
                    "heartbeat_lapsed",
                    "exchange heartbeats lapsed: the venue may have canceled our resting orders; "
                    "new resting orders are held until heartbeats recover and a reconcile finishes",
                )
            elif self._heartbeat_lapsed and not lapsed:
                self._n.notify(
                    "heartbeat_recovered",
                    "heartbeat_recovered",
                    "exchange heartbeats recovered; open orders reconciled, resting orders allowed",
                )
            self._heartbeat_lapsed = lapsed
        pnl, limit = self._gauge("polyd_daily_pnl_usd"), self._gauge("polyd_daily_loss_limit_usd")
        if pnl is not None and limit:
            near = pnl <= -limit * self._warn_fraction
            if near and not self._loss_warned:
                self._n.notify(
                    "daily_loss",
                    "daily_loss",
                    f"daily PnL {pnl:.2f} is within {100 * (1 - self._warn_fraction):.0f}% of "
                    f"the daily loss limit -{limit:.2f}; trading halts at the limit",
                    daily_pnl=round(pnl, 2),
                    limit=limit,
                )
            self._loss_warned = near

    async def run(self) -> None:
        """Check every `interval_s` until cancelled (a TaskGroup service)."""
        while True:
            try:
                self.check()
            except Exception:  # the task boundary: a bad sample must not end the watch
                log.exception("trading_watch_failed")
            await asyncio.sleep(self._interval_s)
