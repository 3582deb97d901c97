"""The shared lenient parsers: what each returns for good, absent and bad wire values.

The tables pin the behaviour of the per-adapter helpers these functions replaced (CLOB money
amounts and trade times, Gamma's optional numbers, dates and JSON-string lists, the market
websocket's millisecond stamps, the Data API's "first of several keys"), bad inputs included.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest

from venue import parse
from venue.parse import Unreadable

RAW_MAX = 21  # the CLOB's 6-decimal units: money below 1e15 times 1e6


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("0.5", D("0.5")),
        (" 12.25 ", D("12.25")),
        (7, D(7)),
        (0.1, D("0.1")),  # a float through its shortest repr, not its binary value
        (0.860000001148, D("0.860000001148")),
        ("1e3", D("1E+3")),
        ("-2", D(-2)),
        (D("2.5"), D("2.5")),
    ],
)
def test_decimal_reads_numbers_through_their_text(raw: Any, want: D) -> None:
    got = parse.decimal(raw)
    assert got == want
    assert str(got) == str(want)


@pytest.mark.parametrize(
    "raw",
    [None, "", "  ", "abc", "0x10", "NaN", "nan", "sNaN", "inf", "-Infinity", float("nan"),
     float("inf"), True, False, [], [1], {}, {"a": 1}],
)  # fmt: skip
def test_decimal_refuses_what_is_not_a_finite_number(raw: Any) -> None:
    with pytest.raises(Unreadable):
        parse.decimal(raw)
    assert parse.decimal_or_none(raw) is None


def test_decimal_or_none_keeps_negatives_and_noise() -> None:
    assert parse.decimal_or_none("-1.5") == D("-1.5")
    assert parse.decimal_or_none(1e300) == D("1E+300")
    assert parse.decimal_or_none(" 3 ") == D(3)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (None, D(0)),
        ("", D(0)),
        ("   ", D(0)),
        ("0", D(0)),
        ("-0", D(0)),
        ("1.5", D("1.5")),
        (" 2 ", D(2)),
        (10**20, D(10**20)),
        ("999999999999999999999", D("999999999999999999999")),
        (0.25, D("0.25")),
    ],
)
def test_amount_reads_non_negative_numbers_and_defaults_when_absent(raw: Any, want: D) -> None:
    assert parse.amount(raw, max_digits=RAW_MAX) == want


def test_amount_default_applies_only_to_absent_values() -> None:
    assert parse.amount(None, max_digits=RAW_MAX, default=D("0.01")) == D("0.01")
    assert parse.amount(" ", max_digits=RAW_MAX, default=D(5)) == D(5)
    assert parse.amount("0", max_digits=RAW_MAX, default=D(5)) == D(0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("abc", "not a number"),
        ("0x10", "not a number"),
        (True, "not a number (bool)"),
        ([1], "not a number (list)"),
        ({}, "not a number (dict)"),
        ("NaN", "number out of range"),
        (float("nan"), "number out of range"),
        ("inf", "number out of range"),
        ("-1", "number out of range"),
        (-0.5, "number out of range"),
        ("1e21", "number out of range"),
        (10**21, "number out of range"),
        ("1e999999", "number out of range"),
    ],
)
def test_amount_refuses_unusable_values_saying_why(raw: Any, why: str) -> None:
    with pytest.raises(Unreadable) as e:
        parse.amount(raw, max_digits=RAW_MAX)
    assert str(e.value) == why


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (1_700_000_000, 1_700_000_000),
        ("1700000000", 1_700_000_000),
        (1_700_000_000_123, 1_700_000_000),  # milliseconds
        ("1700000000123", 1_700_000_000),
        (10**11, 10**11),  # the boundary itself is seconds
        (10**11 + 1, 10**8),
        ("1700000000.9", 1_700_000_000),  # fractions truncate
        (1.7e9, 1_700_000_000),
        (" 42 ", 42),
        (0, 0),
        ("-5", -5),
    ],
)
def test_epoch_seconds_reads_seconds_or_milliseconds(raw: Any, want: int) -> None:
    assert parse.epoch_seconds(raw) == want


@pytest.mark.parametrize(
    "raw", [None, "", "soon", True, [1], {}, "NaN", "Infinity", "1e20", "1e99999999"]
)
def test_epoch_seconds_refuses_non_numbers_and_absurd_magnitudes(raw: Any) -> None:
    # "1e99999999" would build a hundred-million-digit int if converted: it must be refused
    # before that, not hang the loop; an infinity must not escape as OverflowError.
    with pytest.raises(Unreadable):
        parse.epoch_seconds(raw)


def test_epoch_datetime_is_utc_and_none_when_unreadable() -> None:
    assert parse.epoch_datetime("1700000000") == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse.epoch_datetime(1_700_000_000_500) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse.epoch_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
    bad: Any
    for bad in (None, "", "soon", True, [], "1e18", "NaN"):
        assert parse.epoch_datetime(bad) is None


@pytest.mark.parametrize(
    ("raw", "want"),
    [(None, 0), ("", 0), ("1712345678901", 1712345678901), (17, 17), (" 5 ", 5), ("-3", -3)],
)
def test_unix_ms_reads_integers_and_digit_strings(raw: Any, want: int) -> None:
    assert parse.unix_ms(raw) == want


@pytest.mark.parametrize("raw", [True, False, 1.5, [], {}, "12.5", "abc", " "])
def test_unix_ms_refuses_everything_else(raw: Any) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse.unix_ms(raw)


def test_iso_datetime_accepts_z_offsets_and_naive_as_utc() -> None:
    assert parse.iso_datetime("2026-03-12T09:00:00Z") == datetime(2026, 3, 12, 9, tzinfo=UTC)
    assert parse.iso_datetime("2026-03-12") == datetime(2026, 3, 12, tzinfo=UTC)
    plus2 = parse.iso_datetime("2026-03-12T11:00:00+02:00")
    assert plus2 == datetime(2026, 3, 12, 9, tzinfo=UTC)
    assert plus2 is not None and plus2.utcoffset() == timedelta(hours=2)
    assert plus2.tzinfo == timezone(timedelta(hours=2))
    for bad in (None, "", "yesterday", 1700000000, True, ["2026-03-12"]):
        assert parse.iso_datetime(bad) is None


def test_json_list_takes_arrays_and_json_encoded_strings() -> None:
    assert parse.json_list('["Yes", "No"]', "outcomes") == ["Yes", "No"]
    assert parse.json_list(["a", 1], "outcomes") == ["a", 1]
    assert parse.json_list(None, "x") == []
    assert parse.json_list("", "x") == []
    assert parse.json_list("[]", "x") == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[unterminated", "clobTokenIds is not JSON"),
        ('{"a": 1}', "clobTokenIds must be a list"),
        ("12", "clobTokenIds must be a list"),
        ({"a": 1}, "clobTokenIds must be a list"),
        (5, "clobTokenIds must be a list"),
        (False, "clobTokenIds must be a list"),
    ],
)
def test_json_list_refuses_other_shapes_naming_the_field(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r".+") as e:
        parse.json_list(raw, "clobTokenIds")
    assert str(e.value) == message


def test_first_skips_absent_and_null_keys_in_order() -> None:
    row = {"proxyWallet": None, "proxy_wallet": "0xabc", "size": 0, "side": ""}
    assert parse.first(row, "proxyWallet", "proxy_wallet") == "0xabc"
    assert parse.first(row, "missing", "size") == 0  # falsy values count
    assert parse.first(row, "side", "size") == ""
    assert parse.first(row, "missing", "proxyWallet") is None
    assert parse.first(row) is None


def test_flag_takes_only_json_booleans() -> None:
    assert parse.flag(True, False) is True
    assert parse.flag(False, True) is False
    for not_bool in ("true", 1, 0, None, "false"):
        assert parse.flag(not_bool, True) is True
        assert parse.flag(not_bool, False) is False


def test_float_or_none_reads_header_text() -> None:
    assert parse.float_or_none("2.5") == 2.5
    assert parse.float_or_none(None) is None
    assert parse.float_or_none("soon") is None
    assert parse.float_or_none("") is None


# --- bounds -----------------------------------------------------------------------------------

HOSTILE = ["1e308", "-1", "1.5", "NaN", "Infinity", "-Infinity", "1e999", "sNaN", "9" * 65]


@pytest.mark.parametrize("raw", HOSTILE)
def test_price_refuses_every_hostile_value_as_out_of_bounds(raw: str) -> None:
    with pytest.raises(parse.OutOfBounds):
        parse.price(raw)


@pytest.mark.parametrize("raw", [r for r in HOSTILE if r != "1.5"])
def test_size_refuses_every_hostile_value_as_out_of_bounds(raw: str) -> None:
    with pytest.raises(parse.OutOfBounds):
        parse.size(raw)


@pytest.mark.parametrize(
    ("raw", "want"),
    [("0", D(0)), ("1", D(1)), ("0.5", D("0.5")), (0.01, D("0.01")), (".48", D("0.48"))],
)
def test_price_accepts_zero_to_one_inclusive(raw: Any, want: D) -> None:
    assert parse.price(raw) == want


def test_size_bound_is_ten_to_the_ninth_shares_inclusive() -> None:
    assert parse.MAX_SHARES == parse.MAX_PUSD == D(10**9)
    assert parse.size("1000000000") == D(10**9)
    assert parse.size(0) == 0
    with pytest.raises(parse.OutOfBounds, match="above 1000000000"):
        parse.size("1000000000.000001")
    with pytest.raises(parse.OutOfBounds):
        parse.pusd("1e10")
    assert parse.size("5e11", bound=parse.MAX_PUSD_CUMULATIVE) == D("5e11")


@pytest.mark.parametrize("raw", ["abc", "", [], {}, True, None])
def test_non_numbers_are_unreadable_not_out_of_bounds(raw: Any) -> None:
    with pytest.raises(parse.Unreadable) as e:
        parse.size(raw)
    assert not isinstance(e.value, parse.OutOfBounds)


def test_huge_exponents_and_long_text_are_refused_quickly() -> None:
    import time

    t0 = time.perf_counter()
    for raw in ("1e999999999", "1e-999999999", "-1e999999999", "1" * 100_000, "0." + "1" * 100_000):
        with pytest.raises(parse.OutOfBounds):
            parse.size(raw)
    assert time.perf_counter() - t0 < 0.5


def test_refusals_name_the_field_and_a_short_sample() -> None:
    with pytest.raises(parse.OutOfBounds) as e:
        parse.size("1e308", what="asks[0].size")
    assert str(e.value) == "asks[0].size '1e308' above 1000000000"
    with pytest.raises(parse.OutOfBounds) as e:
        parse.size("1" * 1000)
    assert str(e.value) == "size is 1000 characters long"


def test_malformed_log_counts_every_event_logs_once_per_window_with_a_truncated_sample() -> None:
    from structlog.testing import capture_logs

    from observability.metrics import Metrics

    now = [100.0]
    metrics = Metrics()
    user = parse.MalformedLog("user", metrics=metrics, monotonic=lambda: now[0])
    rest = parse.MalformedLog("rest", metrics=metrics, monotonic=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(1000):
            user("size above bound", {"size": "1e308", "pad": "x" * 10_000})
        rest("price outside [0, 1]", b"\xff" * 500)  # another source logs on its own
        now[0] += parse.MALFORMED_LOG_EVERY_S
        user("again", "y")
    assert user.count == 1001 and rest.count == 1
    assert [(e["source"], e["suppressed_since_last"]) for e in logs] == [
        ("user", 0),
        ("rest", 0),
        ("user", 999),
    ]
    assert all(e["event"] == "feed_malformed" for e in logs)
    assert all(len(e["sample"]) <= parse.SAMPLE_CHARS for e in logs)
    sample = metrics.registry.get_sample_value
    assert sample("polyd_feed_malformed_total", {"feed": "user"}) == 1001
    assert sample("polyd_feed_malformed_total", {"feed": "rest"}) == 1


def test_malformed_log_sources_are_a_fixed_set() -> None:
    with pytest.raises(ValueError, match="unknown malformed-input source"):
        parse.MalformedLog("anything-else")
