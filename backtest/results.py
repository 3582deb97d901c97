"""From a backtest's orders and fills to its figures: PnL, per-rule PnL, equity, report data.

Money: a BUY pays `price x size + fee`, a SELL receives `price x size - fee`. A holding is worth
its payout once its market resolved (1 or 0 per share), else the best recorded bid at the end
of the replay (what it could be sold for), else 0. Everything is Decimal and in a fixed order,
so the JSON is the same for the same run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from backtest import metrics as mt
from backtest.matching import SimFill
from backtest.replay import NS, BacktestResult, rule_of
from models import ZERO, Side

if TYPE_CHECKING:
    from backtest import report as rp

NET, GROSS = "after fees", "before fees"
TOP_MARKETS: Final = 4

ASSUMPTIONS: Final = (
    "The recording is replayed on a simulated clock through the live feed parsing, books, "
    "sniper and executor; only the broker is a model.",
    "An order arrives latency ms after the strategy decided; it sees the book as recorded then.",
    "A crossing order takes the recorded levels at or better than its limit, best first, at "
    "their prices; what it took stays taken until the recording shows that level changed.",
    "A resting order queues behind the size displayed at its price when it arrived and fills only "
    "from recorded trades at or through its price beyond that queue (cancels ahead of it are not "
    "assumed), or when the recorded opposite side reaches its price.",
    "Taker fees follow the venue's formula per leg (makers pay none) from the recorded Gamma fee "
    "schedule; tick size and minimum size are the executor's own checks.",
    "Resolved markets pay 1 per winning share and 0 per losing one; other holdings are marked at "
    "the last recorded best bid.",
)


def _iso(t_ns: int | None) -> str | None:
    if t_ns is None:
        return None
    return datetime.fromtimestamp(t_ns / NS, UTC).isoformat(timespec="milliseconds")


def _d(x: Decimal | None) -> str | None:
    return None if x is None else format(x.normalize(), "f") if x != 0 else "0"


@dataclass
class Figures:
    """The run's money figures."""

    pnl: Decimal = ZERO
    gross: Decimal = ZERO
    fees: Decimal = ZERO
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    by_rule: dict[str, Decimal] = field(default_factory=dict)
    by_market: dict[str, Decimal] = field(default_factory=dict)
    by_market_gross: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, Decimal] = field(default_factory=dict)
    curve: list[mt.EquityPoint] = field(default_factory=list)
    curve_gross: list[mt.EquityPoint] = field(default_factory=list)


def _value(r: BacktestResult, token: str) -> Decimal:
    pay = r.payouts.get(token)
    return pay if pay is not None else r.marks.get(token, ZERO)


def figures(r: BacktestResult) -> Figures:
    """PnL overall, per rule and per market, and the equity curves (net and before fees)."""
    f = Figures()
    held: dict[tuple[str, str], Decimal] = {}  # (rule, token) -> shares
    for fill in r.fills:
        fee = r.fees_of.get(fill.seq, ZERO)
        notional = fill.price * fill.size
        flow = -notional if fill.side is Side.BUY else notional
        rule = rule_of(fill.reason)
        cid = _market(r, fill.token_id)
        f.fees += fee
        f.by_rule[rule] = f.by_rule.get(rule, ZERO) + flow - fee
        f.by_market[cid] = f.by_market.get(cid, ZERO) + flow - fee
        f.by_market_gross[cid] = f.by_market_gross.get(cid, ZERO) + flow
        if fill.side is Side.BUY:
            f.bought += fill.size
        else:
            f.sold += fill.size
        key = (rule, fill.token_id)
        sign = fill.size if fill.side is Side.BUY else -fill.size
        held[key] = held.get(key, ZERO) + sign
    for (rule, token), shares in sorted(held.items()):
        worth = shares * _value(r, token)
        f.by_rule[rule] += worth
        cid = _market(r, token)
        f.by_market[cid] += worth
        f.by_market_gross[cid] += worth
        if shares != 0:
            f.positions[token] = f.positions.get(token, ZERO) + shares
    f.pnl = sum(f.by_rule.values(), ZERO)
    f.gross = f.pnl + f.fees
    f.curve, f.curve_gross = _curves(r)
    return f


