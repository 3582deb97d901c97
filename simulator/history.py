"""The simulator's bounded history: what it keeps of finished orders, trades, Data API rows and
requests, and the exact running totals of what it let go.

A venue that runs for hours (the demo, a soak) would otherwise keep every order and trade its
simulated makers and takers ever made. `History` evicts, oldest first:

* **terminal orders** (MATCHED or CANCELED) beyond `Retention.orders`; resting and delayed
  orders are never evicted (the books hold them);
* **settled trades** (CONFIRMED) beyond `Retention.trades`;
* **Data API rows** (`/trades`, `/activity`, `/positions`) beyond `Retention.data_rows`, the
  oldest by timestamp, so every page newest-first is what it was;
* **requests** of the request log beyond `Retention.requests` (`RequestLog`), and as many
  order-carrying request bodies (`Venue.received`).

Records of an **API client** (an order whose owner is a registered API key, a trade one of its
orders took part in, a Data API row of a key's address or funder) are kept up to the separate,
much larger `Retention.client`: a test, the demo's ledger check and the daemon's reconcile see
every order and fill of theirs. Simulated wallets (seeded makers, the demo's takers and whale)
are what grows without bound, and what is evicted.

Everything evicted folds into `Evicted`: counts, per-status order counts, per-wallet fill totals
(taker and maker legs, shares bought and sold, pUSD paid and received, fees), the total fees, and
a digest of every evicted ledger row (`ledger_digest`), so `ledger()` totals stay exact
(`Evicted.as_json()` under `ledger()["evicted"]`). The Data API's `/positions` starts each
wallet's aggregate (size, bought, cost, realized PnL) from its folded rows, so positions stay
exact as long as rows arrive in time order (a backdated `trade_as` row older than an evicted
one folds after it). Balances and `sets_minted` are running totals already: eviction leaves them.

None of this is a venue behaviour: it bounds the simulator's own memory, and what a client can
observe of it (fewer rows past the kept ones when paging far back, `ledger()["evicted"]`) is the
simulator's, not Polymarket's. The venue's own paging limits are not modelled here.

Eviction runs in batches (a quarter of the retention at a time), so its cost per order is O(1)
amortised and the containers stay below 1.25 x their retention plus the client records.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, overload

from simulator.records import ZERO, Json, Order, Trade

if TYPE_CHECKING:
    from simulator.engine import Engine
    from simulator.rows import DataRow, RequestRecord

TERMINAL_ORDER = ("MATCHED", "CANCELED")
SETTLED_TRADE = ("CONFIRMED", "FAILED")


@dataclass(frozen=True)
class Retention:
    """How many records of each kind the simulator keeps (simulated wallets' records; an API
    client's are kept up to `client` of each kind)."""

    orders: int = 5_000
    trades: int = 5_000
    data_rows: int = 20_000
    requests: int = 10_000
    client: int = 100_000

    def __post_init__(self) -> None:
        for name in ("orders", "trades", "data_rows", "requests", "client"):
            if getattr(self, name) < 1:
                raise ValueError(f"retention {name} must be at least 1, not {getattr(self, name)}")


@dataclass
class WalletTotals:
    """One wallet's evicted fills (ledger rows), folded."""

    taker_legs: int = 0
    maker_legs: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    paid: Decimal = ZERO
    received: Decimal = ZERO
    fees: Decimal = ZERO

    def add(self, side: str, size: Decimal, price: Decimal, fee: Decimal, taker: bool) -> None:
        if taker:
            self.taker_legs += 1
        else:
            self.maker_legs += 1
        if side == "BUY":
            self.bought += size
            self.paid += size * price
        else:
            self.sold += size
            self.received += size * price
        self.fees += fee

    def as_json(self) -> Json:
        return {
            "taker_legs": self.taker_legs,
            "maker_legs": self.maker_legs,
            "bought": self.bought,
            "sold": self.sold,
            "paid": self.paid,
            "received": self.received,
            "fees": self.fees,
        }


DIGEST_KEYS = (
    "id",
    "taker_order_id",
    "maker_order_id",
    "taker",
    "maker",
    "token_id",
    "maker_token_id",
    "side",
    "maker_side",
    "price",
    "maker_price",
    "size",
    "fee",
    "transaction_hash",
)
"""What `ledger_digest` hashes of a ledger row: everything but its status and time."""
DIGEST_MOD = 1 << 256


def ledger_digest(rows: Iterable[Json], start: str = "") -> str:
    """A digest of ledger rows (`Trade.ledger_rows`): the sum, modulo 2**256, of each row's
    SHA-256, added to `start`. Order does not matter, so the digest of the rows evicted plus that
    of the rows kept is the digest of every row, and a caller holding every row recomputes it."""
    total = int(start, 16) if start else 0
    for r in rows:
        line = "|".join(str(r[k]) for k in DIGEST_KEYS)
        total = (total + int.from_bytes(hashlib.sha256(line.encode()).digest())) % DIGEST_MOD
    return f"{total:064x}"


@dataclass
class Evicted:
    """Running totals of every evicted record."""

    orders: int = 0
    orders_by_status: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    ledger_rows: int = 0
    shares: Decimal = ZERO
    fees: Decimal = ZERO
    wallets: dict[str, WalletTotals] = field(default_factory=dict)
    digest: str = ""
    data_rows: int = 0
    requests: int = 0
    positions: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)
    """(wallet lower-case, token) -> [size, bought, cost, realized] of the evicted Data API rows,
    the aggregate `/positions` computes."""
    wallet_names: dict[str, str] = field(default_factory=dict)

    def order(self, o: Order) -> None:
        self.orders += 1
        self.orders_by_status[o.status] = self.orders_by_status.get(o.status, 0) + 1

    def trade(self, t: Trade) -> None:
        rows = t.ledger_rows()
        self.trades += 1
        self.ledger_rows += len(rows)
        self.digest = ledger_digest(rows, self.digest)
        for r in rows:
            self.shares += r["size"]
            self.fees += r["fee"]
            taker = self.wallets.setdefault(str(r["taker"]).lower(), WalletTotals())
            taker.add(r["side"], r["size"], r["price"], r["fee"], taker=True)
            maker = self.wallets.setdefault(str(r["maker"]).lower(), WalletTotals())
            maker.add(r["maker_side"], r["size"], r["maker_price"], ZERO, taker=False)

    def data_row(self, r: DataRow) -> None:
        self.data_rows += 1
        w = r.wallet.lower()
        self.wallet_names.setdefault(w, r.wallet)
        fold_position(self.positions.setdefault((w, r.token_id), [ZERO, ZERO, ZERO, ZERO]), r)

    def positions_of(self, wallet: str) -> dict[str, list[Decimal]]:
        """token -> a copy of the folded [size, bought, cost, realized] of `wallet`."""
        w = wallet.lower()
        return {t: list(a) for (ww, t), a in self.positions.items() if ww == w}

    def as_json(self) -> Json:
        return {
            "orders": self.orders,
            "orders_by_status": dict(self.orders_by_status),
            "trades": self.trades,
            "ledger_rows": self.ledger_rows,
            "shares": self.shares,
            "fees": self.fees,
            "digest": self.digest,
            "wallets": {w: t.as_json() for w, t in self.wallets.items()},
            "data_rows": self.data_rows,
            "requests": self.requests,
        }


