"""`ledger_check.compare`: the daemon's fills, fees and positions against the simulator's ledger,
and every tampering named (a fee off by 0.00001, a wrong side, a missing fill, an extra position).

The ledger rows have the shape of `simulator.records.Trade.ledger_rows` (one per trade and maker
order, `fee` the taker's exact fee for that leg); the fills are what the daemon books per
(trade, venue order): a taker's legs summed at their average price, its fee the sum of the legs'
fees (https://docs.polymarket.com/trading/fees: the taker pays per fill, the maker nothing).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D
from typing import Any

from ledger_check import compare
from storage.reports import FillReport

ME = "0xAbC0000000000000000000000000000000000001"
OTHER = "0x0000000000000000000000000000000000000002"
YES, NO = "1" * 70, "2" * 70


def row(tid: str, taker: str, maker: str, maker_oid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": tid,
        "taker_order_id": f"0xt-{tid}",
        "maker_order_id": maker_oid,
        "taker": taker,
        "maker": maker,
        "token_id": YES,
        "maker_token_id": YES,
        "side": "BUY",
        "maker_side": "SELL",
        "price": D("0.5"),
        "maker_price": D("0.5"),
        "size": D(10),
        "fee": D("0.18"),
        "status": "MATCHED",
    }
    return base | kw


def ledger() -> dict[str, Any]:
    return {
        "trades": [
            # We took two levels in one trade (one fill for us): 10 @ 0.5 + 10 @ 0.9.
            row("t1", ME, OTHER, "0xm1"),
            row("t1", ME, OTHER, "0xm2", price=D("0.9"), maker_price=D("0.9"), fee=D("0.0648")),
            # Our resting SELL was taken: we are the maker, the taker paid the fee.
            row("t2", OTHER, ME, "0xours", size=D(4), price=D("0.6"), maker_price=D("0.6")),
            # Someone else's trade, and one of ours that failed: neither counts.
            row("t3", OTHER, OTHER, "0xm3"),
            row("t4", ME, OTHER, "0xm4", status="FAILED"),
        ],
        "balances": {ME.lower(): {"collateral": D(1), "tokens": {YES: D(16), NO: D(0)}}},
    }


def fills() -> list[FillReport]:
    return [
        FillReport("t1", "0xt-t1", YES, "BUY", D("0.7"), D(20), D("0.2448"), "TAKER", "MATCHED"),
        FillReport("t2", "0xours", YES, "SELL", D("0.6"), D(4), D(0), "MAKER", "CONFIRMED"),
        FillReport("t4", "0xt-t4", YES, "BUY", D("0.5"), D(10), D("0.18"), "TAKER", "FAILED"),
    ]


def test_books_that_agree_match() -> None:
    c = compare(ledger(), fills(), {YES: D(16)}, address=ME)
    assert c.ok, c.mismatches
    assert (c.fills, c.fees, c.positions) == (2, D("0.2448"), 1)
    assert c.line() == "ledger check: 2 fills, fees 0.2448 pUSD, positions 1 tokens — match"


def test_a_fee_off_by_the_smallest_unit_is_named() -> None:
    bad = fills()
    bad[0] = replace(bad[0], fee=D("0.24481"))
    c = compare(ledger(), bad, {YES: D(16)}, address=ME)
    assert not c.ok
    assert "fill t1/0xt-t1 fee: venue 0.2448 daemon 0.24481" in c.mismatches
    assert "fees: venue 0.2448 daemon 0.24481" in c.mismatches
    assert "MISMATCH" in c.line()


def test_a_wrong_side_is_named() -> None:
    bad = fills()
    bad[1] = replace(bad[1], side="BUY")
    c = compare(ledger(), bad, {YES: D(16)}, address=ME)
    assert c.mismatches == ["fill t2/0xours side: venue SELL daemon BUY"]


def test_a_wrong_price_size_or_token_is_named() -> None:
    bad = fills()
    bad[0] = replace(bad[0], price=D("0.5"), size=D(10), token_id=NO)
    c = compare(ledger(), bad, {YES: D(16)}, address=ME)
    assert {m.split(":")[0] for m in c.mismatches} == {
        "fill t1/0xt-t1 token",
        "fill t1/0xt-t1 price",
        "fill t1/0xt-t1 size",
    }


def test_a_missing_fill_and_an_extra_one_are_named() -> None:
    c = compare(ledger(), fills()[1:], {YES: D(16)}, address=ME)
    assert c.mismatches[0] == "missing fill t1/0xt-t1: venue BUY 20 @ 0.7"
    assert "fees: venue 0.2448 daemon 0" in c.mismatches
    extra = [*fills(), FillReport("t9", "0x9", YES, "BUY", D("0.5"), D(1), D(0), "TAKER", "MINED")]
    c = compare(ledger(), extra, {YES: D(16)}, address=ME)
    assert c.mismatches == ["extra fill t9/0x9: daemon BUY 1 @ 0.5"]


def test_an_extra_or_wrong_position_is_named() -> None:
    c = compare(ledger(), fills(), {YES: D(16), NO: D(3)}, address=ME)
    assert c.mismatches == [f"position {NO[:12]}…: venue 0 daemon 3"]
    c = compare(ledger(), fills(), {YES: D("16.000001")}, address=ME)
    assert c.mismatches == [f"position {YES[:12]}…: venue 16 daemon 16.000001"]


def test_ledger_values_as_json_strings_compare_the_same() -> None:
    # A simulator in another process serves its ledger as JSON: numbers arrive as strings.
    text = ledger()
    text["trades"] = [{k: str(v) for k, v in r.items()} for r in text["trades"]]
    text["balances"] = {ME.lower(): {"tokens": {YES: "16"}}}
    assert compare(text, fills(), {YES: D(16)}, address=ME).ok


def test_fills_the_venue_evicted_are_compared_with_its_folded_totals() -> None:
    # The venue evicted t1 (our two taker legs, 20 shares bought, fee 0.2448) into its totals.
    led = ledger()
    led["trades"] = [r for r in led["trades"] if r["id"] != "t1"]
    led["evicted"] = {"wallets": {ME.lower(): {"bought": D(20), "sold": D(0), "fees": D("0.2448")}}}
    c = compare(led, fills(), {YES: D(16)}, address=ME)
    assert c.ok, c.mismatches
    assert (c.fills, c.fees) == (2, D("0.2448"))
    # A daemon fill off by one share, or a fee off by the smallest unit, is still named.
    bad = fills()
    bad[0] = replace(bad[0], size=D(21), fee=D("0.24481"))
    c = compare(led, bad, {YES: D(16)}, address=ME)
    assert "evicted fills bought: venue 20 daemon 21 (1 fills)" in c.mismatches
    assert "evicted fills fees: venue 0.2448 daemon 0.24481 (1 fills)" in c.mismatches
    assert "fees: venue 0.2448 daemon 0.24481" in c.mismatches
