"""Render `deploy/grafana/polyd.json` into one PNG from a real Prometheus, without Grafana.

Every panel's PromQL is run through Prometheus's HTTP API (`/api/v1/query_range`) over a time
window and drawn with matplotlib on the dashboard's own 24-column grid: time series as lines,
stat panels as their last value with the dashboard's value mappings. It is what the dashboard
shows, not a Grafana screenshot (no Grafana server is installable here).

matplotlib is not a polyd dependency; use a throwaway virtual environment:

    python3 -m venv /tmp/render && /tmp/render/bin/pip install matplotlib
    /tmp/render/bin/python deploy/grafana/render_png.py \
        --prometheus http://127.0.0.1:9099 --minutes 5 --out docs/dashboard.png

Stdlib only apart from matplotlib, which is imported at run time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
STAT_COLORS = {"green": "#37872d", "orange": "#e0752d", "red": "#c4162a", "blue": "#1f60c4"}
BG, PANEL_BG, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    """Run one range query; return Prometheus's `result` list."""
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{qs}", timeout=30) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    result: list[Any] = body["data"]["result"]
    return result


def _legend(fmt: str, labels: dict[str, str]) -> str:
    return LEGEND.sub(lambda m: str(labels.get(m.group(1), "")), fmt).strip()


def last_up(base: str, now: float) -> float:
    """The last time in the past 6 hours a polyd scrape succeeded (the demo has ended since)."""
    ones = [
        float(t)
        for item in query_range(base, 'up{job="polyd"}', now - 21_600, now, 2.0)
        for t, v in item["values"]
        if v == "1"
    ]
    if not ones:
        raise RuntimeError("no successful polyd scrape in the last 6 hours")
    return max(ones)


def fetch(base: str, panel: dict[str, Any], start: float, end: float, step: float) -> list[Series]:
    out: list[Series] = []
    for target in panel.get("targets", []):
        for item in query_range(base, target["expr"], start, end, step):
            labels = item.get("metric", {})
            fmt = target.get("legendFormat") or target["expr"]
            label = _legend(fmt, labels)
            pts = [(float(t), float(v)) for t, v in item["values"]]
            pts = [(t, v) for t, v in pts if math.isfinite(v)]
            out.append(Series(label, [t for t, _ in pts], [v for _, v in pts]))
    return out


