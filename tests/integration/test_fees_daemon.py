"""The daemon, live against the simulator over real sockets (real SDK signer, real websockets),
on a market that charges the taker fee: the sniper's round trip shows the fee in journaled
fills, positions and PnL to the cent, and a BUY sized past the wallet is shrunk before the venue
would refuse it.

Facts (docs/venue-mechanics.md section 1): the taker pays `C x rate x (p(1-p))^e` per fill in
pUSD, a maker pays nothing (https://docs.polymarket.com/trading/fees); the rate is served as
`fd.r` on `/clob-markets/{condition_id}` (clob-client-v2 `MarketDetails`); a BUY the balance
cannot pay is refused with `not enough balance / allowance`
(https://docs.polymarket.com/resources/error-codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from demo import funded_key, simulator_overrides
from observability.logging import Redactor
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from simulator.testing import CRYPTO_FEE_RATE, add_fee_market
from storage import Database
from tests.helpers import make_settings, until

D = Decimal
MAKER = "0x" + "8c" * 20
RATE = CRYPTO_FEE_RATE  # 0.072, exponent 1

RULES = """
[[rules]]
name = "near-close"
outcome = "Yes"
min_price = "0.90"
max_price = "0.95"
min_size = "10"
max_notional = "19"
ends_within_minutes = 20
{extra}
[rules.select]
ends_within_minutes = 30
tags = ["crypto"]
"""


def expected_fee(size: Decimal, price: Decimal) -> Decimal:
    """The venue's formula, written out here (not the daemon's function): floored to 0.00001."""
    return (size * RATE * price * (1 - price)).quantize(D("0.00001"), rounding=ROUND_DOWN)


@dataclass
class Run:
    sim: Simulator
    token: str
    ledger: dict[str, Any]
    fills: list[dict[str, Any]]
    position: dict[str, Any] | None
    orders: list[dict[str, Any]]
    refusals: list[str]


async def run_daemon(
    tmp_path: Path, *, extra: str, collateral: Decimal, take_back: bool, duration_s: float
) -> Run:
    """Run the daemon with one sniper rule on a fee market: a dip to 0.93 appears once its book
    is live; with `take_back`, a maker BUY at 0.95 later takes our resting take-profit."""
    async with Simulator(seed=21, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        m = add_fee_market(sim, question="Close soon?", slug="fee-soon", end_date=soon)
        tok = m.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
        rules = tmp_path / "sniper.toml"
        rules.write_text(RULES.format(extra=extra))
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, funded_key(sim, collateral)),
            copy_enabled=False,
            sniper_rules_path=rules,
            feed_ping_interval_s=1.0,
            shutdown_timeout_s=3,
        )

        def ours() -> list[dict[str, Any]]:
            return [o for o in sim.ledger()["orders"] if not o["seeded"]]

        def script(ctx: Context) -> None:
            async def later() -> None:
                store = ctx.books
                assert store is not None  # on_ready runs once market data is built
                await until(lambda: store.usable_book(tok) is not None, 5.0)
                dip = sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
                if take_back:
                    await until(
                        lambda: any(o["side"] == "SELL" and o["status"] == "LIVE" for o in ours()),
                        5.0,
                    )
                    sim.cancel_seeded(dip)  # what our BUY left of the dip
                    sim.seed_order(MAKER, tok, "BUY", D("0.95"), D("50"))

            ctx.services.append(("test:script", later))

        daemon = Daemon(settings, redactor=Redactor([]), duration_s=duration_s, on_ready=script)
        assert await daemon.run() == EXIT_OK
        ledger = sim.ledger()
    async with Database(settings.db_path) as db:
        fills = [dict(r) for r in await db.fetchall("SELECT * FROM fills ORDER BY rowid")]
        pos = await db.fetchone("SELECT * FROM positions WHERE token_id = ?", (tok,))
        orders = [dict(r) for r in await db.fetchall("SELECT * FROM orders ORDER BY rowid")]
        audit = await db.fetchall("SELECT detail FROM audit_log WHERE event = 'order_refused'")
    return Run(
        sim,
        tok,
        ledger,
        fills,
        dict(pos) if pos is not None else None,
        orders,
        [str(a[0]) for a in audit],
    )


def venue_fills(run: Run) -> list[tuple[dict[str, Any], bool]]:
    """Our trades in the simulator's ledger, each with whether we were the taker."""
    ids = {o["id"] for o in run.ledger["orders"] if not o["seeded"]}
    return [
        (t, t["taker_order_id"] in ids)
        for t in run.ledger["trades"]
        if t["taker_order_id"] in ids or t["maker_order_id"] in ids
    ]


