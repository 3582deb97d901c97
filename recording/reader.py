"""Read a recording: every record of a directory in receive-time order, with from/to filters.

This is the one reader of the format (`recording.format`): the simulator's replay, and anything
else that consumes recordings, reads through `Recording`. It tolerates what a killed or
disk-starved recorder leaves behind: a last frame cut short or a last line without its newline
is skipped, and said so in `problems` (and one log line per file); every whole record before it
is returned; a file cut short before its header was whole is skipped and reported. A file that
is not a recording or has a newer format version is a `RecordingError` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import structlog

from recording import format as fmt

try:
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the package
    zstandard = None  # type: ignore[assignment]  # gzip files are still readable

log = structlog.get_logger("recording")

_CHUNK = 1 << 16


def to_ns(when: datetime | int | float | None) -> int | None:
    """A filter bound as wall-clock ns: a datetime (timezone-aware), ns (int) or seconds (float)."""
    if when is None:
        return None
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("from/to datetimes must carry a timezone")
        return int(when.timestamp() * 1_000_000_000)
    if isinstance(when, float):
        return int(when * 1_000_000_000)
    return int(when)


@dataclass
class FileInfo:
    """One file of a recording and what its header says."""

    path: Path
    hour: datetime
    seq: int
    session: str = ""
    version: int = 0
    first_t: int = 0
    header: dict[str, Any] = field(default_factory=dict)


class Recording:
    """A recording directory: `files()`, `records()`, `markets()`; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise fmt.RecordingError(f"{self.path} is not a directory")
        self.problems: list[str] = []
        """Damage found while reading (a truncated last frame, a partial last line)."""
        self._files: list[FileInfo] | None = None

    def files(self) -> list[FileInfo]:
        """Every recording file, in (hour, seq) order, with its header read."""
        if self._files is None:
            out: list[FileInfo] = []
            for p in sorted(self.path.iterdir()):
                name = fmt.parse_name(p.name)
                if name is None or not p.is_file():
                    continue
                info = FileInfo(p, name.hour, name.seq)
                if self._read_header(info):
                    out.append(info)
            if not out:
                raise fmt.RecordingError(f"{self.path} holds no recording files")
            out.sort(key=lambda f: (f.hour, f.seq))
            self._files = out
        return self._files

    def _read_header(self, info: FileInfo) -> bool:
        """Read `info`'s header; False for a file cut short before its header was whole (a
        kill or a full disk right after it was created): skipped, and said so."""
        for rec in _lines(info.path, problems=None):
            if rec.get("k") != fmt.HEADER:
                raise fmt.RecordingError(f"{info.path.name}: first record is not a header")
            version = rec.get("version")
            if rec.get("format") != fmt.FORMAT or not isinstance(version, int):
                raise fmt.RecordingError(f"{info.path.name}: not a polyd recording")
            if version > fmt.VERSION:
                raise fmt.RecordingError(
                    f"{info.path.name}: recording format version {version} is newer than this "
                    f"polyd reads ({fmt.VERSION})"
                )
            info.version, info.session = version, str(rec.get("session", ""))
            info.first_t, info.header = int(rec.get("t", 0)), rec
            return True
        self._problem(f"{info.path.name}: no whole header (file cut short at its start); skipped")
        return False

    def records(
        self,
        *,
        start: datetime | int | float | None = None,
        end: datetime | int | float | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Iterator[fmt.Record]:
        """Every record with `start <= t < end`, in receive-time order across files.

        Headers and end records are returned too unless `kinds` leaves them out. Files of one
        writer session are read one after another; sessions that overlap in time (two
        recorders writing to one directory) are merged by `t`.
        """
        lo, hi = to_ns(start), to_ns(end)
        want = frozenset(kinds) if kinds is not None else None
        sessions: dict[str, list[FileInfo]] = {}
        for f in self.files():
            hour_ns = int(f.hour.timestamp()) * 1_000_000_000
            if lo is not None and hour_ns + fmt.HOUR_NS <= lo:
                continue
            if hi is not None and hour_ns >= hi:
                continue
            sessions.setdefault(f.session, []).append(f)
        chains = [self._chain(fs, lo, hi, want) for fs in sessions.values()]
        if len(chains) == 1:
            yield from chains[0]
        else:
            yield from heapq.merge(*chains, key=lambda r: r.t)

    def _chain(
        self, files: list[FileInfo], lo: int | None, hi: int | None, want: frozenset[str] | None
    ) -> Iterator[fmt.Record]:
        for f in files:
            for raw in _lines(f.path, problems=self.problems):
                try:
                    kind, t, m = str(raw.pop("k")), int(raw.pop("t")), int(raw.pop("m"))
                except (KeyError, TypeError, ValueError):
                    self._problem(f"{f.path.name}: a record without k/t/m skipped")
                    continue
                if (lo is not None and t < lo) or (hi is not None and t >= hi):
                    continue
                if want is not None and kind not in want:
                    continue
                yield fmt.Record(kind, t, m, raw, f.session)

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            log.warning("recording_damaged", problem=text)

    def markets(self) -> dict[str, dict[str, Any]]:
        """The latest Gamma row of every recorded market, by condition id."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.records(kinds=(fmt.MARKET,)):
            row = r.get("gamma")
            if isinstance(row, dict) and row.get("conditionId"):
                out[str(row["conditionId"])] = row
        return out

    def span(self) -> tuple[int, int] | None:
        """(first t, last t) of the recording's records, or None if it has none."""
        first = last = None
        for r in self.records():
            if first is None:
                first = r.t
            last = r.t
        return None if first is None or last is None else (first, last)


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def _open_decompressed(path: Path) -> _Stream:
    raw = path.open("rb")
    if path.name.endswith(fmt.ZSTD_SUFFIX):
        if zstandard is None:
            raw.close()
            raise fmt.RecordingError(f"{path.name}: reading zstd needs the zstandard package")
        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(raw, read_across_frames=True, closefd=True)
    return _GzipStream(raw)


class _GzipStream:
    """A gzip reader that closes the file under it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, size: int = -1, /) -> bytes:
        return self._gz.read(size)

    def close(self) -> None:
        self._gz.close()
        self._raw.close()


def _lines(path: Path, *, problems: list[str] | None) -> Iterator[dict[str, Any]]:
    """The records of one file as dicts; damage at the end is reported, not raised."""
    try:
        stream = _open_decompressed(path)
    except OSError as e:
        raise fmt.RecordingError(f"{path.name}: cannot open: {e.strerror or e}") from None
    buf = b""
    damage: str | None = None
    last_kind = None
    with contextlib.closing(stream):
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as e:
                damage = f"{path.name}: last frame cut short ({type(e).__name__}); read up to it"
                break
            except Exception as e:  # zstandard.ZstdError is not an OSError subclass
                if zstandard is not None and isinstance(e, zstandard.ZstdError):
                    damage = f"{path.name}: last frame cut short ({e}); read up to it"
                    break
                raise
            if not chunk:
                break
            buf += chunk
            *whole, buf = buf.split(b"\n")
            for line in whole:
                rec = _decode(line, path)
                if rec is not None:
                    last_kind = rec.get("k")
                    yield rec
    if buf.strip():
        damage = damage or f"{path.name}: last line has no end (file cut short); skipped"
    if last_kind != fmt.END:
        damage = damage or (
            f"{path.name}: no end record (still being written, or cut short by a kill or a "
            "disk error); every whole record before that was read"
        )
    if damage and problems is not None and damage not in problems:
        problems.append(damage)
        log.warning("recording_damaged", problem=damage)


def _decode(line: bytes, path: Path) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise fmt.RecordingError(f"{path.name}: a line is not JSON") from None
    if not isinstance(obj, dict):
        raise fmt.RecordingError(f"{path.name}: a line is not a JSON object")
    return obj


def read_all(path: str | Path, **kw: Any) -> list[fmt.Record]:
    """Every record of the recording at `path` (a convenience for small recordings and tests)."""
    return list(Recording(path).records(**kw))


__all__ = ["FileInfo", "Recording", "read_all", "to_ns"]
