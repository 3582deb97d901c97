"""The backtest's done-when: the live daemon trades the demo scenario with the demo's sniper rules
while its recorder (`RECORD_DIR`, the real recorder tap) records the feed; `backtest` replays that
recording with the same rules and reproduces the live sniper's orders and fills (same token,
side, type and size; prices within one tick), and two runs (different hash seeds) write
byte-identical JSON.

Both sides decide frame by frame (the live feed yields after each frame it applies, the replay
settles after each record), so they see the same books. What the replay cannot know at latency
0 is the live order's flight to the venue: the demo's dips last a second or two and its takers
and makers hit and cancel them, so on a loaded machine a live order can arrive after the dip
it was sent for is gone (and fill at the next level), or the sniper, waiting for that order to
return, decides on a later book. A pair that disagrees must therefore agree once the replay is
given the flight time the live orders actually had (`backtest --latency-ms`, the journal's
created → last update), and at most one pair may need it."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from demo import DEMO_SEED, funded_key, simulator_overrides, write_sniper_rules
from observability.logging import Redactor
from orchestrator import EXIT_OK, Daemon
from simulator import Simulator
from tests.helpers import ROOT, clean_env, make_settings, run_cli

TICK = Decimal("0.01")  # the demo scenario's markets


async def _live_run(tmp_path: Path, duration_s: float) -> tuple[Path, Path, Path]:
    """Run the daemon live on the demo scenario, recording; return (db, rules, recording)."""
    out = tmp_path / "rec"
    async with Simulator(seed=DEMO_SEED, scenario="demo") as sim:
        rules = write_sniper_rules(sim, tmp_path)
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, funded_key(sim, Decimal(5000))),
            **rules,
            copy_enabled=False,
            discovery_interval_s=10.0,
            record_dir=out,
            shutdown_timeout_s=3,
        )
        daemon = Daemon(settings, redactor=Redactor([]), duration_s=duration_s)
        assert await daemon.run() == EXIT_OK
    return settings.db_path, rules["sniper_rules_path"], out


def _live_orders(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT token_id, side, order_type, price, size, size_matched, avg_price, "
            "created_at, updated_at FROM orders WHERE strategy = 'sniper' ORDER BY created_at"
        ).fetchall()
    return [
        {
            "token_id": r[0],
            "side": r[1],
            "type": r[2],
            "price": Decimal(r[3]),
            "size": Decimal(r[4]),
            "filled": Decimal(r[5] or 0),
            "avg_price": Decimal(r[6]) if r[6] else None,
            "flight_ms": math.ceil(
                (datetime.fromisoformat(r[8]) - datetime.fromisoformat(r[7])).total_seconds() * 1000
            ),
        }
        for r in rows
    ]


def _backtest(data: Path, rules: Path, out: Path, seed: int, latency_ms: int = 0) -> dict[str, Any]:
    env = {**clean_env(PYTHONHASHSEED=str(seed)), "PYTHONPATH": str(ROOT)}
    p = run_cli(
        "backtest", "--data", str(data), "--sniper-rules", str(rules), "--out", str(out),
        "--latency-ms", str(latency_ms), "--json", env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _key(o: dict[str, Any]) -> tuple[str, str, str]:
    return (o["token_id"], o["side"], o["type"])


def _disagreement(bo: dict[str, Any], lo: dict[str, Any]) -> str | None:
    """What a replayed order `bo` gets wrong about the live order `lo`, or None."""
    if Decimal(bo["size"]) != lo["size"]:
        return f"size {bo['size']} against {lo['size']}"
    if abs(Decimal(bo["price"]) - lo["price"]) > TICK:
        return f"price {bo['price']} against {lo['price']}"
    if (Decimal(bo["filled"]) > 0) != (lo["filled"] > 0):
        return f"filled {bo['filled']} against {lo['filled']}"
    if lo["avg_price"] is not None:
        if abs(Decimal(bo["avg_price"]) - lo["avg_price"]) > TICK:
            return f"avg price {bo['avg_price']} against {lo['avg_price']}"
        # Both spend a BUY's pUSD at the makers' prices; the amounts' rounding may differ slightly.
        if abs(Decimal(bo["filled"]) - lo["filled"]) >= Decimal("0.01"):
            return f"filled {bo['filled']} against {lo['filled']}"
    return None


def _pairs(
    replayed: list[dict[str, Any]], live: list[dict[str, Any]]
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(index in live, replayed order, live order), matched in order within (token, side, type)."""
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for o in replayed:
        by_key.setdefault(_key(o), []).append(o)
    return [(i, by_key[_key(lo)].pop(0), lo) for i, lo in enumerate(live)]


async def test_backtest_of_the_recorded_demo_reproduces_the_live_sniper(tmp_path: Path) -> None:
    db, rules, data = await _live_run(tmp_path, duration_s=25.0)
    live = _live_orders(db)
    assert live, "the live sniper placed no order: nothing to reproduce"

    first = _backtest(data, rules, tmp_path / "bt1", seed=1)
    second = _backtest(data, rules, tmp_path / "bt2", seed=2)
    a = (tmp_path / "bt1" / "backtest.json").read_bytes()
    assert a == (tmp_path / "bt2" / "backtest.json").read_bytes()
    first.pop("report"), second.pop("report")
    assert first == second
    assert (tmp_path / "bt1" / "backtest.html").stat().st_size > 10_000

    replayed = first["orders"]
    assert sorted(map(_key, replayed)) == sorted(map(_key, live)), (replayed, live)
    raced = [(i, bo, lo) for i, bo, lo in _pairs(replayed, live) if _disagreement(bo, lo)]
    assert len(raced) <= 1, [(bo, lo, _disagreement(bo, lo)) for _, bo, lo in raced]
    for i, bo, lo in raced:
        # Given the flight times the live orders had, the replay must make the live order.
        flights = sorted({o["flight_ms"] for o in live})
        tried = {}
        for ms in flights:
            again = _backtest(data, rules, tmp_path / f"bt-{ms}ms", seed=1, latency_ms=ms)
            if sorted(map(_key, again["orders"])) != sorted(map(_key, live)):
                tried[ms] = "different orders"
                continue
            tried[ms] = _disagreement(_pairs(again["orders"], live)[i][1], lo) or "agrees"
            if tried[ms] == "agrees":
                break
        assert "agrees" in tried.values(), (lo, _disagreement(bo, lo), tried)
    fills = first["fills"]
    assert len(fills) >= sum(1 for o in live if o["filled"] > 0)
    assert all(f["role"] == "TAKER" and Decimal(f["fee"]) >= 0 for f in fills)
