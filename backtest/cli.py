"""`python -m orchestrator vet WALLET [--rules FILE] [--days N] [--lag-s N] [--out DIR]`.

Fetches the wallet's history from the Data API and Gamma (the URLs in the settings), simulates
copying it (`backtest.vet`), prints the headline figures and the verdict, and writes
`vet.html` and `vet.json` into `--out`.

Exit codes: 0 done (whatever the verdict); 1 the venue failed (Data API or Gamma errors,
after retries); 2 bad input (wallet address, rules file, an option out of range).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from backtest import fetch as vf
from backtest import vet as vt
from config import Settings
from errors import ConfigError, FeedError, TransientError
from resilience.clock import SystemClock
from venue.data_api import DataApiBudget, DataApiClient
from venue.gamma import GammaClient

if TYPE_CHECKING:  # plotly loads only when a report is written, not on every daemon start
    from backtest import report as rp

EXIT_OK, EXIT_VENUE, EXIT_INPUT = 0, 1, 2
MAX_DAYS: Final = 365
MAX_LAG_S: Final = 86_400

ASSUMPTIONS: Final = (
    "Our copy arrives lag seconds after the leader's trade (its Data API timestamp).",
    "It gets the token's last traded price at that moment (the market's trade feed), on the "
    "tick grid against us; beyond the rule's max_slippage it is skipped (a FAK would not fill).",
    "It fills in full at that price: the Data API shows trades, not order-book depth.",
    "A BUY receives its price improvement in extra shares; both sides pay the market's taker fee.",
    "Resolved markets pay 1 per winning share, 0 per losing one, at Gamma's closedTime; holdings "
    "still open at the end are marked at their last traded price.",
    "The leader's PnL is before fees, on shares it bought inside the window.",
)


class VetError(Exception):
    """A message for the operator and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register `vet` on the CLI's sub-command parser."""
    p = sub.add_parser(
        "vet",
        parents=parents,
        help="simulate copying a wallet (lag, slippage, fees) and judge if it is worth it",
    )
    p.add_argument("wallet", metavar="WALLET", help="the wallet (proxy) address, 0x + 40 hex")
    p.add_argument("--rules", default=None, metavar="FILE", help="copy rules (TOML/JSON)")
    p.add_argument("--days", type=int, default=30, metavar="N", help="look back N days (30)")
    p.add_argument("--lag-s", type=int, default=1, metavar="N", help="our copy lag in s (1)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (vet-<wallet>)")
    p.add_argument(
        "--end",
        type=int,
        default=None,
        metavar="UNIX_S",
        help="end of the window (default: now); fix it to re-run byte for byte",
    )


