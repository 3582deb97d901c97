"""The only code that builds things: one builder per stage of the daemon.

`shared` builds what the process has once (metrics, storage, the venue budget, the HTTP session);
`execution`, `market_data` and `copy_trading` build the stages the orchestrator folds into its
life cycle. Builders import what they build; nothing below `wiring/` imports it.
"""
