"""The trader's views in the operator CLI: `positions`, `orders`, `trades`, `pnl`, and the account
part of `status`, read from the daemon's database through `storage.views` (read-only; the CLI
has no network, so market names and marks are what the daemon stored).

Human tables by default; `--json` prints the views' stable keys with Decimals as strings.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from config import Settings
from errors import ReportError
from models import UNATTRIBUTED
from storage.views import Views, jsonable

T = TypeVar("T")
ALL: Any = object()  # `read`'s default: the settings' DAEMON_ID
EXIT_CONFIG, EXIT_NO_DB = 2, 4
MARKET_WIDTH = 40

UNATTRIBUTED_NOTE = (
    f"{UNATTRIBUTED}: holdings no order of ours explains (manual trades, transfers); no strategy"
    " sells them"
)


class ViewError(Exception):
    """A message for the operator and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_view_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    scope: argparse.ArgumentParser,
) -> None:
    """Add `positions`, `orders`, `trades` and `pnl` to the operator sub-commands (`scope`:
    `--daemon ID` / `--all-daemons`)."""
    positions = sub.add_parser(
        "positions",
        parents=[common, scope],
        help="positions per strategy: market, outcome, size, average cost, mark, PnL",
    )
    positions.add_argument("--strategy", default=None, help="only this strategy's positions")
    orders = sub.add_parser(
        "orders",
        parents=[common, scope],
        help="recent orders, newest first, with fill price and fees",
    )
    orders.add_argument("--open", action="store_true", help="only orders not yet final")
    orders.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (20)")
    orders.add_argument("--strategy", default=None, help="only this strategy's orders")
    trades = sub.add_parser(
        "trades", parents=[common, scope], help="trade history, newest first, with PnL per trade"
    )
    trades.add_argument("--strategy", default=None, help="only this strategy's trades")
    trades.add_argument("--day", default=None, metavar="YYYY-MM-DD", help="only this UTC day")
    trades.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")
    pnl = sub.add_parser(
        "pnl", parents=[common, scope], help="realized PnL per UTC day and strategy"
    )
    pnl.add_argument("--strategy", default=None, help="only this strategy")
    pnl.add_argument("--days", type=int, default=None, metavar="N", help="the last N days")


def daemon_scope(args: argparse.Namespace, settings: Settings) -> str | None:
    """The daemon a report is of: `--daemon ID`, else DAEMON_ID; None with `--all-daemons`."""
    if getattr(args, "all_daemons", False):
        return None
    return getattr(args, "daemon", None) or settings.daemon_id


def read(settings: Settings, view: Callable[[Views], T], daemon: str | None = ALL) -> T:
    """Run one view over the daemon's database, opened read-only (ViewError 4 if unreadable),
    of one daemon's rows (`daemon`; the settings' DAEMON_ID by default) or of every daemon's
    (None)."""
    scope = settings.daemon_id if daemon is ALL else daemon
    try:
        with Views.open(settings.db_path, settings.database_url, daemon_id=scope) as views:
            return view(views)
    except ReportError as e:
        raise ViewError(str(e), EXIT_NO_DB) from None


def _with_daemons(rows: list[Any], owners: dict[str, str]) -> list[dict[str, Any]]:
    """JSON rows, each naming the daemon of its strategy (None for `unattributed`)."""
    out = []
    for r in rows:
        row: dict[str, Any] = jsonable(r)
        row.setdefault("daemon", owners.get(row["strategy"]))
        out.append(row)
    return out


def parse_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ViewError(
            f"--day must be a date like 2026-01-31, not {text!r}", EXIT_CONFIG
        ) from None


def positions(
    settings: Settings, *, strategy: str | None = None, daemon: str | None = ALL
) -> list[dict[str, Any]]:
    """`positions --json`: each view row plus its redeemable value and its daemon."""
    rows, owners = read(
        settings, lambda v: (v.positions_view(strategy=strategy), v.strategy_daemons()), daemon
    )
    out = []
    for p in rows:
        row = jsonable(p)
        row["daemon"] = owners.get(p.strategy)
        paid = p.size * p.payout if p.payout is not None and p.size > 0 else Decimal(0)
        row["redeemable"] = str(paid)
        out.append(row)
    return out


def orders(
    settings: Settings,
    *,
    open_only: bool = False,
    limit: int = 20,
    strategy: str | None = None,
    daemon: str | None = ALL,
) -> list[dict[str, Any]]:
    if limit < 1:
        raise ViewError("--limit must be at least 1", EXIT_CONFIG)
    rows = read(
        settings,
        lambda v: v.orders_view(open_only=open_only, limit=limit, strategy=strategy),
        daemon,
    )
    return [jsonable(r) for r in rows]


