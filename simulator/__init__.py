"""A Polymarket-compatible venue on loopback: CLOB REST + market/user WS + Gamma + Data API.

    async with Simulator(seed=1) as sim:
        m = sim.add_market(question="Will X?", slug="will-x")
        ...

It speaks the production wire formats so the real `py-clob-client-v2` and a plain websocket
client work against it unchanged. It imports nothing from the daemon but the recording
reader (`recording.reader`, the one owner of the recording format) for `--replay`.
"""

from simulator.market import SimMarket
from simulator.sim import RequestRecord, Retention, Simulator

__all__ = ["RequestRecord", "Retention", "SimMarket", "Simulator"]
