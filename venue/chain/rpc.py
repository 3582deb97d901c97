"""A small async Ethereum JSON-RPC client on aiohttp (Polygon node).

Timeouts always on; transport failures and 429/5xx are `TransientError`; a JSON-RPC error is
`ChainError` with the node's message (a revert reads "execution reverted: ..."). Reads may be
retried by the caller; `send_raw` never is here: a timeout there is "outcome unknown", and the
redeemer looks the transaction up by its hash (computed before sending) instead of re-sending.
Spec: https://ethereum.org/en/developers/docs/apis/json-rpc/
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import orjson

from errors import TransientError
from venue.chain.contracts import Call


class ChainError(Exception):
    """The node answered a JSON-RPC error (a revert, a bad nonce, too little gas money)."""


class RpcClient:
    """`eth_*` calls over one HTTP session."""

    def __init__(
        self, *, url: str, session: aiohttp.ClientSession, timeout_s: float = 10.0
    ) -> None:
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ids = itertools.count(1)

    async def request(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(body),
                timeout=self._timeout,
                headers={"Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    raise TransientError(f"RPC {method} answered {resp.status}", status=resp.status)
                if resp.status != 200:
                    raise ChainError(f"RPC {method} answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"RPC {method} failed: {type(e).__name__}") from e
        try:
            out = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ChainError(f"RPC {method}: body is not JSON") from e
        if not isinstance(out, dict):
            raise ChainError(f"RPC {method}: unexpected body")
        if out.get("error"):
            err = out["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            raise ChainError(f"{method}: {msg}")
        return out.get("result")

    async def chain_id(self) -> int:
        return int(await self.request("eth_chainId", []), 16)

    async def block_number(self) -> int:
        return int(await self.request("eth_blockNumber", []), 16)

    async def balance(self, address: str) -> int:
        """POL balance in wei."""
        return int(await self.request("eth_getBalance", [address, "latest"]), 16)

    async def nonce(self, address: str, block: str = "pending") -> int:
        return int(await self.request("eth_getTransactionCount", [address, block]), 16)

    async def fees(self) -> tuple[int, int]:
        """(max fee per gas, max priority fee per gas) in wei: twice the base fee plus the tip."""
        block = await self.request("eth_getBlockByNumber", ["latest", False])
        base = int(block["baseFeePerGas"], 16)
        tip = int(await self.request("eth_maxPriorityFeePerGas", []), 16)
        return 2 * base + tip, tip

    async def estimate_gas(self, sender: str, call: Call) -> int:
        return int(
            await self.request(
                "eth_estimateGas", [{"from": sender, "to": call.to, "data": call.data_hex}]
            ),
            16,
        )

    async def code(self, address: str) -> str:
        return str(await self.request("eth_getCode", [address, "latest"]))

    async def call(self, call: Call) -> bytes:
        out = await self.request("eth_call", [{"to": call.to, "data": call.data_hex}, "latest"])
        return bytes.fromhex(str(out).removeprefix("0x"))

    async def send_raw(self, raw: bytes) -> str:
        return str(await self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        r = await self.request("eth_getTransactionReceipt", [tx_hash])
        return r if isinstance(r, dict) else None

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        r = await self.request("eth_getTransactionByHash", [tx_hash])
        return r if isinstance(r, dict) else None