def trades(
    settings: Settings,
    *,
    strategy: str | None = None,
    day: str | None = None,
    limit: int = 50,
    daemon: str | None = ALL,
) -> list[dict[str, Any]]:
    if limit < 1:
        raise ViewError("--limit must be at least 1", EXIT_CONFIG)
    when = parse_day(day)
    rows, owners = read(
        settings,
        lambda v: (v.trades(strategy=strategy, day=when, limit=limit), v.strategy_daemons()),
        daemon,
    )
    return _with_daemons(rows, owners)


def pnl(
    settings: Settings,
    *,
    strategy: str | None = None,
    days: int | None = None,
    daemon: str | None = ALL,
) -> list[dict[str, Any]]:
    if days is not None and days < 1:
        raise ViewError("--days must be at least 1", EXIT_CONFIG)
    rows, owners = read(
        settings, lambda v: (v.pnl_days(strategy=strategy, days=days), v.strategy_daemons()), daemon
    )
    return _with_daemons(rows, owners)


def account(settings: Settings, daemon: str | None = ALL) -> dict[str, Any]:
    """The account part of `status` (see `storage.views.StatusView`)."""
    limit = settings.risk_daily_loss_limit
    view = read(settings, lambda v: v.status_view(daily_loss_limit=limit), daemon)
    out: dict[str, Any] = jsonable(view)
    return out


def scope_parser() -> argparse.ArgumentParser:
    """`--daemon ID` / `--all-daemons`: whose rows `status` and the views show."""
    scope = argparse.ArgumentParser(add_help=False)
    g = scope.add_mutually_exclusive_group()
    g.add_argument(
        "--daemon",
        default=None,
        metavar="ID",
        help="this daemon's orders, positions and PnL on a shared database (default: DAEMON_ID)",
    )
    g.add_argument(
        "--all-daemons", action="store_true", help="every daemon's rows on a shared database"
    )
    return scope


def scope_line(scope: str | None, daemons: Sequence[str]) -> str:
    """The line naming whose rows a report shows."""
    if scope is None:
        return f"daemons:       all ({', '.join(daemons) or 'none yet'})"
    others = [d for d in daemons if d != scope]
    also = f"; also in this database: {', '.join(others)} (--all-daemons)" if others else ""
    return f"daemon:        {scope}{also}"


def run_view(args: argparse.Namespace, settings: Settings) -> tuple[Any, Callable[[Any], str]]:
    """(result, renderer) of a view command. The human output names the daemon when the
    database holds more than one daemon's orders or a scope was asked for."""
    d = daemon_scope(args, settings)
    render: Callable[[Any], str]
    if args.command == "positions":
        rows, render = positions(settings, strategy=args.strategy, daemon=d), render_positions
    elif args.command == "orders":
        rows = orders(
            settings, open_only=args.open, limit=args.limit, strategy=args.strategy, daemon=d
        )
        render = render_orders
    elif args.command == "trades":
        rows = trades(settings, strategy=args.strategy, day=args.day, limit=args.limit, daemon=d)
        render = render_trades
    elif args.command == "pnl":
        rows, render = pnl(settings, strategy=args.strategy, days=args.days, daemon=d), render_pnl
    else:
        raise AssertionError(f"not a view: {args.command}")
    daemons = read(settings, lambda v: v.daemons(), None)
    if len(daemons) > 1 or getattr(args, "daemon", None) or getattr(args, "all_daemons", False):
        line = scope_line(d, daemons)
        return rows, lambda r: f"{line}\n\n{render(r)}"
    return rows, render


