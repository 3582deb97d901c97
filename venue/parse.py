"""Lenient parsing of venue JSON, shared by every adapter in `venue/`.

The venue's APIs are not consistent about types: numbers come as strings, JSON numbers with binary
noise (`0.860000001148`) or integers; timestamps in seconds, milliseconds or ISO 8601; some list
fields are JSON-encoded strings. These functions turn one wire value into one of our types, and
say clearly what they do with an absent value (`None`, a blank string) and with a value that is
present but unusable: either return `None`/a default, or raise `Unreadable` (a `ValueError`).

Numbers always go through their text (`Decimal(str(x))`), never through float arithmetic, so a
JSON float becomes the Decimal of its shortest repr (`0.01` -> `Decimal("0.01")`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

__all__ = [
    "EPOCH_MS_ABOVE",
    "Unreadable",
    "amount",
    "decimal",
    "decimal_or_none",
    "epoch_datetime",
    "epoch_seconds",
    "first",
    "flag",
    "float_or_none",
    "iso_datetime",
    "json_list",
    "unix_ms",
]

EPOCH_MS_ABOVE: Final = 10**11
"""An epoch value above this is in milliseconds (10**11 s is the year 5138; 10**11 ms is 1973)."""

_EPOCH_MAX_DIGITS: Final = 19
"""An epoch value with more integer digits than this is unreadable. Converting a Decimal such as
`1e99999999` to an int would build a hundred-million-digit integer and hold the event loop."""


class Unreadable(ValueError):
    """A wire value that is present but cannot be used (wrong type, not a number, out of range)."""


def _blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def decimal(raw: Any) -> Decimal:
    """A finite Decimal from an int, a float, a numeric string (surrounding blanks ignored) or a
    Decimal. Raise `Unreadable` for anything else: bools, lists, objects, `None`, blank or
    non-numeric text, NaN and the infinities."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise Unreadable(f"not a number ({type(raw).__name__})")
    try:
        d = Decimal(str(raw).strip())
    except InvalidOperation:
        raise Unreadable("not a number") from None
    if not d.is_finite():
        raise Unreadable("number not finite")
    return d


def decimal_or_none(raw: Any) -> Decimal | None:
    """`decimal(raw)`, or None when `raw` is absent or unreadable (negative values are kept)."""
    try:
        return decimal(raw)
    except Unreadable:
        return None


def amount(raw: Any, *, max_digits: int, default: Decimal = Decimal(0)) -> Decimal:
    """A non-negative Decimal below `10**max_digits`; `default` when `raw` is absent (`None` or
    blank text). Raise `Unreadable` for anything else: a non-number, NaN, an infinity, a
    negative value, an absurd magnitude (`1e999999` would overflow later arithmetic)."""
    if _blank(raw):
        return default
    try:
        d = decimal(raw)
    except Unreadable as e:
        if str(e) == "number not finite":
            raise Unreadable("number out of range") from None
        raise
    if d < 0 or (d and d.adjusted() >= max_digits):
        raise Unreadable("number out of range")
    return d


def epoch_seconds(raw: Any) -> int:
    """Whole epoch seconds from a number or numeric string in seconds or milliseconds
    (fractions are truncated). Raise `Unreadable` for a non-number, NaN, an infinity or a value
    of more than 19 digits. Zero and negative values are returned as they are."""
    d = decimal(raw)
    if d.adjusted() >= _EPOCH_MAX_DIGITS:
        raise Unreadable("timestamp out of range")
    n = int(d)
    if n > EPOCH_MS_ABOVE:  # milliseconds
        n //= 1000
    return n


def epoch_datetime(raw: Any) -> datetime | None:
    """An aware UTC datetime from epoch seconds or milliseconds (see `epoch_seconds`); None if
    `raw` is absent, unreadable or outside datetime's range."""
    try:
        return datetime.fromtimestamp(epoch_seconds(raw), UTC)
    except (Unreadable, OverflowError, OSError, ValueError):
        return None


def unix_ms(raw: Any) -> int:
    """An integer (the market websocket's millisecond timestamps) from an int or a string of
    digits; 0 when absent (`None` or `""`). Raise `ValueError` for anything else."""
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise Unreadable("timestamp must be a string of digits")
    return int(raw)


def iso_datetime(raw: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text (`Z` accepted; naive means UTC); None if absent or
    unreadable."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        d = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def json_list(raw: Any, name: str) -> list[Any]:
    """A list from a JSON array or a JSON-encoded string of one; [] when absent (`None`, `""`).
    Raise `Unreadable` (naming the field `name`) for invalid JSON or a non-list."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Unreadable(f"{name} is not JSON") from None
    if not isinstance(raw, list):
        raise Unreadable(f"{name} must be a list")
    return raw


def first(row: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of `keys` present in `row` with a non-null value; None if none."""
    for k in keys:
        v = row.get(k)
        if v is not None:
            return v
    return None


def flag(raw: Any, default: bool) -> bool:
    """`raw` if it is a JSON boolean, else `default` (`"true"`, 1 and null are not booleans)."""
    return raw if isinstance(raw, bool) else default


def float_or_none(raw: str | None) -> float | None:
    """A float from header text (`Retry-After`), None if absent or not a number."""
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
