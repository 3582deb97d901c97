"""Who sends a redemption, per wallet type (reference §12.4; Polymarket/py-sdk
`_internal/actions/relayer/gasless.py`, `_internal/eoa/broadcast.py`):

* `EoaSender` (signature type 0): the EOA signs and broadcasts its own EIP-1559 transaction and
  pays the gas in POL; a redemption that would leave less than the POL floor is refused.
* `RelayerSender` (1 proxy, 2 Safe, 3 deposit wallet): the signer signs the relayer's envelope
  for the wallet; Polymarket's relayer sends it and pays the gas.

Each sender signs once (`prepare`), and the redeemer journals the signed payload before
`send`. `resume` decides what a journaled-but-unconfirmed send became after a crash, by
looking it up, never by signing again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from errors import TransientError
from storage.redemptions import Redemption
from venue.chain import signing
from venue.chain.contracts import Call
from venue.chain.relayer import STATES_DONE, STATES_FAILED, RelayerClient, RelayerError
from venue.chain.rpc import ChainError, RpcClient
from venue.clob.auth import LocalSigner

POL = Decimal(10) ** 18

Resume = Literal["sent", "failed", "unknown"]
Outcome = Literal["confirmed", "failed", "pending"]


class SendRefused(Exception):
    """The node or relayer refused the payload outright: nothing was sent."""


class BelowPolFloor(SendRefused):
    """The EOA's POL after gas would fall below the floor: fund it with POL."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A signed payload ready to journal and send."""

    payload: str
    tx_hash: str | None = None
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    tx_hash: str | None
    relayer_id: str | None


class Sender(Protocol):
    wallet_type: str
    """EOA, PROXY, SAFE or WALLET."""

    @property
    def one_call_per_tx(self) -> bool: ...

    async def prepare(self, calls: list[Call]) -> Prepared: ...

    async def send(self, payload: str, tx_hash: str | None) -> Sent: ...

    async def resume(self, row: Redemption) -> tuple[Resume, Sent | None, str]: ...

    async def outcome(
        self, tx_hash: str | None, relayer_id: str | None
    ) -> tuple[Outcome, str | None, str]: ...


class EoaSender:
    """An EOA's own transactions over JSON-RPC."""

    wallet_type = "EOA"
    one_call_per_tx = True

    def __init__(self, *, rpc: RpcClient, key: str, chain_id: int, pol_floor: Decimal) -> None:
        self._rpc = rpc
        self._key = key
        self._chain_id = chain_id
        self._floor = pol_floor
        self.address = LocalSigner(key).address

    async def prepare(self, calls: list[Call]) -> Prepared:
        if len(calls) != 1:
            raise ValueError("an EOA transaction carries exactly one call")
        call = calls[0]
        max_fee, tip = await self._rpc.fees()
        gas = await self._rpc.estimate_gas(self.address, call) * 6 // 5  # 20% headroom
        have = Decimal(await self._rpc.balance(self.address)) / POL
        cost = Decimal(gas * max_fee) / POL
        if have - cost < self._floor:
            raise BelowPolFloor(
                f"EOA {self.address} holds {have:.4f} POL; gas up to {cost:.4f} POL would leave"
                f" less than the POL floor {self._floor}: send POL to it"
            )
        nonce = await self._rpc.nonce(self.address, "pending")
        raw, tx_hash = await asyncio.to_thread(
            signing.sign_eoa_tx,
            self._key,
            chain_id=self._chain_id,
            nonce=nonce,
            call=call,
            gas=gas,
            max_fee=max_fee,
            tip=tip,
        )
        return Prepared(payload=raw.hex(), tx_hash=tx_hash, nonce=str(nonce))

    async def send(self, payload: str, tx_hash: str | None) -> Sent:
        try:
            await self._rpc.send_raw(bytes.fromhex(payload))
        except ChainError as e:
            if "already known" not in str(e):
                raise SendRefused(str(e)) from e
        return Sent(tx_hash=tx_hash, relayer_id=None)

    async def resume(self, row: Redemption) -> tuple[Resume, Sent | None, str]:
        """A SENDING row: on chain already → sent; else re-broadcast the *same* signed bytes
        (its nonce makes a second execution impossible)."""
        assert row.tx_hash is not None
        if await self._rpc.transaction(row.tx_hash) is not None:
            return "sent", Sent(row.tx_hash, None), "found on chain"
        try:
            assert row.payload is not None
            sent = await self.send(row.payload, row.tx_hash)
            return "sent", sent, "re-broadcast the same signed transaction"
        except SendRefused as e:
            return "failed", None, f"not on chain and refused again: {e}"

    async def outcome(
        self, tx_hash: str | None, relayer_id: str | None
    ) -> tuple[Outcome, str | None, str]:
        assert tx_hash is not None
        r = await self._rpc.receipt(tx_hash)
        if r is None:
            return "pending", tx_hash, ""
        if int(str(r.get("status", "0x0")), 16) == 1:
            return "confirmed", tx_hash, ""
        return "failed", tx_hash, "transaction reverted"