def _market(r: BacktestResult, token: str) -> str:
    m = r.markets.get(token)
    return (m.slug or m.condition_id[:12]) if m is not None else token[:12]


def _curves(r: BacktestResult) -> tuple[list[mt.EquityPoint], list[mt.EquityPoint]]:
    """Equity after every fill, resolution and at the end: cash plus holdings at their last
    known price (the fill's, the payout, the final mark)."""
    events: list[tuple[int, int, str, SimFill | None, Decimal]] = []
    for one in r.fills:
        events.append((one.t_ns, 0, one.token_id, one, one.price))
    for tok, (t_ns, pay) in sorted(r.resolved_at.items()):
        events.append((t_ns, 1, tok, None, pay))
    end = r.last_t or 0
    for tok in sorted({fl.token_id for fl in r.fills}):
        events.append((max(end, 0), 2, tok, None, _value(r, tok)))
    events.sort(key=lambda e: (e[0], e[1], e[2], e[3].seq if e[3] is not None else 0))
    cash = cash_g = ZERO
    pos: dict[str, Decimal] = {}
    price: dict[str, Decimal] = {}
    net: list[tuple[int, Decimal]] = []
    gross: list[tuple[int, Decimal]] = []
    last = last_g = ZERO
    for t_ns, _, tok, fl, px in events:
        if fl is not None:  # a fill: cash and shares move, valued at the fill's price
            notional = fl.price * fl.size
            fee = r.fees_of.get(fl.seq, ZERO)
            buy = fl.side is Side.BUY
            cash += (-notional - fee) if buy else (notional - fee)
            cash_g += -notional if buy else notional
            pos[tok] = pos.get(tok, ZERO) + (fl.size if buy else -fl.size)
        price[tok] = px
        held = sum((pos[k] * price.get(k, ZERO) for k in sorted(pos)), ZERO)
        eq, eq_g = cash + held, cash_g + held
        ts = t_ns // NS
        net.append((ts, eq - last))
        gross.append((ts, eq_g - last_g))
        last, last_g = eq, eq_g
    return mt.equity_curve(net), mt.equity_curve(gross)


def summary_json(r: BacktestResult, f: Figures, rules: Iterable[str]) -> dict[str, Any]:
    """The run as JSON-ready data: inputs, orders, fills, PnL per rule and market."""
    return {
        "data": r.data,
        "from": _iso(r.start_ns),
        "to": _iso(r.end_ns),
        "replayed": {"first": _iso(r.first_t), "last": _iso(r.last_t)},
        "records": r.records,
        "frames": r.frames,
        "latency_ms": r.latency_ms,
        "fees": r.fees,
        "rules": sorted(rules),
        "orders": [
            {
                "t": _iso(o.t_ns),
                "token_id": o.token_id,
                "rule": o.rule,
                "side": o.side,
                "type": o.order_type,
                "price": _d(o.price),
                "size": _d(o.size),
                "status": o.status,
                "filled": _d(o.filled),
                "avg_price": _d(o.avg_price),
                "refused": o.reason or None,
            }
            for o in r.orders
        ],
        "fills": [
            {
                "t": _iso(fl.t_ns),
                "order": fl.order_seq,
                "token_id": fl.token_id,
                "rule": rule_of(fl.reason),
                "side": fl.side.value,
                "price": _d(fl.price),
                "size": _d(fl.size),
                "fee": _d(r.fees_of.get(fl.seq, ZERO)),
                "role": fl.role.value,
            }
            for fl in r.fills
        ],
        "pnl": _d(f.pnl),
        "pnl_before_fees": _d(f.gross),
        "fees_paid": _d(f.fees),
        "bought": _d(f.bought),
        "sold": _d(f.sold),
        "max_drawdown": _d(mt.max_drawdown(f.curve)),
        "per_rule": {k: _d(v) for k, v in sorted(f.by_rule.items())},
        "per_market": {k: _d(v) for k, v in sorted(f.by_market.items())},
        "positions": {
            k: {"shares": _d(v), "resolved": _d(r.payouts.get(k)), "mark": _d(_value(r, k))}
            for k, v in sorted(f.positions.items())
        },
        "notes": list(r.notes),
    }