VIEW_COMMANDS = ("positions", "orders", "trades", "pnl")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return bool(cells) and all(_is_number(r[i]) for r in cells if r[i])

    right = [numeric(i) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


def dec(text: Any) -> Decimal:
    try:
        return Decimal(str(text)) if text is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def q(text: Any, places: int) -> str:
    """Round to `places` for display only (--json keeps the exact values): a whole number
    without decimals, otherwise no trailing zeros past the cent (0.6000 reads 0.60)."""
    value = dec(text).quantize(Decimal(1).scaleb(-places))
    # Fixed-point: a whole 10 must read "10", not Decimal's normalized "1E+1".
    if value == value.to_integral():
        return "0" if value == 0 else format(value.normalize(), "f")  # never "-0"
    shown = str(value)
    while shown.endswith("0") and len(shown.split(".")[1]) > 2:
        shown = shown[:-1]
    return shown


def q_or_dash(text: Any, places: int) -> str:
    return "-" if text is None else q(text, places)


def short(text: str | None, n: int = 12) -> str:
    if not text:
        return ""
    return text if len(text) <= n else text[: n - 1] + "…"


def market(row: dict[str, Any], width: int = MARKET_WIDTH) -> str:
    """The market's question (cut to `width`), or the token id's head when no name is known."""
    if row.get("market"):
        return short(str(row["market"]), width)
    return "token " + short(str(row["token_id"]), 14)


def render_positions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no positions"
    body = table(
        ["strategy", "market", "outcome", "size", "avg cost", "mark", "unrealized", "realized",
         "PnL", "fees", "resolved"],
        [
            [
                r["strategy"],
                market(r),
                short(r.get("outcome") or "", 12),
                q(r["size"], 4),
                q(r["avg_cost"], 4),
                q_or_dash(r.get("mark"), 4),
                q_or_dash(r.get("unrealized_pnl"), 2),
                q(r["realized_pnl"], 2),
                q(r["pnl"], 2),
                q(r.get("fees_paid", "0"), 5),
                "" if r.get("payout") is None else f"pays {r['payout']}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    total = sum((dec(r["realized_pnl"]) for r in rows), Decimal(0))
    marked = [dec(r["unrealized_pnl"]) for r in rows if r.get("unrealized_pnl") is not None]
    redeemable = sum((dec(r.get("redeemable")) for r in rows), Decimal(0))
    per: dict[str, Decimal] = {}
    for r in rows:
        per[r["strategy"]] = per.get(r["strategy"], Decimal(0)) + dec(r["realized_pnl"])
    by_strategy = ", ".join(f"{name} {q(pnl, 2)}" for name, pnl in per.items())
    unmarked = sum(1 for r in rows if dec(r["size"]) != 0 and r.get("mark") is None)
    lines = [
        body,
        "",
        f"{len(rows)} positions, realized PnL {q(total, 2)} pUSD ({by_strategy}), unrealized "
        f"{q(sum(marked, Decimal(0)), 2)} pUSD, redeemable: {q(redeemable, 2)} pUSD (not cash)",
    ]
    if unmarked:
        lines.append(
            f"{unmarked} held without a mark (the daemon has not written one: is it running?)"
        )
    if UNATTRIBUTED in per:
        lines.append(UNATTRIBUTED_NOTE)
    return "\n".join(lines)


def render_orders(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no orders"
    return table(
        ["created", "strategy", "market", "outcome", "side", "type", "limit", "size", "filled",
         "fill price", "fees", "status"],
        [
            [
                (r["created_at"] or "")[:19],
                r["strategy"],
                market(r, 32),
                short(r.get("outcome") or "", 10),
                r["side"],
                r["order_type"],
                q(r["price"], 4),
                q(r["size"], 4),
                q(r["size_matched"], 4),
                q_or_dash(r.get("avg_fill_price"), 4),
                q(r["fees"], 5),
                r["status"],
            ]
            for r in rows
        ],
    )  # fmt: skip


def render_trades(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no trades"
    body = table(
        ["time (UTC)", "strategy", "market", "outcome", "side", "price", "size", "notional",
         "fee", "PnL", "position"],
        [
            [
                r["at"][:19].replace("T", " "),
                r["strategy"],
                market(r, 32),
                short(r.get("outcome") or "", 10),
                r["side"] + (" FAILED" if r["status"] == "FAILED" else ""),
                q(r["price"], 4),
                q(r["size"], 4),
                q(r["notional"], 2),
                q(r["fee"], 5),
                q_or_dash(r["pnl"], 2),
                q(r["position_after"], 4),
            ]
            for r in rows
        ],
    )  # fmt: skip
    total = sum((dec(r["pnl"]) for r in rows if r["pnl"] is not None), Decimal(0))
    fees = sum((dec(r["fee"]) for r in rows if r["pnl"] is not None), Decimal(0))
    return f"{body}\n\n{len(rows)} trades, realized PnL {q(total, 2)} pUSD, fees {q(fees, 5)} pUSD"


def render_pnl(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no trades yet"
    body = table(
        ["day (UTC)", "strategy", "trades", "bought", "sold", "fees", "realized PnL"],
        [
            [
                r["day"],
                r["strategy"],
                r["trades"],
                q(r["bought"], 2),
                q(r["sold"], 2),
                q(r["fees"], 5),
                q(r["realized_pnl"], 2),
            ]
            for r in rows
        ],
    )
    total = sum((dec(r["realized_pnl"]) for r in rows), Decimal(0))
    days = len({r["day"] for r in rows})
    return f"{body}\n\nrealized PnL {q(total, 2)} pUSD over {days} day{'s' if days > 1 else ''}"


def trading_state_line(db: dict[str, Any], a: dict[str, Any] | None) -> list[str]:
    """The trading-state line of `status`: the daemon's own state, and the halt of a shared
    account it trades (who halted it, when, why), which stops every daemon on the account."""
    state = db["trading_state"] or "ACTIVE (never changed)"
    own = state + (f" — {db['state_reason']}" if db.get("state_reason") else "")
    halted = [x for x in (a or {}).get("shared_accounts") or [] if x.get("halted_by")]
    if not halted:
        return [f"trading state: {own}"]
    lines = []
    for x in halted:
        at = str(x.get("halted_at") or "?")[:19].replace("T", " ")
        lines.append(
            f"trading state: HALTED — account {short(x['account'])} halted by daemon "
            f"{x['halted_by']} at {at} UTC: {x['halt_reason']}"
        )
    if not state.startswith("HALTED"):
        lines.append(f"               (this daemon's own state: {own}; the account's halt holds)")
    return lines


def _account_pnl_lines(a: dict[str, Any], limit: Any) -> list[str]:
    """Today's PnL of each shared account: the sum the daily loss limit reads, with each
    daemon's part as it last wrote it (`account_daily_pnl`)."""
    lines = []
    for x in a.get("shared_accounts") or []:
        total = dec(x["daily_pnl"])
        parts = x.get("pnl_by_daemon") or {}
        each = ", ".join(f"{d} {q(v, 2)}" for d, v in parts.items()) or "no daemon wrote one yet"
        text = f"PnL today:     {q(total, 2)} pUSD, account {short(x['account'])}, every daemon"
        if limit is not None and dec(limit) > 0:
            used = -total / dec(limit) * 100 if total < 0 else 0
            text += f" (halts at -{q(limit, 2)}; {used:.0f}% used)"
        lines += [text, f"               of which {each}"]
    return lines


def render_account(a: dict[str, Any]) -> list[str]:
    """The account lines of `status`."""
    limit = a.get("daily_loss_limit")
    today = a.get("pnl_today")
    if today is None:
        today_text = "not known (no snapshot from the daemon yet)"
    else:
        today_text = f"{q(today, 2)} pUSD"
        if limit is not None and not a.get("shared_accounts"):
            used = -dec(today) / dec(limit) * 100 if dec(limit) > 0 and dec(today) < 0 else 0
            today_text += f" (halts at -{q(limit, 2)}; {used:.0f}% of the limit used)"
    age = a.get("snapshot_age_s")
    as_of = (
        f" (as of {str(a['snapshot_at'])[11:19]} UTC, {age:.0f}s ago)"
        if a.get("snapshot_at") and age is not None
        else ""
    )
    who = a.get("snapshot_daemon")
    if a.get("snapshot_at") and who is None:
        as_of += " (written before snapshots were per daemon: the last daemon's to write one)"
    elif who and a.get("daemon_snapshots"):
        as_of += f" (daemon {who}'s, the latest written)"
    feeds = a.get("feeds") or {}
    feed_text = ", ".join(f"{k} {'ok' if v else 'DOWN'}" for k, v in feeds.items()) or "-"
    label = "PnL today:    " if not a.get("shared_accounts") else "its book:     "
    lines = [
        *_account_pnl_lines(a, limit),
        f"{label} {today_text}{as_of}",
        f"realized PnL:  {q(a['realized_pnl'], 2)} pUSD, unrealized (marked) "
        f"{q_or_dash(a.get('unrealized_pnl'), 2)} pUSD, fees paid {q(a['fees_paid'], 5)} pUSD",
        f"exposure:      {q_or_dash(a.get('exposure'), 2)} pUSD (marked holdings + open BUYs),"
        f" balance {q_or_dash(a.get('balance'), 2)} pUSD",
        f"open orders:   {a['open_orders']}, feeds: {feed_text}",
    ]
    strategies = a.get("strategies") or []
    if strategies:
        lines += [
            "",
            table(
                ["strategy", "open", "cost basis", "realized", "unrealized", "exposure", "fees"],
                [
                    [
                        s["name"],
                        s["positions"],
                        q(s["cost_basis"], 2),
                        q(s["realized_pnl"], 2),
                        q_or_dash(s.get("unrealized_pnl"), 2),
                        q_or_dash(s.get("exposure"), 2),
                        q(s["fees_paid"], 5),
                    ]
                    for s in strategies
                ],
            ),
        ]
        if any(s["name"] == UNATTRIBUTED for s in strategies):
            lines.append(UNATTRIBUTED_NOTE)
    return lines + _snapshot_lines(a.get("daemon_snapshots") or {})


def _snapshot_lines(snaps: dict[str, Any]) -> list[str]:
    """Each daemon's last snapshot (`status --all-daemons`), named."""
    if not snaps:
        return []
    rows = [
        [
            d or "(before per-daemon snapshots)",
            str(v.get("at") or "")[11:19],
            v.get("state") or "-",
            q_or_dash(v.get("pnl_today"), 2),
            q_or_dash(v.get("exposure"), 2),
            q_or_dash(v.get("balance"), 2),
            v.get("open_orders", 0),
        ]
        for d, v in snaps.items()
    ]
    heads = ["daemon", "as of", "state", "PnL today", "exposure", "balance", "open"]
    return ["", table(heads, rows)]
