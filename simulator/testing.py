"""Helpers for tests that drive the real `py-clob-client-v2` against a `Simulator`.

The SDK is synchronous: call these from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eth_account import Account
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.headers import create_level_2_headers

from simulator.market import SimMarket
from simulator.sim import Simulator


def new_trader(
    sim: Simulator,
    collateral: Decimal | None = Decimal("1000"),
    *,
    signature_type: int | None = None,
    funder: str | None = None,
) -> tuple[ClobClient, Any]:
    """Create a throwaway key, register API creds (L1) and fund it. Returns (client, account).

    Funding goes to `funder` when given (signature types 1-3), else to the key's address.
    Blocking: run it in a thread.
    """
    acct = Account.create()
    client = ClobClient(
        sim.clob_url,
        sim.chain_id,
        key=acct.key.hex(),
        signature_type=signature_type,
        funder=funder,
    )
    client.set_api_creds(client.create_or_derive_api_key())
    if collateral is not None:
        sim.fund(funder or acct.address, collateral=collateral)
    return client, acct


def l2_headers(
    client: ClobClient, method: str, path: str, body: str | None = None
) -> dict[str, str]:
    """Build the L2 headers the SDK would send for `method path body` (for raw requests)."""
    from py_clob_client_v2.clob_types import RequestArgs

    args = RequestArgs(method=method, request_path=path, body=body, serialized_body=body)
    headers: dict[str, str] = create_level_2_headers(client.signer, client.creds, args)
    headers["Content-Type"] = "application/json"
    return headers


CRYPTO_FEE_RATE = Decimal("0.072")
"""The 2026 crypto taker-fee rate (https://docs.polymarket.com/trading/fees)."""


def add_fee_market(
    sim: Simulator,
    question: str = "Will BTC be above $100k at the close of this window?",
    slug: str = "btc-fee-window",
    *,
    fee_rate: Decimal = CRYPTO_FEE_RATE,
    fee_exponent: Decimal = Decimal(1),
    **kw: Any,
) -> SimMarket:
    """List a market that charges the taker fee (crypto rate by default), served as `fd` on
    `/clob-markets` and `feeSchedule` on Gamma like a real fee market."""
    fee_type = kw.pop("fee_type", "crypto_fees_v2")
    rebate_rate = kw.pop("rebate_rate", Decimal("0.2"))
    m = sim.add_market(
        question=question,
        slug=slug,
        tags=kw.pop("tags", ("crypto",)),
        fee_rate=fee_rate,
        fee_exponent=fee_exponent,
        **kw,
    )
    m.fee_type, m.rebate_rate = fee_type, rebate_rate
    return m
