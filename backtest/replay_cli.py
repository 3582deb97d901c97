"""`python -m orchestrator backtest --data DIR --sniper-rules FILE [...]`.

Replays a recording through the sniper and the executor (`backtest.replay`), prints the headline
figures (or one JSON document with `--json`), and writes `backtest.html` and `backtest.json`
into `--out`. The same recording, rules and options give byte-identical JSON.

Exit codes: 0 done (whatever the PnL); 2 bad input (the recording, a rules file, an option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from backtest import results as rs
from errors import ConfigError
from recording.format import RecordingError
from recording.reader import Recording

EXIT_OK, EXIT_INPUT = 0, 2
MAX_LATENCY_MS: Final = 600_000
NO_LEADER_TRADES: Final = (
    "copy rules ignored: the recording holds no leader trades (the recorder keeps the market "
    "channel, Gamma rows and books; not the Data API's wallet trades); use `vet WALLET` to judge "
    "copying a wallet"
)


class BacktestError(Exception):
    """A message for the operator and its exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register `backtest` on the CLI's sub-command parser."""
    p = sub.add_parser(
        "backtest",
        parents=parents,
        help="replay a recording through the sniper and the executor, with a fill model",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="the recording directory")
    p.add_argument("--sniper-rules", required=True, metavar="FILE", help="sniper rules (TOML/JSON)")
    p.add_argument("--copy-rules", default=None, metavar="FILE", help="copy rules (see the docs)")
    p.add_argument("--from", dest="start", default=None, metavar="T", help="ISO time or unix s")
    p.add_argument("--to", dest="end", default=None, metavar="T", help="ISO time or unix s")
    p.add_argument("--latency-ms", type=int, default=0, metavar="N", help="order arrival delay")
    p.add_argument("--fees", choices=("venue", "none"), default="venue", help="taker fees")
    p.add_argument("--out", default="backtest-report", metavar="DIR", help="report folder")


def parse_time(raw: str | None, what: str) -> int | None:
    """`--from`/`--to`: an ISO 8601 time (UTC if no zone) or unix seconds, as ns."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestError(f"{what} {raw!r}: expected an ISO time or unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def quiet_logs() -> None:
    """Warnings and errors only, to stderr: stdout carries the result, and a replay logging
    every fill at info level would spend its time formatting lines."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def run(args: argparse.Namespace) -> int:
    """Run `backtest`; print the result or one clear error line; return the exit code."""
    quiet_logs()
    try:
        summary, page = execute(args)
    except BacktestError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"polyd backtest: {e}", file=sys.stderr)
        return e.code
    if args.json:
        print(json.dumps({**summary, "report": str(page)}, sort_keys=True))
    else:
        print(render(summary, page))
    return EXIT_OK


def execute(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Check the inputs, replay, write the report; return the summary and the page's path."""
    from backtest.replay import run_backtest
    from strategies.sniper.rules import load_rules

    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    if start is not None and end is not None and end <= start:
        raise BacktestError("--to must be after --from")
    if not 0 <= args.latency_ms <= MAX_LATENCY_MS:
        raise BacktestError(f"--latency-ms must be between 0 and {MAX_LATENCY_MS}")
    try:
        rules = load_rules(args.sniper_rules)
    except ConfigError as e:
        raise BacktestError("--sniper-rules: " + "; ".join(e.problems)) from None
    except OSError as e:
        raise BacktestError(f"cannot read {args.sniper_rules}: {e.strerror or e}") from None
    try:
        Recording(args.data).files()
    except RecordingError as e:
        raise BacktestError(f"--data {args.data}: {e}") from None
    notes: list[str] = []
    if args.copy_rules is not None:
        if not Path(args.copy_rules).is_file():
            raise BacktestError(f"--copy-rules {args.copy_rules}: no such file")
        notes.append(NO_LEADER_TRADES)
        print(f"polyd backtest: {NO_LEADER_TRADES}", file=sys.stderr)
    try:
        result = asyncio.run(
            run_backtest(
                args.data,
                rules,
                start_ns=start,
                end_ns=end,
                latency_ms=args.latency_ms,
                fees=args.fees,
            )
        )
    except RecordingError as e:
        raise BacktestError(f"--data {args.data}: {e}") from None
    result.notes[:0] = notes
    figures = rs.figures(result)
    summary = rs.summary_json(result, figures, (r.name for r in rules))
    from backtest import report as rp

    out = Path(args.out)
    try:
        page, _ = rp.write_report(rs.report_data(result, figures, summary), out, stem="backtest")
    except OSError as e:
        raise BacktestError(f"cannot write the report into {out}: {e.strerror}") from None
    return summary, page


def render(s: dict[str, Any], page: Path) -> str:
    """The human summary: window, orders and fills, PnL overall and per rule."""
    lines = [
        f"replayed {s['records']} records ({s['replayed']['first']} to {s['replayed']['last']}), "
        f"latency {s['latency_ms']} ms, fees {s['fees']}",
        f"orders {len(s['orders'])}, fills {len(s['fills'])}, bought {s['bought']}, "
        f"sold {s['sold']} shares",
        f"PnL {s['pnl']} pUSD (before fees {s['pnl_before_fees']}, fees {s['fees_paid']}), "
        f"max drawdown {s['max_drawdown']}",
        *(f"  rule {k}: {v} pUSD" for k, v in s["per_rule"].items()),
        *(f"note: {n}" for n in s["notes"]),
        f"report: {page}",
    ]
    return "\n".join(lines)
