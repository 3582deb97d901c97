"""Protocol-V2 position ids are told apart from v1 token ids the way the official SDK does it.

`execution.market_rules.is_v2_position_id` mirrors `polymarket-client` 0.14.0
(`polymarket/_internal/protocol.py`, `is_v2_position_id`: bits 40..103 of the uint256 are zero),
which decides whether an order goes to ExchangeV3 (EIP-712 domain "3"). Every v1 token id in the
captured Gamma payloads is a keccak hash and must not be taken for a v2 id.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from polymarket._internal.protocol import is_v2_position_id as sdk_is_v2

from execution.market_rules import V2_REFUSAL, MarketRules, is_v2_position_id
from models import OrderRequest, OrderType, Side
from tests.helpers import FIXTURES, TOKEN


def captured_token_ids() -> list[str]:
    ids: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            raw = node.get("clobTokenIds")
            if isinstance(raw, str):
                ids.update(json.loads(raw))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in sorted((FIXTURES / "gamma").glob("*.json")):
        walk(json.loads(path.read_text()))
    return sorted(ids)


def v2_id(rng: random.Random, module: int, outcome: int) -> str:
    high = rng.getrandbits(144) << 104
    low = rng.getrandbits(32) << 8
    return str((module << 248) | high | low | outcome)


def test_captured_v1_token_ids_are_not_v2_and_the_sdk_agrees() -> None:
    ids = [*captured_token_ids(), TOKEN]
    assert len(ids) >= 10
    assert [i for i in ids if is_v2_position_id(i)] == []
    assert [i for i in ids if sdk_is_v2(i)] == []


def test_v2_namespace_ids_are_v2_and_the_sdk_agrees_on_edge_cases() -> None:
    rng = random.Random(7)
    samples = [v2_id(rng, m, o) for m in (1, 2, 3) for o in (0, 1)]
    one_bit = [str(1 << b) for b in (39, 40, 103, 104)]
    odd = ["", " ", "0x10", "-1", "abc", str(1 << 256), "0", "12a"]
    for s in samples + one_bit + odd:
        assert is_v2_position_id(s) == (sdk_is_v2(s) and s.strip().isdigit()), s
    assert all(is_v2_position_id(s) for s in samples)
    assert [is_v2_position_id(s) for s in one_bit] == [True, False, False, True]


@pytest.mark.parametrize("order_type", [OrderType.GTC, OrderType.FOK])
async def test_market_rules_refuse_a_v2_token_before_fetching_anything(
    order_type: OrderType,
) -> None:
    token = v2_id(random.Random(1), 1, 0)
    req = OrderRequest(
        token_id=token,
        side=Side.BUY,
        price="0.50",
        size="10",
        order_type=order_type,
        strategy="copy",
    )
    # No metadata source at all: a v1 token would be "unknown market"; a v2 one names v2.
    meta, reason = await MarketRules().admit(req)
    assert (meta, reason) == (None, V2_REFUSAL)
    _, v1_reason = await MarketRules().admit(req.model_copy(update={"token_id": TOKEN}))
    assert v1_reason == f"unknown market for token {TOKEN}"
