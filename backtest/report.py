"""Reports people would rather look at than read: one self-contained HTML page plus JSON.

`write_report` takes a run's `ReportData` (headline rows, verdict, series) and writes
`report.html` (plotly figures; plotly.js, about 4.8 MB, is embedded once, so the page opens
offline and from a file) and `report.json` (the same figures' data, Decimals as exact strings,
keys sorted: byte-identical for the same run). Used by `vet` now and by any later run that
fills the same `ReportData`.

Figures: the equity curve (cumulative PnL) of each account, its drawdown, PnL per market, and
for the top markets the traded price with each account's fills on it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

COLORS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
PLOT_CONFIG: Final = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: `(unix seconds, value)` points."""

    name: str
    points: tuple[tuple[int, Decimal], ...]


@dataclass(frozen=True, slots=True)
class FillMark:
    """One fill on a price chart."""

    account: str
    ts: int
    side: str
    price: Decimal
    shares: Decimal


@dataclass(frozen=True, slots=True)
class PriceChart:
    """A market's traded price (one token) with the fills of each account on it."""

    title: str
    token_id: str
    price: tuple[tuple[int, Decimal], ...]
    fills: tuple[FillMark, ...]


@dataclass(frozen=True, slots=True)
class ReportData:
    """What a report shows. `summary` is JSON-ready (strings, numbers, lists, dicts)."""

    title: str
    subtitle: str
    verdict: str
    reasons: tuple[str, ...]
    table: tuple[tuple[str, str, str], ...]
    """Rows of (figure, first account, second account), already formatted."""
    accounts: tuple[str, str]
    equity: tuple[Series, ...]
    drawdown: tuple[Series, ...]
    per_market: Mapping[str, Mapping[str, Decimal]]
    """Market label -> account name -> PnL."""
    prices: tuple[PriceChart, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(d: Decimal) -> str:
    return "0" if d == 0 else f"{d.normalize():f}"


def _series_json(s: Series) -> dict[str, Any]:
    return {"name": s.name, "points": [[ts, _num(v)] for ts, v in s.points]}


def figures_json(data: ReportData) -> dict[str, Any]:
    """The report's figures as plain JSON data (exact decimal strings)."""
    return {
        "equity": [_series_json(s) for s in data.equity],
        "drawdown": [_series_json(s) for s in data.drawdown],
        "per_market": {
            m: {a: _num(v) for a, v in sorted(by.items())} for m, by in data.per_market.items()
        },
        "prices": [
            {
                "title": c.title,
                "token_id": c.token_id,
                "price": [[ts, _num(p)] for ts, p in c.price],
                "fills": [
                    {
                        "account": f.account,
                        "ts": f.ts,
                        "side": f.side,
                        "price": _num(f.price),
                        "shares": _num(f.shares),
                    }
                    for f in c.fills
                ],
            }
            for c in data.prices
        ],
    }


def report_json(data: ReportData) -> bytes:
    """`{"summary": ..., "figures": ...}` with sorted keys and a final newline."""
    doc = {"summary": data.summary, "figures": figures_json(data)}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _line(s: Series, color: str, *, fill: bool = False) -> go.Scatter:
    return go.Scatter(
        x=[_iso(ts) for ts, _ in s.points],
        y=[float(v) for _, v in s.points],
        name=s.name,
        mode="lines",
        line={"color": color, "shape": "hv"},
        fill="tozeroy" if fill else None,
    )


def _layout(fig: go.Figure, title: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        yaxis_title=y,
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def build_figures(data: ReportData) -> list[tuple[str, go.Figure]]:
    """The report's plotly figures, each with a stable element id."""
    out: list[tuple[str, go.Figure]] = []
    eq = go.Figure([_line(s, COLORS[i % 4]) for i, s in enumerate(data.equity)])
    out.append(("equity", _layout(eq, "Equity (cumulative PnL)", "pUSD")))
    dd = go.Figure(
        [
            _line(Series(s.name, tuple((t, -v) for t, v in s.points)), COLORS[i % 4], fill=True)
            for i, s in enumerate(data.drawdown)
        ]
    )
    out.append(("drawdown", _layout(dd, "Drawdown from peak", "pUSD")))
    labels = list(data.per_market)
    bars = go.Figure(
        [
            go.Bar(
                x=labels,
                y=[float(data.per_market[m].get(acct, Decimal(0))) for m in labels],
                name=acct,
                marker_color=COLORS[i % 4],
            )
            for i, acct in enumerate(data.accounts)
        ]
    )
    bars.update_layout(barmode="group")
    out.append(("per_market", _layout(bars, "PnL per market", "pUSD")))
    for n, chart in enumerate(data.prices):
        traces: list[Any] = [
            go.Scatter(
                x=[_iso(ts) for ts, _ in chart.price],
                y=[float(p) for _, p in chart.price],
                name="traded price",
                mode="lines",
                line={"color": "#7f7f7f", "shape": "hv"},
            )
        ]
        for i, acct in enumerate(data.accounts):
            for side, symbol in (("BUY", "triangle-up"), ("SELL", "triangle-down")):
                fs = [f for f in chart.fills if f.account == acct and f.side == side]
                if not fs:
                    continue
                traces.append(
                    go.Scatter(
                        x=[_iso(f.ts) for f in fs],
                        y=[float(f.price) for f in fs],
                        name=f"{acct} {side.lower()}",
                        mode="markers",
                        marker={"symbol": symbol, "size": 11, "color": COLORS[i % 4]},
                        text=[f"{_num(f.shares)} shares" for f in fs],
                    )
                )
        pf = go.Figure(traces)
        pf.update_yaxes(range=[0, 1])
        out.append((f"price_{n}", _layout(pf, f"Fills on the price: {chart.title}", "price")))
    return out


_CSS: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}.sub{color:#666;margin-top:4px}
.verdict{font-size:1.2em;padding:10px 14px;border-radius:6px;margin:16px 0;display:inline-block}
.v-copyable{background:#e3f6e3}.v-marginal{background:#fff4d6}.v-not-copyable{background:#fde2e2}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{padding:4px 12px;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left}
.small{color:#555;font-size:.9em}
"""


def render_html(data: ReportData) -> str:
    """The whole page: headline, verdict, table, figures (plotly.js inline), assumptions."""
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(a)}</th><td class=n>{e(b)}</td><td class=n>{e(c)}</td></tr>"
        for a, b, c in data.table
    )
    reasons = "".join(f"<li>{e(r)}</li>" for r in data.reasons)
    notes = "".join(f"<li>{e(n)}</li>" for n in data.notes)
    assumptions = "".join(f"<li>{e(a)}</li>" for a in data.assumptions)
    figs = "".join(
        '<div class="fig">'
        + fig.to_html(full_html=False, include_plotlyjs=False, div_id=fid, config=PLOT_CONFIG)
        + "</div>"
        for fid, fig in build_figures(data)
    )
    vclass = "v-" + data.verdict.replace(" ", "-")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<link rel=icon href="data:,">'
        f"<title>{e(data.title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{e(data.title)}</h1><p class=sub>{e(data.subtitle)}</p>"
        f'<div class="verdict {vclass}">Verdict: <b>{e(data.verdict)}</b></div>'
        f"<ul>{reasons}</ul>"
        f"<table><tr><th></th><th>{e(data.accounts[0])}</th><th>{e(data.accounts[1])}</th></tr>"
        f"{rows}</table>"
        + (f"<h3>Notes</h3><ul class=small>{notes}</ul>" if notes else "")
        + figs
        + (f"<h3>Model assumptions</h3><ul class=small>{assumptions}</ul>" if assumptions else "")
        + "</body></html>\n"
    )


def write_report(data: ReportData, out_dir: Path, *, stem: str = "report") -> tuple[Path, Path]:
    """Write `<stem>.html` and `<stem>.json` into `out_dir` (created); return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{stem}.html"
    js = out_dir / f"{stem}.json"
    page.write_text(render_html(data), encoding="utf-8")
    js.write_bytes(report_json(data))
    return page, js


def top(items: Mapping[str, Decimal], n: int) -> list[str]:
    """The `n` keys with the largest absolute values (ties by key), for "top markets"."""
    return [k for k, _ in sorted(items.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:n]]


def labels_unique(names: Sequence[str]) -> list[str]:
    """`names` made unique by suffixing repeats (` (2)`, ` (3)`…), order kept."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out
