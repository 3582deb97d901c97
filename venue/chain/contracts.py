"""Polygon contract addresses and the calls polyd makes to them (approvals, redemption).

Addresses are the production environment table of Polymarket's SDK (Polymarket/py-sdk
`polymarket/environments.py`, polymarket-client 0.14.0); `tests/unit/test_chain_calls.py`
fails if the installed SDK's table disagrees. Calls follow the SDK's builders
(`_internal/actions/relayer/calls.py`): `redeemPositions(pUSD, 0x0, conditionId, [1, 2])` on a
collateral adapter for v1 markets, `redeem(bytes31, outcomeIndex, amount)` on the Router for
Protocol-V2 markets, `setApprovalForAll(operator, true)` on the ERC-1155 contracts and
`approve(spender, amount)` on pUSD. Built here with `eth_abi`, so nothing outside `venue/`
imports the SDK's private modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

MAX_UINT256: Final = (1 << 256) - 1


@dataclass(frozen=True, slots=True)
class Addresses:
    """Contract addresses polyd's chain code uses (checksummed, production)."""

    collateral: str = "0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB"  # pUSD
    ctf: str = "0x4D97DCd97eC945f40cF65F87097ACe5EA0476045"  # ConditionalTokens
    neg_risk_adapter: str = "0xd91E80cF2E7be2e162c6513ceD06f1dD0dA35296"
    collateral_adapter: str = "0xAdA100Db00Ca00073811820692005400218FcE1f"
    neg_risk_collateral_adapter: str = "0xadA2005600Dec949baf300f4C6120000bDB6eAab"
    position_manager: str = "0x006F54F7f9A22e0000CC2AB60031000000ae9fEF"
    router: str = "0x12121212006e4CD160D18e3f00711DA5c3372600"
    auto_redeem_operator: str = "0xa1200000d0002264C9a1698e001292D00E1b00af"
    proxy_factory: str = "0xaB45c5A4B0c941a2F231C04C3f49182e1A254052"
    deposit_wallet_factory: str = "0x00000000000Fb5C9ADea0298D729A0CB3823Cc07"
    safe_multisend: str = "0xA238CBeb142c10Ef7Ad8442C6D1f9E89e07e7761"
    relay_hub: str = "0xD216153c06E857cD7f72665E0aF1d7D82172F494"


ADDRESSES: Final = Addresses()


@dataclass(frozen=True, slots=True)
class Call:
    """One contract call: target and calldata."""

    to: str
    data: bytes

    @property
    def data_hex(self) -> str:
        return "0x" + self.data.hex()


def selector(signature: str) -> bytes:
    return keccak(signature.encode("ascii"))[:4]


def _cid32(condition_id: str) -> bytes:
    raw = bytes.fromhex(condition_id.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"condition id must be 32 bytes, got {len(raw)}: {condition_id}")
    return raw


def cid31(condition_id: str) -> bytes:
    """A Protocol-V2 condition id as bytes31 (a bytes32 id ends in the outcome byte 00/01)."""
    h = condition_id.lower().removeprefix("0x")
    if len(h) == 64 and h.endswith(("00", "01")):
        h = h[:-2]
    if len(h) != 62:
        raise ValueError(
            f"a Protocol-V2 condition id is bytes31 (or bytes32 ending 00/01): {condition_id}"
        )
    return bytes.fromhex(h)


# --- writes -----------------------------------------------------------------------------------
def adapter_redeem(adapter: str, condition_id: str, a: Addresses = ADDRESSES) -> Call:
    """`redeemPositions(pUSD, 0x0, conditionId, [1, 2])` on a collateral adapter."""
    sig = selector("redeemPositions(address,bytes32,bytes32,uint256[])")
    args = abi_encode(
        ["address", "bytes32", "bytes32", "uint256[]"],
        [a.collateral, b"\x00" * 32, _cid32(condition_id), [1, 2]],
    )
    return Call(adapter, sig + args)


def ctf_redeem_with_pusd(condition_id: str, a: Addresses = ADDRESSES) -> Call:
    """The trap: CTF `redeemPositions` with pUSD as collateral succeeds and pays nothing.
    Never sent by polyd; tests use it to prove the zero-payout check catches it."""
    return adapter_redeem(a.ctf, condition_id, a)


def router_redeem(
    condition_id: str, outcome_index: int, amount: int, a: Addresses = ADDRESSES
) -> Call:
    """`Router.redeem(bytes31 conditionId, uint256 outcomeIndex, uint256 amount)`."""
    if outcome_index not in (0, 1):
        raise ValueError("a Protocol-V2 outcome index is 0 or 1")
    args = abi_encode(
        ["bytes31", "uint256", "uint256"], [cid31(condition_id), outcome_index, amount]
    )
    return Call(a.router, selector("redeem(bytes31,uint256,uint256)") + args)


def set_approval_for_all(token: str, operator: str, approved: bool = True) -> Call:
    args = abi_encode(["address", "bool"], [operator, approved])
    return Call(token, selector("setApprovalForAll(address,bool)") + args)


def erc20_approve(token: str, spender: str, amount: int = MAX_UINT256) -> Call:
    return Call(
        token,
        selector("approve(address,uint256)")
        + abi_encode(["address", "uint256"], [spender, amount]),
    )


# --- reads ------------------------------------------------------------------------------------
def erc20_balance_of(token: str, owner: str) -> Call:
    return Call(token, selector("balanceOf(address)") + abi_encode(["address"], [owner]))


def erc1155_balance_of(token: str, owner: str, token_id: str) -> Call:
    args = abi_encode(["address", "uint256"], [owner, int(token_id)])
    return Call(token, selector("balanceOf(address,uint256)") + args)


def is_approved_for_all(token: str, owner: str, operator: str) -> Call:
    args = abi_encode(["address", "address"], [owner, operator])
    return Call(token, selector("isApprovedForAll(address,address)") + args)


def payout_denominator(condition_id: str, a: Addresses = ADDRESSES) -> Call:
    return Call(
        a.ctf,
        selector("payoutDenominator(bytes32)") + abi_encode(["bytes32"], [_cid32(condition_id)]),
    )


def payout_numerator(condition_id: str, index: int, a: Addresses = ADDRESSES) -> Call:
    args = abi_encode(["bytes32", "uint256"], [_cid32(condition_id), index])
    return Call(a.ctf, selector("payoutNumerators(bytes32,uint256)") + args)


def decode_uint(data: bytes) -> int:
    (v,) = abi_decode(["uint256"], data)
    return int(v)


def decode_bool(data: bytes) -> bool:
    (v,) = abi_decode(["bool"], data)
    return bool(v)


@dataclass(frozen=True, slots=True)
class Approval:
    """One ERC-1155 operator approval redemption needs."""

    name: str
    token: str
    operator: str


def redemption_approvals(a: Addresses = ADDRESSES) -> tuple[Approval, ...]:
    """What `approve` sets and `doctor` checks: both collateral adapters and the auto-redeem
    operator on CTF; the Router and the operator on the PositionManager (v2 markets)."""
    return (
        Approval("CTF → CtfCollateralAdapter", a.ctf, a.collateral_adapter),
        Approval("CTF → NegRiskCtfCollateralAdapter", a.ctf, a.neg_risk_collateral_adapter),
        Approval("CTF → auto-redeem operator", a.ctf, a.auto_redeem_operator),
        Approval("PositionManager → Router", a.position_manager, a.router),
        Approval(
            "PositionManager → auto-redeem operator", a.position_manager, a.auto_redeem_operator
        ),
    )
