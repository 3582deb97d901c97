"""`RECORD_DIR`: the trading daemon records its market feed (frames with receive time, Gamma rows
of the watched markets) while its sniper trades the demo scenario, and the recording replays."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

from demo import funded_key, simulator_overrides
from observability.logging import Redactor
from orchestrator import EXIT_CONFIG, EXIT_OK, Daemon
from recording import format as fmt
from recording.reader import Recording
from simulator import Simulator
from tests.helpers import make_settings

RULES = """
[[rules]]
name = "near-close"
outcome = "Yes"
min_price = "0.90"
max_price = "0.95"
min_size = "10"
max_notional = "19"
[rules.select]
ends_within_minutes = 30
tags = ["crypto"]
"""


async def test_record_dir_records_the_feed_while_the_daemon_trades(tmp_path: Path) -> None:
    rules = tmp_path / "sniper.toml"
    rules.write_text(RULES)
    out = tmp_path / "rec"
    async with Simulator(seed=4, scenario="demo", settle_delay_s=0.02) as sim:
        assert sim.scenario is not None
        ending = {t for m in sim.scenario.ending_markets for t in m.token_ids[:1]}
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, funded_key(sim, Decimal(1000))),
            copy_enabled=False,
            sniper_rules_path=rules,
            feed_ping_interval_s=1.0,
            shutdown_timeout_s=3,
            record_dir=out,
        )
        daemon = Daemon(settings, redactor=Redactor([]), duration_s=3.0)
        assert await daemon.run() == EXIT_OK

    rec = Recording(out)
    records = list(rec.records())
    kinds = Counter(r.kind for r in records)
    assert records[0].kind == fmt.HEADER
    assert records[-1].kind == fmt.END
    assert records[-1]["reason"] == "stop"
    assert rec.problems == []
    assert kinds[fmt.WS] > 3
    watched = {t for r in records if r.kind == fmt.WATCH for t in r["tokens"]}
    assert ending <= watched
    recorded = {t for row in rec.markets().values() for t in json.loads(row["clobTokenIds"])}
    assert recorded >= ending

    # Each market discovery handed the sniper is in the recording before its tokens' first
    # frame: a replay learns the market when the live sniper did (the periodic refresh of the
    # watched markets' rows alone would come up to a second later, after the first decisions).
    first_market: dict[str, int] = {}
    first_frame: dict[str, int] = {}
    for r in records:
        if r.kind == fmt.MARKET:
            for t in json.loads(r["gamma"]["clobTokenIds"]):
                first_market.setdefault(t, r.t)
        elif r.kind == fmt.WS and isinstance(r.get("d"), str):
            for t in ending:
                if t in r["d"]:
                    first_frame.setdefault(t, r.t)
    assert ending <= first_frame.keys()
    assert all(first_market[t] < first_frame[t] for t in ending), (first_market, first_frame)
    # ... once: the recorder does not ask Gamma again for a row discovery's answer gave it.
    rows_per_token = Counter(
        t for r in records if r.kind == fmt.MARKET for t in json.loads(r["gamma"]["clobTokenIds"])
    )
    assert all(rows_per_token[t] == 1 for t in ending), rows_per_token


async def test_an_unusable_record_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    async with Simulator(seed=4, settle_delay_s=0.02) as sim:
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, funded_key(sim, Decimal(1000))),
            copy_enabled=False,
            record_dir=blocker / "rec",
        )
        daemon = Daemon(settings, redactor=Redactor([]), duration_s=2.0)
        assert await daemon.run() == EXIT_CONFIG
