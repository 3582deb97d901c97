"""Polymarket's gasless relayer (`relayer-v2.polymarket.com`) for proxy, Safe and deposit wallets.

Routes (Polymarket/builder-relayer-client @ c42a054 `src/endpoints.ts`, `src/types.ts`; the SDK
Polymarket/py-sdk `_internal/actions/relayer/{nonce,submit,poll,gasless}.py`):

* `GET /nonce?address=&type=` → `{"nonce"}`; `GET /relay-payload?address=&type=` →
  `{"address": relay, "nonce"}`; the SDK's `GET /v1/account/transactions/params` → the same.
* `POST /submit` with the envelope the SDK builds (`type` PROXY / SAFE / WALLET, `from` the
  signer, `proxyWallet` or `depositWalletParams`, `nonce`, `signature`, ...) →
  `{"transactionID", "transactionHash", "state": "STATE_NEW"}`.
* `GET /transaction?id=` → `[{transactionID, transactionHash, state, from, to, proxyAddress,
  data, nonce, type, errorMsg, ...}]`; the SDK's `GET /v1/account/transactions/{id}` →
  `{transaction_id, transaction_hash, state, error_msg}`.

States: STATE_NEW → STATE_MINED → STATE_CONFIRMED, or STATE_FAILED when the calls revert (or a
test arms `fail_next`). Auth: `RELAYER_API_KEY` + `RELAYER_API_KEY_ADDRESS` headers (CLOB L2
credentials are not accepted: 401). The signature is recovered and must be the `from` address,
which must own the wallet (`register_wallet`): proxy = personal-sign of the "rlx:" relay hash
(`signing/proxy.py`), Safe = EIP-712 SafeTx with v+4 (`signing/safe.py`), deposit wallet =
EIP-712 `Batch` of `DepositWallet` version 1 (`signing/deposit_wallet.py`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils.crypto import keccak

from simulator.chain import Chain, Tx, sel

Json = dict[str, Any]
RELAY_ADDRESS = "0x7f6b1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2"
PROXY_CALL = sel("proxy((uint8,address,uint256,bytes)[])")
MULTISEND = sel("multiSend(bytes)")


@dataclass
class RelayedTx:
    id: str
    kind: str
    signer: str
    wallet: str
    to: str
    data: str
    nonce: str
    state: str = "STATE_NEW"
    tx_hash: str = ""
    error: str = ""
    created: float = field(default_factory=time.time)

    def as_json(self) -> Json:
        return {
            "transactionID": self.id,
            "transactionHash": self.tx_hash,
            "from": self.signer,
            "to": self.to,
            "proxyAddress": self.wallet,
            "data": self.data,
            "nonce": self.nonce,
            "value": "0",
            "state": self.state,
            "type": self.kind,
            "errorMsg": self.error,
            "createdAt": int(self.created),
        }


class Relayer:
    """The relayer's state over one `Chain`; `app()` serves it."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.api_keys: dict[str, str] = {}  # RELAYER_API_KEY -> RELAYER_API_KEY_ADDRESS
        self.wallets: dict[str, tuple[str, str]] = {}  # wallet -> (signer, kind)
        self.nonces: dict[tuple[str, str], int] = {}
        self.txs: dict[str, RelayedTx] = {}
        self.confirm_delay_s = 0.05
        self.fail_next = 0
        """The next N submissions end STATE_FAILED (a reverted relay), a test's fault knob."""
        self.submits = 0
        chain.on_mined.append(self._mined)

    def add_api_key(self, key: str, address: str) -> None:
        self.api_keys[key] = address.lower()

    def register_wallet(self, signer: str, wallet: str, kind: str) -> None:
        """Deploy a wallet of `kind` (PROXY, SAFE, WALLET) owned by `signer`."""
        if kind not in ("PROXY", "SAFE", "WALLET"):
            raise ValueError(f"unknown wallet kind {kind}")
        self.wallets[wallet.lower()] = (signer.lower(), kind)

    def app_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_get(prefix + "/nonce", self.nonce)
        app.router.add_get(prefix + "/relay-payload", self.relay_payload)
        app.router.add_get(prefix + "/v1/account/transactions/params", self.relay_payload)
        app.router.add_post(prefix + "/submit", self.submit)
        app.router.add_get(prefix + "/transaction", self.transaction)
        app.router.add_get(prefix + "/v1/account/transactions/{id}", self.transaction_v1)

    # --- routes -----------------------------------------------------------------------------
    def _auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("RELAYER_API_KEY", "")
        addr = request.headers.get("RELAYER_API_KEY_ADDRESS", "").lower()
        if not key or self.api_keys.get(key) != addr:
            return _json({"error": "invalid relayer api key"}, 401)
        return None

    def _nonce_of(self, request: web.Request) -> tuple[str, str] | web.Response:
        address = (request.query.get("address") or "").lower()
        kind = request.query.get("type") or ""
        if not address or kind not in ("PROXY", "SAFE", "WALLET"):
            return _json({"error": "address and type (PROXY, SAFE, WALLET) are required"}, 400)
        return address, kind

    async def nonce(self, request: web.Request) -> web.Response:
        k = self._nonce_of(request)
        if isinstance(k, web.Response):
            return k
        return _json({"nonce": str(self.nonces.get(k, 0))})

    async def relay_payload(self, request: web.Request) -> web.Response:
        k = self._nonce_of(request)
        if isinstance(k, web.Response):
            return k
        return _json({"address": RELAY_ADDRESS, "nonce": str(self.nonces.get(k, 0))})

    async def transaction(self, request: web.Request) -> web.Response:
        tx = self.txs.get(request.query.get("id") or "")
        return _json([tx.as_json()] if tx else [])

    async def transaction_v1(self, request: web.Request) -> web.Response:
        tx = self.txs.get(request.match_info["id"])
        if tx is None:
            return _json({"error": "transaction not found"}, 404)
        return _json(
            {
                "transaction_id": tx.id,
                "transaction_hash": tx.tx_hash or None,
                "state": tx.state,
                "error_msg": tx.error or None,
            }
        )

    async def submit(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read())
            signer = str(body["from"]).lower()
            kind = str(body["type"])
            nonce = int(str(body["nonce"]))
            sig = bytes.fromhex(str(body["signature"])[2:])
            wallet, calls, recovered = self._verify(kind, body, sig)
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as e:
            return _json({"error": f"invalid request: {e}"}, 400)
        if recovered != signer:
            return _json({"error": "invalid signature"}, 400)
        owner = self.wallets.get(wallet)
        if owner is None or owner != (signer, kind):
            return _json({"error": f"signer {signer} does not own {kind} wallet {wallet}"}, 400)
        expected = self.nonces.get((signer, kind), 0)
        if nonce != expected:
            return _json(
                {"error": f"batch nonce {nonce} does not match on-chain nonce {expected}"}, 400
            )
        self.nonces[(signer, kind)] = expected + 1
        self.submits += 1
        rt = RelayedTx(
            id=str(uuid.uuid4()),
            kind=kind,
            signer=signer,
            wallet=wallet,
            to=str(body.get("to", "")),
            data=str(body.get("data", "")),
            nonce=str(nonce),
        )
        self.txs[rt.id] = rt
        if self.fail_next > 0:
            self.fail_next -= 1
            asyncio.get_running_loop().call_later(
                self.confirm_delay_s, self._fail, rt, "execution reverted"
            )
        else:
            tx = self.chain.submit_internal(wallet, calls, seed=rt.id.encode())
            rt.tx_hash = tx.hash
        return _json({"transactionID": rt.id, "transactionHash": rt.tx_hash, "state": rt.state})

    # --- signatures and calls ---------------------------------------------------------------
    def _verify(
        self, kind: str, body: Json, sig: bytes
    ) -> tuple[str, list[tuple[str, bytes]], str]:
        chain_id = self.chain.chain_id
        if kind == "PROXY":
            wallet = str(body["proxyWallet"]).lower()
            sp = body["signatureParams"]
            data = bytes.fromhex(str(body["data"])[2:])
            payload = (
                b"rlx:"
                + _a(body["from"])
                + _a(body["to"])
                + data
                + int(sp["relayerFee"]).to_bytes(32, "big")
                + int(sp["gasPrice"]).to_bytes(32, "big")
                + int(sp["gasLimit"]).to_bytes(32, "big")
                + int(body["nonce"]).to_bytes(32, "big")
                + _a(sp["relayHub"])
                + _a(sp["relay"])
            )
            msg = encode_defunct(primitive=keccak(payload))
            recovered = str(Account.recover_message(msg, signature=sig)).lower()
            if data[:4] != PROXY_CALL:
                raise ValueError("proxy data is not a proxy((uint8,address,uint256,bytes)[]) call")
            (items,) = abi_decode(["(uint8,address,uint256,bytes)[]"], data[4:])
            return wallet, [(str(to).lower(), bytes(d)) for _, to, _, d in items], recovered
        if kind == "SAFE":
            wallet = str(body["proxyWallet"]).lower()
            sp = body["signatureParams"]
            data = bytes.fromhex(str(body["data"])[2:])
            typed = {
                "domain": {"chainId": chain_id, "verifyingContract": wallet},
                "types": {
                    "EIP712Domain": [
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"},
                    ],
                    "SafeTx": [
                        {"name": n, "type": t}
                        for n, t in (
                            ("to", "address"),
                            ("value", "uint256"),
                            ("data", "bytes"),
                            ("operation", "uint8"),
                            ("safeTxGas", "uint256"),
                            ("baseGas", "uint256"),
                            ("gasPrice", "uint256"),
                            ("gasToken", "address"),
                            ("refundReceiver", "address"),
                            ("nonce", "uint256"),
                        )
                    ],
                },
                "primaryType": "SafeTx",
                "message": {
                    "to": str(body["to"]),
                    "value": int(body.get("value", 0)),
                    "data": data,
                    "operation": int(sp["operation"]),
                    "safeTxGas": int(sp["safeTxnGas"]),
                    "baseGas": int(sp["baseGas"]),
                    "gasPrice": int(sp["gasPrice"]),
                    "gasToken": sp["gasToken"],
                    "refundReceiver": sp["refundReceiver"],
                    "nonce": int(body["nonce"]),
                },
            }
            s = encode_typed_data(full_message=typed)
            digest = keccak(b"\x19" + s.version + s.header + s.body)
            v = sig[64]
            fixed = sig[:64] + bytes([v - 4 if v in (31, 32) else v])
            recovered = str(
                Account.recover_message(encode_defunct(primitive=digest), signature=fixed)
            ).lower()
            to = str(body["to"]).lower()
            if to == self.chain.c.safe_multisend:
                return wallet, _multisend(data), recovered
            return wallet, [(to, data)], recovered
        if kind == "WALLET":
            p = body["depositWalletParams"]
            wallet = str(p["depositWallet"]).lower()
            calls = [
                (str(c["target"]).lower(), bytes.fromhex(str(c["data"])[2:])) for c in p["calls"]
            ]
            if int(p["deadline"]) < time.time():
                raise ValueError("deadline passed")
            typed = {
                "domain": {
                    "chainId": chain_id,
                    "name": "DepositWallet",
                    "verifyingContract": wallet,
                    "version": "1",
                },
                "types": {
                    "EIP712Domain": [
                        {"name": "name", "type": "string"},
                        {"name": "version", "type": "string"},
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"},
                    ],
                    "Batch": [
                        {"name": "wallet", "type": "address"},
                        {"name": "nonce", "type": "uint256"},
                        {"name": "deadline", "type": "uint256"},
                        {"name": "calls", "type": "Call[]"},
                    ],
                    "Call": [
                        {"name": "target", "type": "address"},
                        {"name": "value", "type": "uint256"},
                        {"name": "data", "type": "bytes"},
                    ],
                },
                "primaryType": "Batch",
                "message": {
                    "wallet": wallet,
                    "nonce": int(body["nonce"]),
                    "deadline": int(p["deadline"]),
                    "calls": [{"target": t, "value": 0, "data": d} for t, d in calls],
                },
            }
            recovered = str(
                Account.recover_message(encode_typed_data(full_message=typed), signature=sig)
            ).lower()
            return wallet, calls, recovered
        raise ValueError(f"unsupported transaction type {kind}")

    # --- state ------------------------------------------------------------------------------
    def _fail(self, rt: RelayedTx, error: str) -> None:
        rt.state, rt.error = "STATE_FAILED", error

    def _mined(self, tx: Tx) -> None:
        for rt in self.txs.values():
            if rt.tx_hash == tx.hash:
                if tx.status == 1:
                    rt.state = "STATE_MINED"
                    asyncio.get_running_loop().call_later(self.confirm_delay_s, self._confirm, rt)
                else:
                    self._fail(rt, tx.error or "execution reverted")

    def _confirm(self, rt: RelayedTx) -> None:
        if rt.state == "STATE_MINED":
            rt.state = "STATE_CONFIRMED"


def _a(v: object) -> bytes:
    b = bytes.fromhex(str(v)[2:])
    if len(b) != 20:
        raise ValueError(f"not an address: {v}")
    return b


def _multisend(data: bytes) -> list[tuple[str, bytes]]:
    """Unpack Safe MultiSend's packed (operation, to, value, length, data) records."""
    if data[:4] != MULTISEND:
        raise ValueError("not a multiSend(bytes) call")
    (inner,) = abi_decode(["bytes"], data[4:])
    out, i = [], 0
    while i < len(inner):
        to = "0x" + inner[i + 1 : i + 21].hex()
        n = int.from_bytes(inner[i + 53 : i + 85], "big")
        out.append((to, bytes(inner[i + 85 : i + 85 + n])))
        i += 85 + n
    return out


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
