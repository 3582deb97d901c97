"""Copy vetting: would copying this wallet have made money, after our lag, slippage and fees?

`backtest.fetch` pulls what the venue says about a wallet (its trades, its holdings, each
market's trade feed, tick, minimum size, taker fee and resolution). `simulate` then
replays the wallet's trades in time order twice: once as the leader made them, and once as a
copier following them with a copy rule would have, using the copy trader's own sizing code
(`strategies.copy_trader.sizing`) and the venue's fee (`execution.fees`). Pure, deterministic,
`Decimal` throughout: the same input gives the same `VetResult`, to the byte in JSON.

The copier model (stated for the operator in docs/backtesting.md):

* **Lag.** The copier sees a leader trade `lag_s` seconds after its timestamp and its order
  arrives then. A trade older than the rule's max age by then is `too_old`.
* **Price.** The price a copy gets is the last trade of that token in the market at or before
  the copy's arrival (the leader's own trade when nobody traded since), put on the tick grid
  against us (BUY up, SELL down). A price beyond the rule's limit (leader price +/- the rule's
  `max_slippage`) is `slippage`: the copy's FAK would not have filled.
* **Depth.** The copy fills in full at that price: the Data API shows trades, not the book, so
  liquidity is assumed (small copies of liquid markets; an optimistic bound otherwise).
* **Fills.** A BUY spends `size x limit` pUSD and, taking at a better price `q`, receives
  `size x limit / q` shares (the venue gives a taker BUY its price improvement in shares,
  docs/venue-mechanics.md §6); a SELL sells `size` shares at `q`. Both pay the market's taker
  fee on the shares at `q` (`execution.fees.fee_booked`).
* **Resolution.** A resolved market pays 1 per winning share and 0 per losing one at its Gamma
  `closedTime`; a copy arriving at or after that is `market_closed`. Open holdings at the end of
  the window are marked at the token's last trade price.
* **The leader's own PnL** is computed the same way at its own prices, without fees (the Data
  API does not say whether a fill was taker or maker), and only on shares bought inside the
  window (shares it held before have no known cost).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any, Final

import structlog

from backtest.accounts import Account, FillRecord
from backtest.fetch import MarketFacts, VetInput
from backtest.metrics import (
    EquityPoint,
    equity_curve,
    hit_rate,
    max_drawdown,
    median_hold_s,
)
from execution.fees import fee_booked
from models import Side
from strategies.copy_trader.rules import WalletRule
from strategies.copy_trader.sizing import (
    Skip,
    entry_size,
    exit_size,
    limit_price,
    min_size_skip,
    round_size,
)
from venue.data_api import LeaderTrade

log = structlog.get_logger("backtest.vet")

ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)
SHARES: Final = Decimal("0.000001")
"""Share amounts carry 6 decimals (the conditional tokens' precision)."""
MONEY: Final = Decimal("0.000001")

VET_SKIP_REASONS: Final = frozenset({"market_closed"})
"""Skip reasons only vetting has (the rest come from the live trader's `SKIP_REASONS`)."""

TOO_FAST_SHARE: Final = Decimal("0.25")
"""A leader whose copies miss on lag (slippage, too old) this often is "too fast to copy"."""
TOO_SMALL_SHARE: Final = Decimal("0.25")
"""A leader whose copies fall under the venue's minimums this often is "too small to copy"."""
FAST_HOLD_LAGS: Final = 10
"""A median hold under this many lags is "too fast to copy" as well."""
FEW_TRIPS: Final = 5
"""Fewer closed positions than this is too little history to judge."""
TOP_MARKETS: Final = 3
"""How many markets get a price chart with fills in the report."""


# --------------------------------------------------------------------------------------------
# The copy decision (the live trader's checks, in its order)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the copier did with one leader trade: a fill, or a skip with its reason."""

    trade: LeaderTrade
    at: int
    reason: str = ""
    detail: str = ""
    fill: FillRecord | None = None


def price_at(tape: Sequence[tuple[int, Decimal]], ts: int) -> Decimal | None:
    """The last traded price at or before `ts` on a token's tape (None before its first)."""
    i = bisect.bisect_right(tape, ts, key=lambda r: r[0])
    return tape[i - 1][1] if i else None


def snap_against(price: Decimal, tick: Decimal, side: Side) -> Decimal:
    """Put an observed price on the tick grid against the copier (BUY up, SELL down)."""
    rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
    return ((price / tick).to_integral_value(rounding=rounding) * tick).quantize(tick)


def _market_skip(rule: WalletRule, trade: LeaderTrade, m: MarketFacts) -> tuple[str, str] | None:
    slugs = {s.lower() for s in (trade.slug, trade.event_slug, m.slug) if s}
    if slugs & rule.block_slugs:
        return "market_blocked", f"slug {sorted(slugs & rule.block_slugs)[0]}"
    if rule.allow_slugs and not slugs & rule.allow_slugs:
        return "market_not_allowed", f"slug {trade.slug or '?'}"
    if rule.block_tags and m.tags & rule.block_tags:
        return "market_blocked", f"tag {sorted(m.tags & rule.block_tags)[0]}"
    if rule.allow_tags and not m.tags & rule.allow_tags:
        return "market_not_allowed", "no allowed tag"
    return None


def decide(
    rule: WalletRule,
    trade: LeaderTrade,
    *,
    at: int,
    market: MarketFacts,
    tape: Sequence[tuple[int, Decimal]],
    copier: Account,
    leader_before: Decimal,
    max_age_s: float,
) -> Decision:
    """Decide and fill one copy at `at` (the leader's timestamp plus our lag); see the module
    docstring for the model. The checks run in the live trader's order."""

    def skip(reason: str, detail: str = "") -> Decision:
        return Decision(trade, at, reason, detail)

    if trade.side not in rule.sides:
        return skip("side_not_copied", trade.side.value)
    age = at - trade.timestamp
    if age > max_age_s:
        return skip("too_old", f"{age}s > {max_age_s:g}s")
    entry = trade.side is Side.BUY
    if entry and trade.notional < rule.min_leader_notional:
        return skip("leader_notional_too_small", f"{trade.notional} < {rule.min_leader_notional}")
    ms = _market_skip(rule, trade, market)
    if ms is not None:
        return skip(*ms)
    if market.resolved_at is not None and market.resolved_at <= at:
        return skip("market_closed", "resolved before the copy arrived")
    tick = market.tick
    limit = limit_price(trade.price, rule.max_slippage, tick, trade.side)
    if limit is None:
        return skip("price_out_of_range", f"leader {trade.price} tick {tick}")
    seen = price_at(tape, at)
    q = snap_against(seen if seen is not None else trade.price, tick, trade.side)
    q = min(max(q, tick), ONE - tick)
    if (entry and q > limit) or (not entry and q < limit):
        return skip("slippage", f"price {q} beyond limit {limit}")
    sized: Decimal | Skip
    if entry:
        exposure = copier.exposure(trade.condition_id)
        sized = entry_size(rule, trade, limit, exposure, market.fee, q)
    else:
        ours = copier.shares(trade.token_id)
        if ours <= 0:
            return skip("no_position", "we hold none of this token")
        sized = exit_size(rule, trade, limit, ours=ours, leader_before=leader_before)
    if isinstance(sized, Skip):
        return skip(sized.reason, sized.detail)
    size = round_size(sized)
    too_small = min_size_skip(size, limit, market.min_size, entry=entry)
    if too_small is not None:
        return skip(too_small.reason, too_small.detail)
    # A BUY spends size x limit and gets its price improvement in shares; a SELL sells size.
    shares = (size * limit / q).quantize(SHARES, rounding=ROUND_DOWN) if entry else size
    fee = fee_booked(shares, q, market.fee, taker=True)
    side = trade.side.value
    return Decision(
        trade, at, fill=FillRecord(at, trade.token_id, trade.condition_id, side, shares, q, fee)
    )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """One account's figures (leader or copier)."""

    pnl: Decimal
    fees: Decimal
    unrealized: Decimal
    hit_rate: Decimal | None
    max_drawdown: Decimal
    median_hold_s: Decimal | None
    closed_positions: int
    fills: int
    curve: tuple[EquityPoint, ...]
    by_market: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class VetResult:
    """The outcome of a vet run: both accounts, every copy decision, the verdict."""

    input: VetInput
    rule: WalletRule
    lag_s: int
    leader: Figures
    copier: Figures
    decisions: tuple[Decision, ...]
    leader_fills: tuple[FillRecord, ...]
    copier_fills: tuple[FillRecord, ...]
    verdict: str
    reasons: tuple[str, ...]

    def skips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.decisions:
            if d.reason:
                out[d.reason] = out.get(d.reason, 0) + 1
        return dict(sorted(out.items()))


def _figures(acct: Account, unrealized: Decimal) -> Figures:
    curve = tuple(equity_curve(acct.changes))
    pnl = curve[-1].equity if curve else ZERO
    return Figures(
        pnl=pnl,
        fees=acct.fees,
        unrealized=unrealized,
        hit_rate=hit_rate(acct.trips),
        max_drawdown=max_drawdown(curve),
        median_hold_s=median_hold_s(acct.trips),
        closed_positions=len(acct.trips),
        fills=len(acct.fills),
        curve=curve,
        by_market=dict(sorted(acct.by_market.items())),
    )


def simulate(data: VetInput, rule: WalletRule, *, lag_s: int, max_age_s: float = 60.0) -> VetResult:
    """Replay the leader's trades and a copier's copies of them; return both and the verdict.

    Events in time order: the leader's trades at their timestamps, the copies `lag_s` later,
    and resolutions at their time (a resolution first when a copy arrives in the same second:
    the market is closed by then). `max_age_s` stands in for a rule without `max_trade_age_s`.
    """
    if lag_s < 0:
        raise ValueError("lag_s must be 0 or more")
    age = rule.max_trade_age_s or max_age_s
    # (time, order, seq, kind, payload): leader trades (0) before resolutions (1) before copies
    # (2) within a second; seq keeps the Data API's order among equals.
    events: list[tuple[int, int, int, str, Any]] = []
    for i, lt in enumerate(data.trades):
        events.append((lt.timestamp, 0, i, "trade", lt))
    for _, m in sorted(data.markets.items()):
        if m.payouts is not None and m.resolved_at is not None and m.resolved_at <= data.end:
            events.append((m.resolved_at, 1, 0, "resolve", m))
    events.sort(key=lambda e: e[:3])

    leader = Account()
    copier = Account()
    # The leader's holding per token, shares held before the window included: it starts at
    # what it holds now less what the window's trades added (never below 0).
    net: dict[str, Decimal] = {}
    for lt in data.trades:
        net[lt.token_id] = net.get(lt.token_id, ZERO) + (
            lt.size if lt.side is Side.BUY else -lt.size
        )
    holding = {tok: max(data.leader_now.get(tok, ZERO) - n, ZERO) for tok, n in net.items()}
    decisions: list[Decision] = []
    pending: list[tuple[int, int, int, str, Any]] = []

    def run_copy(ev: tuple[int, int, int, str, Any]) -> None:
        trade, before = ev[4]
        m = data.markets.get(trade.condition_id) or _unknown(trade)
        d = decide(
            rule,
            trade,
            at=ev[0],
            market=m,
            tape=data.tape.get(trade.token_id, ()),
            copier=copier,
            leader_before=before,
            max_age_s=age,
        )
        decisions.append(d)
        f = d.fill
        if f is None:
            return
        if f.side == "BUY":
            copier.buy(f.ts, f.token_id, f.condition_id, f.shares, f.price, f.fee)
        else:
            copier.sell(f.ts, f.token_id, f.condition_id, f.shares, f.price, f.fee)

    def flush(until: tuple[int, int]) -> None:
        while pending and pending[0][:2] <= until:
            run_copy(pending.pop(0))

    for ev in events:
        flush((ev[0], ev[1]))
        if ev[3] == "trade":
            t: LeaderTrade = ev[4]
            before = holding.get(t.token_id, ZERO)
            holding[t.token_id] = before + (t.size if t.side is Side.BUY else -t.size)
            if t.side is Side.BUY:
                leader.buy(t.timestamp, t.token_id, t.condition_id, t.size, t.price, ZERO)
            else:
                leader.sell(t.timestamp, t.token_id, t.condition_id, t.size, t.price, ZERO)
            pending.append((t.timestamp + lag_s, 2, ev[2], "copy", (t, before)))
        else:
            m = ev[4]
            assert m.payouts is not None
            for token, payout in sorted(m.payouts.items()):
                leader.resolve(ev[0], token, m.condition_id, payout)
                copier.resolve(ev[0], token, m.condition_id, payout)
                holding[token] = ZERO  # redeemed (or worth redeeming): no longer tradeable
    # Copies arriving after the window's end still count: the leader's trade was inside it.
    flush((1 << 62, 9))
    marks = _marks(data)
    end = max([data.end, *(d.at for d in decisions)])
    lu = leader.mark(end, marks)
    cu = copier.mark(end, marks)
    lf, cf = _figures(leader, lu), _figures(copier, cu)
    verdict, reasons = judge(data, rule, lag_s, lf, cf, decisions)
    return VetResult(
        input=data,
        rule=rule,
        lag_s=lag_s,
        leader=lf,
        copier=cf,
        decisions=tuple(decisions),
        leader_fills=tuple(leader.fills),
        copier_fills=tuple(copier.fills),
        verdict=verdict,
        reasons=reasons,
    )


def _unknown(trade: LeaderTrade) -> MarketFacts:
    return MarketFacts(trade.condition_id, (trade.token_id,), slug=trade.slug, known=False)


def _marks(data: VetInput) -> dict[str, Decimal]:
    """The last traded price of every token (its tape, else the leader's last trade)."""
    out: dict[str, Decimal] = {}
    for t in data.trades:
        out[t.token_id] = t.price
    for token, tape in data.tape.items():
        if tape:
            out[token] = tape[-1][1]
    return out


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------

COPYABLE: Final = "copyable"
MARGINAL: Final = "marginal"
NOT_COPYABLE: Final = "not copyable"


def _pct(part: int, whole: int) -> str:
    return f"{(Decimal(part) * 100 / Decimal(whole)).quantize(Decimal(1))}%"


def judge(
    data: VetInput,
    rule: WalletRule,
    lag_s: int,
    leader: Figures,
    copier: Figures,
    decisions: Sequence[Decision],
) -> tuple[str, tuple[str, ...]]:
    """The copyability verdict and its reasons, each a sentence with the figure behind it."""
    reasons: list[str] = []
    if not data.trades:
        return NOT_COPYABLE, ("no trades in the window: nothing to copy",)
    considered = [d for d in decisions if d.trade.side in rule.sides]
    n = len(considered) or 1
    fast = sum(1 for d in considered if d.reason in ("slippage", "too_old", "market_closed"))
    small = sum(1 for d in considered if d.reason == "below_min_size")
    if leader.pnl <= 0:
        reasons.append(f"the leader itself lost money in the window ({q2(leader.pnl)} pUSD)")
    if Decimal(fast) / n >= TOO_FAST_SHARE:
        reasons.append(
            f"too fast to copy: {_pct(fast, n)} of its trades moved past the "
            f"{rule.max_slippage} slippage limit (or aged out) within our {lag_s}s lag"
        )
    elif (
        leader.median_hold_s is not None
        and lag_s > 0
        and leader.median_hold_s < FAST_HOLD_LAGS * lag_s
    ):
        reasons.append(
            f"too fast to copy: it holds a position {leader.median_hold_s}s (median), "
            f"under {FAST_HOLD_LAGS} times our {lag_s}s lag"
        )
    if Decimal(small) / n >= TOO_SMALL_SHARE:
        reasons.append(
            f"too small to copy: {_pct(small, n)} of its trades give a copy under the "
            "market's minimum size (or under $1)"
        )
    gross = copier.pnl + copier.fees
    if copier.fees > 0 and gross > 0 and copier.pnl <= 0:
        reasons.append(
            f"edge eaten by fees: {q2(gross)} pUSD before fees, {q2(copier.pnl)} after "
            f"{q2(copier.fees)} in taker fees"
        )
    if leader.pnl > 0 and copier.pnl <= 0 and not reasons:
        reasons.append(
            f"lag and slippage eat the edge: the leader made {q2(leader.pnl)} pUSD, "
            f"a copier {q2(copier.pnl)}"
        )
    if copier.closed_positions < FEW_TRIPS:
        reasons.append(
            f"little history: {copier.closed_positions} closed copied position(s) "
            f"(fewer than {FEW_TRIPS})"
        )
    if copier.pnl <= 0:
        return NOT_COPYABLE, tuple(reasons)
    if reasons:
        return MARGINAL, tuple(reasons)
    return COPYABLE, (f"a copier made {q2(copier.pnl)} pUSD after lag, slippage and fees",)


def q2(d: Decimal) -> Decimal:
    """A money figure at cents, for sentences (JSON keeps full precision)."""
    return d.quantize(Decimal("0.01"))


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _d(x: Decimal | None) -> str | None:
    return None if x is None else f"{x.normalize():f}" if x != 0 else "0"


def _money(x: Decimal) -> str:
    return f"{x.quantize(MONEY):f}"


def figures_json(f: Figures) -> dict[str, Any]:
    return {
        "pnl": _money(f.pnl),
        "fees": _money(f.fees),
        "unrealized": _money(f.unrealized),
        "hit_rate": _d(f.hit_rate.quantize(Decimal("0.0001")) if f.hit_rate is not None else None),
        "max_drawdown": _money(f.max_drawdown),
        "median_hold_s": _d(f.median_hold_s),
        "closed_positions": f.closed_positions,
        "fills": f.fills,
    }


def fill_json(f: FillRecord) -> dict[str, Any]:
    return {
        "ts": f.ts,
        "token_id": f.token_id,
        "condition_id": f.condition_id,
        "side": f.side,
        "shares": _d(f.shares),
        "price": _d(f.price),
        "fee": _d(f.fee),
    }


def summary_json(r: VetResult) -> dict[str, Any]:
    """The run's headline figures, settings and verdict (`Decimal`s as exact strings)."""
    markets = sorted({t.condition_id for t in r.input.trades})
    return {
        "wallet": r.input.wallet,
        "window": {"start": r.input.start, "end": r.input.end},
        "lag_s": r.lag_s,
        "rule": {
            # frozensets dump in hash order, which changes between processes: sort them
            k: sorted(v) if isinstance(v, list) else v
            for k, v in r.rule.model_dump(
                mode="json", exclude={"address", "label", "enabled"}
            ).items()
        },
        "leader_trades": len(r.input.trades),
        "markets_traded": len(markets),
        "leader": figures_json(r.leader),
        "copier": figures_json(r.copier),
        "skips": r.skips(),
        "verdict": r.verdict,
        "reasons": list(r.reasons),
        "notes": list(r.input.notes),
    }
