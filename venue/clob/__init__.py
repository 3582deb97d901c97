"""The CLOB adapter — the only code that imports `py-clob-client-v2`.

| module | owns |
|---|---|
| `signing` | the EIP-712 order digest (the venue's order id), the digest signer, payload bytes |
| `wire` | venue JSON -> our types: orders, trades, order answers, cancel answers, market rules |
| `translate` | venue failures (HTTP status, body, transport) -> `errors` classes |
| `transport` | the HTTP client, L1/L2 auth headers, byte-exact requests |
| `broker` | `ClobBroker` (the live `Broker`) and `build_client` |
| `public` | the public REST routes: `PublicMarketMeta`, `RestBookSource` |

The names other code uses are re-exported here.
"""

from __future__ import annotations

from execution.market_rules import order_amounts
from venue.clob.broker import ClobBroker, build_client
from venue.clob.public import PublicMarketMeta, RestBookSource
from venue.clob.signing import DigestSigner, domain_separator, order_digest, order_hash
from venue.clob.translate import is_duplicate, translate
from venue.clob.wire import fills_from_trade, meta_from_market, venue_order

__all__ = [
    "ClobBroker",
    "DigestSigner",
    "PublicMarketMeta",
    "RestBookSource",
    "build_client",
    "domain_separator",
    "fills_from_trade",
    "is_duplicate",
    "meta_from_market",
    "order_amounts",
    "order_digest",
    "order_hash",
    "translate",
    "venue_order",
]
