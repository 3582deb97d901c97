"""Lenient parsing of venue JSON, shared by every adapter in `venue/`.

The venue's APIs are not consistent about types: numbers come as strings, JSON numbers with binary
noise (`0.860000001148`) or integers; timestamps in seconds, milliseconds or ISO 8601; some list
fields are JSON-encoded strings. These functions turn one wire value into one of our types, and
say clearly what they do with an absent value (`None`, a blank string) and with a value that is
present but unusable: either return `None`/a default, or raise `Unreadable` (a `ValueError`).

Numbers always go through their text (`Decimal(str(x))`), never through float arithmetic, so a
JSON float becomes the Decimal of its shortest repr (`0.01` -> `Decimal("0.01")`).

This module is also the one owner of the **bounds** on every number that comes from outside
(market and user websockets, CLOB REST answers, the Data API, Gamma): a price is in [0, 1]; a
size or a pUSD amount is finite, >= 0 and at most `MAX_SHARES` / `MAX_PUSD`; numeric text is at
most `MAX_NUMBER_TEXT` characters. `price`, `size` and `pusd` apply them and raise `OutOfBounds`
(an `Unreadable`); `MalformedLog` counts and logs what a source sent outside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

if TYPE_CHECKING:
    from observability.metrics import Metrics

__all__ = [
    "EPOCH_MS_ABOVE",
    "MALFORMED_SOURCES",
    "MAX_NUMBER_TEXT",
    "MAX_PUSD",
    "MAX_SHARES",
    "MIN_ADJUSTED",
    "MalformedLog",
    "OutOfBounds",
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
    "price",
    "pusd",
    "size",
    "unix_ms",
]

log = structlog.get_logger("venue.parse")

EPOCH_MS_ABOVE: Final = 10**11
"""An epoch value above this is in milliseconds (10**11 s is the year 5138; 10**11 ms is 1973)."""

_EPOCH_MAX_DIGITS: Final = 19
"""An epoch value with more integer digits than this is unreadable. Converting a Decimal such as
`1e99999999` to an int would build a hundred-million-digit integer and hold the event loop."""


MAX_SHARES: Final = Decimal(10**9)
"""The most shares one book level, order, fill or holding may carry: 10^9.

