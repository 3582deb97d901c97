"""The simulator serving a recording (`Simulator(replay=DIR)`, `python -m simulator --replay`):
a recording of the demo scenario is re-sent frame for frame to a real websocket client, its
levels are the REST books, and the real py-clob-client-v2 trades against them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets
from py_clob_client_v2.clob_types import OrderArgsV2, OrderType

from recording import format as fmt
from recording.reader import Recording
from recording.recorder import Selection, record
from simulator import Simulator
from simulator.replay import REPLAY_MAKER
from simulator.testing import new_trader
from tests.harness import SimProcess
from tests.helpers import PYTHON, ROOT, make_settings

SLUGS = ("btc-above-100k", "eth-window-0")
D = Decimal


@pytest.fixture
async def recording(tmp_path: Path) -> Path:
    out = tmp_path / "rec"
    async with Simulator(seed=7, scenario="demo", settle_delay_s=0.02) as sim:
        settings = make_settings(
            tmp_path,
            clob_host=sim.clob_url,
            gamma_api_url=sim.gamma_url,
            market_ws_url=sim.market_ws_url,
        )
        summary = await record(
            settings, Selection(slugs=SLUGS), out, duration_s=3.0, snapshot_interval_s=1.0
        )
    assert summary.failed is None
    assert summary.frames > 5
    return out


def _frames(rec: Recording) -> list[str]:
    return [r["d"] for r in rec.records(kinds=[fmt.WS]) if r["d"] != "PONG"]


def _tokens(rec: Recording) -> list[str]:
    return [t for row in rec.markets().values() for t in json.loads(row["clobTokenIds"])]


async def test_replay_sends_the_recorded_frames_to_a_real_websocket_client(
    recording: Path,
) -> None:
    rec = Recording(recording)
    want = _frames(rec)
    async with Simulator(replay=recording, speed=4.0) as sim:
        assert {m.slug for m in sim.markets} == set(SLUGS)
        async with websockets.connect(sim.market_ws_url) as ws:
            await ws.send(json.dumps({"assets_ids": _tokens(rec), "type": "market"}))
            got: list[str] = []
            dump = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert {ev["event_type"] for ev in dump} == {"book"}  # the subscription's own dump
            while len(got) < len(want):
                got.append(str(await asyncio.wait_for(ws.recv(), 5)))
            await asyncio.wait_for(sim.replay.finished.wait(), 5)  # type: ignore[union-attr]  # set by replay=
    assert got == want  # the same bytes, in the same order


def _expected_book(rec: Recording, token: str) -> dict[str, dict[Decimal, Decimal]]:
    """The token's book at the end of the recording, rebuilt from its records."""
    book: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}

    def replace(body: dict[str, object]) -> None:
        for side, key in (("BUY", "bids"), ("SELL", "asks")):
            book[side] = {D(lv["price"]): D(lv["size"]) for lv in body[key]}  # type: ignore[attr-defined]  # wire levels

    for r in rec.records(kinds=[fmt.WS, fmt.REST_BOOK]):
        if r.kind == fmt.REST_BOOK:
            if r["token"] == token:
                replace(r["book"])
            continue
        if r["d"] == "PONG":
            continue
        body = orjson.loads(r["d"])
        for ev in body if isinstance(body, list) else [body]:
            if ev.get("event_type") == "book" and ev["asset_id"] == token:
                replace(ev)
            elif ev.get("event_type") == "price_change":
                for ch in ev["price_changes"]:
                    if ch["asset_id"] == token:
                        levels = book[ch["side"]]
                        levels[D(ch["price"])] = D(ch["size"])
                        if D(ch["size"]) == 0:
                            del levels[D(ch["price"])]
    return book


async def test_replayed_levels_are_the_rest_book_and_orders_take_them(recording: Path) -> None:
    rec = Recording(recording)
    yes = json.loads(rec.markets()[next(iter(rec.markets()))]["clobTokenIds"])[0]
    expected = _expected_book(rec, yes)
    async with Simulator(replay=recording, speed=20.0, settle_delay_s=0.02) as sim:
        assert sim.replay is not None
        async with websockets.connect(sim.market_ws_url) as ws:
            await ws.send(json.dumps({"assets_ids": _tokens(rec), "type": "market"}))
            await asyncio.wait_for(sim.replay.finished.wait(), 10)
        assert sim.replay.skipped_levels == 0
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{sim.clob_url}/book", params={"token_id": yes})
            served = await resp.json()
        got = {
            "BUY": {D(lv["price"]): D(lv["size"]) for lv in served["bids"]},
            "SELL": {D(lv["price"]): D(lv["size"]) for lv in served["asks"]},
        }
        assert got == expected
        assert expected["SELL"], "the demo recording has asks"

        best_ask = min(expected["SELL"])
        size = min(expected["SELL"][best_ask], D(5))
        client, _acct = await asyncio.to_thread(new_trader, sim, D(100))
        args = OrderArgsV2(yes, float(best_ask), float(size), "BUY")
        order = await asyncio.to_thread(client.create_order, args)
        res = await asyncio.to_thread(client.post_order, order, OrderType.FOK)
        assert res["status"] == "matched"
        (trade,) = await asyncio.to_thread(client.get_trades)
        assert trade["price"] == str(best_ask)
        makers = {m["maker_address"].lower() for m in trade["maker_orders"]}
        assert makers == {REPLAY_MAKER}


async def test_python_m_simulator_replay_serves_the_recording_over_its_urls(
    recording: Path, tmp_path: Path
) -> None:
    rec = Recording(recording)
    want = _frames(rec)
    args = ("--replay", str(recording), "--speed", "5")
    with SimProcess(workdir=tmp_path / "sim", scenario=None, extra_args=args) as sim:
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{sim.gamma_url}/markets", params={"slug": list(SLUGS)})
            rows = await resp.json()
        assert {r["conditionId"] for r in rows} == set(rec.markets())
        async with websockets.connect(sim.market_ws_url) as ws:
            await ws.send(json.dumps({"assets_ids": _tokens(rec), "type": "market"}))
            await asyncio.wait_for(ws.recv(), 5)  # the subscription's own book dump
            got = [str(await asyncio.wait_for(ws.recv(), 5)) for _ in want]
        assert got == want
        assert sim.stop() == 0


def test_python_m_simulator_refuses_a_directory_that_is_not_a_recording(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [PYTHON, "-m", "simulator", "--replay", str(tmp_path / "empty")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "cannot replay" in proc.stderr
    assert "holds no recording files" in proc.stderr
