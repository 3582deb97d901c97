"""The three clients `bench orderpath` compares, each used the fastest correct way it offers.

Every side posts the same orders (GTC BUY, 5 shares at 0.10-0.39, resting: the book is empty)
to the same simulator subprocess, from its own funded wallet:

* `PolydSide`: `Executor.submit` as the daemon builds it (`wiring.execution.assemble`): market
  rules, risk, signing, the durable PENDING journal row, rate limiter, breaker, `POST /order`,
  the outcome row. The ack is the `POST /order` answer back in the event loop (the broker's
  `send` is wrapped to stamp it); `submit()` answers at the ack with the outcome row queued,
  and `settle()` waits until it is durable.
* `SdkSide`: the official async SDK (`polymarket-client`, import `polymarket`):
  `AsyncSecureClient.create_limit_order` then `post_order`, pointed at the simulator through
  `venue.sdk_env.environment`. Tick size and neg-risk come from the client's market-metadata
  cache (`ctx.order_metadata.resolve_market`, filled by the warm-up; the SDK has no argument to
  pass them); `post_order` is the bare post, not `place_limit_order`'s allowance-recovery
  wrapper. Source: `polymarket/clients/async_secure.py` (0.14.0).
* `BareSide`: a bare `py_clob_client_v2` script: `ClobClient.create_order(OrderArgsV2,
  PartialCreateOrderOptions(tick_size=, neg_risk=))` + `post_order(signed, OrderType.GTC)` in
  one `loop.run_in_executor` call on a thread pool as wide as the concurrency. Tick size and
  neg-risk are passed; the order rests, so `post_order` never polls trades
  (`_resolve_transactions_hashes` returns at once without `tradeIDs`).

For the SDK sides the ack and the return are the same instant.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from eth_account import Account

from bench._venue import fund
from config import load_settings
from execution.ports import Ack, Prepared
from models import OrderRequest, OrderStatus, OrderType, Side
from observability.logging import Redactor
from observability.metrics import Metrics
from resilience import RateLimiter, SystemClock
from resilience.rate_limit import polymarket_limits
from storage import Database, Repositories
from venue.sdk_env import VenueUrls, environment
from wiring.execution import ExecutionStage, assemble

SIZE = Decimal("5")
FUNDS = "100000000"


def price(i: int) -> Decimal:
    """The i-th order's price: 0.10-0.39, below any ask (the simulator's book is empty)."""
    return Decimal("0.10") + Decimal(i % 30) / 100


class PolydSide:
    name = "polyd"

    def __init__(self, clob_url: str, user_ws_url: str, token: str, db_dir: Path) -> None:
        self.clob_url, self.user_ws_url, self.token, self.db_dir = (
            clob_url,
            user_ws_url,
            token,
            db_dir,
        )
        self.acked: dict[str, float] = {}
        self.posted = 0

    async def open(self) -> None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        acct = Account.create()
        fund(self.clob_url, acct.address, FUNDS)
        s = load_settings(
            env_file=None,
            mode="live",
            private_key=acct.key.hex(),
            clob_host=self.clob_url,
            user_ws_url=self.user_ws_url,
            db_path=str(self.db_dir / "orderpath.db"),
            risk_max_open_orders=100_000,
            risk_max_total_exposure=FUNDS,
            risk_max_position_notional=FUNDS,
            rate_limit_fraction=1.0,
        )
        self.db = Database(s.db_path)
        await self.db.open()
        # The limiter stays in the path with POST /order lifted above the venue's budget (as in
        # `bench executor`): this measures the client, not the budget.
        limits = polymarket_limits(1.0)
        limits["post_order"] = limits["post_order:sustained"] = (1e6, 1e6)
        self.built: ExecutionStage = await assemble(
            s,
            repos=Repositories.over(self.db),
            metrics=Metrics(),
            redactor=Redactor(),
            limiter=RateLimiter.from_limits(limits, clock=SystemClock()),
        )
        self.ex = self.built.executor
        broker = self.built.broker
        send = broker.send
        acked = self.acked

        async def stamped_send(p: Prepared) -> Ack:
            ack = await send(p)
            acked[p.request.client_order_id] = time.perf_counter()  # the answer is back
            return ack

        broker.send = stamped_send  # type: ignore[method-assign,assignment]  # bench stamp
        meta = await self.ex.rules.ensure(self.token)
        assert meta is not None
        self.meta = meta

    def request(self, i: int) -> OrderRequest:
        return OrderRequest(
            strategy="bench",
            token_id=self.token,
            side=Side.BUY,
            price=price(i),
            size=SIZE,
            order_type=OrderType.GTC,
        )

    async def order(self, i: int) -> tuple[float, float]:
        req = self.request(i)
        t0 = time.perf_counter()
        r = await self.ex.submit(req)
        done = time.perf_counter()
        assert r.status is OrderStatus.LIVE, r.reason
        self.posted += 1
        return self.acked.pop(req.client_order_id) - t0, done - t0

    async def sign(self, i: int) -> None:
        await self.built.broker.prepare(self.request(i), self.meta)

    async def settle(self) -> None:
        assert await self.ex.wait_idle(30)

    async def close(self) -> None:
        rows = await self.db.fetchone("SELECT COUNT(*) FROM orders WHERE status = 'LIVE'")
        assert rows is not None and rows[0] == self.posted, (rows, self.posted)
        for _, close in reversed(self.built.closers):
            await close()
        await self.db.close()


class SdkSide:
    name = "sdk"

    def __init__(self, clob_url: str, token: str) -> None:
        self.clob_url, self.token = clob_url, token

    async def open(self) -> None:
        env = environment(VenueUrls(clob_url=self.clob_url))
        secure = importlib.import_module("polymarket").AsyncSecureClient
        acct = Account.create()
        fund(self.clob_url, acct.address, FUNDS)
        self.client = await secure.create(
            private_key=acct.key.hex(), wallet=acct.address, environment=env
        )

    async def _signed(self, i: int) -> Any:
        return await self.client.create_limit_order(
            token_id=self.token, price=price(i), size=SIZE, side="BUY"
        )

    async def order(self, i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        res = await self.client.post_order(await self._signed(i))
        dt = time.perf_counter() - t0
        assert res.order_id, res
        return dt, dt

    async def sign(self, i: int) -> None:
        await self._signed(i)

    async def settle(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()


class BareSide:
    name = "bare_v2"

    def __init__(self, clob_url: str, token: str, threads: int) -> None:
        self.clob_url, self.token = clob_url, token
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bare-v2")

    async def open(self) -> None:
        client_mod = importlib.import_module("py_clob_client_v2.client")
        self.types = importlib.import_module("py_clob_client_v2.clob_types")
        acct = Account.create()
        fund(self.clob_url, acct.address, FUNDS)

        def build() -> Any:
            c = client_mod.ClobClient(self.clob_url, 137, key=acct.key.hex())
            c.set_api_creds(c.create_or_derive_api_key())
            return c

        self.client = await asyncio.get_running_loop().run_in_executor(self.pool, build)
        self.options = self.types.PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)

    def _signed(self, i: int) -> Any:
        args = self.types.OrderArgsV2(
            token_id=self.token, price=float(price(i)), size=float(SIZE), side="BUY"
        )
        return self.client.create_order(args, self.options)

    def _order(self, i: int) -> dict[str, Any]:
        res: dict[str, Any] = self.client.post_order(self._signed(i), self.types.OrderType.GTC)
        return res

    async def order(self, i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        res = await asyncio.get_running_loop().run_in_executor(self.pool, self._order, i)
        dt = time.perf_counter() - t0
        assert res.get("success") and res.get("orderID"), res
        return dt, dt

    async def sign(self, i: int) -> None:
        self._signed(i)  # synchronous: what the signature costs, without the thread hop

    async def settle(self) -> None:
        return None

    async def close(self) -> None:
        self.pool.shutdown(wait=True)