Outcome tokens (CTF ERC-1155) and pUSD both have 6 decimals and the exchange's order struct
carries `uint256` base units (`Order(... uint256 makerAmount, uint256 takerAmount ...)`, amounts
= human x 10^6: `order_builder/builder.py` in https://github.com/Polymarket/py-clob-client-v2),
so the contracts can represent ~10^71 whole shares: no practical bound. The bound is chosen from
the markets instead: the largest market Polymarket ever listed (the 2024 US presidential
election) traded a few 10^9 pUSD over its whole life, one outcome's shares outstanding never
approached 10^9, and a single level, order or holding is far below that. 10^9 is also far below
`models.MONEY_MAX_DIGITS` (10^15), where Decimal arithmetic on money starts to misbehave."""

MAX_PUSD: Final = Decimal(10**9)
"""The most pUSD one amount (a balance, a notional, a market's liquidity) may be: 10^9, for the
reasons given for `MAX_SHARES` (a share settles at 1 pUSD at most)."""

MAX_PUSD_CUMULATIVE: Final = Decimal(10**12)
"""The bound on a figure summed over a market's life (Gamma's `volume`): 10^12 pUSD, a thousand
times the 2024 election market's whole volume."""

MAX_NUMBER_TEXT: Final = 64
"""Numeric text longer than this is refused before `Decimal` sees it: a real price or size is at
most ~30 characters, and converting a 10^6-digit string would hold the event loop."""

MIN_ADJUSTED: Final = -30
"""A non-zero number smaller than 10^-30 is refused: the venue's numbers have 6 decimals."""

MALFORMED_SOURCES: Final = ("market", "user", "rest", "data_api", "gamma")
"""The `source` of `MalformedLog` (the `feed` label of `polyd_feed_malformed_total`)."""

MALFORMED_LOG_EVERY_S: Final = 5.0
"""A source logs at most one malformed sample this often; the rest are counted."""

SAMPLE_CHARS: Final = 200
"""Samples and reasons in malformed-input log lines are cut to this many characters."""


class Unreadable(ValueError):
    """A wire value that is present but cannot be used (wrong type, not a number, out of range)."""


class OutOfBounds(Unreadable):
    """A number outside what the venue can hold: a price outside [0, 1], a negative size, a size
    or amount above `MAX_SHARES`/`MAX_PUSD`, NaN, an infinity, or absurdly long text. Malformed
    input: counted, logged and never acted on."""


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


def _bounded(raw: Any, what: str) -> Decimal:
    """A finite Decimal from a wire value, refusing overlong text before converting it."""
    if isinstance(raw, str) and len(raw) > MAX_NUMBER_TEXT:
        raise OutOfBounds(f"{what} is {len(raw)} characters long")
    try:
        d = decimal(raw)
    except Unreadable as e:
        if str(e) == "number not finite":
            raise OutOfBounds(f"{what} {_show(raw)} is not finite") from None
        raise Unreadable(f"{what} {_show(raw)} is not a number") from None
    if d and d.adjusted() < MIN_ADJUSTED:
        # `1e-999999999` is "inside (0, 1)" but no venue number has that scale.
        raise OutOfBounds(f"{what} {_show(raw)} is too small to be a venue number")
    return d


def _show(raw: Any) -> str:
    return repr(str(raw)[:40]) if isinstance(raw, str) else str(raw)[:40]


def price(raw: Any, *, what: str = "price") -> Decimal:
    """A price in [0, 1] (callers that need (0, 1) check the ends). Raise `OutOfBounds` for a
    value outside it, NaN or an infinity, and `Unreadable` for a value that is not a number."""
    d = _bounded(raw, what)
    if not 0 <= d <= 1:
        raise OutOfBounds(f"{what} {_show(raw)} outside [0, 1]")
    return d


def size(raw: Any, *, what: str = "size", bound: Decimal = MAX_SHARES) -> Decimal:
    """A size in [0, `bound`] (shares by default). Raise `OutOfBounds` for a negative value, a
    value above `bound`, NaN or an infinity, and `Unreadable` for a value that is not a number."""
    d = _bounded(raw, what)
    if d < 0:
        raise OutOfBounds(f"{what} {_show(raw)} is negative")
    if d > bound:
        raise OutOfBounds(f"{what} {_show(raw)} above {bound:f}")
    return d


def pusd(raw: Any, *, what: str = "amount") -> Decimal:
    """A pUSD amount in [0, `MAX_PUSD`]; see `size`."""
    return size(raw, what=what, bound=MAX_PUSD)


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
            raise OutOfBounds("number out of range") from None
        raise
    if d < 0 or (d and d.adjusted() >= max_digits):
        raise OutOfBounds("number out of range")
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


class MalformedLog:
    """Count malformed input from one source and log a truncated sample at most every few seconds.

    One per source (`MALFORMED_SOURCES`), so a flood from one feed cannot hide another's, and
    memory stays a few numbers whatever arrives. Counts go to `polyd_feed_malformed_total`
    (label `feed` = the source) when `metrics` is given, else only to `self.count`.
    """

    def __init__(
        self,
        source: str,
        *,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        every_s: float = MALFORMED_LOG_EVERY_S,
    ) -> None:
        if source not in MALFORMED_SOURCES:
            raise ValueError(f"unknown malformed-input source {source!r}")
        self.source = source
        self.count = 0
        self._metrics = metrics
        self._monotonic = monotonic
        self._every_s = every_s
        self._logged_at = float("-inf")
        self._suppressed = 0

    def __call__(self, why: str, sample: Any, *, counted: bool = False) -> None:
        """Record one malformed frame, event or row; `counted` if the metric was already moved
        (the market feed batches its counter)."""
        self.count += 1
        if self._metrics is not None and not counted:
            self._metrics.feed_malformed_total.labels(self.source).inc()
        now = self._monotonic()
        if now - self._logged_at < self._every_s:
            self._suppressed += 1
            return
        text = sample if isinstance(sample, str | bytes) else repr(sample)
        if isinstance(text, bytes):
            text = text[:SAMPLE_CHARS].decode("utf-8", "replace")
        log.warning(
            "feed_malformed",
            source=self.source,
            why=why[:SAMPLE_CHARS],
            sample=text[:SAMPLE_CHARS],
            suppressed_since_last=self._suppressed,
        )
        self._logged_at = now
        self._suppressed = 0
