"""The chain's JSON-RPC endpoint (Ethereum JSON-RPC, as a Polygon node answers it).

Methods: `eth_chainId`, `net_version`, `eth_blockNumber`, `eth_getBlockByNumber`,
`eth_getBalance` (POL), `eth_getTransactionCount`, `eth_gasPrice`, `eth_maxPriorityFeePerGas`,
`eth_feeHistory`, `eth_estimateGas`, `eth_getCode`, `eth_call`, `eth_sendRawTransaction`,
`eth_getTransactionByHash`, `eth_getTransactionReceipt`, `eth_getLogs`. Single requests and
batches (the SDK's `eth_call_batch`, Polymarket/py-sdk `_internal/eoa/rpc.py`). Errors use the
JSON-RPC shape; a revert is code 3 with the reason in `message` ("execution reverted: ...").
Spec: https://ethereum.org/en/developers/docs/apis/json-rpc/
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from simulator.chain import Chain, Revert, Tx

Json = dict[str, Any]


def _hex(v: int) -> str:
    return hex(v)


def _block_arg(chain: Chain, tag: object) -> int:
    if tag in (None, "latest", "pending", "safe", "finalized"):
        return chain.block
    if tag == "earliest":
        return 0
    return int(str(tag), 16)


class Rpc:
    """`POST /` JSON-RPC over one `Chain`."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _resp(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            )
        if isinstance(body, list):
            return _resp([self.one(b) for b in body])
        return _resp(self.one(body))

    def one(self, req: object) -> Json:
        if not isinstance(req, dict) or "method" not in req:
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "invalid request"},
            }
        rid = req.get("id")
        params = req.get("params") or []
        try:
            result = self.dispatch(str(req["method"]), list(params))
        except Revert as e:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": 3, "message": f"execution reverted: {e}"},
            }
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32602, "message": f"invalid params: {e}"},
            }
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def dispatch(self, method: str, p: list[Any]) -> Any:
        c = self.chain
        if method == "eth_chainId":
            return _hex(c.chain_id)
        if method == "net_version":
            return str(c.chain_id)
        if method == "eth_blockNumber":
            return _hex(c.block)
        if method == "eth_getBlockByNumber":
            n = _block_arg(c, p[0] if p else None)
            if n > c.block:
                return None
            return {
                "number": _hex(n),
                "timestamp": _hex(c.block_times.get(n, min(c.block_times.values()))),
                "baseFeePerGas": _hex(c.gas_price),
                "hash": "0x" + n.to_bytes(32, "big").hex(),
                "transactions": [],
            }
        if method == "eth_getBalance":
            return _hex(c.pol.get(str(p[0]).lower(), 0))
        if method == "eth_getTransactionCount":
            a = str(p[0]).lower()
            n = c.nonces.get(a, 0)
            if len(p) > 1 and p[1] == "pending":
                n += sum(1 for t in c.txs.values() if t.pending and t.sender == a and t.nonce >= 0)
            return _hex(n)
        if method == "eth_gasPrice":
            return _hex(c.gas_price + c.priority_fee)
        if method == "eth_maxPriorityFeePerGas":
            return _hex(c.priority_fee)
        if method == "eth_feeHistory":
            return {
                "oldestBlock": _hex(c.block),
                "baseFeePerGas": [_hex(c.gas_price)] * 2,
                "gasUsedRatio": [0.5],
                "reward": [[_hex(c.priority_fee)]],
            }
        if method == "eth_estimateGas":
            return _hex(200_000)
        if method == "eth_getCode":
            return "0x6080" if str(p[0]).lower() in c.c.all() else "0x"
        if method == "eth_call":
            call = p[0]
            out = c.call(
                str(call["to"]), bytes.fromhex(str(call.get("data") or call.get("input", "0x"))[2:])
            )
            return "0x" + out.hex()
        if method == "eth_sendRawTransaction":
            return c.send_raw(bytes.fromhex(str(p[0])[2:]))
        if method == "eth_getTransactionByHash":
            tx = c.txs.get(str(p[0]).lower())
            return None if tx is None else _tx_json(tx)
        if method == "eth_getTransactionReceipt":
            tx = c.txs.get(str(p[0]).lower())
            return None if tx is None or tx.pending else _receipt(c, tx)
        if method == "eth_getLogs":
            return self._logs(p[0] if p else {})
        raise ValueError(f"method {method} is not supported")

    def _logs(self, f: Json) -> list[Json]:
        c = self.chain
        lo = _block_arg(c, f.get("fromBlock", "latest"))
        hi = _block_arg(c, f.get("toBlock", "latest"))
        addrs = f.get("address")
        want = {a.lower() for a in ([addrs] if isinstance(addrs, str) else addrs or [])}
        topics = f.get("topics") or []
        out = []
        for lg in c.logs:
            if not lo <= lg.block <= hi or (want and lg.address not in want):
                continue
            ok = True
            for i, t in enumerate(topics):
                if t is None:
                    continue
                opts = {x.lower() for x in ([t] if isinstance(t, str) else t)}
                if i >= len(lg.topics) or lg.topics[i].lower() not in opts:
                    ok = False
            if ok:
                out.append(lg.as_json())
        return out


def _tx_json(tx: Tx) -> Json:
    return {
        "hash": tx.hash,
        "from": tx.sender,
        "to": tx.to,
        "nonce": _hex(max(tx.nonce, 0)),
        "input": "0x" + tx.data.hex(),
        "blockNumber": None if tx.block is None else _hex(tx.block),
        "gas": _hex(tx.gas),
    }


def _receipt(c: Chain, tx: Tx) -> Json:
    return {
        "transactionHash": tx.hash,
        "from": tx.sender,
        "to": tx.to,
        "blockNumber": _hex(tx.block or 0),
        "status": _hex(tx.status or 0),
        "gasUsed": _hex(c.gas_used),
        "effectiveGasPrice": _hex(tx.gas_price),
        "logs": [lg.as_json() for lg in tx.logs],
    }


def _resp(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def chain_app(chain: Chain, relayer: Any, log_middleware: Any) -> web.Application:
    """One server for the chain: JSON-RPC at `POST /`, the relayer under `/relayer`."""
    app = web.Application(middlewares=[log_middleware])
    app.router.add_post("/", Rpc(chain).handle)
    relayer.app_routes(app, "/relayer")
    return app
