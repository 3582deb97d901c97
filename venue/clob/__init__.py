"""The CLOB adapter: polyd's own venue client (no vendor SDK on the daemon's path).

| module | owns |
|---|---|
| `auth` | the key (`LocalSigner`), API credentials, `ClobIdentity`, L1/L2 auth headers |
| `contracts` | the exchange contracts orders are signed for, per chain |
| `signing` | the order struct, its EIP-712 digest (the venue's order id), signatures, payload |
| `wire` | venue JSON -> our types: orders, trades, order answers, cancel answers, market rules |
| `translate` | venue failures (HTTP status, body, transport) -> `errors` classes |
| `transport` | the HTTP clients (aiohttp on the loop; httpx for the CLI), byte-exact requests |
| `broker` | `ClobBroker` (the live `Broker`) and `build_client` |
| `public` | the public REST routes: `PublicMarketMeta`, `RestBookSource` |

The names other code uses are re-exported here.
"""

from __future__ import annotations

from execution.market_rules import order_amounts
from venue.clob.auth import ClobIdentity, Credentials, LocalSigner
from venue.clob.broker import ClobBroker, build_client
from venue.clob.public import PublicMarketMeta, RestBookSource
from venue.clob.signing import DigestSigner, domain_separator, order_digest, order_hash
from venue.clob.translate import is_duplicate, translate
from venue.clob.wire import fills_from_trade, meta_from_market, venue_order

__all__ = [
    "ClobBroker",
    "ClobIdentity",
    "Credentials",
    "DigestSigner",
    "LocalSigner",
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