def _wallet(raw: str) -> str:
    w = raw.strip().lower()
    if len(w) != 42 or not w.startswith("0x") or any(c not in "0123456789abcdef" for c in w[2:]):
        raise VetError(f"bad wallet address {raw!r}: expected 0x followed by 40 hex characters", 2)
    return w


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `vet`; print the result or one clear error line; return the exit code."""
    try:
        wallet = _wallet(args.wallet)
        if not 1 <= args.days <= MAX_DAYS:
            raise VetError(f"--days must be between 1 and {MAX_DAYS}", EXIT_INPUT)
        if not 0 <= args.lag_s <= MAX_LAG_S:
            raise VetError(f"--lag-s must be between 0 and {MAX_LAG_S}", EXIT_INPUT)
        try:
            rule = vf.load_rule(args.rules, wallet)
        except ConfigError as e:
            raise VetError("; ".join(e.problems), EXIT_INPUT) from None
        end = int(time.time()) if args.end is None else args.end
        if end <= 0:
            raise VetError("--end must be a unix time in seconds", EXIT_INPUT)
        start = end - args.days * 86_400
        data = asyncio.run(_fetch(settings, wallet, start, end))
        result = vt.simulate(data, rule, lag_s=args.lag_s, max_age_s=settings.copy_max_trade_age_s)
        out = Path(args.out) if args.out else Path(f"vet-{wallet[:10]}")
        from backtest import report as rp

        try:
            page, js = rp.write_report(report_data(result), out, stem="vet")
        except OSError as e:
            raise VetError(
                f"cannot write the report into {out}: {e.strerror}", EXIT_INPUT
            ) from None
    except VetError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"polyd vet: {e}", file=sys.stderr)
        return e.code
    summary = vt.summary_json(result)
    if args.json:
        print(json.dumps({**summary, "report": str(page), "figures": str(js)}, sort_keys=True))
    else:
        print(render(summary, page))
    return EXIT_OK


async def _fetch(settings: Settings, wallet: str, start: int, end: int) -> vf.VetInput:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=settings.http_timeout_s)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"Accept": "application/json", "User-Agent": "polyd/0.1"}
    ) as session:
        data_api = DataApiClient(
            base_url=str(settings.data_api_url),
            budget=DataApiBudget(0.5, clock=SystemClock()),
            timeout_s=settings.http_timeout_s,
            session=session,
            page_size=500,
        )
        gamma = GammaClient(base_url=str(settings.gamma_api_url), session=session)
        try:
            return await vf.fetch(wallet, data_api=data_api, gamma=gamma, start=start, end=end)
        except (TransientError, FeedError) as e:
            raise VetError(f"the venue failed: {e}", EXIT_VENUE) from None


def _q(d: str | None, places: str = "0.01") -> str:
    return "-" if d is None else str(Decimal(d).quantize(Decimal(places)))


def render(s: dict[str, Any], page: Path) -> str:
    """The human summary: leader next to copier, the verdict and its reasons."""
    lead, copy = s["leader"], s["copier"]
    rows = [
        ("PnL (pUSD)", _q(lead["pnl"]), _q(copy["pnl"])),
        ("fees (pUSD)", _q(lead["fees"]), _q(copy["fees"])),
        ("hit rate", _q(lead["hit_rate"], "0.01"), _q(copy["hit_rate"], "0.01")),
        ("max drawdown", _q(lead["max_drawdown"]), _q(copy["max_drawdown"])),
        ("median hold (s)", _q(lead["median_hold_s"], "1"), _q(copy["median_hold_s"], "1")),
        ("closed positions", str(lead["closed_positions"]), str(copy["closed_positions"])),
        ("fills", str(lead["fills"]), str(copy["fills"])),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"wallet {s['wallet']}: {s['leader_trades']} trades in {s['markets_traded']} market(s), "
        f"lag {s['lag_s']}s",
        f"{'':<{width}}  {'leader':>12}  {'copier':>12}",
        *(f"{a:<{width}}  {b:>12}  {c:>12}" for a, b, c in rows),
    ]
    if s["skips"]:
        lines.append("copies skipped: " + ", ".join(f"{k} {v}" for k, v in s["skips"].items()))
    lines.append(f"verdict: {s['verdict']}")
    lines += [f"  - {r}" for r in s["reasons"]]
    lines += [f"note: {n}" for n in s["notes"]]
    lines.append(f"report: {page}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# From a result to a report
# --------------------------------------------------------------------------------------------

LEADER, COPIER = "leader", "copier"


def _fmt(d: Decimal | None, places: str = "0.01") -> str:
    return "-" if d is None else f"{d.quantize(Decimal(places)):f}"


def _duration(s: Decimal | None) -> str:
    if s is None:
        return "-"
    secs = int(s)
    d, rem = divmod(secs, 86_400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {sec}s" if m else f"{sec}s"


def report_data(r: vt.VetResult) -> rp.ReportData:
    """The report of a vet run: figures of both accounts, per market, fills on prices."""
    from backtest import report as rp

    inp = r.input
    label = {cid: (m.slug or cid[:10]) for cid, m in sorted(inp.markets.items())} | {
        t.condition_id: t.slug or t.condition_id[:10]
        for t in inp.trades
        if t.condition_id not in inp.markets
    }
    lf, cf = r.leader, r.copier
    table = (
        ("PnL (pUSD)", _fmt(lf.pnl), _fmt(cf.pnl)),
        ("taker fees (pUSD)", _fmt(lf.fees), _fmt(cf.fees)),
        ("of which unrealized", _fmt(lf.unrealized), _fmt(cf.unrealized)),
        ("hit rate", _fmt(lf.hit_rate), _fmt(cf.hit_rate)),
        ("max drawdown (pUSD)", _fmt(lf.max_drawdown), _fmt(cf.max_drawdown)),
        ("median hold", _duration(lf.median_hold_s), _duration(cf.median_hold_s)),
        ("closed positions", str(lf.closed_positions), str(cf.closed_positions)),
        ("fills", str(lf.fills), str(cf.fills)),
        ("markets traded", str(len(label)), str(len({f.condition_id for f in r.copier_fills}))),
    )
    pnl_size = {
        cid: max(abs(lf.by_market.get(cid, Decimal(0))), abs(cf.by_market.get(cid, Decimal(0))))
        for cid in label
    }
    shown = rp.top(pnl_size, 20)
    names = rp.labels_unique([label[c] for c in shown])
    per_market = {
        name: {LEADER: lf.by_market.get(cid, Decimal(0)), COPIER: cf.by_market.get(cid, Decimal(0))}
        for name, cid in zip(names, shown, strict=True)
    }
    charts: list[rp.PriceChart] = []
    for cid, name in zip(shown[: vt.TOP_MARKETS], names, strict=False):
        volume: dict[str, Decimal] = {}
        for t in inp.trades:
            if t.condition_id == cid:
                volume[t.token_id] = volume.get(t.token_id, Decimal(0)) + t.size
        token = rp.top(volume, 1)[0]
        outcome = next((t.outcome for t in inp.trades if t.token_id == token and t.outcome), "")
        fills = tuple(
            rp.FillMark(acct, f.ts, f.side, f.price, f.shares)
            for acct, fs in ((LEADER, r.leader_fills), (COPIER, r.copier_fills))
            for f in fs
            if f.token_id == token
        )
        tape = tuple(p for p in inp.tape.get(token, ()) if inp.start <= p[0])
        title = f"{name} ({outcome})" if outcome else name
        charts.append(rp.PriceChart(title, token, tape, fills))
    summary = vt.summary_json(r)
    summary["copies"] = [
        {
            "leader_ts": d.trade.timestamp,
            "tx": d.trade.tx_hash,
            "side": d.trade.side.value,
            "leader_price": vt._d(d.trade.price),
            "leader_size": vt._d(d.trade.size),
            "at": d.at,
            "skipped": d.reason or None,
            "detail": d.detail or None,
            "fill": vt.fill_json(d.fill) if d.fill is not None else None,
        }
        for d in r.decisions
    ]
    return rp.ReportData(
        title=f"Vetting {inp.wallet}",
        subtitle=(
            f"{rp._iso(inp.start)} to {rp._iso(inp.end)} UTC · lag {r.lag_s}s · "
            f"sizing {r.rule.sizing} · max slippage {r.rule.max_slippage}"
        ),
        verdict=r.verdict,
        reasons=r.reasons,
        table=table,
        accounts=(LEADER, COPIER),
        equity=(
            rp.Series(LEADER, tuple((p.ts, p.equity) for p in lf.curve)),
            rp.Series(COPIER, tuple((p.ts, p.equity) for p in cf.curve)),
        ),
        drawdown=(
            rp.Series(LEADER, tuple((p.ts, p.drawdown) for p in lf.curve)),
            rp.Series(COPIER, tuple((p.ts, p.drawdown) for p in cf.curve)),
        ),
        per_market=per_market,
        prices=tuple(charts),
        summary=summary,
        notes=inp.notes,
        assumptions=ASSUMPTIONS,
    )
