"""`python -m orchestrator record`: record chosen markets to a recording directory.

Discovery goes through Gamma exactly as the sniper's does (`venue.gamma.Discovery` over the
sniper rules' selectors, or a slug / tag selection); each refresh records the markets' Gamma rows
(`market`) before their tokens are watched, so metadata always precedes frames. The market
websocket is the feed's own connection code (`venue.market_feed.MarketFeed`: shards, PING/PONG,
stall detection, reconnect with backoff, REST resyncs), tapped for raw frames (`recording.tap`).
Every `snapshot_interval_s` each watched token's REST `/book` is recorded too.

The recorder stops after `duration_s`, on `stop`, or when the writer fails (a full disk): it says
so in one line, closes the files it has, and returns a `RecordSummary`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog

from config import Settings
from errors import ConfigError, FeedError, TransientError
from models import Market
from recording import format as fmt
from recording.metadata import record_markets
from recording.tap import FeedRecorder, RecordingFetcher
from recording.writer import RecordWriter
from resilience.clock import Clock, SystemClock
from resilience.rate_limit import RateLimiter
from strategies.sniper import load_rules
from venue.gamma import Discovery, DiscoveryResult, GammaClient, MarketQuery
from venue.market_feed import BookFetcher, ClobBookFetcher, MarketFeed
from venue.order_book import BookStore

log = structlog.get_logger("recording")

OWNER: Final = "recorder"


@dataclass(frozen=True)
class Selection:
    """Which markets to record: slugs, Gamma tag slugs, or a sniper rules file's selectors."""

    slugs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    rules_path: Path | None = None

    def queries(self) -> dict[str, list[MarketQuery]]:
        """Discovery's queries by name; ConfigError if nothing (or too much) is chosen."""
        chosen = sum(bool(x) for x in (self.slugs, self.tags, self.rules_path))
        if chosen != 1:
            raise ConfigError(["record: choose the markets with one of --slugs, --tags, --rules"])
        if self.rules_path is not None:
            rules = load_rules(self.rules_path)
            if not rules:
                raise ConfigError([f"record: {self.rules_path} has no enabled rule"])
            return {r.name: r.select.queries() for r in rules}
        if self.slugs:
            return {"slugs": [MarketQuery(slugs=self.slugs)]}
        return {"tags": [MarketQuery(tags=self.tags)]}

    def describe(self) -> dict[str, Any]:
        return {
            "slugs": list(self.slugs),
            "tags": list(self.tags),
            "rules": str(self.rules_path) if self.rules_path else None,
        }


