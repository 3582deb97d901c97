"""Data API adapter: real captured payloads (v1 and v2), garbage rows, envelopes, faults, budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from errors import FeedError, RateLimited, TransientError
from models import Side
from resilience.clock import FakeClock, SystemClock
from resilience.retry import RetryPolicy
from tests.helpers import FIXTURES as SHARED_FIXTURES
from venue.data_api import (
    DataApiBudget,
    DataApiClient,
    RowError,
    parse_position_row,
    parse_trade_row,
    to_decimal,
    unwrap,
)

FIXTURES = SHARED_FIXTURES / "data_api"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def parse_all(name: str, positions: bool = False) -> tuple[list[Any], Counter[str]]:
    rows, _ = unwrap(load(name))
    ok: list[Any] = []
    skipped: Counter[str] = Counter()
    for r in rows:
        try:
            ok.append(parse_position_row(r) if positions else parse_trade_row(r))
        except RowError as e:
            skipped[e.reason] += 1
    return ok, skipped


def test_activity_with_mixed_types_keeps_trades_and_skips_others_as_not_trade() -> None:
    trades, skipped = parse_all("activity_mixed_types_rewards_rebates_redeem_2026_07.json")
    assert len(trades) == 42
    assert skipped == Counter({"not_trade": 8})
    assert all(t.side in (Side.BUY, Side.SELL) and 0 < t.price < 1 for t in trades)


def test_float_noise_prices_become_exact_six_decimal_decimals() -> None:
    trades, skipped = parse_all("activity_trades_float_noise_prices_2026_04.json")
    assert not skipped and len(trades) == 10
    noisy = next(t for t in trades if t.size == Decimal("714.285713"))
    assert noisy.price == Decimal("0.86")  # 0.860000001148 in the capture
    # What an operator reads instead of the token id (the daemon learns it as the market name).
    assert (noisy.title, noisy.outcome, noisy.slug) == (
        "Oilers vs. Ducks",
        "Ducks",
        "nhl-edm-ana-2026-04-24",
    )
    for t in trades:
        assert isinstance(t.price, Decimal)
        assert -t.price.as_tuple().exponent <= 6  # type: ignore[operator]  # int for finite


def test_v2_snake_case_trades_and_activity_parse_like_v1() -> None:
    for name in ("v2_activity_snake_case_2026_09.json", "v2_trades_snake_case_2026_09.json"):
        trades, skipped = parse_all(name)
        assert len(trades) == 2 and not skipped
        assert all(t.tx_hash.startswith("0x") and len(t.tx_hash) == 66 for t in trades)
    v1, _ = parse_all("trades_2026_07.json")
    assert len(v1) == 5


def test_positions_v1_and_v2_parse_with_sizes() -> None:
    for name, n in (
        ("positions_open_2026_04.json", 5),
        ("positions_2025_redeemable_and_open.json", 2),
        ("positions_redeemable_zero_value_2026_07.json", 2),
        ("v2_positions_snake_case_2026.json", 2),
    ):
        pos, skipped = parse_all(name, positions=True)
        assert len(pos) == n and not skipped, name
    v2, _ = parse_all("v2_positions_snake_case_2026.json", positions=True)
    assert v2[0].size == Decimal("400000")


def test_v2_envelope_unwraps_and_reports_has_more() -> None:
    rows, more = unwrap({"data": [{"a": 1}], "pagination": {"has_more": True, "next_cursor": "x"}})
    assert rows == [{"a": 1}] and more
    with pytest.raises(FeedError):
        unwrap({"error": "nope"})


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"proxyWallet": None, "timestamp": "yesterday", "size": "NaN"}, "missing_field"),
        ({"transactionHash": "0xzz", "price": -1, "side": "HOLD"}, "missing_field"),
        ({}, "missing_field"),
        ("not a row", "not_object"),
    ],
)
def test_simulator_style_garbage_rows_raise_row_error_with_reason(row: Any, reason: str) -> None:
    with pytest.raises(RowError) as e:
        parse_trade_row(row)
    assert e.value.reason == reason


def test_row_with_bad_fields_names_the_reason() -> None:
    good = load("v2_trades_snake_case_2026_09.json")[0]
    for field, value, reason in (
        ("side", "HOLD", "bad_side"),
        ("price", 1.5, "out_of_range"),
        ("price", "NaN", "out_of_range"),
        ("price", "abc", "bad_number"),
        ("price", "1e308", "out_of_range"),
        ("size", "-1", "out_of_range"),
        ("size", "1e308", "out_of_range"),
        ("size", "1e999", "out_of_range"),
        ("size", "NaN", "out_of_range"),
        ("size", "Infinity", "out_of_range"),
        ("size", True, "bad_number"),
        ("token_id", "0xabc", "bad_token_id"),
        ("transaction_hash", "0xzz", "bad_tx_hash"),
        ("timestamp", "yesterday", "bad_timestamp"),
    ):
        with pytest.raises(RowError) as e:
            parse_trade_row({**good, field: value})
        assert e.value.reason == reason, field


V2_TRADE: dict[str, Any] = {
    "proxy_wallet": "0x84cfffc3f16dcc353094de30d4a45226eccd2f63",
    "side": "BUY",
    "token_id": "100621704916396384184205224105871827982844371725320616822883322969092312254616",
    "condition_id": "0xc8a2f17f42fa8493ebae503abec9d51efa7b57c3cc59a7b88933bffaa3618387",
    "size": 78.55,
    "price": 0.62,
    "timestamp": 1788887014,
    "transaction_hash": "0x8b2fd0c7480cd78bd9f57e8b935cf10c6635d2c479c66ea26d358e1425f44a95",
}
"""One v2 `/trades` row (a captured one, trimmed to the fields the parser reads)."""


@pytest.mark.parametrize(
    "stamp", ["Infinity", "-inf", "NaN", "1e20", "1e99999999", [1700000000], {"s": 1}]
)
def test_unusable_timestamp_is_a_bad_timestamp_row_error(stamp: Any) -> None:
    # An infinity once escaped as OverflowError (failing the whole page, not the row), and
    # "1e99999999" built a hundred-million-digit int on the event loop (a regression hangs
    # here, holding the GIL, so no pytest timeout can interrupt it: the CI job's does).
    with pytest.raises(RowError) as e:
        parse_trade_row({**V2_TRADE, "timestamp": stamp})
    assert e.value.reason == "bad_timestamp"


@pytest.mark.parametrize(
    ("stamp", "want"),
    [
        (1_700_000_000, 1_700_000_000),
        ("1700000000", 1_700_000_000),
        (1_700_000_000_123, 1_700_000_000),  # milliseconds slipped in
        ("1700000000.9", 1_700_000_000),
        (1.7e9, 1_700_000_000),
    ],
)
def test_timestamp_is_whole_seconds(stamp: Any, want: int) -> None:
    assert parse_trade_row({**V2_TRADE, "timestamp": stamp}).timestamp == want


def test_to_decimal_never_goes_through_float_arithmetic() -> None:
    assert to_decimal(0.5700000001) == Decimal("0.57")
    assert to_decimal("12.3456789") == Decimal("12.345679")
    assert str(to_decimal(400000.0)) == "400000"


@pytest.mark.parametrize("value", ["1e22", "1e30", 1e300, "-" + "9" * 30])
def test_absurdly_large_number_is_a_bad_number_row_error(value: Any) -> None:
    with pytest.raises(RowError) as e:
        to_decimal(value, what="size")
    assert e.value.reason == "bad_number"


def test_dedupe_key_is_stable_across_number_spellings() -> None:
    base = load("v2_trades_snake_case_2026_09.json")[0]
    a = parse_trade_row(base)
    b = parse_trade_row({**base, "size": str(base["size"]) + "000"})
    assert a.dedupe_key == b.dedupe_key


def test_budget_at_half_fraction_fits_fifty_wallets_per_second() -> None:
    budget = DataApiBudget(0.5, clock=FakeClock())
    # 1,000 requests / 10 s documented (/activity counts against the general limit); half of
    # it is 500 in any 10 s window: exactly 50 wallets polled every second.
    assert budget.wallets_at(1.0) == 50
    assert budget.windows["general"].limit == 500
    assert DataApiBudget(1.0, clock=FakeClock()).wallets_at(1.0) == 100
    assert budget.rate_per_s("positions") < budget.rate_per_s("activity")
    # /trades (200 / 10 s) and /positions (150 / 10 s) bind before the general limit does
    full = DataApiBudget(1.0, clock=FakeClock())
    assert [full.wallets_at(2.0, r) for r in ("activity", "trades", "positions")] == [200, 40, 30]


async def test_budget_shared_by_many_callers_never_exceeds_any_window() -> None:
    clock = FakeClock()
    budget = DataApiBudget(0.05, clock=clock)  # 50 in any 10 s window
    admitted: list[float] = []

    async def caller(route: str, n: int) -> None:
        for _ in range(n):
            await budget.acquire(route)
            admitted.append(clock.monotonic())

    await asyncio.gather(*(caller("activity", 40) for _ in range(5)), caller("positions", 10))
    assert len(admitted) == 210
    admitted.sort()
    # The 51st admission after any admission is at least a full 10 s window later...
    assert all(admitted[i + 50] - admitted[i] >= 10.0 - 1e-6 for i in range(len(admitted) - 50))
    # ...smoothed to 5 in any 1 s (no 10 s burst then stall)...
    assert all(admitted[i + 5] - admitted[i] >= 1.0 - 1e-6 for i in range(len(admitted) - 5))
    # ...and the share is used: 5 a second would be 42 s; a /positions call waiting on its own,
    # smaller window (1 a second here) keeps its FIFO place in the general one, costing a little.
    assert 41.0 - 1e-6 <= admitted[-1] <= 43.0 + 1e-6


# -- the client against a tiny local server (real sockets) ------------------------------------


class FakeDataServer:
    def __init__(self) -> None:
        self.pages: list[Any] = []
        self.statuses: list[int] = []
        self.delay_s = 0.0
        self.calls: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.raw: bytes | None = None  # answer these bytes instead of a JSON page
        self.retry_after: str | None = None  # sent with an error status

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(dict(request.query))
        self.paths.append(request.path)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.statuses:
            extra = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response({"error": "boom"}, status=self.statuses.pop(0), headers=extra)
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
        body = self.pages[offset // limit] if offset // limit < len(self.pages) else []
        return web.json_response(body)


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeDataServer, str]]:
    fake = FakeDataServer()
    app = web.Application()
    app.router.add_get("/activity", fake.handle)
    app.router.add_get("/positions", fake.handle)
    app.router.add_get("/trades", fake.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # bound TCP site
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@contextlib.asynccontextmanager
async def client(url: str, errors: list[str], **kw: Any) -> AsyncIterator[DataApiClient]:
    """A client of the fake server, closed on exit; error kinds are appended to `errors`."""
    kw.setdefault("budget", DataApiBudget(1.0, clock=SystemClock()))
    c = DataApiClient(
        base_url=url,
        retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02),
        on_error=errors.append,
        **kw,
    )
    try:
        yield c
    finally:
        await c.close()


async def test_activity_paginates_until_a_short_page(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    rows = load("activity_trades_float_noise_prices_2026_04.json")
    fake.pages = [rows[:4], rows[4:8], rows[8:]]
    errors: list[str] = []
    async with client(url, errors, page_size=4) as c:
        got = await c.activity_trades("0x6a72f61820b26b1fe4d956e17b6dc2a1ea3033ee", start=123)
    assert len(got.rows) == 10 and got.pages == 3 and not errors
    assert [t.timestamp for t in got.rows] == sorted(t.timestamp for t in got.rows)
    assert fake.calls[0]["start"] == "123" and fake.calls[0]["type"] == "TRADE"


async def test_a_client_built_without_a_retry_policy_reads_with_its_default(
    server: tuple[FakeDataServer, str],
) -> None:
    """`vet` (backtest/cli.py) builds its client without a retry policy: its default one
    retries a 503 and reads the page."""
    fake, url = server
    fake.statuses = [503]
    fake.pages = [load("activity_trades_float_noise_prices_2026_04.json")[:3]]
    c = DataApiClient(base_url=url, budget=DataApiBudget(1.0, clock=SystemClock()), page_size=4)
    try:
        got = await c.activity_trades("0x6a72f61820b26b1fe4d956e17b6dc2a1ea3033ee", start=1)
    finally:
        await c.close()
    assert len(got.rows) == 3 and got.pages == 1 and len(fake.calls) == 2


async def test_market_trades_reads_every_wallet_newest_first_and_stops_at_since(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    rows = load("trades_2026_07.json")  # a real /trades page: 4 wallets, newest first
    fake.pages = [rows[:2], rows[2:4], rows[4:], rows[:2]]  # a 4th page must never be asked
    async with client(url, [], page_size=2) as c:
        got = await c.market_trades("0x" + "ab" * 32, since=1784326700)
    # Page 2 reaches back past `since` (1784326651): paging stops there, older rows dropped.
    assert got.pages == 2 and not got.truncated
    assert [t.timestamp for t in got.rows] == [1784326773, 1784326906, 1784327295]
    assert len({t.wallet for t in got.rows}) == 3
    assert "user" not in fake.calls[0] and fake.calls[0]["market"] == "0x" + "ab" * 32
    assert fake.calls[0]["takerOnly"] == "false"


async def test_v2_envelope_page_parses(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.pages = [{"data": load("v2_activity_snake_case_2026_09.json"), "pagination": {}}]
    async with client(url, []) as c:
        got = await c.activity_trades("0x7c3db723f1d4d8cb9c550095203b686cb11e5c6b")
    assert len(got.rows) == 2


async def test_5xx_then_success_is_retried_and_counted(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.statuses = [500, 503]
    fake.pages = [load("trades_2026_07.json")]
    errors: list[str] = []
    async with client(url, errors) as c:
        got = await c.activity_trades("0x970998da056e60c707d9b1fc55cfdf3d68c252ab")
    assert len(got.rows) == 5
    assert errors == ["http_5xx", "http_5xx"]


async def test_persistent_5xx_raises_transient_error(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.statuses = [500] * 5
    async with client(url, []) as c:
        with pytest.raises(TransientError):
            await c.activity_trades("0x970998da056e60c707d9b1fc55cfdf3d68c252ab")


async def test_timeout_raises_transient_error(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.delay_s = 0.5
    errors: list[str] = []
    async with client(url, errors, timeout_s=0.05) as c:
        with pytest.raises(TransientError):
            await c.activity_trades("0x970998da056e60c707d9b1fc55cfdf3d68c252ab")
    assert errors == ["timeout"] * 3


async def test_garbage_rows_are_skipped_with_reasons(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    rows = load("trades_2026_07.json")
    fake.pages = [[{}, rows[0], {"transactionHash": "0xzz"}, "x", *rows[1:]]]
    errors: list[str] = []
    async with client(url, errors) as c:
        got = await c.activity_trades("0x970998da056e60c707d9b1fc55cfdf3d68c252ab")
    assert len(got.rows) == 5
    assert sorted(r for r, _ in got.skipped) == ["missing_field", "missing_field", "not_object"]
    assert errors.count("row_missing_field") == 2


# -- bounds ----------------------------------------------------------------------------------

HOSTILE_NUMBERS = ["1e308", "-1", "NaN", "Infinity", "1e999", "1" * 80]


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
def test_position_row_with_an_out_of_bound_size_or_avg_price_is_out_of_range(value: str) -> None:
    good = load("v2_positions_snake_case_2026.json")[0]
    parse_position_row(good)
    for field in ("current_size", "avg_price"):
        with pytest.raises(RowError) as e:
            parse_position_row({**good, field: value})
        assert e.value.reason == "out_of_range", field
    with pytest.raises(RowError) as e:
        parse_position_row({**good, "avg_price": "1.5"})
    assert e.value.reason == "out_of_range"


async def test_leader_trades_with_hostile_numbers_are_never_returned_and_are_counted(
    server: tuple[FakeDataServer, str],
) -> None:
    from observability.metrics import Metrics
    from venue.parse import MalformedLog

    fake, url = server
    rows = load("trades_2026_07.json")
    hostile = [
        {**rows[0], "size": "1e308"},
        {**rows[0], "size": "-3"},
        {**rows[0], "price": "1.5"},
        {**rows[0], "price": "NaN"},
        {**rows[0], "size": "Infinity"},
    ]
    fake.pages = [[*hostile, *rows[1:]]]
    errors: list[str] = []
    metrics = Metrics()
    async with client(url, errors, malformed=MalformedLog("data_api", metrics=metrics)) as c:
        got = await c.activity_trades("0x970998da056e60c707d9b1fc55cfdf3d68c252ab")
    assert len(got.rows) == len(rows) - 1  # only the sound rows
    assert [r for r, _ in got.skipped] == ["out_of_range"] * len(hostile)
    value = metrics.registry.get_sample_value("polyd_feed_malformed_total", {"feed": "data_api"})
    assert value == len(hostile)


# -- the wire contract: routes, query, headers, budget route and error kinds ------------------

WALLET = "0x970998da056e60c707d9b1fc55cfdf3d68c252ab"


class RecordingBudget(DataApiBudget):
    """The shared budget, also recording which route each request took from."""

    def __init__(self) -> None:
        super().__init__(1.0, clock=SystemClock())
        self.routes: list[str] = []

    async def acquire(self, route: str) -> float:
        self.routes.append(route)
        return await super().acquire(route)


async def test_each_route_sends_its_documented_query_and_takes_from_its_budget(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    budget = RecordingBudget()
    errors: list[str] = []
    async with client(url + "/", errors, budget=budget, page_size=3) as c:
        await c.activity_trades(WALLET, start=5)
        await c.trades(WALLET)
        await c.market_trades("0x" + "ab" * 32, since=1)
        await c.positions(WALLET, market="0x" + "cd" * 32)
        await c.positions(WALLET)
        assert c.requests == 5
    assert fake.paths == ["/activity", "/trades", "/trades", "/positions", "/positions"]
    page = {"offset": "0", "limit": "3"}
    assert fake.calls == [
        {
            "user": WALLET,
            "type": "TRADE",
            "sortBy": "TIMESTAMP",
            "sortDirection": "ASC",
            "start": "5",
        }
        | page,
        {"user": WALLET, "takerOnly": "false"} | page,
        {"market": "0x" + "ab" * 32, "takerOnly": "false"} | page,
        {
            "user": WALLET,
            "sizeThreshold": "0",
            "market": "0x" + "cd" * 32,
            "limit": "500",
            "offset": "0",
        },
        {"user": WALLET, "sizeThreshold": "0", "limit": "500", "offset": "0"},
    ]
    assert budget.routes == ["activity", "trades", "trades", "positions", "positions"]
    assert all(h["Accept"] == "application/json" for h in fake.headers)
    assert all(h["User-Agent"] == "polyd/0.1" for h in fake.headers)
    assert errors == []


async def test_429_is_rate_limited_with_the_servers_retry_after(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    fake.statuses = [429] * 3
    fake.retry_after = "7"
    errors: list[str] = []
    async with client(url, errors) as c:
        with pytest.raises(RateLimited) as e:
            await c.activity_trades(WALLET)
    assert (e.value.status, e.value.retry_after) == (429, 7.0)
    assert str(e.value) == "Data API /activity answered 429"
    assert errors == ["http_429"] * 3


@pytest.mark.parametrize("status", [400, 404, 499])
async def test_4xx_is_a_feed_error_never_retried(
    server: tuple[FakeDataServer, str], status: int
) -> None:
    fake, url = server
    fake.statuses = [status]
    errors: list[str] = []
    async with client(url, errors) as c:
        with pytest.raises(FeedError, match=f"^Data API /positions answered {status}$"):
            await c.positions(WALLET)
    assert errors == ["http_4xx"] and len(fake.calls) == 1


async def test_5xx_names_route_and_status(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.statuses = [502] * 3
    async with client(url, []) as c:
        with pytest.raises(TransientError) as e:
            await c.trades(WALLET)
    assert (str(e.value), e.value.status) == ("Data API /trades answered 502", 502)


async def test_invalid_json_is_transient_and_counted(server: tuple[FakeDataServer, str]) -> None:
    fake, url = server
    fake.raw = b"{not json"
    errors: list[str] = []
    async with client(url, errors) as c:
        with pytest.raises(TransientError, match=r"^Data API /activity answered invalid JSON$"):
            await c.activity_trades(WALLET)
    assert errors == ["bad_json"] * 3


async def test_an_envelope_of_neither_kind_is_counted_as_bad_envelope(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    fake.raw = b'{"rows": []}'
    errors: list[str] = []
    async with client(url, errors) as c:
        with pytest.raises(FeedError):
            await c.activity_trades(WALLET)
    assert errors == ["bad_envelope"]


async def test_a_refused_connection_is_transient_and_counted() -> None:
    errors: list[str] = []
    async with client("http://127.0.0.1:9", errors) as c:  # the discard port: nothing listens
        with pytest.raises(TransientError, match=r"^Data API /activity: Client"):
            await c.activity_trades(WALLET)
    assert errors == ["connection"] * 3


@pytest.mark.parametrize("size", [1, 500])
def test_page_size_within_the_activity_maximum_is_accepted(size: int) -> None:
    c = DataApiClient(
        base_url="http://x", budget=DataApiBudget(1.0, clock=SystemClock()), page_size=size
    )
    assert c.page_size == size


@pytest.mark.parametrize("size", [0, 501])
def test_page_size_outside_the_activity_maximum_is_refused(size: int) -> None:
    with pytest.raises(
        ValueError, match=r"^page_size must be in \[1, 500\] \(the /activity maximum\)$"
    ):
        DataApiClient(
            base_url="http://x", budget=DataApiBudget(1.0, clock=SystemClock()), page_size=size
        )


@pytest.mark.parametrize("fraction", [0, 1.01])
def test_budget_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"^fraction must be in \(0, 1\]$"):
        DataApiBudget(fraction, clock=SystemClock())


async def test_closing_leaves_a_session_it_was_given_open() -> None:
    import aiohttp

    session = aiohttp.ClientSession()
    try:
        c = DataApiClient(
            base_url="http://x", budget=DataApiBudget(1.0, clock=SystemClock()), session=session
        )
        await c.close()
        assert not session.closed
    finally:
        await session.close()


async def test_market_trades_keeps_trades_at_since_and_reads_on_while_a_page_ends_there(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")  # newest first
    at = r[3]["timestamp"]
    same_second = {**r[4], "timestamp": at, "transaction_hash": "0x" + "12" * 32}
    fake.pages = [r[:2], r[2:4], [same_second, {"junk": 1}], [r[4]]]
    async with client(url, [], page_size=2) as c:
        got = await c.market_trades("0x" + "ab" * 32, since=at)
    # Page 2 ends exactly at `since`: more of that second may follow, so page 3 is read; its
    # oldest sound row is at `since` too, but page 3 is short (one sound row + one junk row
    # count as a full page), so page 4 is read and its older row ends the paging.
    assert [c_["offset"] for c_ in fake.calls] == ["0", "2", "4", "6"]
    assert [t.timestamp for t in got.rows] == sorted([at, at, *(x["timestamp"] for x in r[:3])])
    assert got.skipped == [("missing_field", "missing_field: proxyWallet/proxy_wallet")]
    assert not got.truncated


async def test_paging_that_reaches_max_pages_is_marked_truncated(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")
    fake.pages = [r[:2], r[2:4], r[:2]]
    async with client(url, [], page_size=2, max_pages=2) as c:
        market = await c.market_trades("0x" + "ab" * 32, since=0)
        activity = await c.activity_trades(WALLET)
    assert market.truncated and market.pages == 2
    assert activity.truncated and activity.pages == 2


async def test_skipped_rows_are_reported_by_kind_and_malformed_numbers_logged(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")
    fake.pages = [[{**r[0], "type": "REDEEM"}, {**r[1], "size": "-3"}, r[2]]]
    logged: list[tuple[str, Any]] = []

    def malformed(why: str, sample: Any, *, counted: bool = False) -> None:
        logged.append((why, sample))

    errors: list[str] = []
    async with client(url, errors, malformed=malformed) as c:
        got = await c.activity_trades(WALLET)
    assert len(got.rows) == 1
    assert got.skipped == [
        ("not_trade", "not_trade: REDEEM"),
        ("out_of_range", "out_of_range: size '-3' is negative"),
    ]
    assert errors == ["row_out_of_range"]  # a non-trade activity row is not an error
    assert logged == [("out_of_range: size '-3' is negative", {**r[1], "size": "-3"})]


async def test_the_client_closes_the_session_it_made_and_opens_another_after() -> None:
    c = DataApiClient(base_url="http://x", budget=DataApiBudget(1.0, clock=SystemClock()))
    first = c._http()
    await c.close()
    assert first.closed
    second = c._http()
    assert second is not first and not second.closed
    await c.close()
    assert second.closed


async def test_trades_keeps_rows_from_start_on_oldest_first(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")  # newest first
    fake.pages = [r]
    async with client(url, []) as c:
        every = await c.trades(WALLET)
        since = await c.trades(WALLET, start=r[2]["timestamp"])
    assert [t.timestamp for t in every.rows] == sorted(x["timestamp"] for x in r)
    assert [t.timestamp for t in since.rows] == sorted(x["timestamp"] for x in r[:3])


async def test_a_garbage_row_does_not_hide_the_rows_after_it_on_its_page(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")  # newest first
    fake.pages = [[{"junk": 1}, *r[:3]]]
    async with client(url, [], page_size=10) as c:
        got = await c.market_trades("0x" + "ab" * 32, since=0)
    assert len(got.rows) == 3 and len(got.skipped) == 1


async def test_market_paging_stops_at_the_oldest_row_of_a_page_wherever_it_is(
    server: tuple[FakeDataServer, str],
) -> None:
    fake, url = server
    r = load("trades_2026_07.json")  # newest first
    since = r[1]["timestamp"]
    # the page's oldest row (r[4], before `since`) comes first: paging must still stop here
    fake.pages = [[r[4], r[0]], [r[1], r[2]]]
    async with client(url, [], page_size=2) as c:
        got = await c.market_trades("0x" + "ab" * 32, since=since)
    assert got.pages == 1 and [t.timestamp for t in got.rows] == [r[0]["timestamp"]]


async def test_a_session_it_was_given_still_times_out_and_says_so(
    server: tuple[FakeDataServer, str],
) -> None:
    import aiohttp

    fake, url = server
    fake.delay_s = 0.5
    errors: list[str] = []
    session = aiohttp.ClientSession()  # no timeout of its own
    try:
        async with client(url, errors, timeout_s=0.05, session=session) as c:
            with pytest.raises(TransientError, match=r"^Data API /activity timed out$"):
                await c.activity_trades(WALLET)
    finally:
        await session.close()
    assert errors == ["timeout"] * 3


def test_client_defaults() -> None:
    c = DataApiClient(base_url="http://x/", budget=DataApiBudget(1.0, clock=SystemClock()))
    assert (c.page_size, c.max_pages, c.requests) == (100, 20, 0)
    assert c._timeout.total == 5.0
    assert c._base == "http://x"


async def test_each_route_also_takes_from_its_own_window() -> None:
    budget = DataApiBudget(1.0, clock=FakeClock())
    # /positions: 150 per 10 s, smoothed to 15 per 1 s... at most ceil(150 / 10) = 15 in 1 s;
    # the general window (1,000 per 10 s) would admit far more at once.
    waits = [await budget.acquire("positions") for _ in range(16)]
    assert waits[:15] == [0.0] * 15 and waits[15] > 0
    general = DataApiBudget(1.0, clock=FakeClock())
    assert [await general.acquire("activity") for _ in range(16)] == [0.0] * 16


def test_a_tiny_budget_still_admits_one_request_per_window() -> None:
    budget = DataApiBudget(0.0001, clock=FakeClock())
    assert budget.windows["general"].limit == 1


async def test_requests_go_through_the_session_it_was_given() -> None:
    import aiohttp

    session = aiohttp.ClientSession()
    try:
        c = DataApiClient(
            base_url="http://x", budget=DataApiBudget(1.0, clock=SystemClock()), session=session
        )
        assert c._http() is session
    finally:
        await session.close()
