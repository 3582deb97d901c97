"""The recorder against the simulator's demo scenario over real sockets (Gamma discovery, the
market websocket, REST books), read back through the one reader; a feed drop is a gap and the
recording goes on; `python -m orchestrator record` under a real file size limit stops cleanly."""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from recording import format as fmt
from recording.reader import Recording
from recording.recorder import Selection, record
from simulator import Simulator
from tests.helpers import PYTHON, ROOT, clean_env, make_settings, until

SLUGS = ("btc-above-100k", "eth-window-0")


@pytest.fixture
async def demo() -> AsyncIterator[Simulator]:
    async with Simulator(seed=3, scenario="demo", settle_delay_s=0.02) as sim:
        yield sim


def _settings(tmp_path: Path, sim: Simulator) -> object:
    return make_settings(
        tmp_path,
        clob_host=sim.clob_url,
        gamma_api_url=sim.gamma_url,
        market_ws_url=sim.market_ws_url,
        feed_ping_interval_s=1.0,
        feed_stale_after_s=3.0,
        user_feed_stale_after_s=4.0,
    )


def _events(r: fmt.Record) -> list[dict[str, object]]:
    if r["d"] == "PONG":  # keepalive answers are recorded as received too
        return []
    body = orjson.loads(r["d"])
    return body if isinstance(body, list) else [body]


async def test_recording_the_demo_reads_back_in_order_with_metadata_first(
    demo: Simulator, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    summary = await record(
        _settings(tmp_path, demo),  # type: ignore[arg-type]  # Settings
        Selection(slugs=SLUGS),
        out,
        duration_s=3.0,
        snapshot_interval_s=1.0,
        progress_interval_s=1.0,
    )
    assert summary.failed is None
    assert summary.stopped_by == "duration"
    assert summary.markets == 2
    assert summary.tokens == 4
    assert summary.gaps == 0

    rec = Recording(out)
    records = list(rec.records())
    kinds = Counter(r.kind for r in records)
    assert records[0].kind == fmt.HEADER
    assert records[0]["version"] == fmt.VERSION
    assert records[-1].kind == fmt.END
    assert kinds[fmt.MARKET] == 2
    assert kinds[fmt.WS] == summary.frames > 5
    assert kinds[fmt.REST_BOOK] >= 4  # every token at least once a second
    assert sum(kinds.values()) == summary.records
    assert all(a.t <= b.t and a.m <= b.m for a, b in itertools.pairwise(records))
    assert rec.problems == []

    # Metadata, then the watch, then frames; every token's first event is its book snapshot.
    first_ws = next(i for i, r in enumerate(records) if r.kind == fmt.WS)
    assert {r.kind for r in records[:first_ws]} == {fmt.HEADER, fmt.MARKET, fmt.WATCH}
    markets = rec.markets()
    by_slug = {row["slug"]: row for row in markets.values()}
    assert set(by_slug) == set(SLUGS)
    sim_market = demo.markets_by_cid[by_slug["eth-window-0"]["conditionId"]]
    assert json.loads(by_slug["eth-window-0"]["clobTokenIds"]) == list(sim_market.token_ids)
    assert by_slug["eth-window-0"]["feeSchedule"]["rate"] == 0.072
    first_seen: dict[str, str] = {}
    for r in records:
        if r.kind == fmt.WS:
            for ev in _events(r):
                tok = ev.get("asset_id") or ev["price_changes"][0]["asset_id"]  # type: ignore[index]  # a price_change
                first_seen.setdefault(str(tok), str(ev["event_type"]))
    assert set(first_seen.values()) == {"book"}


async def test_a_feed_drop_is_recorded_as_a_gap_and_recording_continues(
    demo: Simulator, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    stop = asyncio.Event()
    task = asyncio.create_task(
        record(
            _settings(tmp_path, demo),  # type: ignore[arg-type]  # Settings
            Selection(slugs=SLUGS),
            out,
            stop=stop,
            snapshot_interval_s=30.0,
        )
    )
    await until(lambda: any(c.frames_sent >= 3 for c in demo.market_hub.conns), 10.0)
    before = set(demo.market_hub.conns)
    assert await demo.drop_websockets("market") == 1

    def reconnected() -> bool:
        return any(c.subscribed and c.frames_sent >= 3 for c in demo.market_hub.conns - before)

    await until(reconnected, 15.0)
    stop.set()
    summary = await task
    assert summary.gaps == 1
    assert summary.stopped_by == "signal"

    records = list(Recording(out).records())
    kinds = [r.kind for r in records]
    assert kinds.count(fmt.GAP_START) == 1
    assert kinds.count(fmt.GAP_END) == 1
    start, end = kinds.index(fmt.GAP_START), kinds.index(fmt.GAP_END)
    assert start < end
    assert records[start]["tokens"] == records[end]["tokens"] == 4
    assert fmt.WS in kinds[:start]
    after = [r for r in records[end:] if r.kind == fmt.WS]
    assert after, "frames keep coming after the gap"
    # The resync: the first frame after the gap carries a fresh book for every token.
    books = {ev["asset_id"] for ev in _events(after[0]) if ev.get("event_type") == "book"}
    assert len(books) == 4


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG rather than death
    resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))


async def test_record_command_under_a_file_size_limit_stops_cleanly_and_keeps_its_records(
    demo: Simulator, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    env = clean_env(
        CLOB_HOST=demo.clob_url,
        GAMMA_API_URL=demo.gamma_url,
        MARKET_WS_URL=demo.market_ws_url,
        LOG_FORMAT="json",
    )
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "orchestrator", "record", "--env-file", "none", "--out", str(out),
        "--slugs", *SLUGS, "--duration", "40", "--snapshot-interval", "0.05",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    text_out, text_err = stdout.decode(), stderr.decode()
    assert proc.returncode == 1, text_err
    summary = json.loads(text_out.strip().splitlines()[-1])
    assert summary["failed"].startswith("file size limit reached")
    assert summary["stopped_by"] == "disk_error"
    said = [line for line in text_err.splitlines() if line.startswith("polyd record: stopped")]
    assert said == [
        f"polyd record: stopped: {summary['failed']}; {summary['records']} records kept in {out}"
    ]
    rec = Recording(out)
    records = list(rec.records())
    assert len(records) == summary["records"] > 10
    assert records[0].kind == fmt.HEADER
    assert Counter(r.kind for r in records)[fmt.MARKET] == 2
    assert any("no end record" in p for p in rec.problems)
