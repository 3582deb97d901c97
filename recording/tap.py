"""Record the market feed: raw frames with their receive time, connection gaps, REST books.

`FeedRecorder` is the market feed's `FrameTap`: every frame goes to the writer as a `ws` record
stamped on arrival, a connection that ends becomes a `gap_start` and its return a `gap_end`.
`RecordingFetcher` wraps the feed's REST `/book` fetcher so every resync body is recorded too.
Both are used by `python -m orchestrator record` and by a trading daemon with `RECORD_DIR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recording import format as fmt
from recording.writer import RecordWriter
from venue.market_feed import BookFetcher


class FeedRecorder:
    """The market feed's frame tap, writing to a `RecordWriter` (see the module docstring)."""

    def __init__(self, writer: RecordWriter) -> None:
        self._writer = writer
        self._down: set[int] = set()
        self._up: set[int] = set()
        self.frames = 0
        self.gaps = 0
        self._stopping = False

    def stopping(self) -> None:
        """The recording is ending: connections closed from here on are not gaps."""
        self._stopping = True

    def frame(self, data: str | bytes, shard: int) -> None:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self._writer.put(fmt.WS, {"shard": shard, "d": text})
        self.frames += 1

    def connected(self, shard: int, tokens: int) -> None:
        self._up.add(shard)
        if shard in self._down:
            self._down.discard(shard)
            self._writer.put(fmt.GAP_END, {"shard": shard, "tokens": tokens})

    def lost(self, shard: int, tokens: int) -> None:
        # A failed reconnect attempt ends a connection that never came up: one gap per outage.
        if self._stopping:
            return
        if shard in self._up and shard not in self._down:
            self._up.discard(shard)
            self._down.add(shard)
            self.gaps += 1
            self._writer.put(fmt.GAP_START, {"shard": shard, "tokens": tokens})

    def watching(self, tokens: list[str]) -> None:
        self._writer.put(fmt.WATCH, {"tokens": tokens})


class RecordingFetcher:
    """A `BookFetcher` that records every body it returns as a `rest_book` record."""

    def __init__(self, inner: BookFetcher, writer: RecordWriter, *, why: str = "resync") -> None:
        self._inner = inner
        self._writer = writer
        self._why = why

    async def fetch_book(self, token_id: str) -> Mapping[str, Any]:
        body = await self._inner.fetch_book(token_id)
        self._writer.put(fmt.REST_BOOK, {"token": token_id, "book": body, "why": self._why})
        return body
