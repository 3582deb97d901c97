"""The daemon's books against the venue's ledger: fills, fees and positions, exactly.

`check(ledger, db_path, address=...)` compares, for one wallet:

* **fills**: each of our venue trades with the daemon's `fills` row for it. The ledger has a row
  per (trade, maker order) (`simulator.records.Trade.ledger_rows`); the daemon books one fill per
  (trade id, our venue order id) (`venue.clob.wire.fills_from_trade`). So our **taker** legs of a
  trade are summed: shares `sum(size)`, price the size-weighted average of the legs' taker prices,
  fee `sum(fee)` (the venue charges the fee per leg, each floored to 0.00001 pUSD:
  https://docs.polymarket.com/trading/fees); our **maker** leg is the maker's own token, side and
  price, with no fee (the taker pays it, same page). Token, side, price, size and fee must be
  equal, not close.
* **positions**: the daemon's position size per token with the venue's share balance of the wallet.
* **fees**: the total the daemon booked with the total the venue charged the wallet.

A venue that evicted old trades (`simulator.history`: a long demo past its retention of an API
client's records) keeps the wallet's evicted fills as totals; the daemon's fills with no row left
are then compared with those in aggregate (shares bought, sold, fees), not one by one.

A trade the venue marked FAILED never settled: it is left out on both sides (the daemon keeps its
row with status FAILED and moves no position for it).

The result names every mismatch. Compare only once the daemon has stopped and has booked what the
venue matched (the demo stops the strategies, cancels resting orders and runs a last fill
reconcile first); a fill still in flight shows up as `missing`, never silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from storage.reports import FillReport, Reports

ZERO = Decimal(0)
FAILED = "FAILED"


@dataclass(frozen=True)
class LegTotal:
    """Our part of one venue trade for one of our orders, as the venue recorded it."""

    token_id: str
    side: str
    size: Decimal
    price: Decimal
    fee: Decimal


@dataclass
class LedgerCheck:
    """What was compared and every mismatch found (empty when the books agree)."""

    fills: int = 0
    fees: Decimal = ZERO
    positions: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def line(self) -> str:
        """One summary line: the counts and `match`, or how many mismatches and the first few."""
        head = (
            f"ledger check: {self.fills} fills, fees {self.fees} pUSD, "
            f"positions {self.positions} tokens"
        )
        if self.ok:
            return head + " — match"
        shown = "; ".join(self.mismatches[:10])
        more = f" (+{len(self.mismatches) - 10} more)" if len(self.mismatches) > 10 else ""
        return f"{head} — {len(self.mismatches)} MISMATCH(ES): {shown}{more}"


def _d(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def venue_fills(ledger: Mapping[str, Any], address: str) -> dict[tuple[str, str], LegTotal]:
    """Our fills in the venue's ledger, keyed (trade id, our venue order id), FAILED excluded."""
    me = address.lower()
    taker: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    out: dict[tuple[str, str], LegTotal] = {}
    for row in ledger["trades"]:
        if str(row.get("status", "")).upper() == FAILED:
            continue
        if str(row["taker"]).lower() == me:
            taker.setdefault((str(row["id"]), str(row["taker_order_id"])), []).append(row)
        if str(row["maker"]).lower() == me:
            out[(str(row["id"]), str(row["maker_order_id"]))] = LegTotal(
                token_id=str(row["maker_token_id"]),
                side=str(row["maker_side"]),
                size=_d(row["size"]),
                price=_d(row["maker_price"]),
                fee=ZERO,
            )
    for key, legs in taker.items():
        size = sum((_d(r["size"]) for r in legs), ZERO)
        notional = sum((_d(r["size"]) * _d(r["price"]) for r in legs), ZERO)
        out[key] = LegTotal(
            token_id=str(legs[0]["token_id"]),
            side=str(legs[0]["side"]),
            size=size,
            price=notional / size if size else ZERO,
            fee=sum((_d(r["fee"]) for r in legs), ZERO),
        )
    return out


def venue_positions(ledger: Mapping[str, Any], address: str) -> dict[str, Decimal]:
    """The wallet's share balance per token at the venue (zero balances left out)."""
    me = address.lower()
    for wallet, bal in ledger["balances"].items():
        if str(wallet).lower() == me:
            return {str(t): _d(v) for t, v in bal.get("tokens", {}).items() if _d(v) != 0}
    return {}