async def test_round_trip_books_the_taker_fee_and_none_on_the_maker_exit(tmp_path: Path) -> None:
    run = await run_daemon(
        tmp_path, extra='take_profit = "0.02"', collateral=D(1000), take_back=True, duration_s=5.0
    )
    trades = venue_fills(run)
    assert [(t["side"] if taker else "maker", taker) for t, taker in trades] == [
        ("BUY", True),
        ("maker", False),
    ], trades
    (buy, _), (sell, _) = trades
    bought, sold = buy["size"], sell["size"]
    buy_fee = expected_fee(bought, buy["price"])
    assert buy_fee > D("0.09")  # ~19.9 shares x 0.072 x 0.93 x 0.07
    # Journaled fills: the taker BUY pays the fee, the maker SELL (post-only take-profit) none.
    journal = [(f["side"], D(f["size"]), D(f["price"]), D(f["fee"]), f["role"]) for f in run.fills]
    assert journal == [
        ("BUY", bought, buy["price"], buy_fee, "TAKER"),
        ("SELL", sold, sell["price"], D(0), "MAKER"),
    ]
    # The take-profit went out post-only (a maker pays no fee).
    exits = [o for o in run.orders if o["side"] == "SELL"]
    assert len(exits) == 1 and exits[0]["post_only"] in (1, True)
    # Position: the fee is in the cost basis; realized PnL is proceeds - cost (fee included).
    assert run.position is not None
    avg_cost = (buy["price"] * bought + buy_fee) / bought
    assert D(run.position["avg_cost"]) == avg_cost
    assert D(run.position["size"]) == bought - sold
    realized = (sell["price"] - avg_cost) * sold
    assert D(run.position["realized_pnl"]) == realized
    # To the cent: the fee is what separates the PnL from the fee-free figure.
    fee_free = (sell["price"] - buy["price"]) * sold
    assert (fee_free - realized).quantize(D("0.01")) == (buy_fee * sold / bought).quantize(
        D("0.01")
    )


async def test_simulator_ledger_charges_what_the_daemon_booked(tmp_path: Path) -> None:
    run = await run_daemon(
        tmp_path, extra='take_profit = "0.02"', collateral=D(1000), take_back=True, duration_s=5.0
    )
    trades = venue_fills(run)
    booked = [D(f["fee"]) for f in run.fills]
    charged = [D(str(t.get("fee", "NaN"))) if taker else D(0) for t, taker in trades]
    assert booked == charged
    assert all("fee" in t for t, _ in trades)


async def test_buy_sized_past_the_balance_is_shrunk_before_the_venue_refuses_it(
    tmp_path: Path,
) -> None:
    # The rule would spend 19 pUSD; the wallet holds 10. Without the shrink the venue refuses
    # the order ("not enough balance / allowance") and the journal row is REJECTED.
    run = await run_daemon(tmp_path, extra="", collateral=D(10), take_back=False, duration_s=3.5)
    buys = [o for o in run.orders if o["side"] == "BUY"]
    assert len(buys) == 1, (buys, run.refusals)
    buy = buys[0]
    assert buy["status"] == "FILLED", buy
    assert "balance" not in (buy.get("detail") or "")
    assert run.refusals == []
    size, price = D(buy["size"]), D(buy["price"])
    # The largest size whose notional + fee fits in 10. It takes the 0.93 ask, so what it saves
    # below its 0.95 limit buys extra shares, which pay the fee too: per pUSD spent at 0.93 the
    # fee is 0.072 x (1 - 0.93) (written out here, not the daemon's function).
    per_share = price * (1 + RATE * (1 - D("0.93")))
    assert size == (D(10) / per_share).quantize(D("0.01"), rounding=ROUND_DOWN) == D("10.47")
    venue_orders = [o for o in run.ledger["orders"] if not o["seeded"]]
    # A marketable BUY spends price x size down to the cent, for its shares at the limit.
    cash = (size * price).quantize(D("0.01"), rounding=ROUND_DOWN)
    shares = (cash / price).quantize(D("0.0001"), rounding=ROUND_DOWN)
    assert [o["original_size"] for o in venue_orders] == [shares]
    trades = venue_fills(run)
    assert trades and all(taker for _, taker in trades)
    fee = sum((expected_fee(t["size"], t["price"]) for t, _ in trades), D(0))
    assert sum(D(f["fee"]) for f in run.fills) == fee > 0
    spent = sum((t["size"] * t["price"] for t, _ in trades), D(0))
    assert spent + fee <= D(10)
