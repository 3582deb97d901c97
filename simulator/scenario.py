"""The seeded `demo` scenario: living books, near-certain markets about to end, and a whale.

* Three "living" markets: simulated makers keep a ladder around a drifting fair price,
  posting and cancelling every 0.2-1 s; simulated takers hit the touch with FAK orders.
* Two markets ending 10-20 minutes after start whose favourite trades at 0.95-0.99. Now and
  then an ask *dips* below the ladder for a second or two: material for a sniper.
* A whale (`WHALE_ADDRESS`) trades every 2-5 s through `Venue.trade_as`: it shows up in
  the Data API `/trades` and `/activity`, material for a copy trader.

Every market charges the venue's taker fee at its category's 2026 rate (crypto 0.072, sports
0.03, economics 0.05; exponent 1; https://docs.polymarket.com/trading/fees), so the demo shows
fees in fills, positions and PnL as a real run would.

`speed` (`Simulator(speed=N)`, `python -m simulator --scenario demo --speed N`,
`python -m orchestrator --demo --speed N`) runs the makers, takers and whale N times as often
(every pause divided by N); the markets' end dates stay on the wall clock. Each living book keeps
at most `MAX_RESTING` of the scenario's own resting orders (the oldest are cancelled first), so
the books stay the same size however long the demo runs.

All randomness comes from `random.Random(seed)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from simulator.engine import Order, OrderError
from simulator.lifecycle import Lifecycle

if TYPE_CHECKING:
    from simulator.market import SimMarket
    from simulator.venue import Venue

WHALE_ADDRESS = "0xdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
TICK = Decimal("0.01")
MAX_RESTING = 40
"""The scenario's own resting orders per book: beyond this the oldest is cancelled."""

FEES: dict[str, tuple[Decimal, str, Decimal]] = {
    "crypto": (Decimal("0.072"), "crypto_fees_v2", Decimal("0.2")),
    "sports": (Decimal("0.03"), "sports_fees_v2", Decimal("0.25")),
    "economy": (Decimal("0.05"), "economics_fees", Decimal("0.25")),
}
"""Taker fee (rate, Gamma feeType, maker rebate share) by tag: the 2026 category table of
https://docs.polymarket.com/trading/fees, with crypto at 0.072 (not 0.07)."""


@dataclass
class LiveBook:
    market: SimMarket
    fair: Decimal
    ending: bool
    orders: list[str] = field(default_factory=list)