def compare(
    ledger: Mapping[str, Any],
    fills: list[FillReport],
    positions: Mapping[str, Decimal],
    *,
    address: str,
) -> LedgerCheck:
    """Compare the venue's `ledger` with the daemon's `fills` and `positions` (size per token)."""
    venue = venue_fills(ledger, address)
    ours: dict[tuple[str, str], FillReport] = {}
    c = LedgerCheck()
    for f in fills:
        if f.status.upper() == FAILED:
            continue
        key = (f.trade_id, f.venue_order_id)
        if key in ours:
            c.mismatches.append(f"duplicate fill {_k(key)}")
        ours[key] = f
    for key in sorted(venue.keys() - ours.keys()):
        v = venue[key]
        c.mismatches.append(f"missing fill {_k(key)}: venue {v.side} {v.size} @ {v.price}")
    extra = sorted(ours.keys() - venue.keys())
    gone = evicted_fills(ledger, address)
    if gone is not None:
        # The venue let these fills' rows go and kept their totals: compare in aggregate.
        c.mismatches.extend(_compare_evicted(gone, [ours[k] for k in extra]))
        extra = []
    for key in extra:
        f = ours[key]
        c.mismatches.append(f"extra fill {_k(key)}: daemon {f.side} {f.size} @ {f.price}")
    for key in sorted(venue.keys() & ours.keys()):
        v, f = venue[key], ours[key]
        for name, want, got in (
            ("token", v.token_id, f.token_id),
            ("side", v.side, f.side),
            ("size", v.size, f.size),
            ("price", v.price, f.price),
            ("fee", v.fee, f.fee),
        ):
            if want != got:
                c.mismatches.append(f"fill {_k(key)} {name}: venue {want} daemon {got}")
    venue_fees = sum((v.fee for v in venue.values()), gone["fees"] if gone else ZERO)
    our_fees = sum((f.fee for f in ours.values()), ZERO)
    if venue_fees != our_fees:
        c.mismatches.append(f"fees: venue {venue_fees} daemon {our_fees}")
    held = venue_positions(ledger, address)
    mine = {t: s for t, s in positions.items() if s != 0}
    for tok in sorted(held.keys() | mine.keys()):
        want, got = held.get(tok, ZERO), mine.get(tok, ZERO)
        if want != got:
            c.mismatches.append(f"position {tok[:12]}…: venue {want} daemon {got}")
    c.fills, c.fees, c.positions = len(ours), our_fees, len(mine)
    return c


def evicted_fills(ledger: Mapping[str, Any], address: str) -> dict[str, Decimal] | None:
    """The wallet's fills the venue evicted from its ledger, folded (`ledger["evicted"]
    ["wallets"]`, `simulator.history`): shares bought and sold and fees; None if none were."""
    wallets = ledger.get("evicted", {}).get("wallets", {})
    t = wallets.get(address.lower())
    if not t:
        return None
    return {k: _d(t[k]) for k in ("bought", "sold", "fees")}


def _compare_evicted(gone: Mapping[str, Decimal], fills: list[FillReport]) -> list[str]:
    """The daemon's fills that have no row in the ledger against the venue's evicted totals of
    the wallet: shares bought, shares sold and fees must be equal."""
    ours = {
        "bought": sum((f.size for f in fills if f.side == "BUY"), ZERO),
        "sold": sum((f.size for f in fills if f.side == "SELL"), ZERO),
        "fees": sum((f.fee for f in fills), ZERO),
    }
    return [
        f"evicted fills {name}: venue {gone[name]} daemon {ours[name]} ({len(fills)} fills)"
        for name in ("bought", "sold", "fees")
        if gone[name] != ours[name]
    ]


def check(
    ledger: Mapping[str, Any],
    db_path: Path,
    *,
    address: str,
    database_url: str | None = None,
) -> LedgerCheck:
    """`compare` the venue's `ledger` with the daemon's database (read-only): `database_url`'s
    PostgreSQL database when given, else the SQLite file at `db_path`."""
    with Reports.open(db_path, database_url) as reports:
        fills = reports.fills()
        positions: dict[str, Decimal] = {}
        for p in reports.positions():  # the account's holding: every strategy's, unattributed too
            positions[p.token_id] = positions.get(p.token_id, ZERO) + p.size
    return compare(ledger, fills, positions, address=address)


def _k(key: tuple[str, str]) -> str:
    return f"{key[0][:12]}/{key[1][:12]}"
