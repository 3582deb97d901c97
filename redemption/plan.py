"""What to redeem and with which call: on-chain confirmation of a Data API row, and the call per
market kind.

A position is redeemed only when the chain agrees: CTF `payoutDenominator(conditionId) > 0` and
the wallet's ERC-1155 balance of the outcome tokens (the Data API index lags the chain; reference
§12.3). The call per kind (Polymarket/py-sdk `_internal/actions/relayer/positions.py`
`normalize_market_position_context`; docs `trading/ctf/redeem`):

* v1 binary → `CtfCollateralAdapter.redeemPositions(pUSD, 0x0, cid, [1, 2])`;
* v1 neg-risk → the same on `NegRiskCtfCollateralAdapter`;
* v2 → `Router.redeem(cid31, outcomeIndex, amount)`, one call per outcome held.

Never CTF `redeemPositions` with pUSD: it succeeds and pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from venue.chain import contracts as cc
from venue.chain.rpc import RpcClient
from venue.chain.sources import MarketKind

UNIT = Decimal(10) ** 6


@dataclass(frozen=True, slots=True)
class Candidate:
    """A market whose positions the chain confirms redeemable for one wallet."""

    market: MarketKind
    balances: tuple[int, int]  # ERC-1155 units (6 decimals) of outcome 0 and 1
    payouts: tuple[Decimal, Decimal]  # pUSD per share of outcome 0 and 1

    @property
    def condition_id(self) -> str:
        return self.market.condition_id

    @property
    def shares(self) -> dict[str, Decimal]:
        return {
            t: Decimal(b) / UNIT
            for t, b in zip(self.market.token_ids, self.balances, strict=True)
            if b > 0
        }

    @property
    def expected_payout(self) -> Decimal:
        return sum(
            (Decimal(b) / UNIT * p for b, p in zip(self.balances, self.payouts, strict=True)),
            Decimal(0),
        )


async def confirm(
    rpc: RpcClient, wallet: str, market: MarketKind, a: cc.Addresses = cc.ADDRESSES
) -> Candidate | None:
    """The chain's view of `market` for `wallet`; None while the condition is unresolved.

    v1: the payout vector is CTF's (`payoutDenominator`, `payoutNumerators`). v2: the
    PositionManager's payout interface is not published (the SDK reads only balances before a
    Router redeem), so Gamma's resolved `outcomePrices` give the payout and the chain the balance.
    """
    if market.version == "v2":
        if market.payouts is None:
            return None
        token, payouts = a.position_manager, market.payouts
    else:
        den = cc.decode_uint(await rpc.call(cc.payout_denominator(market.condition_id, a)))
        if den == 0:
            return None
        nums = [
            cc.decode_uint(await rpc.call(cc.payout_numerator(market.condition_id, i, a)))
            for i in (0, 1)
        ]
        token, payouts = a.ctf, (Decimal(nums[0]) / den, Decimal(nums[1]) / den)
    balances = [
        cc.decode_uint(await rpc.call(cc.erc1155_balance_of(token, wallet, t)))
        for t in market.token_ids
    ]
    return Candidate(market=market, balances=(balances[0], balances[1]), payouts=payouts)


def calls_for(
    c: Candidate, *, one_tx_per_call: bool = False, a: cc.Addresses = cc.ADDRESSES
) -> list[cc.Call]:
    """The calls that redeem `c` entirely. v2: one Router call per outcome held (with
    `one_tx_per_call`, an EOA's single transaction, only the first paying outcome held)."""
    kind = c.market.kind
    if kind == "binary":
        return [cc.adapter_redeem(a.collateral_adapter, c.condition_id, a)]
    if kind == "neg_risk":
        return [cc.adapter_redeem(a.neg_risk_collateral_adapter, c.condition_id, a)]
    held = [i for i in (0, 1) if c.balances[i] > 0]
    if one_tx_per_call:
        paying = [i for i in held if c.payouts[i] > 0]
        held = paying[:1]
    return [cc.router_redeem(c.condition_id, i, c.balances[i], a) for i in held]
