"""The simulator serves a market's taker fee wherever the venue does, and the real SDK reads it.

Sources (docs/venue-mechanics.md section 1):
* `/clob-markets/{condition_id}` `fd: {r, e, to}`, absent on a market without a fee:
  `MarketDetails` in https://github.com/Polymarket/clob-client-v2/blob/main/src/types/clob.ts,
  read by py-clob-client-v2's `get_clob_market_info` (`fd.r`, `fd.e`).
* Gamma `feesEnabled`, `feeSchedule {exponent, rate, rebateRate, takerOnly}`, `feeType`: the real
  captures `gamma/market_sports_moneyline_closed_2026_04.json` and
  `gamma/markets_list_closed_fee_schedule_2026_06.json` in the fixtures.
* `/fee-rate` `base_fee`: the legacy V1 value (1000 on fee markets in the real captures'
  `takerBaseFee`), never the rate charged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from simulator import Simulator
from simulator.testing import add_fee_market, new_trader
from tests.helpers import FIXTURES

D = Decimal


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=11) as s:
        yield s


def _types(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _types(x) for k, x in sorted(v.items())}
    return "number" if isinstance(v, int | float) and not isinstance(v, bool) else type(v).__name__


async def test_fee_market_serves_fd_and_the_sdk_reads_it(sim: Simulator) -> None:
    fee = add_fee_market(sim, fee_rate=D("0.072"), fee_exponent=D(2))
    free = sim.add_market(question="Will Y?", slug="will-y")
    async with httpx.AsyncClient(base_url=sim.clob_url) as c:
        d = (await c.get(f"/clob-markets/{fee.condition_id}")).json()
        assert d["fd"] == {"r": 0.072, "e": 2, "to": True}
        assert "fd" not in (await c.get(f"/clob-markets/{free.condition_id}")).json()
        legacy = (await c.get("/fee-rate", params={"token_id": fee.token_ids[0]})).json()
        assert legacy == {"base_fee": 1000}
        legacy = (await c.get("/fee-rate", params={"token_id": free.token_ids[0]})).json()
        assert legacy == {"base_fee": 0}
    client, _ = await asyncio.to_thread(new_trader, sim)
    await asyncio.to_thread(client.get_clob_market_info, fee.condition_id)
    assert await asyncio.to_thread(client.get_fee_exponent, fee.token_ids[0]) == 2
    # The SDK's own market-BUY trim sees the fee (rate 0.072 x (0.25)^2 per share at 0.5).
    trimmed = await asyncio.to_thread(
        client._adjust_buy_amount_for_balance, fee.token_ids[0], 10.0, 0.5, 10.0
    )
    assert trimmed == pytest.approx(10 - 20 * 0.072 * 0.0625)


async def test_gamma_fee_fields_have_the_real_shape(sim: Simulator) -> None:
    fee = add_fee_market(sim, fee_rate=D("0.03"), fee_type="sports_fees_v2", tags=("sports",))
    free = sim.add_market(question="Will Y?", slug="will-y")
    real = json.loads(
        (FIXTURES / "gamma" / "market_sports_moneyline_closed_2026_04.json").read_text()
    )
    real = real[0] if isinstance(real, list) else real
    async with httpx.AsyncClient(base_url=sim.gamma_url) as c:
        rows = (await c.get("/markets", params={"slug": [fee.slug, free.slug]})).json()
    by_slug = {r["slug"]: r for r in rows}
    ours, plain = by_slug[fee.slug], by_slug[free.slug]
    assert ours["feesEnabled"] is True and plain["feesEnabled"] is False
    assert ours["feeSchedule"] == {
        "exponent": 1,
        "rate": 0.03,
        "rebateRate": 0.2,
        "takerOnly": True,
    }
    assert _types(ours["feeSchedule"]) == _types(real["feeSchedule"])
    assert ours["feeType"] == "sports_fees_v2"
    assert (ours["takerBaseFee"], ours["makerBaseFee"]) == (1000, 1000)
    assert "feeSchedule" not in plain and plain["takerBaseFee"] == 0


def test_add_market_refuses_a_bad_fee(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="fee_rate"):
        sim.add_market(question="q", slug="s", fee_rate=D("1.5"))
    with pytest.raises(ValueError, match="fee_exponent"):
        sim.add_market(question="q", slug="s", fee_exponent=D(0))
