"""Order-path benchmark: polyd's venue client against the official SDK, one order at a time.

The simulator runs as a subprocess (its own core). Both clients sign and post the same kind of
order (GTC BUY, 5 @ 0.01, resting below the book) to it, sequentially, after `--warmup` orders:

* `polyd_sign_p50_ms` / `_p99_ms`: `ClobBroker.prepare` (EIP-712 digest, libsecp256k1 signature,
  the exact POST body; on the event loop).
* `polyd_order_p50_ms` / `_p99_ms`: `prepare` + `send` (POST /order answered).
* `sdk_sign_p50_ms` / `_p99_ms`: the official SDK's `AsyncSecureClient.create_limit_order`
  (market rules from its cache, typed-data signing with eth-account, on the event loop).
* `sdk_order_p50_ms` / `_p99_ms`: `create_limit_order` + `post_order`.
* `sdk_loop_blocked_ms_per_order`: the SDK signs on the event loop: this is how long each
  signature holds the loop (polyd's `prepare` holds it for `polyd_sign_*`).

Without the SDK importable (`polymarket-client` is a locked dependency; see
docs/venue-client.md) the `sdk_*` figures are absent and `sdk` says why.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from eth_account import Account

from bench._venue import add_market, fund, simulator
from models import OrderRequest
from venue.clob import ClobBroker, build_client
from venue.sdk_env import SdkSeamError, VenueUrls, environment

PRICE = "0.01"
SIZE = "5"


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return round(statistics.median(ordered) * 1000, 3), round(p99 * 1000, 3)


async def _timed(
    n: int, warmup: int, sign: Callable[[], Awaitable[Any]], post: Callable[[Any], Awaitable[Any]]
) -> dict[str, tuple[float, float]]:
    signs: list[float] = []
    totals: list[float] = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        signed = await sign()
        t1 = time.perf_counter()
        await post(signed)
        t2 = time.perf_counter()
        if i >= warmup:
            signs.append(t1 - t0)
            totals.append(t2 - t0)
    return {"sign": _ms(signs), "order": _ms(totals)}


async def _polyd(clob_url: str, token: str, n: int, warmup: int) -> dict[str, object]:
    acct = Account.create()
    fund(clob_url, acct.address, Decimal(n + warmup))
    identity = await asyncio.to_thread(
        build_client,
        host=clob_url,
        chain_id=137,
        private_key=acct.key.hex(),
        creds=None,
        signature_type=0,
        funder=None,
    )
    broker = ClobBroker(identity=identity, host=clob_url)
    try:
        (meta,) = [m for m in await broker.market_meta(token) if m.token_id == token]
        req = OrderRequest.model_validate(
            {
                "strategy": "bench",
                "token_id": token,
                "side": "BUY",
                "price": PRICE,
                "size": SIZE,
                "order_type": "GTC",
            }
        )

        async def sign() -> Any:
            return await broker.prepare(req, meta)

        got = await _timed(n, warmup, sign, broker.send)
    finally:
        await broker.close()
    return {
        "polyd_sign_p50_ms": got["sign"][0],
        "polyd_sign_p99_ms": got["sign"][1],
        "polyd_order_p50_ms": got["order"][0],
        "polyd_order_p99_ms": got["order"][1],
    }


async def _sdk(clob_url: str, token: str, n: int, warmup: int) -> dict[str, object]:
    try:
        env = environment(VenueUrls(clob_url=clob_url))
        secure = importlib.import_module("polymarket").AsyncSecureClient
    except (SdkSeamError, ImportError, AttributeError) as e:
        return {"sdk": f"not measured: {e}"}
    acct = Account.create()
    fund(clob_url, acct.address, Decimal(n + warmup))
    client = await secure.create(private_key=acct.key.hex(), wallet=acct.address, environment=env)
    try:

        async def sign() -> Any:
            return await client.create_limit_order(
                token_id=token, price=PRICE, size=SIZE, side="BUY"
            )

        got = await _timed(n, warmup, sign, client.post_order)
        # How long one SDK signature holds the event loop (it is synchronous inside).
        blocked: list[float] = []
        for _ in range(50):
            t0 = time.perf_counter()
            await sign()
            blocked.append(time.perf_counter() - t0)
    finally:
        await client.close()
    return {
        "sdk": importlib.import_module("polymarket.version").__version__,
        "sdk_sign_p50_ms": got["sign"][0],
        "sdk_sign_p99_ms": got["sign"][1],
        "sdk_order_p50_ms": got["order"][0],
        "sdk_order_p99_ms": got["order"][1],
        "sdk_loop_blocked_ms_per_order": round(statistics.median(blocked) * 1000, 3),
    }


def main(argv: Sequence[str]) -> dict[str, object]:
    ap = argparse.ArgumentParser(prog="python -m bench orderpath")
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args(list(argv))
    with simulator(seed=11) as raw:
        clob_url = raw["clob_url"]
        token = add_market(clob_url, "Bench order path?", "bench-orderpath")[0]
        out: dict[str, object] = {"orders": args.orders, "venue": "subprocess"}
        out |= asyncio.run(_polyd(clob_url, token, args.orders, args.warmup))
        out |= asyncio.run(_sdk(clob_url, token, args.orders, args.warmup))
    return out
