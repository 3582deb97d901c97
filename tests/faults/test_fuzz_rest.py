"""Fuzz REST response translation: garbage in -> a clear refusal or skip, never a crash and never
a wrong Decimal (NaN, infinite, negative, out of range).

* CLOB adapter (`venue/clob/`): the `POST /order` answer (`ClobBroker._ack`), order rows
  (`venue_order`, used by lookup/open orders), cancel answers, `/markets` rows.
* Gamma (`venue/gamma.py`): `/markets` rows -> `MarketRow` or `FeedError`.
* Data API (`venue/data_api.py`): trade and position rows -> parsed rows or `RowError`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from errors import FeedError, PolydError
from execution.ports import Ack
from models import OrderRequest
from tests.faults.fuzzing import FAST, SLOW
from venue.clob import ClobBroker, meta_from_market, venue_order
from venue.data_api import ROW_SKIP_REASONS, RowError, parse_position_row, parse_trade_row
from venue.gamma import parse_market

CID = "0x" + "ab" * 32
WALLET = "0x" + "cd" * 20
TX = "0x" + "ef" * 32
TOKEN = "7" * 70

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["NaN", "sNaN", "Infinity", "-Infinity", "1e999999", "1e30", "-1", "0", "", "0.5", "5"]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def finite_non_negative(*ds: Decimal | None) -> bool:
    return all(d is None or (d.is_finite() and d >= 0) for d in ds)


# --- CLOB: POST /order answer ------------------------------------------------------------

REQ = OrderRequest(
    strategy="fuzz", token_id=TOKEN, side="BUY", price="0.5", size="10", order_type="GTC"
)
ack_body = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "success": junk,
            "errorMsg": junk,
            "orderID": junk,
            "status": st.one_of(st.sampled_from(["LIVE", "MATCHED", "DELAYED", "UNMATCHED"]), junk),
            "makingAmount": junk,
            "takingAmount": junk,
            "tradeIDs": junk,
        },
    ),
    junk,
)


def check_ack(res: Any) -> None:
    try:
        ack = ClobBroker._ack(res, REQ, "0x" + "11" * 32)
    except PolydError:
        return  # a clear refusal (OrderRejected / OutcomeUnknown)
    assert isinstance(ack, Ack)
    assert finite_non_negative(ack.size_matched, ack.avg_price), ack
    assert ack.size_matched <= REQ.size, ack
    assert ack.avg_price is None or ack.avg_price <= 1, ack


@FAST
@example({"status": "MATCHED", "orderID": "0x1", "makingAmount": "NaN", "takingAmount": "5"})
@example({"orderID": "0x1", "tradeIDs": 5})
@given(ack_body)
def test_fuzzed_order_answers_give_an_ack_or_a_clear_refusal(res: Any) -> None:
    check_ack(res)


# --- CLOB: order rows, cancel answers, /markets rows --------------------------------------

order_row = st.fixed_dictionaries(
    {"id": st.one_of(st.just("0xabc"), junk), "status": st.sampled_from(["LIVE", "MATCHED"])},
    optional={
        "original_size": junk,
        "size_matched": junk,
        "price": junk,
        "side": junk,
        "asset_id": junk,
        "order_type": junk,
    },
)


def check_order_row(row: dict[str, Any]) -> None:
    vo = venue_order(row)
    if vo is None:
        return
    assert finite_non_negative(vo.price, vo.original_size, vo.size_matched), vo
    assert vo.price <= 1, vo


@FAST
@example({"id": "0xabc", "status": "LIVE", "price": "NaN"})
@example({"id": "0xabc", "status": "LIVE", "original_size": "NaN"})
@given(order_row)
def test_fuzzed_order_rows_give_a_sound_order_or_none(row: dict[str, Any]) -> None:
    check_order_row(row)


def check_cancel_and_markets(cancel: Any, market: Any) -> None:
    res = ClobBroker._cancel_result(cancel)
    assert all(isinstance(x, str) for x in res.canceled)
    for meta in meta_from_market(CID, market):
        assert meta.tick_size.is_finite() and 0 < meta.tick_size < 1, meta
        assert meta.min_size.is_finite() and meta.min_size >= 0, meta


@FAST
@example({"canceled": 5}, {})
@example({}, {"tokens": [{"token_id": "1"}], "minimum_tick_size": "NaN"})
@given(
    st.one_of(st.fixed_dictionaries({}, optional={"canceled": junk, "not_canceled": junk}), junk),
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "tokens": st.one_of(
                    st.lists(st.fixed_dictionaries({"token_id": junk}), max_size=2), junk
                ),
                "minimum_tick_size": junk,
                "minimum_order_size": junk,
            },
        ),
        junk,
    ),
)
def test_fuzzed_cancel_and_market_answers_never_crash(cancel: Any, market: Any) -> None:
    check_cancel_and_markets(cancel, market)


# --- Gamma --------------------------------------------------------------------------------

gamma_row = st.fixed_dictionaries(
    {},
    optional={
        "conditionId": st.one_of(st.just(CID), junk),
        "clobTokenIds": st.one_of(
            st.just('["1", "2"]'), st.just(["1", "2"]), st.just("[1.5]"), st.just("{"), junk
        ),
        "outcomes": st.one_of(st.just('["Yes", "No"]'), junk),
        "orderPriceMinTickSize": junk,
        "orderMinSize": junk,
        "negRisk": junk,
        "endDate": st.one_of(st.just("2030-01-01T00:00:00Z"), junk),
        "acceptingOrders": junk,
        "active": junk,
        "closed": junk,
        "slug": junk,
        "question": junk,
        "liquidityNum": junk,
        "volumeNum": junk,
        "tags": st.one_of(st.lists(st.fixed_dictionaries({"slug": junk}), max_size=2), junk),
        "enableOrderBook": junk,
    },
)


def check_gamma(row: Any) -> None:
    try:
        parsed = parse_market(row)
    except FeedError:
        return  # a clear refusal: the client logs the reason and skips the row
    m = parsed.market
    assert m.tick_size.is_finite() and 0 < m.tick_size < 1
    assert m.min_size.is_finite() and m.min_size >= 0, m.min_size
    assert m.token_ids and all(t.isdigit() for t in m.token_ids)
    assert parsed.liquidity is None or parsed.liquidity.is_finite()
    assert parsed.volume is None or parsed.volume.is_finite()


@FAST
@example({"conditionId": CID, "clobTokenIds": '["1","2"]', "orderMinSize": "-5"})
@given(st.one_of(gamma_row, junk))
def test_fuzzed_gamma_rows_give_a_market_or_feed_error(row: Any) -> None:
    check_gamma(row)


@pytest.mark.slow
@SLOW
@given(st.one_of(gamma_row, junk))
def test_fuzzed_gamma_rows_give_a_market_or_feed_error_10k(row: Any) -> None:
    check_gamma(row)


# --- Data API -----------------------------------------------------------------------------

trade_row = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.just("TRADE"), junk),
        "proxyWallet": st.one_of(st.just(WALLET), junk),
        "transactionHash": st.one_of(st.just(TX), junk),
        "asset": st.one_of(st.just(TOKEN), junk),
        "conditionId": st.one_of(st.just(CID), junk),
        "side": st.one_of(st.sampled_from(["BUY", "SELL", "buy"]), junk),
        "size": junk,
        "price": junk,
        "timestamp": junk,
        "avgPrice": junk,
    },
)


def check_data_api(row: Any) -> None:
    try:
        t = parse_trade_row(row)
    except RowError as e:
        reason = e.reason
    else:
        reason = ""
        assert t.size.is_finite() and t.size > 0
        assert t.price.is_finite() and 0 < t.price < 1
        assert t.timestamp > 0
    assert reason in ROW_SKIP_REASONS or not reason
    try:
        p = parse_position_row(row)
    except RowError as e:
        reason = e.reason
    else:
        reason = ""
        assert p.size.is_finite() and p.size >= 0
        assert p.avg_price is None or p.avg_price.is_finite()
    assert reason in ROW_SKIP_REASONS or not reason


@FAST
@example(
    {
        "proxyWallet": WALLET,
        "transactionHash": TX,
        "asset": TOKEN,
        "conditionId": CID,
        "side": "BUY",
        "size": "1e30",
        "price": "0.5",
        "timestamp": 1,
    }
)
@given(st.one_of(trade_row, junk))
def test_fuzzed_data_api_rows_give_a_row_or_a_row_error(row: Any) -> None:
    check_data_api(row)


@FAST
@given(
    trade_row.filter(
        lambda r: (
            not any(
                isinstance(r.get(k), int | float | str) and _big(r.get(k))
                for k in ("size", "price", "avgPrice")
            )
        )
    )
)
def test_fuzzed_data_api_rows_with_sane_magnitudes_give_a_row_or_a_row_error(
    row: dict[str, Any],
) -> None:
    # Ordinary magnitudes, drawn more densely than the unrestricted test above reaches them.
    check_data_api(row)


def _big(v: Any) -> bool:
    try:
        d = Decimal(str(v))
    except ArithmeticError:
        return False
    return d.is_finite() and d.adjusted() >= 20
