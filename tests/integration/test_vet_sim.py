"""`vet WALLET` against the simulator's Data API and Gamma over real sockets.

A scripted leader (known trades, known resolutions) and other wallets trading in the same
markets; the copier PnL `vet` reports is checked against figures computed here by hand from the
model docs/backtesting.md states (lag, slippage from the market's trades, taker fee
`C x rate x p x (1 - p)` for exponent 1, price improvement in shares, payout 1/0).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import ROUND_DOWN, ROUND_FLOOR, Decimal
from pathlib import Path

import pytest

from backtest import vet
from backtest.fetch import fetch
from simulator import Simulator
from simulator.testing import add_fee_market
from strategies.copy_trader.rules import parse_rules
from tests.helpers import clean_env, run_cli
from venue.data_api import DataApiBudget, DataApiClient
from venue.gamma import GammaClient

D = Decimal
LEADER = "0x" + "1e" * 20
OTHER = "0x" + "07" * 20
DAY = 86_400


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11, settle_delay_s=0.02) as s:
        yield s


def env(sim: Simulator, hash_seed: int) -> dict[str, str]:
    return clean_env(
        DATA_API_URL=sim.data_url,
        GAMMA_API_URL=sim.gamma_url,
        MODE="paper",
        PYTHONHASHSEED=str(hash_seed),  # sets and dicts of str iterate differently per seed
    )


async def vet_cli(sim: Simulator, *args: str, hash_seed: int = 0) -> tuple[int, str, str]:
    res = await asyncio.to_thread(
        run_cli, "vet", *args, "--env-file", "none", env=env(sim, hash_seed)
    )
    return res.returncode, res.stdout, res.stderr


async def fetch_and_simulate(
    sim: Simulator, rule_doc: dict[str, object], *, lag_s: int, end: int
) -> vet.VetResult:
    import aiohttp

    from resilience.clock import SystemClock

    rule = parse_rules({"wallets": [{"address": LEADER, **rule_doc}]}).wallets[0]
    async with aiohttp.ClientSession() as session:
        api = DataApiClient(
            base_url=sim.data_url,
            budget=DataApiBudget(1.0, clock=SystemClock()),
            session=session,
            page_size=500,
        )
        gamma = GammaClient(base_url=sim.gamma_url, session=session)
        data = await fetch(LEADER, data_api=api, gamma=gamma, start=end - 3 * DAY, end=end)
    return vet.simulate(data, rule, lag_s=lag_s)


async def test_scripted_leader_copier_pnl_matches_hand_arithmetic(
    sim: Simulator, tmp_path: Path
) -> None:
    now = int(time.time())
    t0 = now - 2 * DAY
    # Market A charges the crypto taker fee (rate 0.072, exponent 1); market B charges none.
    a = add_fee_market(sim, "Will A happen?", "vet-a")
    b = sim.add_market(question="Will B happen?", slug="vet-b")
    a_yes, b_yes = a.token_ids[0], b.token_ids[0]
    sim.trade_as(LEADER, a_yes, "BUY", D("0.40"), D(100), at=t0)
    sim.trade_as(OTHER, a_yes, "BUY", D("0.42"), D(10), at=t0 + 1)  # inside our 2 s lag
    sim.trade_as(LEADER, b_yes, "BUY", D("0.30"), D(200), at=t0 + 100)
    sim.trade_as(OTHER, b_yes, "BUY", D("0.31"), D(10), at=t0 + 101)
    sim.trade_as(OTHER, b_yes, "SELL", D("0.25"), D(10), at=t0 + 105)  # after the lag: unseen
    sim.trade_as(LEADER, a_yes, "SELL", D("0.60"), D(50), at=t0 + 3600)
    sim.trade_as(OTHER, a_yes, "SELL", D("0.59"), D(10), at=t0 + 3601)
    sim.resolve_market(a.condition_id, a_yes)
    sim.resolve_market(b.condition_id, b_yes)
    end = int(time.time()) + 60

    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[[wallets]]\naddress = "{LEADER}"\nsizing = "fixed_notional"\n'
        'fixed_notional = "10"\nmax_slippage = "0.02"\nmax_trade_age_s = 60\n'
    )
    out = tmp_path / "report"
    code, stdout, stderr = await vet_cli(
        sim, LEADER, "--rules", str(rules), "--days", "3", "--lag-s", "2",
        "--out", str(out), "--end", str(end), "--json", hash_seed=1,
    )  # fmt: skip
    assert code == 0, stderr
    got = json.loads(stdout)

    # --- by hand -------------------------------------------------------------------------
    rate = D("0.072")
    # A, BUY: the leader paid 0.40; 1 s later someone paid 0.42, so our copy (2 s) pays 0.42,
    # our limit exactly (0.40 + 0.02). 10 pUSD budget, fee budgeted at the limit:
    # size = floor(10 / (0.42 x (1 + 0.072 x (1 - 0.42))) to 0.01) = 22.85.
    per_share = D("0.42") * (1 + rate * (1 - D("0.42")))
    size_a = (D(10) / per_share).quantize(D("0.01"), rounding=ROUND_FLOOR)
    assert size_a == D("22.85")
    fee_buy_a = (size_a * rate * D("0.42") * D("0.58")).quantize(D("0.00001"), ROUND_DOWN)
    cost_a = size_a * D("0.42") + fee_buy_a
    # A, SELL: the leader sold half its 100 -> we sell half of 22.85 (11.425 -> 11.42) at the
    # 0.59 traded 1 s after it (limit 0.60 - 0.02 = 0.58: fills), paying the fee on it.
    sell_a = D("11.42")
    fee_sell_a = (sell_a * rate * D("0.59") * D("0.41")).quantize(D("0.00001"), ROUND_DOWN)
    # A resolves Yes: the 11.43 shares left pay 1 each.
    pnl_a = sell_a * D("0.59") - fee_sell_a + (size_a - sell_a) * 1 - cost_a
    # B, BUY: limit 0.32, traded 0.31 within the lag; no fee: size = 10 / 0.32 = 31.25, spends
    # 31.25 x 0.32 = 10 and gets its improvement in shares: 10 / 0.31 shares (6 decimals).
    shares_b = (D("31.25") * D("0.32") / D("0.31")).quantize(D("0.000001"), ROUND_DOWN)
    pnl_b = shares_b * 1 - D(10)
    copier = pnl_a + pnl_b
    leader = (50 * D("0.60") - 20 + 50 - 20) + (200 - 60)

    assert D(got["copier"]["pnl"]) == copier.quantize(D("0.000001"))
    assert D(got["copier"]["fees"]) == fee_buy_a + fee_sell_a
    assert D(got["leader"]["pnl"]) == leader
    assert got["leader_trades"] == 3
    assert got["markets_traded"] == 2
    assert got["copier"]["closed_positions"] == 2
    assert D(got["copier"]["hit_rate"]) == 1
    # Re-running gives the same figures to the byte, and the report exists.
    first = (out / "vet.json").read_bytes()
    assert (out / "vet.html").stat().st_size > 1_000_000  # plotly.js is inside
    code, _, stderr = await vet_cli(
        sim, LEADER, "--rules", str(rules), "--days", "3", "--lag-s", "2",
        "--out", str(out), "--end", str(end), hash_seed=5,
    )  # fmt: skip
    assert code == 0, stderr
    assert (out / "vet.json").read_bytes() == first


async def test_leader_faster_than_our_lag_is_too_fast_to_copy(sim: Simulator) -> None:
    now = int(time.time())
    m = sim.add_market(question="Fast?", slug="vet-fast")
    yes = m.token_ids[0]
    for i in range(8):  # each entry is chased within a second by a buyer 5 ticks higher
        t = now - DAY + i * 600
        sim.trade_as(LEADER, yes, "BUY", D("0.50"), D(40), at=t)
        sim.trade_as(OTHER, yes, "BUY", D("0.55"), D(40), at=t + 1)
        sim.trade_as(LEADER, yes, "SELL", D("0.56"), D(40), at=t + 20)
    sim.resolve_market(m.condition_id, m.token_ids[1])
    r = await fetch_and_simulate(
        sim, {"sizing": "fixed_notional", "fixed_notional": "10"}, lag_s=3, end=now + 60
    )
    assert r.skips()["slippage"] == 8
    assert r.verdict == vet.NOT_COPYABLE
    assert any(x.startswith("too fast to copy") for x in r.reasons), r.reasons
    assert r.leader.pnl > 0  # the leader's edge is real; we just cannot get it


async def test_leader_trading_dust_is_too_small_to_copy(sim: Simulator) -> None:
    now = int(time.time())
    m = sim.add_market(question="Small?", slug="vet-small")
    yes = m.token_ids[0]
    for i in range(6):
        sim.trade_as(LEADER, yes, "BUY", D("0.20"), D(20), at=now - DAY + i * 3600)
    sim.resolve_market(m.condition_id, yes)
    # 10 % of 20 shares is 2: under the market's minimum of 5.
    r = await fetch_and_simulate(sim, {"sizing": "ratio", "ratio": "0.1"}, lag_s=2, end=now + 60)
    assert r.skips() == {"below_min_size": 6}
    assert r.verdict == vet.NOT_COPYABLE
    assert any(x.startswith("too small to copy") for x in r.reasons), r.reasons


async def test_bad_wallet_is_one_line_and_exit_2(sim: Simulator) -> None:
    code, _, stderr = await vet_cli(sim, "0x1234")
    assert code == 2
    assert stderr.strip().splitlines() == [
        "polyd vet: bad wallet address '0x1234': expected 0x followed by 40 hex characters"
    ]


async def test_bad_rules_file_is_exit_2(sim: Simulator, tmp_path: Path) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text('[defaults]\nsizing = "ratio"\n')  # ratio without its value
    code, _, stderr = await vet_cli(sim, LEADER, "--rules", str(rules))
    assert code == 2
    assert "ratio" in stderr and len(stderr.strip().splitlines()) == 1


async def test_data_api_failing_is_one_line_and_exit_1(sim: Simulator) -> None:
    sim.faults.add(kind="data_api", status=500, count=100)
    code, _, stderr = await vet_cli(sim, LEADER, "--days", "1")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("polyd vet: the venue failed: Data API /activity answered 500")
    assert not any("Traceback" in line for line in lines)
