"""The daemon posts the very bytes the SDK's own `ClobClient.post_order` would post.

The SDK (py-clob-client-v2 1.2.1, `py_clob_client_v2/client.py` `post_order` and
`order_utils/model/order_data_v2.py` `order_to_json_v2`) serializes `{"order", "owner",
"orderType", "deferExec", "postOnly"}` compactly with `deferExec` false unless the caller asks
otherwise. Here the daemon's broker signs an order; the same signed order is then posted by the
SDK's `post_order` with its default flags, over a real socket to the simulator, and the bytes the
simulator received are compared with the daemon's payload, byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson
import pytest
from py_clob_client_v2.clob_types import OrderType as SdkOrderType
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2
from py_clob_client_v2.order_utils.model.side import Side as SdkSide
from py_clob_client_v2.order_utils.model.signature_type_v2 import SignatureTypeV2

from simulator import Simulator
from simulator.testing import new_trader
from tests.helpers import identity_of, make_order
from venue.clob import ClobBroker


def _signed_from_payload(payload: bytes) -> SignedOrderV2:
    o = orjson.loads(payload)["order"]
    return SignedOrderV2(
        salt=str(o["salt"]),
        maker=o["maker"],
        signer=o["signer"],
        tokenId=o["tokenId"],
        makerAmount=o["makerAmount"],
        takerAmount=o["takerAmount"],
        side=SdkSide.BUY if o["side"] == "BUY" else SdkSide.SELL,
        signatureType=SignatureTypeV2(int(o["signatureType"])),
        timestamp=o["timestamp"],
        metadata=o["metadata"],
        builder=o["builder"],
        expiration=o["expiration"],
        signature=o["signature"],
    )


@pytest.mark.parametrize(
    ("order_type", "post_only", "side", "price"),
    [
        ("GTC", False, "BUY", "0.4"),
        ("GTC", True, "BUY", "0.41"),
        ("GTD", False, "SELL", "0.7"),
        ("FOK", False, "BUY", "0.5"),
        ("FAK", False, "SELL", "0.3"),
    ],
)
async def test_daemon_order_body_is_byte_identical_to_the_sdks_post_order(
    order_type: str, post_only: bool, side: str, price: str
) -> None:
    async with Simulator(seed=61, settle_delay_s=0.01) as sim:
        market = sim.add_market("Will it rain?", "rain")
        token = market.token_ids[0]
        client, acct = await asyncio.to_thread(new_trader, sim)
        sim.fund(acct.address, token_id=token, shares=Decimal("100"))
        broker = ClobBroker(identity=identity_of(client), host=sim.clob_url)
        try:
            (meta,) = [m for m in await broker.market_meta(token) if m.token_id == token]
            extra: dict[str, object] = {}
            if order_type == "GTD":
                extra["expiration"] = int(time.time()) + 3600
            req = make_order(
                token_id=token,
                side=side,
                price=price,
                order_type=order_type,
                post_only=post_only,
                **extra,
            )
            prepared = await broker.prepare(req, meta)
            signed = _signed_from_payload(prepared.payload)
            before = sim.received_total
            try:
                # The SDK's own post with its default flags (FOK/FAK find no liquidity here and
                # are refused: what matters is what reached the venue).
                await asyncio.to_thread(
                    client.post_order, signed, getattr(SdkOrderType, order_type), post_only
                )
            except PolyApiException:
                assert order_type in ("FOK", "FAK")
            assert sim.received_total == before + 1
            path, received = sim.received[-1]
            assert path == "/order"
            assert received == prepared.payload  # byte for byte
            assert orjson.loads(received)["deferExec"] is False
        finally:
            await broker.close()
