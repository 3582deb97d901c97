"""The chain adapter: JSON-RPC (`rpc`), contract calls (`contracts`), signing (`signing`) and
Polymarket's gasless relayer (`relayer`). Used by `redemption/` and `python -m orchestrator
approve`; the only code that knows contract addresses or the relayer's wire format."""