def mapped(panel: dict[str, Any], value: float) -> tuple[str, str | None]:
    """Apply the panel's value mappings; return (text, color name or None)."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    for mapping in defaults.get("mappings", []):
        hit = mapping.get("options", {}).get(str(int(value))) if value == int(value) else None
        if hit:
            return str(hit["text"]), hit.get("color")
    unit, decimals = defaults.get("unit", ""), defaults.get("decimals")
    if unit == "s":
        return (f"{value / 60:.1f} min" if value >= 120 else f"{value:.1f} s"), None
    if decimals is not None:
        return f"{value:.{decimals}f}", None
    return (f"{value:.0f}" if value == int(value) else f"{value:.3g}"), None


def stat_color(panel: dict[str, Any], value: float, mapped_color: str | None) -> str:
    if mapped_color:
        return STAT_COLORS.get(mapped_color, mapped_color)
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
    color = "blue"
    for step in steps or []:
        if step.get("value") is None or value >= step["value"]:
            color = step["color"]
    return STAT_COLORS.get(color, color)


def render(board: dict[str, Any], base: str, start: float, end: float, out: Path) -> None:
    mpl = importlib.import_module("matplotlib")
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    dates = importlib.import_module("matplotlib.dates")
    step = max(1.0, (end - start) / 240)
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit, top, width_in = 0.5, 0.8, 24.0  # inches per grid row, title band, figure width
    height_in = top + rows * unit + 0.2
    fig = plt.figure(figsize=(width_in, height_in), facecolor=BG)
    first, last = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    when = f"{first:%Y-%m-%d %H:%M}-{last:%H:%M} UTC"
    fig.text(
        0.01,
        1 - 0.35 / height_in,
        f"{board['title']} — every panel's PromQL run against Prometheus ({when}), "
        "drawn by deploy/grafana/render_png.py",
        color=TEXT,
        fontsize=15,
        va="center",
    )
    for panel in panels:
        g = panel["gridPos"]
        kind = panel["type"]
        title_in = 0.0 if kind == "row" else 0.3
        ticks_in = 0.3 if kind == "timeseries" else 0.08
        pad_x = 0.45 / width_in if kind == "timeseries" else 0.06 / width_in
        box_top = top + g["y"] * unit + title_in
        box_h = g["h"] * unit - title_in - ticks_in
        ax = fig.add_axes(
            (
                g["x"] / 24 + pad_x,
                1 - (box_top + box_h) / height_in,
                g["w"] / 24 - pad_x - 0.06 / width_in,
                box_h / height_in,
            )
        )
        ax.set_facecolor(PANEL_BG if kind != "row" else BG)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        if kind == "row":
            ax.axis("off")
            ax.text(0, 0.3, panel["title"], color=TEXT, fontsize=13, fontweight="bold")
            continue
        ax.set_title(panel["title"], color=TEXT, fontsize=10, loc="left")
        series = fetch(base, panel, start, end, step)
        if kind == "stat":
            _stat(ax, panel, series)
        else:
            _timeseries(ax, panel, series, dates)
            ax.set_xlim(first, last)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BG)


def _stat(ax: Any, panel: dict[str, Any], series: list[Series]) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    shown = [s for s in series if s.values][:3]
    if not shown:
        ax.text(0.5, 0.45, "no data", color=TEXT, ha="center", va="center", fontsize=14)
        return
    width = 1 / len(shown)
    for i, s in enumerate(shown):
        text, color = mapped(panel, s.values[-1])
        box = ax.inset_axes((i * width + 0.01, 0.04, width - 0.02, 0.92))
        box.set_xticks([])
        box.set_yticks([])
        box.set_facecolor(stat_color(panel, s.values[-1], color))
        box.text(0.5, 0.58, text, color="white", ha="center", va="center", fontsize=20)
        box.text(0.5, 0.17, s.label, color="white", ha="center", va="center", fontsize=9)


def _timeseries(ax: Any, panel: dict[str, Any], series: list[Series], dates: Any) -> None:
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.grid(color=GRID, linewidth=0.5)
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    if unit == "s":
        ax.set_ylabel("seconds", color=TEXT, fontsize=7)
    drawn = 0
    for i, s in enumerate(series[:10]):
        if not s.values:
            continue
        xs = [datetime.fromtimestamp(t, UTC) for t in s.times]
        ax.plot(xs, s.values, color=PALETTE[i % len(PALETTE)], linewidth=1.3, label=s.label)
        drawn += 1
    ax.xaxis.set_major_formatter(dates.DateFormatter("%H:%M"))
    if drawn:
        ax.legend(
            loc="upper left",
            fontsize=7,
            facecolor=PANEL_BG,
            edgecolor=GRID,
            labelcolor=TEXT,
            framealpha=0.8,
        )
    else:
        ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", va="center", transform=ax.transAxes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--dashboard", type=Path, default=HERE / "polyd.json")
    p.add_argument("--minutes", type=float, default=5.0, help="window ending at --end (now)")
    p.add_argument(
        "--end",
        default="now",
        help="unix time the window ends, 'now', or 'last-up' (the last successful scrape)",
    )
    p.add_argument("--out", type=Path, default=HERE.parent.parent / "docs" / "dashboard.png")
    args = p.parse_args(argv)
    base = args.prometheus.rstrip("/")
    if args.end == "now":
        end = time.time()
    elif args.end == "last-up":
        end = last_up(base, time.time())
    else:
        end = float(args.end)
    start = end - args.minutes * 60
    board = json.loads(args.dashboard.read_text())
    render(board, base, start, end, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
