"""The recording writer: append-only, hourly-rotated, compressed files, written off the loop.

`put()` is called on the event loop and never touches the disk: it stamps the record with its
receive times and hands it to a bounded queue. One writer thread takes what accumulated (up to
`batch_max` records or `batch_wait_s` of them), serialises it, compresses it as one frame and
appends it with a single `write`; a process killed at any moment leaves every earlier frame
readable. When the queue is full the record is dropped, counted, and a `dropped` record (a gap of
the recorder's own making) goes in as soon as there is room again.

A disk error (ENOSPC, EFBIG past a file size limit, EDQUOT, EIO, ...) stops the writer: the
half-written frame is cut off so the file ends on a whole frame, one log line says why, `failed`
holds the reason, and every later `put` is refused. What was written stays readable.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from recording import format as fmt

try:  # zstandard is a declared dependency; gzip keeps a stripped-down install recording
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the package
    zstandard = None  # type: ignore[assignment]  # gzip is used instead

log = structlog.get_logger("recording")

QUEUE_MAX: Final = 100_000
BATCH_MAX: Final = 5_000
BATCH_WAIT_S: Final = 0.5

Opener = Callable[[Path], int]
"""Open a new file for appending and return its descriptor (the seam tests can fail)."""


def open_new(path: Path) -> int:
    """Create `path` (it must not exist) for appending; return the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


def default_compression() -> str:
    """`zstd` when the `zstandard` package is installed, else `gzip`."""
    return "zstd" if zstandard is not None else "gzip"