class RelayerSender:
    """A proxy, Safe or deposit wallet's calls through Polymarket's relayer."""

    one_call_per_tx = False

    def __init__(
        self, *, relayer: RelayerClient, key: str, chain_id: int, wallet: str, wallet_type: str
    ) -> None:
        if wallet_type not in ("PROXY", "SAFE", "WALLET"):
            raise ValueError(f"no relayer transaction type {wallet_type}")
        self._relayer = relayer
        self._key = key
        self._chain_id = chain_id
        self._wallet = wallet
        self.wallet_type = wallet_type
        self.address = LocalSigner(key).address

    async def _nonce(self) -> tuple[str, str]:
        if self.wallet_type == "PROXY":
            return await self._relayer.relay_payload(self.address, "PROXY")
        return "", await self._relayer.nonce(self.address, self.wallet_type)

    async def prepare(self, calls: list[Call]) -> Prepared:
        relay, nonce = await self._nonce()
        if self.wallet_type == "PROXY":
            env = await asyncio.to_thread(
                signing.proxy_envelope,
                self._key,
                wallet=self._wallet,
                calls=calls,
                nonce=nonce,
                relay=relay,
            )
        elif self.wallet_type == "SAFE":
            env = await asyncio.to_thread(
                signing.safe_envelope,
                self._key,
                chain_id=self._chain_id,
                wallet=self._wallet,
                calls=calls,
                nonce=nonce,
            )
        else:
            env = await asyncio.to_thread(
                signing.deposit_wallet_envelope,
                self._key,
                chain_id=self._chain_id,
                wallet=self._wallet,
                calls=calls,
                nonce=nonce,
                deadline=int(time.time()) + signing.DEPOSIT_DEADLINE_S,
            )
        return Prepared(payload=json.dumps(env), nonce=nonce)

    async def send(self, payload: str, tx_hash: str | None) -> Sent:
        try:
            tid, tx_hash = await self._relayer.submit(json.loads(payload))
        except RelayerError as e:
            raise SendRefused(str(e)) from e
        return Sent(tx_hash=tx_hash or None, relayer_id=tid)

    async def resume(self, row: Redemption) -> tuple[Resume, Sent | None, str]:
        """A SENDING row: the relayer's nonce still at ours → the envelope never arrived, send
        the same one; past it → it arrived but its id is lost: UNKNOWN, for a human."""
        _, current = await self._nonce()
        if row.relayer_nonce is not None and int(current) > int(row.relayer_nonce):
            return "unknown", None, f"relayer nonce moved past {row.relayer_nonce}"
        try:
            assert row.payload is not None
            sent = await self.send(row.payload, None)
            return "sent", sent, "re-submitted the same signed envelope"
        except SendRefused as e:
            return "failed", None, f"refused again: {e}"

    async def outcome(
        self, tx_hash: str | None, relayer_id: str | None
    ) -> tuple[Outcome, str | None, str]:
        assert relayer_id is not None
        try:
            t = await self._relayer.transaction(relayer_id)
        except TransientError:
            return "pending", tx_hash, ""
        if t is None:
            return "pending", tx_hash, ""
        state = str(t.get("state", ""))
        tx_hash = str(t.get("transactionHash") or "") or tx_hash
        if state in STATES_DONE:
            return "confirmed", tx_hash, ""
        if state in STATES_FAILED:
            return "failed", tx_hash, str(t.get("errorMsg") or state)
        return "pending", tx_hash, state
