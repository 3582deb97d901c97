"""The operator CLI: `python -m orchestrator status|positions|orders|trades|pnl|halt|reduce|resume|
cancel-all|reload|rotate-api-key`.

`status`, `positions`, `orders`, `trades` and `pnl` read the daemon's database read-only (SQLite
`mode=ro`, `query_only`: WAL lets them read while the daemon writes; they never migrate or write)
through the operator read model (`storage.views`; the views' tables are in `cli_views`) and, for
`status`, the running daemon's `/health`. `halt`, `reduce`, `resume` and `cancel-all` POST to the
running daemon's control routes with `CONTROL_TOKEN` as a bearer token, and so does `reload`
(re-read the settings file). `rotate-api-key` replaces the API key (`credentials`).
`doctor` checks the live account against the venue (module `doctor`). `--demo` on any command
reads the running demo's settings (`data/demo/operate.env`) instead of the settings file.
Human-readable tables by default, `--json` for scripts. No secret is ever printed: the token only
goes into a request header.

Exit codes: 0 ok; 1 the daemon answered but refused or is unhealthy; 2 bad configuration
(including an unset CONTROL_TOKEN); 3 the daemon is not running; 4 the database cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from cli_views import (
    ALL,
    UNATTRIBUTED_NOTE,
    VIEW_COMMANDS,
    ViewError,
    account,
    add_view_commands,
    daemon_scope,
    render_account,
    run_view,
    scope_line,
    scope_parser,
    table,
    trading_state_line,
)
from cli_views import q as _q
from config import Settings, load_settings
from errors import ConfigError, ReportError
from models import UNATTRIBUTED
from storage.engine import describe
from storage.reports import DbSummary, Reports

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG, EXIT_NOT_RUNNING, EXIT_NO_DB = 0, 1, 2, 3, 4
T = TypeVar("T")

COMMANDS = (
    "status",
    "positions",
    "orders",
    "trades",
    "pnl",
    "halt",
    "reduce",
    "resume",
    "cancel-all",
    "reload",
    "rotate-api-key",
    "doctor",
)


class CliError(Exception):
    """A message for the operator and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the operator sub-commands to the daemon's argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    # SUPPRESS: `status --env-file X` and `--env-file X status` both work, neither overrides.
    common.add_argument(
        "--env-file", default=argparse.SUPPRESS, metavar="PATH", help="settings file"
    )
    common.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="operate the demo running from this folder (its database, port and control token)",
    )
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        title="operator commands (talk to a running daemon and read its database)",
    )
    scope = scope_parser()
    sub.add_parser(
        "status",
        parents=[common, scope],
        help="daemon health, trading state, order and fill counts",
    )
    add_view_commands(sub, common, scope)
    halt = sub.add_parser("halt", parents=[common], help="stop new orders (cancels still go)")
    halt.add_argument("--reason", default="manual halt (cli)", help="recorded in the audit log")
    reduce = sub.add_parser(
        "reduce", parents=[common], help="only position-reducing orders (and cancels) go"
    )
    reduce.add_argument("--reason", default="manual reduce (cli)", help="recorded in the audit log")
    resume = sub.add_parser("resume", parents=[common], help="return to ACTIVE trading")
    resume.add_argument("--reason", default="manual resume (cli)", help="recorded in the audit log")
    sub.add_parser("cancel-all", parents=[common], help="cancel every resting order at the venue")
    sub.add_parser(
        "reload", parents=[common], help="re-read the settings file in the running daemon"
    )
    rotate = sub.add_parser(
        "rotate-api-key",
        parents=[common],
        help="new API credentials at the venue, into the settings file, reload, delete the old",
    )
    rotate.add_argument(
        "--pid",
        type=int,
        default=None,
        help="reload the daemon with SIGHUP to this pid (default: POST /reload, CONTROL_TOKEN)",
    )
    sub.add_parser(
        "doctor",
        parents=[common],
        help="check the live account before trading: geoblock, clock, API key, wallet, funds, "
        "rule markets",
    )

    from backtest.cli import add_parser as add_vet

    add_vet(sub, [common])

    from backtest.replay_cli import add_parser as add_backtest

    add_backtest(sub, [common])

    from recording.cli import add_parser as add_record

    add_record(sub)

    from redemption.cli import add_parsers as add_redemption  # redeem, approve

    add_redemption(sub, [common])


