"""The recording format: the writer's files read back by the one reader; rotation, drops, damage
and disk errors (a real RLIMIT_FSIZE in a child process, and the writer's opener seam)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import zstandard

from recording import format as fmt
from recording.format import RecordingError
from recording.reader import Recording, read_all
from recording.writer import RecordWriter
from tests.helpers import PYTHON, ROOT, clean_env, run_cli

HOUR = fmt.HOUR_NS


class SteppedClock:
    """Wall-clock ns that the test moves by hand (to cross an hour)."""

    def __init__(self, start: datetime) -> None:
        self.now = int(start.timestamp()) * 1_000_000_000

    def __call__(self) -> int:
        return self.now


def _writer(tmp_path: Path, **kw: object) -> RecordWriter:
    w = RecordWriter(tmp_path / "rec", source={"test": True}, batch_wait_s=0.01, **kw)  # type: ignore[arg-type]  # test-only overrides
    w.start()
    return w


def _frames(n: int, w: RecordWriter) -> None:
    for i in range(n):
        assert w.put(fmt.WS, {"shard": 0, "d": json.dumps({"event_type": "book", "i": i})})


def test_round_trip_keeps_order_counts_and_header_version(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.put(fmt.MARKET, {"gamma": {"conditionId": "0xabc", "orderPriceMinTickSize": 0.01}})
    _frames(500, w)
    w.put(fmt.REST_BOOK, {"token": "1", "book": {"bids": [], "asks": []}, "why": "periodic"})
    stats = w.close()
    assert stats.failed is None
    assert stats.records == 503 + 1  # + the end record

    rec = Recording(tmp_path / "rec")
    records = list(rec.records())
    assert [r.kind for r in records[:2]] == [fmt.HEADER, fmt.MARKET]
    assert records[0]["version"] == fmt.VERSION == 1
    assert records[0]["source"] == {"test": True}
    assert records[-1].kind == fmt.END
    assert records[-1]["reason"] == "stop"
    ws = [r for r in records if r.kind == fmt.WS]
    assert [json.loads(r["d"])["i"] for r in ws] == list(range(500))
    assert all(a.t <= b.t for a, b in itertools.pairwise(records))
    assert rec.markets() == {"0xabc": {"conditionId": "0xabc", "orderPriceMinTickSize": 0.01}}
    assert rec.problems == []
    assert stats.bytes == sum(p.stat().st_size for p in w.paths)
    assert w.paths[0].name.endswith(".jsonl.zst")


def test_rotation_by_hour_starts_a_new_file_with_its_own_header(tmp_path: Path) -> None:
    clock = SteppedClock(datetime(2026, 5, 1, 10, 59, 59, tzinfo=UTC))
    w = _writer(tmp_path, wall_ns=clock)
    _frames(3, w)
    time.sleep(0.05)
    clock.now += 2_000_000_000  # 11:00:01
    _frames(2, w)
    w.close()

    names = [p.name for p in w.paths]
    assert names == ["20260501T10Z-0001.jsonl.zst", "20260501T11Z-0002.jsonl.zst"]
    first = read_all(tmp_path / "rec", end=datetime(2026, 5, 1, 11, tzinfo=UTC))
    assert [r.kind for r in first] == [fmt.HEADER, fmt.WS, fmt.WS, fmt.WS, fmt.END]
    assert first[-1]["reason"] == "rotate"
    assert all(fmt.hour_of(r.t) == fmt.hour_of(first[0].t) for r in first)
    second = read_all(tmp_path / "rec", start=datetime(2026, 5, 1, 11, tzinfo=UTC))
    assert [r.kind for r in second] == [fmt.HEADER, fmt.WS, fmt.WS, fmt.END]
    assert second[0]["seq"] == 2
    assert len(read_all(tmp_path / "rec", kinds=[fmt.WS])) == 5


def test_a_kill_mid_write_leaves_every_earlier_frame_readable(tmp_path: Path) -> None:
    w = _writer(tmp_path, batch_max=1)  # one frame per record
    _frames(50, w)
    w.close()
    path = w.paths[0]
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 20)  # into the last frame (the end record)

    rec = Recording(tmp_path / "rec")
    records = list(rec.records())
    assert [r.kind for r in records].count(fmt.WS) == 50
    assert records[-1].kind == fmt.WS
    assert len(rec.problems) == 1
    assert "no end record" in rec.problems[0]


def test_a_partial_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    _frames(3, w)
    w.close()
    with w.paths[0].open("ab") as f:
        f.write(zstandard.ZstdCompressor().compress(b'{"k":"ws","t":1,"m":1,"d":"[{\\"ev'))
    rec = Recording(tmp_path / "rec")
    assert [r.kind for r in rec.records()].count(fmt.WS) == 3
    assert any("last line has no end" in p for p in rec.problems)


def test_a_full_queue_drops_counts_and_records_the_gap(tmp_path: Path) -> None:
    w = RecordWriter(tmp_path / "rec", queue_max=5, batch_wait_s=0.01)
    accepted = [w.put(fmt.WS, {"shard": 0, "d": str(i)}) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert w.stats().dropped == 3
    w.start()  # the thread drains the queue; the next record brings the gap with it
    for _ in range(200):
        if w.stats().queued == 0:
            break
        time.sleep(0.01)
    assert w.put(fmt.WS, {"shard": 0, "d": "after"})
    w.close()
    records = read_all(tmp_path / "rec")
    kinds = [r.kind for r in records]
    assert kinds == [fmt.HEADER] + [fmt.WS] * 5 + [fmt.DROPPED, fmt.WS, fmt.END]
    gap = records[6]
    assert gap["records"] == 3
    assert gap["from_t"] <= gap["to_t"] <= gap.t


def test_a_newer_format_version_is_refused_naming_the_file(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    d.mkdir()
    header = {"k": "header", "t": 1, "m": 1, "version": 99, "format": fmt.FORMAT}
    (d / "20260501T10Z-0001.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(orjson.dumps(header) + b"\n")
    )
    with pytest.raises(RecordingError, match=r"20260501T10Z-0001.*version 99 is newer"):
        Recording(d).files()


def test_a_directory_without_recordings_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RecordingError, match="holds no recording files"):
        Recording(tmp_path).files()
    with pytest.raises(RecordingError, match="is not a directory"):
        Recording(tmp_path / "notes.txt")


def test_an_unwritable_directory_is_refused_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RecordingError, match="cannot write recordings to"):
        RecordWriter(blocker / "rec").start()


def test_gzip_recordings_read_back_the_same(tmp_path: Path) -> None:
    w = _writer(tmp_path, compression="gzip")
    _frames(10, w)
    w.close()
    assert w.paths[0].name.endswith(".jsonl.gz")
    assert Counter(r.kind for r in read_all(tmp_path / "rec"))[fmt.WS] == 10


def test_a_disk_error_from_the_opener_stops_the_writer_keeping_earlier_files(
    tmp_path: Path,
) -> None:
    clock = SteppedClock(datetime(2026, 5, 1, 10, 59, 59, tzinfo=UTC))
    opened: list[Path] = []

    def opener(path: Path) -> int:
        if opened:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        opened.append(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)

    w = _writer(tmp_path, wall_ns=clock, opener=opener)
    _frames(4, w)
    time.sleep(0.05)
    clock.now += HOUR  # the rotation needs a new file: the disk is full
    _frames(1, w)
    for _ in range(200):
        if w.failed:
            break
        time.sleep(0.01)
    assert w.failed is not None
    assert w.failed.startswith("disk full")
    assert not w.put(fmt.WS, {"shard": 0, "d": "refused"})
    w.close()
    records = read_all(tmp_path / "rec")
    assert [r.kind for r in records] == [fmt.HEADER] + [fmt.WS] * 4 + [fmt.END]


_FILL_DISK = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    from recording.writer import RecordWriter
    from recording import format as fmt
    w = RecordWriter(sys.argv[1], batch_wait_s=0.005, level=1)
    w.start()
    i = 0
    while w.failed is None and i < 200_000:
        w.put(fmt.WS, {"shard": 0, "d": json.dumps({"i": i, "pad": str(i) * 40})})
        i += 1
        if i % 200 == 0:
            time.sleep(0.01)
    stats = w.close()
    print(json.dumps({"records": stats.records, "failed": stats.failed, "bytes": stats.bytes}))
    """
)


