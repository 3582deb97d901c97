"""The copy trader: follow chosen wallets through the Data API and mirror their trades.

Exactly-once copying across crashes. Each trade is *handled* by one durable write that marks its
dedupe key (tx hash + asset + side + size + price) seen, moves the wallet's cursor to its
timestamp and — when it is to be copied — stores an *intent*: the exact `OrderRequest`, whose
client order id is derived from the dedupe key. Only then is the request submitted. The executor
journals an order by client order id before it leaves the process, so after a crash each stored
intent is either in the journal (the executor's reconciliation owns it; the intent is closed) or
it never left (it is submitted now, with the same client order id). A skip is the same write
without an intent.
The Data API's `start` filter is inclusive and the cursor is a timestamp in seconds, so trades
sharing the cursor's second are fetched again and dropped by the seen set: no gap, no duplicate.

Every skip has a reason from `SKIP_REASONS`: the `polyd_copy_skipped_total{reason}` label, an
audit entry and a log line.

| module | owns |
|---|---|
| `rules` | the rule schema (`WalletRule`, `CopyRules`) and loading TOML/JSON rule files |
| `state` | the durable ledger (dedupe, cursors, intents) and the bounded per-market memory |
| `sizing` | notional (ratio, fixed, percent), exposure room, mirror exits, limit price, `Skip` |
| `markets` | market facts: tick and minimum size per token, market tags (`TagIndex`) |
| `trader` | the strategy loop (`CopyTrader`): schedule, checks in order, submit, settle |
"""

from strategies.copy_trader.markets import (
    DefaultTick,
    MarketInfoSource,
    StaticMarketInfo,
    TagIndex,
    TagLister,
    TagSource,
    TickInfo,
)
from strategies.copy_trader.rules import CopyRules, WalletRule, load_rules, parse_rules
from strategies.copy_trader.sizing import (
    MIN_MARKETABLE_BUY,
    SIZE_STEP,
    SKIP_REASONS,
    Skip,
    limit_price,
    round_size,
    snap_price,
)
from strategies.copy_trader.state import CopyLedger, Intent, MarketMemory, client_order_id_for
from strategies.copy_trader.trader import STRATEGY_NAME, CopyTrader, PositionsReader, percentile

__all__ = [
    "MIN_MARKETABLE_BUY",
    "SIZE_STEP",
    "SKIP_REASONS",
    "STRATEGY_NAME",
    "CopyLedger",
    "CopyRules",
    "CopyTrader",
    "DefaultTick",
    "Intent",
    "MarketInfoSource",
    "MarketMemory",
    "PositionsReader",
    "Skip",
    "StaticMarketInfo",
    "TagIndex",
    "TagLister",
    "TagSource",
    "TickInfo",
    "WalletRule",
    "client_order_id_for",
    "limit_price",
    "load_rules",
    "parse_rules",
    "percentile",
    "round_size",
    "snap_price",
]