def run_command(args: argparse.Namespace, *, env_file: str | Path | None) -> int:
    """Run one operator command; print its result; return the exit code."""
    if args.command == "record":
        from recording.cli import run as run_record

        return run_record(args, env_file=env_file)
    if args.command == "backtest":
        from backtest.replay_cli import run as run_backtest

        return run_backtest(args)
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as e:
        print("polyd: configuration error:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    as_json: bool = args.json
    if args.command == "vet":
        from backtest.cli import run as run_vet

        return run_vet(args, settings)
    if args.command in ("redeem", "approve"):
        from redemption.cli import run as run_redemption

        return run_redemption(args, settings)
    try:
        if args.command == "status":
            result, code = status(settings, daemon_scope(args, settings))
            _emit(result, as_json, _render_status)
            return code
        if args.command in VIEW_COMMANDS:
            result, render = run_view(args, settings)
            _emit(result, as_json, render)
            return EXIT_OK
        if args.command in ("halt", "reduce", "resume"):
            result = control(settings, args.command, {"reason": args.reason})
            _emit(result, as_json, _render_control)
            return EXIT_REFUSED if result.get("refused") else EXIT_OK
        if args.command == "cancel-all":
            result = control(settings, "cancel-all", {}, timeout_s=60)
            _emit(result, as_json, _render_control)
            return EXIT_OK
        if args.command == "reload":
            result = control(settings, "reload", {})
            _emit(result, as_json, _render_control)
            return EXIT_OK if result.get("reload") in ("applied", "unchanged") else EXIT_REFUSED
        if args.command == "rotate-api-key":
            return rotate(settings, env_file=env_file, pid=args.pid, as_json=as_json)
    except (CliError, ViewError) as e:
        if as_json:
            print(json.dumps({"error": str(e)}))
        print(f"polyd {args.command}: {e}", file=sys.stderr)
        return e.code
    raise AssertionError(f"unknown command {args.command}")


# --------------------------------------------------------------------------------------------
# Talking to the daemon
# --------------------------------------------------------------------------------------------


def base_url(settings: Settings) -> str:
    """The sidecar's address as seen from this machine (a wildcard bind is reached on loopback)."""
    host = settings.http_host
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


def _request(
    url: str, *, data: bytes | None = None, token: str | None = None, timeout_s: float
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, _json_body(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, _json_body(e.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(
            f"the daemon is not running (no answer at {url.split('/', 3)[2]}: {reason}); "
            "check HTTP_HOST/HTTP_PORT and `systemctl status polyd`",
            EXIT_NOT_RUNNING,
        ) from None


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"error": raw[:200].decode(errors="replace")}
    return body if isinstance(body, dict) else {"body": body}


def health(settings: Settings) -> tuple[int, dict[str, Any]]:
    """GET /health: (status code, body). Raise CliError(3) if the daemon does not answer."""
    return _request(base_url(settings) + "/health", timeout_s=5)


def control(
    settings: Settings, action: str, body: dict[str, Any], *, timeout_s: float = 15
) -> dict[str, Any]:
    """POST /<action> with the bearer token; return the daemon's JSON answer."""
    if settings.control_token is None:
        raise CliError(
            "CONTROL_TOKEN is not set, so the daemon's control routes are disabled; set the "
            "same CONTROL_TOKEN for the daemon and this command (e.g. in .env) and restart it",
            EXIT_CONFIG,
        )
    status, answer = _request(
        f"{base_url(settings)}/{action}",
        data=json.dumps(body).encode(),
        token=settings.control_token.get_secret_value(),
        timeout_s=timeout_s,
    )
    if status == 401:
        raise CliError(
            "the daemon refused the bearer token (401): this CONTROL_TOKEN differs from the "
            "running daemon's",
            EXIT_REFUSED,
        )
    if status == 403:
        raise CliError(
            "the running daemon has no CONTROL_TOKEN, so its control routes are disabled (403)",
            EXIT_REFUSED,
        )
    if status == 404:
        raise CliError(f"the running daemon has no '{action}' route (404)", EXIT_REFUSED)
    if status >= 400:
        raise CliError(f"the daemon answered {status}: {answer.get('error', answer)}", 1)
    return answer


def rotate(
    settings: Settings, *, env_file: str | Path | None, pid: int | None, as_json: bool
) -> int:
    """`rotate-api-key` (see `credentials`): the daemon is reloaded by SIGHUP to `pid`, else by
    POST /reload; with neither possible, only while no daemon runs."""
    from credentials import RotationError, rotate_api_key, sighup

    if env_file is None:
        raise CliError("rotate-api-key writes the settings file: pass --env-file PATH", EXIT_CONFIG)

    def reload_over_http() -> dict[str, Any] | None:
        try:
            return control(settings, "reload", {})
        except CliError as e:
            if e.code == EXIT_NOT_RUNNING:
                return None
            raise

    reload: Callable[[], Any]
    if pid is not None:
        reload = sighup(pid)
    elif settings.control_token is not None:
        reload = reload_over_http
    else:
        try:
            health(settings)
        except CliError:
            reload = lambda: None  # noqa: E731 - no daemon runs: nothing to reload
        else:
            raise CliError(
                "a daemon is running and cannot be told to reload: set CONTROL_TOKEN or pass "
                "--pid (nothing was changed)",
                EXIT_CONFIG,
            )
    try:
        done = rotate_api_key(settings, env_file=Path(env_file), reload=reload)
    except RotationError as e:
        raise CliError(str(e), EXIT_REFUSED) from None
    _emit({"rotated": True, "steps": done.lines}, as_json, lambda r: "\n".join(r["steps"]))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Reading the database (read-only)
# --------------------------------------------------------------------------------------------


def _read(settings: Settings, report: Callable[[Reports], T], daemon: str | None) -> T:
    """Run one report over the daemon's database, opened read-only (CliError 4 if unreadable),
    of `daemon`'s rows (None: every daemon's)."""
    try:
        with Reports.open(settings.db_path, settings.database_url, daemon_id=daemon) as reports:
            return report(reports)
    except ReportError as e:
        raise CliError(str(e), EXIT_NO_DB) from None


def db_summary(settings: Settings) -> DbSummary:
    """Trading state, order and fill counts, positions and PnL of this daemon (DAEMON_ID)."""
    return _read(settings, Reports.summary, settings.daemon_id)


def status(settings: Settings, daemon: str | None = ALL) -> tuple[dict[str, Any], int]:
    """The daemon's /health plus a summary of its database; exit 0 only when healthy. The
    database part is `daemon`'s (default: the settings' DAEMON_ID; None: every daemon's)."""
    scope = settings.daemon_id if daemon is ALL else daemon
    out: dict[str, Any] = {"url": base_url(settings), "db_path": str(settings.db_path)}
    if settings.database_url:  # PostgreSQL: the URL without its password
        out["database_url"] = describe(db_path=settings.db_path, database_url=settings.database_url)
    code = EXIT_OK
    try:
        http_status, body = health(settings)
        out["daemon"] = {"running": True, "http_status": http_status, **body}
        if http_status != 200:
            code = EXIT_REFUSED
    except CliError:
        out["daemon"] = {"running": False}
        code = EXIT_NOT_RUNNING
    try:
        out["database"] = asdict(_read(settings, Reports.summary, scope))
        out["account"] = account(settings, scope)
        out["daemon_id"] = scope
    except (CliError, ViewError) as e:
        out["database"] = {"error": str(e)}
        if code == EXIT_OK:
            code = EXIT_NO_DB
    return out, code


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _emit(result: Any, as_json: bool, render: Any) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(render(result))


def _render_status(s: dict[str, Any]) -> str:
    d, db = s["daemon"], s["database"]
    lines = []
    if d.get("running"):
        lines.append(
            f"daemon:        {d.get('status', '?')} (HTTP {d['http_status']}) at {s['url']}, "
            f"mode {d.get('mode', '?')}, version {d.get('version', '?')}, "
            f"up {d.get('uptime_s', 0):.0f}s"
        )
        checks = d.get("checks") or {}
        rows = [
            [name, "ok" if c.get("ok") else "FAIL", _detail(c.get("detail"))]
            for name, c in checks.items()
        ]
        if rows:
            lines += ["", table(["check", "ok", "detail"], rows), ""]
    else:
        lines.append(f"daemon:        NOT RUNNING (no answer at {s['url']})")
    if "error" in db:
        lines.append(f"database:      {db['error']}")
        return "\n".join(lines)
    by_status = ", ".join(f"{k}={v}" for k, v in db["orders_by_status"].items()) or "none"
    lines += trading_state_line(db, s.get("account"))
    lines += [
        f"orders:        {by_status} (open {db['open_orders']}, last {db['last_order_at'] or '-'})",
        f"fills:         {db['fills']} (taker fees paid {_q(db.get('fees_paid', '0'), 5)} pUSD)",
        f"positions:     {db['positions']} open, realized PnL {_q(db['realized_pnl'], 2)} pUSD",
        f"redeemable:    {_q(db.get('redeemable', '0'), 2)} pUSD (resolved, not yet redeemed;"
        " not cash)",
        f"database:      {s.get('database_url') or s['db_path']}",
    ]
    if len(db.get("daemons") or []) > 1 or db.get("daemon_id") is None:
        lines.append(scope_line(db.get("daemon_id"), db.get("daemons") or []))
    if "account" in s:
        lines += render_account(s["account"])
    elif UNATTRIBUTED in (db.get("by_strategy") or {}):
        lines.append(UNATTRIBUTED_NOTE)
    return "\n".join(lines)


def _detail(detail: Any) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items())
    return "" if detail is None else str(detail)


def _render_control(answer: dict[str, Any]) -> str:
    action = answer.get("action", "?")
    if "reload" in answer:
        changed = ", ".join(answer.get("changed") or [])
        lines = [f"{action}: {answer['reload']}" + (f" ({changed})" if changed else "")]
        return "\n".join(lines + [f"  {p}" for p in answer.get("problems") or []])
    if "canceled" in answer:
        return f"{action}: canceled {answer['canceled']} resting orders"
    state = answer.get("trading_state", "?")
    if answer.get("refused"):
        return f"{action}: refused — {answer['refused']} (trading state {state})"
    return f"{action}: ok, trading state is now {state}"
