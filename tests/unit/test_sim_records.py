"""The simulator's amount formatting: its cache stays bounded and every answer stays right."""

from __future__ import annotations

from decimal import Decimal as D

from simulator import records
from simulator.records import FMT_CACHE_MAX, fmt


def test_fmt_cache_holds_at_most_its_bound_and_every_amount_formats_the_same() -> None:
    n = FMT_CACHE_MAX * 3
    amounts = [D(i) / D(1000) for i in range(1, n + 1)]  # 0.001 .. distinct, some integral
    first = [fmt(a) for a in amounts]
    assert len(records._FMT_CACHE) <= FMT_CACHE_MAX
    assert [fmt(a) for a in amounts] == first  # cached or not, the same text
    assert first[0] == "0.001" and first[999] == "1" and first[-1] == f"{n // 1000}.{n % 1000:03d}"


def test_fmt_prints_amounts_as_the_venue_does() -> None:
    assert [fmt(D(x)) for x in ("0.50", "100.000", "192.30", "5E+1")] == [
        "0.5",
        "100",
        "192.3",
        "50",
    ]
