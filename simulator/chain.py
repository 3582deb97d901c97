"""A Polygon-like chain holding the contracts polyd's approvals and redemptions touch.

Balances are the venue's own ledger (`Engine.collateral` for pUSD, `Engine.shares` for the
outcome tokens), so a redeemed payout shows in the CLOB's balance and the Data API at once. On
top of it this keeps what only the chain knows: accounts' POL and nonces, ERC-20 allowances,
ERC-1155 operator approvals, transactions, blocks, receipts and logs.

Contracts and their behaviour (addresses: Polymarket/py-sdk `polymarket/environments.py`,
polymarket-client 0.14.0; calls: `_internal/actions/relayer/calls.py`; docs pages
`trading/ctf/redeem` and `migrate/polymarket-v2/*`):

* pUSD (`collateral_token`): `balanceOf`, `allowance`, `approve`.
* ConditionalTokens (`conditional_tokens`, and `neg_risk_adapter` for neg-risk balances):
  `balanceOf`, `isApprovedForAll`, `setApprovalForAll`, `payoutNumerators`,
  `payoutDenominator`, and `redeemPositions`, which **succeeds and pays nothing** when called
  with pUSD as collateral: after the V2 cutover the outcome tokens' position ids derive from
  USDC.e, so the ids computed from pUSD hold no balance (the trap of the reference §12.3, a
  third-party report consistent with the adapter code).
* `CtfCollateralAdapter` / `NegRiskCtfCollateralAdapter`: `redeemPositions(pUSD, 0x0, cid,
  [1,2])` pulls the caller's whole balance of both outcome tokens (it needs
  `CTF.setApprovalForAll(adapter, true)`), redeems, and pays pUSD. Each adapter serves only its
  kind of market (binary / neg-risk) and v1 markets.
* Protocol-V2 `PositionManager` (ERC-1155 balances of v2 markets) and `Router.redeem(bytes31
  conditionId, uint256 outcomeIndex, uint256 amount)` (selector 0xd217a3cc), which needs
  `PositionManager.setApprovalForAll(Router, true)`.
* The auto-redeem operator: `auto_redeem()` redeems, as the operator, every resolved position
  of every wallet that approved it (on CTF for v1, on the PositionManager for v2).

Transactions are mined after `mine_delay_s`, or held pending while `hold` is set (a test's
"the transaction is still pending" state); each mined transaction gets its own block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

import rlp  # type: ignore[import-untyped]  # rlp ships no type information
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak

from simulator.market import SimMarket

if TYPE_CHECKING:
    from simulator.venue import Venue

UNIT = Decimal(10) ** 6
GWEI = 10**9
POL = 10**18
ZERO_ADDR = "0x" + "00" * 20


def sel(signature: str) -> bytes:
    """The 4-byte selector of a function signature."""
    return keccak(signature.encode())[:4]


def topic(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


def to_units(amount: Decimal) -> int:
    """pUSD / shares (6 decimals) as the integer the contracts hold."""
    return int((amount * UNIT).to_integral_value(rounding=ROUND_DOWN))


def addr_topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


@dataclass(frozen=True)
class Contracts:
    """Production addresses (SDK `environments.PRODUCTION`), lower-case."""

    collateral: str = "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb"
    ctf: str = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
    neg_risk_adapter: str = "0xd91e80cf2e7be2e162c6513ced06f1dd0da35296"
    collateral_adapter: str = "0xada100db00ca00073811820692005400218fce1f"
    neg_risk_collateral_adapter: str = "0xada2005600dec949baf300f4c6120000bdb6eaab"
    position_manager: str = "0x006f54f7f9a22e0000cc2ab60031000000ae9fef"
    router: str = "0x12121212006e4cd160d18e3f00711da5c3372600"
    auto_redeem_operator: str = "0xa1200000d0002264c9a1698e001292d00e1b00af"
    proxy_factory: str = "0xab45c5a4b0c941a2f231c04c3f49182e1a254052"
    deposit_wallet_factory: str = "0x00000000000fb5c9adea0298d729a0cb3823cc07"
    safe_multisend: str = "0xa238cbeb142c10ef7ad8442c6d1f9e89e07e7761"
    relay_hub: str = "0xd216153c06e857cd7f72665e0af1d7d82172f494"

    def all(self) -> set[str]:
        return {getattr(self, f) for f in self.__dataclass_fields__}


class Revert(Exception):
    """A call reverted; the message is the revert reason."""


@dataclass
class Log:
    address: str
    topics: list[str]
    data: str
    block: int = 0
    tx_hash: str = ""
    index: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "topics": self.topics,
            "data": self.data,
            "blockNumber": hex(self.block),
            "transactionHash": self.tx_hash,
            "logIndex": hex(self.index),
            "removed": False,
        }


@dataclass
class Tx:
    """One transaction: an EOA's signed transaction, or one the relayer or operator sent."""

    hash: str
    sender: str
    to: str
    data: bytes
    nonce: int
    gas: int = 200_000
    gas_price: int = 0
    block: int | None = None
    status: int | None = None  # 1 success, 0 reverted; None while pending
    error: str = ""
    logs: list[Log] = field(default_factory=list)
    calls: list[tuple[str, bytes]] = field(default_factory=list)  # (to, data) executed

    @property
    def pending(self) -> bool:
        return self.block is None


