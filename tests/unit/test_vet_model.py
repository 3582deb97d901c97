"""The vet model's pure parts: metrics, accounts, and single copy decisions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backtest.accounts import Account
from backtest.fetch import MarketFacts, VetInput, load_rule
from backtest.metrics import RoundTrip, equity_curve, hit_rate, max_drawdown, median
from backtest.vet import decide, price_at, simulate, snap_against
from errors import ConfigError
from models import Side
from strategies.copy_trader.rules import parse_rules
from venue.data_api import LeaderTrade

D = Decimal
WALLET = "0x" + "ab" * 20
CID = "0x" + "cd" * 32
YES, NO = "1" * 20, "2" * 20


def trade(side: str, price: str, size: str, ts: int, n: int = 1) -> LeaderTrade:
    return LeaderTrade(
        wallet=WALLET,
        tx_hash="0x" + f"{n:064x}",
        token_id=YES,
        condition_id=CID,
        side=Side(side),
        size=D(size),
        price=D(price),
        timestamp=ts,
        slug="m",
    )


RULE = parse_rules(
    {"wallets": [{"address": WALLET, "sizing": "fixed_notional", "fixed_notional": "10"}]}
).wallets[0]
MARKET = MarketFacts(CID, (YES, NO), slug="m")
RESOLVES_AT_102 = MarketFacts(CID, (YES, NO), resolved_at=102, payouts={YES: D(1), NO: D(0)})


def test_equity_curve_and_drawdown_follow_the_running_peak() -> None:
    curve = equity_curve([(3, D(-2)), (1, D(5)), (2, D(-4)), (4, D(10))])
    assert [p.equity for p in curve] == [D(5), D(1), D(-1), D(9)]
    assert [p.drawdown for p in curve] == [D(0), D(4), D(6), D(0)]
    assert max_drawdown(curve) == D(6)
    assert max_drawdown([]) == D(0)


def test_a_run_losing_from_the_start_is_in_drawdown() -> None:
    assert max_drawdown(equity_curve([(1, D(-3))])) == D(3)


def test_hit_rate_and_median() -> None:
    trips = [RoundTrip("t", "c", 0, 10, D(1)), RoundTrip("t", "c", 0, 30, D(-1))]
    assert hit_rate(trips) == D("0.5")
    assert hit_rate([]) is None
    assert median([30, 10]) == D(20)
    assert median([5, 1, 3]) == D(3)
    assert median([]) is None


def test_account_average_cost_sell_and_resolution() -> None:
    a = Account()
    a.buy(1, YES, CID, D(10), D("0.40"), D("0.1"))  # cost 4.1
    a.buy(2, YES, CID, D(10), D("0.60"), D(0))  # cost 10.1 for 20
    a.sell(3, YES, CID, D(5), D("0.70"), D(0))  # basis 2.525 -> +0.975
    assert a.exposure(CID) == D("7.575")
    a.resolve(4, YES, CID, D(1))  # 15 x 1 - 7.575 = 7.425
    assert [c[1] for c in a.changes] == [D("0.975"), D("7.425")]
    assert len(a.trips) == 1 and a.trips[0].pnl == D("8.400")
    assert a.trips[0].hold_s == 3
    assert a.shares(YES) == 0


def test_price_at_takes_the_last_trade_at_or_before() -> None:
    tape = ((10, D("0.4")), (12, D("0.5")), (15, D("0.6")))
    assert price_at(tape, 9) is None
    assert price_at(tape, 12) == D("0.5")
    assert price_at(tape, 14) == D("0.5")
    assert snap_against(D("0.412"), D("0.01"), Side.BUY) == D("0.42")
    assert snap_against(D("0.418"), D("0.01"), Side.SELL) == D("0.41")


@pytest.mark.parametrize(
    ("market", "side", "lag", "reason"),
    [
        (MARKET, "BUY", 61, "too_old"),
        (RESOLVES_AT_102, "BUY", 1, ""),
        (RESOLVES_AT_102, "BUY", 2, "market_closed"),  # arrives as the market resolves
        (MARKET, "SELL", 1, "no_position"),
    ],
)  # fmt: skip
def test_decide_skips_with_the_live_trader_reasons(
    market: MarketFacts, side: str, lag: int, reason: str
) -> None:
    t = trade(side, "0.50", "100", 100)
    d = decide(
        RULE,
        t,
        at=100 + lag,
        market=market,
        tape=((100, D("0.50")),),
        copier=Account(),
        leader_before=D(0),
        max_age_s=60,
    )
    assert d.reason == reason
    assert (d.fill is None) == bool(reason)


def test_simulate_is_deterministic_and_rejects_a_negative_lag() -> None:
    data = VetInput(
        wallet=WALLET,
        start=0,
        end=1000,
        trades=(trade("BUY", "0.50", "100", 100), trade("SELL", "0.70", "100", 500, 2)),
        markets={CID: MARKET},
        tape={YES: ((100, D("0.50")), (500, D("0.70")))},
    )
    a = simulate(data, RULE, lag_s=1)
    b = simulate(data, RULE, lag_s=1)
    assert a.copier == b.copier
    # 10 pUSD at 0.52 (limit; the price stayed 0.50): 19.23 size, 19.23 x 0.52 / 0.50 shares.
    shares = (D("19.23") * D("0.52") / D("0.50")).quantize(D("0.000001"))
    assert a.copier.pnl == shares * D("0.70") - D("19.23") * D("0.52")
    with pytest.raises(ValueError, match="lag_s"):
        simulate(data, RULE, lag_s=-1)


def test_load_rule_uses_the_wallets_entry_else_the_defaults(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    f = tmp_path / "rules.toml"
    other = "0x" + "ef" * 20
    f.write_text(
        f'[defaults]\nmax_slippage = "0.05"\n[[wallets]]\naddress = "{other}"\n'
        'sizing = "ratio"\nratio = "0.5"\n'
    )
    assert load_rule(str(f), other).ratio == D("0.5")
    mine = load_rule(str(f), WALLET)
    assert mine.sizing == "fixed_notional" and mine.max_slippage == D("0.05")
    f.write_text("not toml [")
    with pytest.raises(ConfigError):
        load_rule(str(f), WALLET)
