"""The recording format (version 1): what a recording directory holds, record by record.

A recording is a directory of files named `<YYYYMMDD>T<HH>Z-<seq>.jsonl.zst` (or `.jsonl.gz`
where `zstandard` is not installed): the UTC hour of the receive times it holds, and a sequence
number that makes every file of a directory unique. Each file is a series of independently
compressed frames (one per writer batch) of JSON lines, one record per line. The first record of
every file is a `header`; a file closed cleanly ends with an `end` record. A file without `end`
was cut short (the process was killed or the disk filled): its complete lines are still good.

Every record carries `k` (its kind), `t` (wall-clock receive time, integer nanoseconds since the
Unix epoch) and `m` (monotonic receive time, nanoseconds, comparable only within one `session`).
The kinds and their other fields are `KINDS` below; docs/recording.md is the operator's copy.

This module is the only owner of that layout: the writer and the reader import it, and nothing
else in polyd knows a file name pattern or a field name of the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

VERSION: Final = 1
"""The format version written in every header; a reader refuses a newer one."""
FORMAT: Final = "polyd-recording"

ZSTD_SUFFIX: Final = ".jsonl.zst"
GZIP_SUFFIX: Final = ".jsonl.gz"
_NAME = re.compile(r"^(\d{8})T(\d{2})Z-(\d{4,})(\.jsonl\.(?:zst|gz))$")

HEADER: Final = "header"
"""First record of a file: `version`, `format`, `session` (hex id of the writing process),
`seq` (the file's sequence number), `compression` (`zstd`|`gzip`), `source` (where the data came
from: URLs, the recorder's selection), `started` (ISO time)."""
WS: Final = "ws"
"""One market-websocket frame as received: `shard` (connection index), `d` (the frame text,
unparsed: a JSON object, a JSON array of events, `PONG`, or whatever the venue sent)."""
REST_BOOK: Final = "rest_book"
"""One REST `GET /book` body: `token`, `book` (the JSON object as the venue answered it),
`why` (`periodic` snapshot or `resync` after a doubt about the websocket book)."""
MARKET: Final = "market"
"""One Gamma `/markets` row as the venue answered it (`gamma`): tick size, minimum size, fee
schedule, neg_risk, end date, resolution fields. Written at start and on each discovery refresh."""
WATCH: Final = "watch"
"""The set of tokens being recorded changed: `tokens` (the full list now watched)."""
GAP_START: Final = "gap_start"
"""A websocket connection ended: `shard`, `tokens` (how many it carried). Frames for those tokens
are missing from here until the matching `gap_end` and the fresh `book` snapshots after it."""
GAP_END: Final = "gap_end"
"""A connection is back and subscribed again: `shard`, `tokens`. The venue sends a `book`
snapshot per token next; deltas before it must not be applied to a pre-gap book."""
DROPPED: Final = "dropped"
"""The writer could not keep up and dropped `records` records received between `from_t` and
`to_t` (ns): a gap of the recorder's own making, for every token."""
END: Final = "end"
"""Last record of a cleanly closed file: `records` (in this file, header and end included),
`reason` (`rotate` | `stop` | `disk_error`)."""

KINDS: Final = frozenset({HEADER, WS, REST_BOOK, MARKET, WATCH, GAP_START, GAP_END, DROPPED, END})


class RecordingError(Exception):
    """A recording cannot be read (not a recording, a newer version, an unreadable file)."""


@dataclass(frozen=True, slots=True)
class FileName:
    """The parts of a recording file name."""

    hour: datetime
    seq: int
    suffix: str

    @property
    def name(self) -> str:
        return f"{self.hour:%Y%m%dT%H}Z-{self.seq:04d}{self.suffix}"


def file_name(hour_start_ns: int, seq: int, suffix: str) -> str:
    """The name of the file holding the hour starting at `hour_start_ns`."""
    hour = datetime.fromtimestamp(hour_start_ns // 1_000_000_000, UTC)
    return FileName(hour, seq, suffix).name


def parse_name(name: str) -> FileName | None:
    """The parts of a recording file name; None for a file that is not one."""
    m = _NAME.match(name)
    if m is None:
        return None
    hour = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H").replace(tzinfo=UTC)
    return FileName(hour, int(m.group(3)), m.group(4))


HOUR_NS: Final = 3600 * 1_000_000_000


def hour_of(t_ns: int) -> int:
    """The start (ns) of the UTC hour holding `t_ns`: files rotate when it changes."""
    return t_ns - t_ns % HOUR_NS


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the reader returns it: `kind`, `t` and `m` (ns), and its other `fields`."""

    kind: str
    t: int
    m: int
    fields: dict[str, Any]
    session: str
    """The `session` of the file's header: `m` values compare only within one session."""

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)
