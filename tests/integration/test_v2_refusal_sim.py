"""Protocol-V2 markets are refused by discovery with a reason, counted, and reported per rule.

Gamma marks each market `version: "v1"` or `"v2"` (docs `migrate/polymarket-v2/api-integrations`);
a v2 market trades against ExchangeV3 with EIP-712 domain version "3" (reference §12.2), which
polyd does not sign, so no rule may pick one.
"""

from __future__ import annotations

import aiohttp

from execution.market_rules import V2_REFUSAL
from observability.metrics import Metrics
from simulator import Simulator
from tests.integration.test_redemption_sim import add_market
from venue.gamma import Discovery, GammaClient, MarketQuery


async def test_discovery_skips_v2_markets_counts_them_per_rule_and_keeps_v1() -> None:
    async with Simulator(seed=3) as sim, aiohttp.ClientSession() as session:
        v1 = add_market(sim, "binary")
        v2 = add_market(sim, "v2")
        add_market(sim, "v2")
        metrics = Metrics()
        gamma = GammaClient(base_url=sim.gamma_url, session=session, metrics=metrics)
        got: dict[str, list[str]] = {}
        d = Discovery(
            gamma=gamma,
            queries={"all": [MarketQuery()], "by-slug": [MarketQuery(slugs=(v2.slug,))]},
            on_update=lambda r: got.update({k: [m.condition_id for m in v] for k, v in r.items()}),
            interval_s=60,
        )
        assert await d.refresh()
    assert got == {"all": [v1.condition_id], "by-slug": []}
    assert d.v2_skipped == {"all": 2, "by-slug": 1}
    assert metrics.registry.get_sample_value("polyd_v2_markets_skipped_total") == 3
    assert "ExchangeV3" in V2_REFUSAL