@dataclass
class RecordSummary:
    """What a recording run did (printed as JSON at exit)."""

    out: str
    records: int = 0
    bytes: int = 0
    files: int = 0
    dropped: int = 0
    frames: int = 0
    gaps: int = 0
    markets: int = 0
    tokens: int = 0
    rest_books: int = 0
    failed: str | None = None
    stopped_by: str = ""
    paths: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Record the selected markets; see the module docstring. Collaborators come in through
    `__init__`: the HTTP session, the writer (started by the caller), an optional limiter."""

    def __init__(
        self,
        *,
        settings: Settings,
        selection: Selection,
        writer: RecordWriter,
        http: aiohttp.ClientSession,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        snapshot_interval_s: float = 60.0,
        progress_interval_s: float = 30.0,
        discovery_interval_s: float | None = None,
    ) -> None:
        if snapshot_interval_s <= 0 or progress_interval_s <= 0:
            raise ConfigError(["record: intervals must be greater than 0"])
        self._settings = s = settings
        self._queries = selection.queries()
        self._writer = writer
        self._clock = clock or SystemClock()
        self._snapshot_interval_s = snapshot_interval_s
        self._progress_interval_s = progress_interval_s
        self._discovery_interval_s = discovery_interval_s or s.discovery_interval_s
        self._gamma = GammaClient(
            base_url=s.gamma_api_url, session=http, limiter=limiter, timeout_s=s.http_timeout_s
        )
        self._books: BookFetcher = ClobBookFetcher(
            session=http, base_url=s.clob_host, limiter=limiter, timeout_s=s.http_timeout_s
        )
        self.tap = FeedRecorder(writer)
        self.feed = MarketFeed(
            url=s.market_ws_url,
            store=BookStore(stale_after_s=s.feed_stale_after_s, clock=self._clock.monotonic),
            fetcher=RecordingFetcher(self._books, writer),
            shard_size=s.feed_shard_size,
            ping_interval_s=s.feed_ping_interval_s,
            stale_after_s=s.feed_stale_after_s,
            clock=self._clock,
        )
        self.feed.tap = self.tap
        self._found: DiscoveryResult = {}
        self._discovery = Discovery(
            gamma=self._gamma,
            queries=self._queries,
            on_update=self._on_found,
            interval_s=self._discovery_interval_s,
            clock=self._clock,
        )
        self.markets: dict[str, Market] = {}
        self.rest_books = 0
        self.snapshot_errors = 0

    def _on_found(self, found: DiscoveryResult) -> None:
        self._found = found

    # --- the run -----------------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event, duration_s: float | None = None) -> str:
        """Record until `stop` is set, `duration_s` passes or the writer fails; return why."""
        why = "stop"
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self.feed.run(), name="record:feed"),
                tg.create_task(self._discover(), name="record:discovery"),
                tg.create_task(self._snapshots(), name="record:snapshots"),
                tg.create_task(self._progress(), name="record:progress"),
            ]
            why = await self._until_done(stop, duration_s)
            self.tap.stopping()
            for t in tasks:
                t.cancel()
        return why

    async def _until_done(self, stop: asyncio.Event, duration_s: float | None) -> str:
        started = self._clock.monotonic()
        while True:
            if stop.is_set():
                return "signal"
            if self._writer.failed is not None:
                return "disk_error"
            if duration_s is not None and self._clock.monotonic() - started >= duration_s:
                return "duration"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)

    async def _discover(self) -> None:
        # Discovery's own refresh, then the metadata, then the watch: a market's Gamma row is
        # always recorded before its first frame.
        while True:
            try:
                ok = await self._discovery.refresh()
                markets = {m.condition_id: m for ms in self._found.values() for m in ms}
                await record_markets(self._gamma, self._writer, sorted(markets))
                self.markets = markets
                self.feed.watch(OWNER, [t for m in markets.values() for t in m.token_ids])
            except (TransientError, FeedError) as e:
                log.warning("record_discovery_failed", error=str(e))
                ok = False
            await self._clock.sleep(self._discovery_interval_s if ok else 5.0)

    async def _snapshots(self) -> None:
        while True:
            await self._clock.sleep(self._snapshot_interval_s)
            for token in sorted(self.feed.watched()):
                try:
                    body = await self._books.fetch_book(token)
                except (FeedError, TransientError) as e:
                    self.snapshot_errors += 1
                    log.warning("record_snapshot_failed", token_id=token, error=str(e))
                    continue
                self._writer.put(fmt.REST_BOOK, {"token": token, "book": body, "why": "periodic"})
                self.rest_books += 1

    async def _progress(self) -> None:
        while True:
            await self._clock.sleep(self._progress_interval_s)
            log.info("recording_progress", **self._figures())

    def _figures(self) -> dict[str, Any]:
        st = self._writer.stats()
        return {
            "records": st.records,
            "bytes": st.bytes,
            "files": st.files,
            "dropped": st.dropped,
            "queued": st.queued,
            "frames": self.tap.frames,
            "gaps": self.tap.gaps,
            "markets": len(self.markets),
            "tokens": len(self.feed.watched()),
        }

    def summary(self, stopped_by: str) -> RecordSummary:
        """The run's figures (call after the writer is closed, for final byte counts)."""
        st = self._writer.stats()
        return RecordSummary(
            out=str(self._writer.out_dir),
            records=st.records,
            bytes=st.bytes,
            files=st.files,
            dropped=st.dropped,
            frames=self.tap.frames,
            gaps=self.tap.gaps,
            markets=len(self.markets),
            tokens=len(self.feed.watched()),
            rest_books=self.rest_books,
            failed=st.failed,
            stopped_by=stopped_by,
            paths=[str(p) for p in self._writer.paths],
        )


def source_of(settings: Settings, selection: Selection) -> Mapping[str, Any]:
    """What a header says about where a recording came from (URLs carry no secret)."""
    return {
        "market_ws_url": str(settings.market_ws_url),
        "clob_host": str(settings.clob_host),
        "gamma_api_url": str(settings.gamma_api_url),
        "selection": selection.describe(),
    }


async def record(
    settings: Settings,
    selection: Selection,
    out: Path,
    *,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    snapshot_interval_s: float = 60.0,
    progress_interval_s: float = 30.0,
    discovery_interval_s: float | None = None,
    writer: RecordWriter | None = None,
) -> RecordSummary:
    """Run one recording to its end and return its summary (the writer closed)."""
    from wiring.shared import http_session, venue_limiter  # the process's one session shape

    selection.queries()  # a bad selection fails before a file is created
    writer = writer or RecordWriter(out, source=source_of(settings, selection))
    writer.start()
    stop = stop or asyncio.Event()
    clock = SystemClock()
    why = "error"
    recorder: Recorder | None = None
    try:
        async with http_session() as http:
            recorder = Recorder(
                settings=settings,
                selection=selection,
                writer=writer,
                http=http,
                limiter=venue_limiter(settings, clock=clock),
                clock=clock,
                snapshot_interval_s=snapshot_interval_s,
                progress_interval_s=progress_interval_s,
                discovery_interval_s=discovery_interval_s,
            )
            log.info("recording_started", out=str(out), session=writer.session)
            why = await recorder.run(stop=stop, duration_s=duration_s)
    finally:
        await asyncio.to_thread(writer.close)
    assert recorder is not None
    summary = recorder.summary(why)
    if summary.failed:
        log.error("recording_ended_disk_error", reason=summary.failed, records=summary.records)
    else:
        log.info("recording_ended", **summary.as_dict())
    return summary