def _why(e: OSError) -> str:
    return {
        errno.ENOSPC: "disk full",
        errno.EFBIG: "file size limit reached",
        errno.EDQUOT: "disk quota exceeded",
        errno.EIO: "disk I/O error",
    }.get(e.errno or 0, "disk error")


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer has done so far."""

    records: int
    bytes: int
    files: int
    dropped: int
    queued: int
    failed: str | None


_STOP: Final = object()


class RecordWriter:
    """Write records to `out_dir` in the recording format; see the module docstring.

    `source` goes into every file header. `wall_ns`/`mono_ns` stamp records (injected so tests
    can cross an hour); `opener` creates files (injected so tests can fail it).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        source: Mapping[str, Any] | None = None,
        compression: str | None = None,
        level: int = 3,
        queue_max: int = QUEUE_MAX,
        batch_max: int = BATCH_MAX,
        batch_wait_s: float = BATCH_WAIT_S,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        opener: Opener = open_new,
    ) -> None:
        compression = compression or default_compression()
        if compression not in ("zstd", "gzip"):
            raise ValueError(f"compression must be zstd or gzip, not {compression!r}")
        if compression == "zstd" and zstandard is None:
            raise fmt.RecordingError("zstd compression needs the zstandard package")
        if queue_max < 1 or batch_max < 1:
            raise ValueError("queue_max and batch_max must be >= 1")
        self.out_dir = Path(out_dir)
        self.source = dict(source or {})
        self.compression = compression
        self.suffix = fmt.ZSTD_SUFFIX if compression == "zstd" else fmt.GZIP_SUFFIX
        self._level = level
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self.wall_ns = wall_ns
        self.mono_ns = mono_ns
        self._opener = opener
        self.session = secrets.token_hex(8)
        self._thread: threading.Thread | None = None
        # Loop side.
        self._dropped = 0
        self._drop_from = 0
        self._drop_to = 0
        self._drops_pending = 0
        self._closed = False
        # Writer-thread side (read from the loop only as plain ints / str).
        self.records = 0
        self.bytes = 0
        self.files = 0
        self.failed: str | None = None
        self.paths: list[Path] = []
        self._fd: int | None = None
        self._hour = -1
        self._file_records = 0
        self._seq = 0
        self._offset = 0
        self._compress: Callable[[bytes], bytes] = self._compressor()

    def _compressor(self) -> Callable[[bytes], bytes]:
        if self.compression == "zstd":
            assert zstandard is not None
            cctx = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
            return cctx.compress
        level = min(max(self._level, 1), 9)
        return lambda data: gzip.compress(data, compresslevel=level, mtime=0)

    # --- loop side ---------------------------------------------------------------------
    def start(self) -> None:
        """Create `out_dir` if needed and start the writer thread; RecordingError if the
        directory cannot be used."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / f".polyd-write-test-{self.session}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise fmt.RecordingError(
                f"cannot write recordings to {self.out_dir}: {e.strerror or e}"
            ) from None
        seqs = [
            p.seq for p in (fmt.parse_name(n.name) for n in self.out_dir.iterdir()) if p is not None
        ]
        self._seq = max(seqs, default=0)
        self._thread = threading.Thread(
            target=self._run, name=f"recording-writer:{self.session}", daemon=True
        )
        self._thread.start()

    def put(self, kind: str, fields: Mapping[str, Any], *, t: int | None = None) -> bool:
        """Queue one record (stamped now unless `t` is given); False if it was dropped."""
        if self._closed or self.failed is not None:
            return False
        now_t = self.wall_ns() if t is None else t
        item = (kind, now_t, self.mono_ns(), fields)
        if self._drops_pending:
            gap = (
                fmt.DROPPED,
                now_t,
                item[2],
                {"records": self._drops_pending, "from_t": self._drop_from, "to_t": self._drop_to},
            )
            try:
                self._q.put_nowait(gap)
            except queue.Full:
                self._drop(now_t)
                return False
            self._drops_pending = 0
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self._drop(now_t)
            return False
        return True

    def _drop(self, t: int) -> None:
        if not self._drops_pending:
            self._drop_from = t
            log.warning("recording_queue_full", queued=self._q.qsize())
        self._drops_pending += 1
        self._dropped += 1
        self._drop_to = t

    def close(self, timeout_s: float = 30.0) -> WriterStats:
        """Write what is queued, end the current file and stop the thread (blocking: call it
        off the loop, e.g. `await asyncio.to_thread(writer.close)`)."""
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                while self._thread.is_alive():
                    try:
                        self._q.put(_STOP, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("recording_writer_stuck", timeout_s=timeout_s)
        return self.stats()

    def stats(self) -> WriterStats:
        """Counters so far (records and bytes written, files, drops, the failure if any)."""
        return WriterStats(
            records=self.records,
            bytes=self.bytes,
            files=self.files,
            dropped=self._dropped,
            queued=self._q.qsize(),
            failed=self.failed,
        )

    @property
    def running(self) -> bool:
        """True while the writer thread is alive and has not failed."""
        return self._thread is not None and self._thread.is_alive() and self.failed is None

    # --- writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._q.get()
            except Exception:  # pragma: no cover - queue.get does not fail
                return
            batch: list[Any] = [first]
            deadline = time.monotonic() + self._batch_wait_s
            while len(batch) < self._batch_max and batch[-1] is not _STOP:
                left = deadline - time.monotonic()
                try:
                    batch.append(self._q.get(timeout=left) if left > 0 else self._q.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP:
                batch.pop()
                stop = True
            try:
                self._write_batch(batch)
                if stop:
                    self._close_file("stop")
            except OSError as e:
                self._fail(e)
                return
            except Exception:  # the thread's loop boundary: never die silently
                log.exception("recording_writer_crashed")
                self.failed = "writer crashed"
                self._abandon_file()
                return

    def _write_batch(self, batch: list[Any]) -> None:
        lines: list[bytes] = []
        n = 0
        for kind, t, m, fields in batch:
            hour = fmt.hour_of(t)
            if self._fd is None or hour != self._hour:
                self._flush(lines, n)
                lines, n = [], 0
                if self._fd is not None:
                    self._close_file("rotate")
                self._open_file(hour, t, m)
            lines.append(_line(kind, t, m, fields))
            n += 1
        self._flush(lines, n)

    def _flush(self, lines: list[bytes], n: int) -> None:
        if not lines:
            return
        assert self._fd is not None
        self._append(self._compress(b"".join(lines)))
        self.records += n
        self._file_records += n

    def _append(self, frame: bytes) -> None:
        assert self._fd is not None
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._offset += len(frame)
        self.bytes += len(frame)

    def _open_file(self, hour: int, t: int, m: int) -> None:
        while True:
            self._seq += 1
            path = self.out_dir / fmt.file_name(hour, self._seq, self.suffix)
            try:
                self._fd = self._opener(path)
                break
            except FileExistsError:
                continue  # another writer took this number: take the next
        self._hour, self._offset, self._file_records = hour, 0, 0
        self.files += 1
        self.paths.append(path)
        header = {
            "version": fmt.VERSION,
            "format": fmt.FORMAT,
            "session": self.session,
            "seq": self._seq,
            "compression": self.compression,
            "started": datetime.fromtimestamp(t / 1e9, UTC).isoformat(),
            "source": self.source,
        }
        self._flush([_line(fmt.HEADER, t, m, header)], 1)
        log.info("recording_file_opened", path=str(path))

    def _close_file(self, reason: str) -> None:
        if self._fd is None:
            return
        t, m = self.wall_ns(), self.mono_ns()
        # The end record carries the hour of the file it closes, never the next one's.
        t = min(max(t, self._hour), self._hour + fmt.HOUR_NS - 1)
        records = self._file_records + 1
        self._flush([_line(fmt.END, t, m, {"records": records, "reason": reason})], 1)
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fail(self, e: OSError) -> None:
        why = _why(e)
        self.failed = f"{why}: {e.strerror or e}"
        kept = self._abandon_file()
        log.error(
            "recording_stopped",
            reason=why,
            error=str(e),
            records_kept=self.records,
            files=self.files,
            last_file=str(kept) if kept else None,
        )

    def _abandon_file(self) -> Path | None:
        """Cut the current file back to its last whole frame and close it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self._offset)
        with contextlib.suppress(OSError):
            os.close(fd)
        return self.paths[-1] if self.paths else None


def _line(kind: str, t: int, m: int, fields: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"k": kind, "t": t, "m": m, **fields}) + b"\n"