def report_data(r: BacktestResult, f: Figures, summary: dict[str, Any]) -> rp.ReportData:
    """The HTML report of a backtest: equity and drawdown (after and before fees), PnL per
    market, fills on the price of the top markets."""
    from backtest import report as rp

    table = (
        ("PnL (pUSD)", _q(f.pnl), _q(f.gross)),
        ("taker fees (pUSD)", _q(f.fees), "0"),
        ("max drawdown (pUSD)", _q(mt.max_drawdown(f.curve)), _q(mt.max_drawdown(f.curve_gross))),
        ("orders", str(len(r.orders)), str(len(r.orders))),
        ("fills", str(len(r.fills)), str(len(r.fills))),
        *(
            (f"rule {k} (pUSD)", _q(v), _q(v + _rule_fees(r, k)))
            for k, v in sorted(f.by_rule.items())
        ),
    )
    shown = rp.top(f.by_market, 20)
    per_market = {m: {NET: f.by_market[m], GROSS: f.by_market_gross[m]} for m in shown}
    volume: dict[str, Decimal] = {}
    for fl in r.fills:
        volume[fl.token_id] = volume.get(fl.token_id, ZERO) + fl.size
    charts = []
    for tok in rp.top(volume, TOP_MARKETS):
        m = r.markets.get(tok)
        outcome = ""
        if m is not None and tok in m.token_ids:
            outcome = m.outcomes[m.token_ids.index(tok)]
        name = _market(r, tok)
        fills = tuple(
            rp.FillMark(NET, fl.t_ns // NS, fl.side.value, fl.price, fl.size)
            for fl in r.fills
            if fl.token_id == tok
        )
        title = f"{name} ({outcome})" if outcome else name
        charts.append(rp.PriceChart(title, tok, tuple(r.prices.get(tok, ())), fills))
    verdict = "profitable" if f.pnl > 0 else "no trades" if not r.fills else "losing"
    return rp.ReportData(
        title=f"Backtest of {', '.join(summary['rules'])}",
        subtitle=(
            f"{summary['replayed']['first']} to {summary['replayed']['last']} · "
            f"latency {r.latency_ms} ms · fees {r.fees} · {r.records} records"
        ),
        verdict=verdict,
        reasons=(f"{len(r.orders)} orders, {len(r.fills)} fills, PnL {_q(f.pnl)} pUSD",),
        table=table,
        accounts=(NET, GROSS),
        equity=(
            rp.Series(NET, tuple((p.ts, p.equity) for p in f.curve)),
            rp.Series(GROSS, tuple((p.ts, p.equity) for p in f.curve_gross)),
        ),
        drawdown=(
            rp.Series(NET, tuple((p.ts, p.drawdown) for p in f.curve)),
            rp.Series(GROSS, tuple((p.ts, p.drawdown) for p in f.curve_gross)),
        ),
        per_market=per_market,
        prices=tuple(charts),
        summary=summary,
        notes=tuple(r.notes),
        assumptions=ASSUMPTIONS,
    )


def _rule_fees(r: BacktestResult, rule: str) -> Decimal:
    return sum((r.fees_of.get(fl.seq, ZERO) for fl in r.fills if rule_of(fl.reason) == rule), ZERO)


def _q(d: Decimal) -> str:
    return f"{d.quantize(Decimal('0.01')):f}"