def fold_position(a: list[Decimal], r: DataRow) -> None:
    """Add one Data API row to a [size, bought, cost, realized] aggregate (average cost; what
    `/positions` reports)."""
    if r.side == "BUY":
        a[0] += r.size
        a[1] += r.size
        a[2] += r.size * r.price
    else:
        avg = a[2] / a[1] if a[1] else ZERO
        a[3] += (r.price - avg) * r.size
        a[0] -= r.size


def _evict_oldest(
    n: int,
    keep: int,
    keep_client: int,
    client: Callable[[int], bool],
    evictable: Callable[[int], bool],
    order: list[int] | range,
) -> set[int]:
    """Indices to evict: the oldest evictable ones (in `order`) beyond `keep` of the simulated
    wallets' and `keep_client` of the clients'."""
    sim_idx = [i for i in order if evictable(i) and not client(i)]
    cli_idx = [i for i in order if evictable(i) and client(i)]
    out = set(sim_idx[: max(0, len(sim_idx) - keep)])
    out.update(cli_idx[: max(0, len(cli_idx) - keep_client)])
    return out


def _slack(keep: int) -> int:
    """How far past its retention a container grows before the next eviction batch."""
    return max(16, keep // 4)


class RequestLog:
    """The request log: the last `keep` requests, addressed by their position since start.

    `len()` counts every request ever logged, so `mark = len(log)` then `log[mark:]` gives the
    requests since the mark (as long as fewer than `keep` came in between); iterating gives the
    kept ones, oldest first."""

    def __init__(self, keep: int) -> None:
        self._kept: deque[RequestRecord] = deque(maxlen=keep)
        self._total = 0

    def append(self, r: RequestRecord) -> None:
        self._kept.append(r)
        self._total += 1

    @property
    def evicted(self) -> int:
        return self._total - len(self._kept)

    def __len__(self) -> int:
        return self._total

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self._kept)

    def __bool__(self) -> bool:
        return self._total > 0

    @overload
    def __getitem__(self, i: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[RequestRecord]: ...
    def __getitem__(self, i: int | slice) -> RequestRecord | list[RequestRecord]:
        first = self.evicted
        if isinstance(i, slice):
            start, stop, step = i.indices(self._total)
            kept = list(self._kept)
            return [kept[j - first] for j in range(start, stop, step) if j >= first]
        j = i + self._total if i < 0 else i
        if not first <= j < self._total:
            raise IndexError(f"request {i} is not kept (kept: {first}..{self._total - 1})")
        return self._kept[j - first]


class History:
    """Retention of the engine's orders and trades and the venue's Data API rows."""

    def __init__(self, retention: Retention, is_client: Callable[[str], bool]) -> None:
        """`is_client(owner_or_lower_address)`: whether an order owner (API key) or a wallet
        (lower-case address) belongs to an API client."""
        self.retention = retention
        self.is_client = is_client
        self.evicted = Evicted()
        self._orders_high = self._high(retention.orders)
        self._trades_high = self._high(retention.trades)
        self._rows_high = self._high(retention.data_rows)

    @staticmethod
    def _high(keep: int) -> int:
        return keep + _slack(keep)

    def trim_orders(self, orders: dict[str, Order]) -> None:
        """Evict the oldest terminal orders beyond retention (when over the high-water mark)."""
        if len(orders) <= self._orders_high:
            return
        items = list(orders.values())
        gone = _evict_oldest(
            len(items),
            self.retention.orders,
            self.retention.client,
            lambda i: self.is_client(items[i].owner),
            lambda i: items[i].status in TERMINAL_ORDER,
            range(len(items)),
        )
        for i in sorted(gone):
            self.evicted.order(items[i])
            del orders[items[i].id]
        self._orders_high = len(orders) + _slack(self.retention.orders)

    def trim_trades(self, trades: list[Trade], by_id: dict[str, Trade]) -> None:
        """Evict the oldest settled trades beyond retention (when over the high-water mark)."""
        if len(trades) <= self._trades_high:
            return

        def client(i: int) -> bool:
            return any(self.is_client(o) for o in trades[i].owners())

        gone = _evict_oldest(
            len(trades),
            self.retention.trades,
            self.retention.client,
            client,
            lambda i: trades[i].status in SETTLED_TRADE,
            range(len(trades)),
        )
        for i in sorted(gone):
            self.evicted.trade(trades[i])
            by_id.pop(trades[i].id, None)
        trades[:] = [t for i, t in enumerate(trades) if i not in gone]
        self._trades_high = len(trades) + _slack(self.retention.trades)

    def trim_rows(self, rows: list[DataRow]) -> None:
        """Evict the oldest Data API rows (by timestamp) beyond retention, folding each into
        its wallet's position aggregate in the order `/positions` reads them."""
        if len(rows) <= self._rows_high:
            return
        by_time = sorted(range(len(rows)), key=lambda i: rows[i].timestamp)
        gone = _evict_oldest(
            len(rows),
            self.retention.data_rows,
            self.retention.client,
            lambda i: self.is_client(rows[i].wallet.lower()),
            lambda i: True,
            by_time,
        )
        for i in by_time:
            if i in gone:
                self.evicted.data_row(rows[i])
        rows[:] = [r for i, r in enumerate(rows) if i not in gone]
        self._rows_high = len(rows) + _slack(self.retention.data_rows)

    def totals(self, trades: list[Trade], orders: dict[str, Order]) -> Json:
        """Totals over every trade and order ever made, kept and evicted together."""
        ev = self.evicted
        kept_rows = [r for t in trades for r in t.ledger_rows()]
        return {
            "orders": ev.orders + len(orders),
            "trades": ev.trades + len(trades),
            "ledger_rows": ev.ledger_rows + len(kept_rows),
            "shares": ev.shares + sum((r["size"] for r in kept_rows), ZERO),
            "fees": ev.fees + sum((r["fee"] for r in kept_rows), ZERO),
            "digest": ledger_digest(kept_rows, ev.digest),
        }


def ledger(engine: Engine, history: History) -> Json:
    """The venue's authoritative state: every order and trade kept, every balance (Decimals),
    the net full sets minted per condition, what was evicted and the totals over everything."""
    balances: dict[str, Json] = {}
    for a, v in engine.collateral.items():
        balances.setdefault(a, {"collateral": ZERO, "tokens": {}})["collateral"] = v
    for (a, t), v in engine.shares.items():
        balances.setdefault(a, {"collateral": ZERO, "tokens": {}})["tokens"][t] = v
    return {
        "orders": [
            o.ledger_dict()
            | {"price": o.price, "original_size": o.original_size, "size_matched": o.size_matched}
            for o in engine.orders.values()
        ],
        "trades": [row for t in engine.trades for row in t.ledger_rows()],
        "sets_minted": dict(engine.sets_minted),
        "balances": balances,
        "evicted": history.evicted.as_json(),
        "totals": history.totals(engine.trades, engine.orders),
    }


def wallet_fills(ledger: Json, wallet: str) -> dict[str, Any]:
    """One wallet's fill totals over a `ledger()`: its kept rows plus its evicted ones."""
    w = wallet.lower()
    t = WalletTotals()
    for r in ledger["trades"]:
        if str(r["taker"]).lower() == w:
            t.add(r["side"], r["size"], r["price"], r["fee"], taker=True)
        if str(r["maker"]).lower() == w:
            t.add(r["maker_side"], r["size"], r["maker_price"], ZERO, taker=False)
    gone = ledger.get("evicted", {}).get("wallets", {}).get(w)
    out = t.as_json()
    if gone:
        out = {k: v + gone[k] for k, v in out.items()}
    return out