def test_a_file_size_limit_stops_the_writer_cleanly_and_keeps_what_it_wrote(
    tmp_path: Path,
) -> None:
    out = tmp_path / "rec"
    proc = subprocess.run(
        [PYTHON, "-c", _FILL_DISK, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"].startswith("file size limit reached")
    said = (proc.stdout + proc.stderr).splitlines()
    stop_lines = [line for line in said if "recording_stopped" in line]
    assert len(stop_lines) == 1  # says so, once
    files = sorted(out.iterdir())
    assert len(files) == 1
    assert files[0].stat().st_size == result["bytes"] <= 20_000  # cut back to a whole frame
    rec = Recording(out)
    records = list(rec.records())
    assert len(records) == result["records"] > 10
    assert [json.loads(r["d"])["i"] for r in records[1:]] == list(range(len(records) - 1))
    assert any("no end record" in p for p in rec.problems)


def test_record_command_refuses_bad_selections_with_exit_2(tmp_path: Path) -> None:
    env = clean_env()
    out = str(tmp_path / "rec")
    none = run_cli("record", "--env-file", "none", "--out", out, env=env)
    assert none.returncode == 2
    assert "one of the arguments --slugs --tags --rules is required" in none.stderr
    bad = tmp_path / "rules.toml"
    bad.write_text("[[rules]]\nname = 'x'\n")
    rules = run_cli("record", "--env-file", "none", "--out", out, "--rules", str(bad), env=env)
    assert rules.returncode == 2
    assert "rule 'x' (#1) field select: Field required" in rules.stderr
    interval = run_cli(
        "record", "--env-file", "none", "--out", out, "--slugs", "a", "--snapshot-interval", "0",
        env=env,
    )  # fmt: skip
    assert interval.returncode == 2
    assert "record: --snapshot-interval must be greater than 0" in interval.stderr
    assert not (tmp_path / "rec").exists()  # nothing created for a refused run


def test_a_file_cut_short_before_its_header_is_skipped_and_reported(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    _frames(3, w)
    w.close()
    (tmp_path / "rec" / "20300101T00Z-0009.jsonl.zst").write_bytes(b"")  # killed at creation
    rec = Recording(tmp_path / "rec")
    assert Counter(r.kind for r in rec.records())[fmt.WS] == 3
    assert rec.problems == [
        "20300101T00Z-0009.jsonl.zst: no whole header (file cut short at its start); skipped"
    ]
