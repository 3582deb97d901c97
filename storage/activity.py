"""Read-only activity reports for chat control: new fills since a mark, and fills per UTC day.

Read through the same read-only connection as `storage.reports` and `storage.views`
(`storage.engine.open_read_only`); money stays `Decimal`, summed in Python (SQL's SUM goes through
floating point).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from storage.views import Views

MAX_BATCH: Final = 200
"""The most fills one `fills_after` call returns (the caller asks again for the rest)."""


def _dec(text: str | None) -> Decimal:
    try:
        return Decimal(text) if text is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


@dataclass(frozen=True)
class FillNotice:
    """One journaled fill of ours, with its strategy (empty when no order of ours explains it)."""

    mark: int
    strategy: str
    token_id: str
    side: str
    price: Decimal
    size: Decimal
    fee: Decimal
    role: str
    status: str
    recorded_at: str


@dataclass
class DayFills:
    """The fills of one UTC day: how many, pUSD spent on buys and received from sells, fees."""

    day: str
    fills: int = 0
    bought: Decimal = Decimal(0)
    sold: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)


class Activity(Views):
    """`Views` (market names included) plus what chat control asks for: fills as they arrive,
    and per-day figures; like the views, of one daemon's rows when opened with `daemon_id`."""

    def last_mark(self) -> int:
        """The mark of the newest journaled fill (0 with none): fills after it are new."""
        return int(self._rows("SELECT COALESCE(MAX(rowid), 0) FROM fills")[0][0])

    def fills_after(self, mark: int, limit: int = MAX_BATCH) -> list[FillNotice]:
        """Fills journaled after `mark`, oldest first, at most `limit` (capped at MAX_BATCH); of
        a daemon's scope, the fills of its orders and those no order explains."""
        params: list[object] = [mark]
        own = ""
        if self.daemon_id is not None:  # in SQL, so a batch of others' fills cannot hide ours
            own = " AND (o.daemon_id IS NULL OR o.daemon_id = ?)"
            params.append(self.daemon_id)
        rows = self._rows(
            "SELECT f.rowid AS mark, COALESCE(o.strategy, '') AS strategy, f.token_id, f.side,"
            " f.price, f.size, f.fee, f.role, f.status, f.recorded_at"
            " FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id"
            f" WHERE f.rowid > ?{own} ORDER BY f.rowid LIMIT ?",
            (*params, max(1, min(limit, MAX_BATCH))),
        )
        return [
            FillNotice(
                mark=int(r["mark"]),
                strategy=str(r["strategy"]),
                token_id=str(r["token_id"]),
                side=str(r["side"]),
                price=_dec(r["price"]),
                size=_dec(r["size"]),
                fee=_dec(r["fee"]),
                role=str(r["role"]),
                status=str(r["status"]),
                recorded_at=str(r["recorded_at"]),
            )
            for r in rows
        ]

    def fill_days(self, today: date, days: int = 7) -> list[DayFills]:
        """The last `days` UTC days up to `today`, newest first (failed fills left out); of a
        daemon's scope, the fills of its strategies and the unattributed ones (`in_scope`)."""
        first = today - timedelta(days=days - 1)
        out = {
            (first + timedelta(days=i)).isoformat(): DayFills(
                (first + timedelta(days=i)).isoformat()
            )
            for i in range(days)
        }
        for r in self._rows(
            # The day is cut in Python: `recorded_at` is text in SQLite, TIMESTAMPTZ in
            # PostgreSQL (read back as ISO-8601 UTC text by both connections).
            "SELECT recorded_at, side, price, size, fee, strategy FROM fills"
            " WHERE status != 'FAILED' AND recorded_at >= ?",
            (first.isoformat(),),
        ):
            acc = out.get(str(r[0])[:10])
            if acc is None or not self.in_scope(str(r[5])):
                continue
            notional = _dec(r[2]) * _dec(r[3])
            acc.fills += 1
            if r[1] == "BUY":
                acc.bought += notional
            else:
                acc.sold += notional
            acc.fees += _dec(r[4])
        return [out[day] for day in sorted(out, reverse=True)]