PAYOUT_REDEMPTION = topic("PayoutRedemption(address,address,bytes32,bytes32,uint256[],uint256)")
APPROVAL_FOR_ALL = topic("ApprovalForAll(address,address,bool)")
APPROVAL = topic("Approval(address,address,uint256)")
V2_REDEEM = topic("Redeemed(address,bytes31,uint256,uint256,uint256)")


class Chain:
    """The chain's state and the contracts' behaviour; `simulator.rpc` serves it."""

    def __init__(self, venue: Venue, *, contracts: Contracts | None = None) -> None:
        self.venue = venue
        self.c = contracts or Contracts()
        self.chain_id = venue.chain_id
        self.block = 1_000_000
        self.block_times: dict[int, int] = {self.block: int(time.time())}
        self.gas_price = 30 * GWEI
        self.priority_fee = 30 * GWEI
        self.gas_used = 120_000
        self.pol: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.allowances: dict[tuple[str, str], int] = {}
        self.approvals: set[tuple[str, str, str]] = set()  # (token contract, owner, operator)
        self.txs: dict[str, Tx] = {}
        self.logs: list[Log] = []
        self.mine_delay_s = 0.05
        self.hold = False
        """While True, sent transactions stay pending (`release()` mines them)."""
        self._pending: list[Tx] = []
        self.on_mined: list[Callable[[Tx], None]] = []
        self._seq = 0

    # --- setup ------------------------------------------------------------------------------
    def fund_pol(self, address: str, amount_pol: Decimal) -> None:
        a = address.lower()
        self.pol[a] = self.pol.get(a, 0) + int(amount_pol * POL)

    def approve_all(self, owner: str, operator: str, *, token: str | None = None) -> None:
        """Record `setApprovalForAll(operator, true)` by `owner` on `token` (CTF by default)."""
        self.approvals.add(((token or self.c.ctf).lower(), owner.lower(), operator.lower()))

    def market_of_condition(self, condition: bytes) -> SimMarket | None:
        """The market of a 32-byte (v1) or 31-byte (v2) condition id."""
        h = condition.hex()
        for m in self.venue.markets:
            cid = m.condition_id.lower()[2:]
            if (len(h) == 64 and cid == h) or (len(h) == 62 and cid[:62] == h and is_v2(m)):
                return m
        return None

    # --- reading ----------------------------------------------------------------------------
    def shares_units(self, owner: str, token_id: str) -> int:
        return to_units(self.venue.engine.shares.get((owner.lower(), token_id), Decimal(0)))

    def collateral_units(self, owner: str) -> int:
        return to_units(self.venue.engine.collateral.get(owner.lower(), Decimal(0)))

    def payout_denominator(self, m: SimMarket) -> int:
        if not m.resolved:
            return 0
        return 2 if m.is_50_50 else 1

    def call(self, to: str, data: bytes, sender: str = ZERO_ADDR) -> bytes:
        """A read-only `eth_call`."""
        to = to.lower()
        s, args = data[:4], data[4:]
        if to == self.c.collateral:
            if s == sel("balanceOf(address)"):
                (owner,) = abi_decode(["address"], args)
                return abi_encode(["uint256"], [self.collateral_units(owner)])
            if s == sel("allowance(address,address)"):
                owner, spender = abi_decode(["address", "address"], args)
                return abi_encode(
                    ["uint256"], [self.allowances.get((owner.lower(), spender.lower()), 0)]
                )
            if s == sel("decimals()"):
                return abi_encode(["uint8"], [6])
        if to in (self.c.ctf, self.c.neg_risk_adapter, self.c.position_manager):
            if s == sel("balanceOf(address,uint256)"):
                owner, token = abi_decode(["address", "uint256"], args)
                return abi_encode(["uint256"], [self._erc1155_balance(to, owner, str(token))])
            if s == sel("balanceOfBatch(address[],uint256[])"):
                owners, tokens = abi_decode(["address[]", "uint256[]"], args)
                out = [
                    self._erc1155_balance(to, o, str(t))
                    for o, t in zip(owners, tokens, strict=True)
                ]
                return abi_encode(["uint256[]"], [out])
            if s == sel("isApprovedForAll(address,address)"):
                owner, op = abi_decode(["address", "address"], args)
                ok = (self._approval_token(to), owner.lower(), op.lower()) in self.approvals
                return abi_encode(["bool"], [ok])
        if to == self.c.ctf:
            if s == sel("payoutDenominator(bytes32)"):
                (cid,) = abi_decode(["bytes32"], args)
                m = self.market_of_condition(cid)
                return abi_encode(["uint256"], [self.payout_denominator(m) if m else 0])
            if s == sel("payoutNumerators(bytes32,uint256)"):
                cid, index = abi_decode(["bytes32", "uint256"], args)
                m = self.market_of_condition(cid)
                if m is None or index > 1:
                    raise Revert("invalid condition or index")
                return abi_encode(["uint256"], [self._numerator(m, index)])
        raise Revert(f"unsupported call {s.hex()} on {to}")

    def _numerator(self, m: SimMarket, index: int) -> int:
        if not m.resolved:
            return 0
        return int(m.payouts[m.token_ids[index]] * self.payout_denominator(m))

    def _approval_token(self, contract: str) -> str:
        # The neg-risk adapter reports CTF balances and approvals: the tokens live in CTF.
        return self.c.ctf if contract == self.c.neg_risk_adapter else contract

    def _erc1155_balance(self, contract: str, owner: str, token: str) -> int:
        m = self.venue.market_of_token(token)
        if m is None:
            return 0
        if (contract == self.c.position_manager) != is_v2(m):
            return 0  # a v1 token id is not a PositionManager id and vice versa
        return self.shares_units(owner, token)

    # --- transactions -----------------------------------------------------------------------
    def next_hash(self, seed: bytes) -> str:
        self._seq += 1
        return "0x" + keccak(seed + self._seq.to_bytes(8, "big")).hex()

    def send_raw(self, raw: bytes) -> str:
        """`eth_sendRawTransaction` of an EIP-1559 (type 2) transaction; returns its hash."""
        if not raw or raw[0] != 2:
            raise Revert("only EIP-1559 (type 2) transactions are accepted")
        fields = rlp.decode(raw[1:])
        chain_id, nonce = _int(fields[0]), _int(fields[1])
        max_fee, gas, to, value, data = (
            _int(fields[3]),
            _int(fields[4]),
            fields[5],
            _int(fields[6]),
            fields[7],
        )
        if chain_id != self.chain_id:
            raise Revert(f"invalid chain id {chain_id}")
        sender = str(Account.recover_transaction(raw)).lower()
        h = "0x" + keccak(raw).hex()
        if h in self.txs:
            raise Revert("already known")
        expected = self.nonces.get(sender, 0) + sum(1 for t in self._pending if t.sender == sender)
        if nonce < expected:
            raise Revert(f"nonce too low: next nonce {expected}, tx nonce {nonce}")
        if nonce > expected:
            raise Revert(f"nonce too high: next nonce {expected}, tx nonce {nonce}")
        if max_fee < self.gas_price:
            raise Revert(f"max fee per gas less than block base fee: {max_fee} < {self.gas_price}")
        cost = gas * max_fee + value
        if self.pol.get(sender, 0) < cost:
            have = self.pol.get(sender, 0)
            raise Revert(f"insufficient funds for gas * price + value: have {have} want {cost}")
        tx = Tx(
            hash=h,
            sender=sender,
            to="0x" + bytes(to).hex(),
            data=bytes(data),
            nonce=nonce,
            gas=gas,
            gas_price=self.gas_price,
        )
        self._enqueue(tx)
        return h

    def submit_internal(self, sender: str, calls: list[tuple[str, bytes]], seed: bytes) -> Tx:
        """A transaction the relayer or the operator sends for `sender` (gas paid by them)."""
        tx = Tx(
            hash=self.next_hash(seed),
            sender=sender.lower(),
            to=calls[0][0] if calls else "",
            data=calls[0][1] if calls else b"",
            nonce=-1,
            calls=list(calls),
        )
        self._enqueue(tx)
        return tx

    def _enqueue(self, tx: Tx) -> None:
        self.txs[tx.hash] = tx
        self._pending.append(tx)
        if not self.hold:
            asyncio.get_running_loop().call_later(self.mine_delay_s, self._mine_ready)

    def release(self) -> None:
        """Stop holding and mine every pending transaction now."""
        self.hold = False
        self._mine_ready()

    def _mine_ready(self) -> None:
        if self.hold:
            return
        while self._pending:
            self.mine(self._pending.pop(0))

    def mine(self, tx: Tx) -> None:
        """Execute `tx` in a new block: its calls apply all or nothing."""
        self.block += 1
        self.block_times[self.block] = int(time.time())
        tx.block = self.block
        if tx.nonce >= 0:  # an EOA transaction: nonce and gas
            self.nonces[tx.sender] = tx.nonce + 1
            self.pol[tx.sender] = self.pol.get(tx.sender, 0) - self.gas_used * tx.gas_price
            tx.calls = [(tx.to, tx.data)]
        snapshot = self._snapshot()
        logs: list[Log] = []
        try:
            for to, data in tx.calls:
                logs += self.execute(tx.sender, to, data)
            tx.status = 1
        except Revert as e:
            self._restore(snapshot)
            tx.status, tx.error, logs = 0, str(e), []
        for i, lg in enumerate(logs):
            lg.block, lg.tx_hash, lg.index = self.block, tx.hash, i
        tx.logs = logs
        self.logs += logs
        del self.logs[: max(0, len(self.logs) - 10_000)]
        for cb in list(self.on_mined):
            cb(tx)

    def _snapshot(self) -> tuple[Any, ...]:
        e = self.venue.engine
        return dict(e.collateral), dict(e.shares), dict(self.allowances), set(self.approvals)

    def _restore(self, snap: tuple[Any, ...]) -> None:
        e = self.venue.engine
        e.collateral, e.shares = snap[0], snap[1]
        self.allowances, self.approvals = snap[2], snap[3]

    # --- contract writes --------------------------------------------------------------------
    def execute(self, sender: str, to: str, data: bytes) -> list[Log]:
        """Apply one call from `sender`; raise `Revert` to undo the whole transaction."""
        to, sender = to.lower(), sender.lower()
        s, args = data[:4], data[4:]
        if to == self.c.collateral and s == sel("approve(address,uint256)"):
            spender, amount = abi_decode(["address", "uint256"], args)
            self.allowances[(sender, spender.lower())] = amount
            return [Log(to, [APPROVAL, addr_topic(sender), addr_topic(spender)], _word(amount))]
        if to in (self.c.ctf, self.c.position_manager) and s == sel(
            "setApprovalForAll(address,bool)"
        ):
            op, ok = abi_decode(["address", "bool"], args)
            key = (to, sender, op.lower())
            if ok:
                self.approvals.add(key)
            else:
                self.approvals.discard(key)
            return [Log(to, [APPROVAL_FOR_ALL, addr_topic(sender), addr_topic(op)], _word(int(ok)))]
        redeem = sel("redeemPositions(address,bytes32,bytes32,uint256[])")
        if to == self.c.ctf and s == redeem:
            collateral, _parent, cid, index_sets = abi_decode(
                ["address", "bytes32", "bytes32", "uint256[]"], args
            )
            m = self.market_of_condition(cid)
            if m is None or not m.resolved:
                raise Revert("result for condition not received yet")
            # Position ids derived from pUSD hold nothing: nothing is burned, nothing paid.
            return [self._payout_log(to, sender, collateral, cid, index_sets, 0)]
        if to in (self.c.collateral_adapter, self.c.neg_risk_collateral_adapter) and s == redeem:
            collateral, _, cid, index_sets = abi_decode(
                ["address", "bytes32", "bytes32", "uint256[]"], args
            )
            m = self.market_of_condition(cid)
            if m is None or is_v2(m):
                raise Revert("unknown condition")
            if m.neg_risk != (to == self.c.neg_risk_collateral_adapter):
                raise Revert("wrong adapter for this market kind")
            if (self.c.ctf, sender, to) not in self.approvals:
                raise Revert("ERC1155: caller is not token owner or approved")
            paid = self.redeem_all(sender, m)
            return [self._payout_log(to, sender, collateral, cid, index_sets, paid)]
        if to == self.c.router and s == sel("redeem(bytes31,uint256,uint256)"):
            cid, index, amount = abi_decode(["bytes31", "uint256", "uint256"], args)
            m = self.market_of_condition(cid)
            if m is None or not is_v2(m):
                raise Revert("unknown condition")
            if (self.c.position_manager, sender, to) not in self.approvals:
                raise Revert("ERC1155: caller is not token owner or approved")
            paid = self.redeem_one(sender, m, index, amount)
            return [
                Log(to, [V2_REDEEM, addr_topic(sender)], _words(cid.hex(), index, amount, paid))
            ]
        raise Revert(f"unsupported call {s.hex()} on {to}")

    def _payout_log(
        self, to: str, sender: str, collateral: str, cid: bytes, index_sets: Any, paid: int
    ) -> Log:
        data = abi_encode(["bytes32", "uint256[]", "uint256"], [cid, list(index_sets), paid])
        return Log(
            to,
            [PAYOUT_REDEMPTION, addr_topic(sender), addr_topic(collateral), "0x" + "00" * 32],
            "0x" + data.hex(),
        )

    def redeem_all(self, owner: str, m: SimMarket) -> int:
        """Burn `owner`'s whole balance of both tokens of resolved `m`; pay pUSD. Units paid."""
        if not m.resolved:
            raise Revert("result for condition not received yet")
        paid = 0
        for i in (0, 1):
            paid += self.redeem_one(owner, m, i, self.shares_units(owner, m.token_ids[i]))
        return paid

    def redeem_one(self, owner: str, m: SimMarket, index: int, amount: int) -> int:
        if not m.resolved:
            raise Revert("result for condition not received yet")
        if index > 1:
            raise Revert("invalid outcome index")
        token = m.token_ids[index]
        if amount > self.shares_units(owner, token):
            raise Revert("ERC1155: burn amount exceeds balance")
        e = self.venue.engine
        shares = Decimal(amount) / UNIT
        e.shares[(owner, token)] = e.shares.get((owner, token), Decimal(0)) - shares
        paid = to_units(shares * m.payouts[token])
        e.collateral[owner] = e.collateral.get(owner, Decimal(0)) + Decimal(paid) / UNIT
        return paid

    # --- the auto-redeem operator -----------------------------------------------------------
    def auto_redeem_every(self, seconds: float) -> None:
        """Run the operator every `seconds` from now on (its real delay is UNCERTAIN)."""

        def tick() -> None:
            self.auto_redeem()
            self.venue._later(seconds, tick)

        self.venue._later(seconds, tick)

    def auto_redeem(self) -> list[Tx]:
        """Redeem, as the operator, every resolved position of every wallet that approved it."""
        op = self.c.auto_redeem_operator
        sent = []
        for token_contract, owner, operator in sorted(self.approvals):
            if operator != op:
                continue
            for m in self.venue.markets:
                if not m.resolved or (token_contract == self.c.position_manager) != is_v2(m):
                    continue
                if all(self.shares_units(owner, t) == 0 for t in m.token_ids):
                    continue
                seed = owner.encode() + m.condition_id.encode()
                tx = Tx(hash=self.next_hash(seed), sender=op, to=op, data=b"", nonce=-1)
                self.txs[tx.hash] = tx
                self.block += 1
                self.block_times[self.block] = int(time.time())
                tx.block, tx.status = self.block, 1
                paid = self.redeem_all(owner, m)
                cid = bytes.fromhex(m.condition_id[2:66])
                lg = self._payout_log(op, owner, self.c.collateral, cid, [1, 2], paid)
                lg.block, lg.tx_hash = self.block, tx.hash
                tx.logs = [lg]
                self.logs.append(lg)
                sent.append(tx)
        return sent


def is_v2(m: SimMarket) -> bool:
    return m.version == "v2"


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big") if b else 0


def _word(v: int) -> str:
    return "0x" + v.to_bytes(32, "big").hex()


def _words(*vals: Any) -> str:
    out = ""
    for v in vals:
        out += v.ljust(64, "0") if isinstance(v, str) else v.to_bytes(32, "big").hex()
    return "0x" + out
