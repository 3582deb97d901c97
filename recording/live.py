"""`RECORD_DIR`: record a trading daemon's market feed while it trades.

The feed's raw frames (with receive time), its connection gaps and its REST resyncs go to the
recording through `recording.tap`; the Gamma rows discovery keeps are recorded as it receives
them (before a strategy sees the markets), and every `interval_s` the Gamma rows of the markets
of the watched tokens are recorded too, so the recording can be replayed (`python -m simulator
--replay`). Recording never gets in trading's way: a disk error stops the recording (one log
line, the files kept, `/health` detail says so) and the daemon trades on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import structlog

from errors import ConfigError, FeedError, TransientError
from observability.health import CheckResult
from recording import format as fmt
from recording.format import RecordingError
from recording.metadata import record_markets, row_ids
from recording.tap import FeedRecorder, RecordingFetcher
from recording.writer import RecordWriter
from resilience.clock import Clock, SystemClock
from venue.gamma import GammaClient
from venue.market_feed import MarketFeed

log = structlog.get_logger("recording")

TICK_S: Final = 1.0


class LiveRecording:
    """Record `feed` to `writer` while the daemon trades; see the module docstring."""

    def __init__(
        self,
        *,
        writer: RecordWriter,
        feed: MarketFeed,
        gamma: GammaClient,
        interval_s: float,
        progress_interval_s: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self.writer = writer
        self._feed = feed
        self._gamma = gamma
        self._interval_s = interval_s
        self._progress_interval_s = progress_interval_s
        self._clock = clock or SystemClock()
        self.tap = FeedRecorder(writer)
        self._recorded: set[str] = set()
        self._said_failed = False

    async def start(self) -> None:
        """Open the recording and tap the feed (ConfigError if `RECORD_DIR` is unusable)."""
        try:
            self.writer.start()
        except RecordingError as e:
            raise ConfigError([f"RECORD_DIR: {e}"]) from None
        self._feed.tap = self.tap
        # The rows discovery acts on are recorded as it receives them, before the markets reach
        # a strategy: a replay learns a market when the live strategy did, not a tick later.
        self._gamma.on_row = self._market_row
        if self._feed.watched():  # owners that watched before the tap (held positions)
            self.tap.watching(sorted(self._feed.watched()))
        if self._feed.fetcher is not None:
            self._feed.fetcher = RecordingFetcher(self._feed.fetcher, self.writer)
        log.info("recording_started", out=str(self.writer.out_dir), session=self.writer.session)

    async def run(self) -> None:
        """Record market metadata and log progress until cancelled or the disk fails.

        Newly watched tokens get their market's Gamma row within `TICK_S`; every `interval_s`
        every watched market's row is recorded again (its resolution fields may have moved)."""
        since_refresh = since_progress = 0.0
        while True:
            if self.writer.failed is not None:
                self._detach()
                return
            if since_refresh >= self._interval_s:
                since_refresh = 0.0
                self._recorded.clear()
            tokens = sorted(self._feed.watched() - self._recorded)
            if tokens:
                try:
                    await record_markets(self._gamma, self.writer, tokens, by="clob_token_ids")
                    self._recorded.update(tokens)
                except (TransientError, FeedError) as e:
                    log.warning("recording_metadata_failed", error=str(e))
            if since_progress >= self._progress_interval_s:
                since_progress = 0.0
                st = self.writer.stats()
                log.info(
                    "recording_progress",
                    records=st.records,
                    bytes=st.bytes,
                    files=st.files,
                    dropped=st.dropped,
                    gaps=self.tap.gaps,
                )
            await self._clock.sleep(TICK_S)
            since_refresh += TICK_S
            since_progress += TICK_S

    def _market_row(self, row: dict[str, Any]) -> None:
        if self.writer.put(fmt.MARKET, {"gamma": row}):  # False once the recording has stopped
            # Recorded: the loop need not ask Gamma for these tokens' row again this interval.
            self._recorded.update(row_ids(row, "clob_token_ids"))

    def _detach_gamma(self) -> None:
        if self._gamma.on_row == self._market_row:
            self._gamma.on_row = None

    def _detach(self) -> None:
        if self._feed.tap is self.tap:
            self._feed.tap = None
        self._detach_gamma()
        if not self._said_failed:
            self._said_failed = True
            log.error("recording_stopped_trading_continues", reason=self.writer.failed)

    def check(self) -> CheckResult:
        """Informative only: a stopped recording never makes the daemon unhealthy."""
        st = self.writer.stats()
        detail: dict[str, Any] = {"out": str(self.writer.out_dir), "records": st.records}
        if st.failed is not None:
            detail["stopped"] = st.failed
        return CheckResult(True, detail)

    async def close(self) -> None:
        """Untap the feed and close the recording (its last file gets its end record)."""
        self.tap.stopping()
        self._detach_gamma()
        if self._feed.tap is self.tap:
            self._feed.tap = None
        st = await asyncio.to_thread(self.writer.close)
        log.info("recording_closed", records=st.records, bytes=st.bytes, files=st.files)
