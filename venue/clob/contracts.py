"""The CTF Exchange contracts orders are signed for, per chain (the EIP-712 `verifyingContract`).

Polygon (137): Polymarket/py-sdk `polymarket/environments.py` `PRODUCTION` (`standard_exchange`,
`neg_risk_exchange`, `exchange_v3`); `tests/unit/test_sdk_signer_equivalence.py` holds them equal
to the installed SDK's. Amoy (80002): the SDK ships no testnet environment; these are the
addresses of py-clob-client-v2's `config.py` (https://github.com/Polymarket/py-clob-client-v2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Exchanges:
    standard: str
    """CTF Exchange V2: binary v1 markets (EIP-712 domain version "2")."""
    neg_risk: str
    """Neg-risk CTF Exchange V2 (domain version "2")."""
    v3: str
    """ExchangeV3: Protocol-V2 markets (domain version "3"); polyd does not route orders there."""


EXCHANGES: Final = {
    137: Exchanges(
        standard="0xE111180000d2663C0091e4f400237545B87B996B",
        neg_risk="0xe2222d279d744050d28e00520010520000310F59",
        v3="0xe3333700cA9d93003F00f0F71f8515005F6c00Aa",
    ),
    80002: Exchanges(
        standard="0xE111180000d2663C0091e4f400237545B87B996B",
        neg_risk="0xe2222d279d744050d28e00520010520000310F59",
        v3="0x9fE6e61422AdB6F610d8597F9684b16912D50C3D",
    ),
}


def exchanges(chain_id: int) -> Exchanges:
    """The exchange contracts on `chain_id`; `ValueError` naming it if polyd knows none."""
    try:
        return EXCHANGES[chain_id]
    except KeyError:
        raise ValueError(f"no CTF Exchange known on chain {chain_id} (137 or 80002)") from None