class Scenario:
    """What the demo scenario created (`markets`, `ending_markets`, `whale_address`)."""

    whale_address = WHALE_ADDRESS

    def __init__(self, sim: Venue, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"the scenario's speed must be positive, not {speed!r}")
        self.sim = sim
        self.speed = speed
        self.rng = random.Random(sim.seed)
        self.makers = [f"0x{self.rng.getrandbits(160):040x}" for _ in range(4)]
        self.takers = [f"0x{self.rng.getrandbits(160):040x}" for _ in range(2)]
        self.books: list[LiveBook] = []
        self._tasks: list[asyncio.Task[None]] = []
        now = datetime.now(UTC)
        topics = [
            ("Will BTC close above $100k this month?", "btc-above-100k", ("crypto",)),
            ("Will the Fed cut rates in December?", "fed-cut-december", ("economy",)),
            ("Will Team A win the final?", "team-a-final", ("sports",)),
        ]
        for q, slug, tags in topics:
            rate, fee_type, rebate = FEES[tags[0]]
            m = sim.add_market(
                question=q,
                slug=slug,
                tags=tags,
                end_date=now + timedelta(days=self.rng.randint(3, 30)),
                volume=Decimal(self.rng.randint(10_000, 500_000)),
                liquidity=Decimal(self.rng.randint(1_000, 50_000)),
                fee_rate=rate,
            )
            m.fee_type, m.rebate_rate = fee_type, rebate
            fair = Decimal(self.rng.randint(30, 70)) / 100
            self.books.append(LiveBook(m, fair, ending=False))
        rate, fee_type, rebate = FEES["crypto"]
        for i in range(2):
            m = sim.add_market(
                question=f"Will ETH be above $3,{i}00 at the close of this window?",
                slug=f"eth-window-{i}",
                tags=("crypto",),
                end_date=now + timedelta(minutes=self.rng.randint(10, 20)),
                volume=Decimal(self.rng.randint(5_000, 50_000)),
                liquidity=Decimal(self.rng.randint(1_000, 10_000)),
                fee_rate=rate,
            )
            m.fee_type, m.rebate_rate = fee_type, rebate
            fair = Decimal(self.rng.randint(95, 98)) / 100
            self.books.append(LiveBook(m, fair, ending=True))
        self.markets: list[SimMarket] = [b.market for b in self.books]
        self.ending_markets: list[SimMarket] = [b.market for b in self.books if b.ending]

    def start(self) -> None:
        for b in self.books:
            self._ladder(b)
        # The ending markets resolve at their end date, YES winning (their price is ~0.96).
        lifecycle = Lifecycle(self.sim)
        for m in self.ending_markets:
            lifecycle.schedule(m.condition_id, m.token_ids[0], m.end_date)
        for i, b in enumerate(self.books):
            self._tasks.append(asyncio.create_task(self._maker(b), name=f"sim:scenario:maker:{i}"))
        self._tasks.append(asyncio.create_task(self._taker(), name="sim:scenario:taker"))
        self._tasks.append(asyncio.create_task(self._whale(), name="sim:scenario:whale"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    def _post(self, b: LiveBook, side: str, price: Decimal, size: Decimal) -> None:
        if not (TICK <= price <= 1 - TICK):
            return
        maker = self.rng.choice(self.makers)
        try:
            b.orders.append(self.sim.seed_order(maker, b.market.token_ids[0], side, price, size))
        except ValueError:
            return

    def _ladder(self, b: LiveBook) -> None:
        for k in range(1, 6):
            if not b.ending or k > 1:
                self._post(b, "BUY", b.fair - k * TICK, Decimal(self.rng.randint(20, 200)))
            self._post(
                b, "SELL", b.fair + (k - 1) * TICK + TICK, Decimal(self.rng.randint(20, 200))
            )

    async def _maker(self, b: LiveBook) -> None:
        rng = self.rng
        while True:
            await self._pause(0.2, 1.0)
            if not b.ending:
                b.fair = min(
                    Decimal("0.9"), max(Decimal("0.1"), b.fair + rng.choice((-TICK, 0, TICK)))
                )
            live = self.sim.engine.orders
            b.orders = [o for o in b.orders if o in live and live[o].status == "LIVE"]
            if b.orders and rng.random() < 0.6:
                self.sim.cancel_seeded(b.orders.pop(rng.randrange(len(b.orders))))
            while len(b.orders) >= MAX_RESTING:
                self.sim.cancel_seeded(b.orders.pop(0))
            side = rng.choice(("BUY", "SELL"))
            off = TICK * rng.randint(1, 4)
            price = b.fair - off if side == "BUY" else b.fair + off
            if b.ending:
                price = min(price, Decimal("0.99"))
            self._post(b, side, price, Decimal(rng.randint(10, 150)))
            if b.ending and rng.random() < 0.15:
                dip = b.fair - TICK * rng.randint(1, 2)
                self._post(b, "SELL", dip, Decimal(rng.randint(5, 40)))
                dip_id = b.orders[-1] if b.orders else None
                if dip_id is not None:
                    delay = rng.uniform(1.0, 3.0) / self.speed
                    self.sim._later(delay, self._cancel_quietly, dip_id)

    async def _pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high) / self.speed)

    def _cancel_quietly(self, order_id: str) -> None:
        self.sim.cancel_seeded(order_id)

    async def _taker(self) -> None:
        rng = self.rng
        while True:
            await self._pause(0.2, 1.0)
            b = rng.choice(self.books)
            tok = b.market.token_ids[0]
            book = self.sim.engine.books[tok]
            side = rng.choice(("BUY", "SELL"))
            best = book.best_ask() if side == "BUY" else book.best_bid()
            if best is None:
                continue
            size = Decimal(rng.randint(5, 30))
            wallet = rng.choice(self.takers)
            if side == "BUY":
                # The notional and the taker fee on top (rate x size bounds it from above).
                self.sim.fund(wallet, collateral=best * size + b.market.fee_rate * size)
            else:
                self.sim.fund(wallet, token_id=tok, shares=size)
            o = Order(
                id=self.sim.engine.new_hash(),
                owner=self.sim._seed_owner(wallet),
                maker=wallet,
                signer=wallet,
                token_id=tok,
                market=b.market.condition_id,
                outcome=b.market.outcomes[0],
                side=side,
                price=best,
                original_size=size,
                order_type="FAK",
                expiration=0,
                created_at=int(time.time()),
                seeded=True,
                maker_amount=best * size,
            )
            with contextlib.suppress(OrderError):
                self.sim.submit(o)

    async def _whale(self) -> None:
        rng = self.rng
        while True:
            await self._pause(2.0, 5.0)
            b = rng.choice(self.books)
            tok = b.market.token_ids[0]
            book = self.sim.engine.books[tok]
            side = "BUY" if rng.random() < 0.7 else "SELL"
            ref = book.best_ask() if side == "BUY" else book.best_bid()
            price = ref if ref is not None else b.fair
            self.sim.trade_as(WHALE_ADDRESS, tok, side, price, Decimal(rng.randint(50, 500)))
