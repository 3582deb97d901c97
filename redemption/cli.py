"""`python -m orchestrator redeem [--dry-run]` and `python -m orchestrator approve`.

`redeem` runs one redemption pass (`redemption.redeemer`) on the daemon's database, so it needs
the database's writer lock: while the daemon runs, it redeems in the background instead
(`AUTO_REDEEM=true`). `approve` sets the approvals redemption needs (`setApprovalForAll` for
both collateral adapters, the Router and the auto-redeem operator); `doctor` reports them.
Exit codes: 0 done; 1 something needs a human (a failed, zero-payout, refused or unknown
redemption; an approval that failed); 2 bad settings; 3 the daemon holds the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from config import Settings
from errors import AlreadyRunning, ConfigError, PolydError
from observability.logging import Redactor, configure_logging
from storage.engine import make_database, make_writer_lock

EXIT_OK, EXIT_ATTENTION, EXIT_CONFIG, EXIT_IN_USE = 0, 1, 2, 3
ATTENTION = {"failed", "zero_payout", "refused", "unknown"}


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    redeem = sub.add_parser(
        "redeem",
        parents=parents,
        help="redeem resolved positions on chain (collateral adapters, v2 Router), once each",
    )
    redeem.add_argument(
        "--dry-run", action="store_true", help="say what would be redeemed; send nothing"
    )
    sub.add_parser(
        "approve",
        parents=parents,
        help="set the approvals redemption needs (adapters, Router, auto-redeem operator)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        redactor=Redactor(settings.secret_values()),
        stream=sys.stderr,
    )
    try:
        if args.command == "approve":
            return asyncio.run(_approve(settings, as_json=args.json))
        return asyncio.run(_redeem(settings, dry_run=args.dry_run, as_json=args.json))
    except ConfigError as e:
        for line in e.problems:
            print(f"polyd {args.command}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except AlreadyRunning as e:
        print(
            f"polyd redeem: {e}; the running daemon redeems with AUTO_REDEEM=true,"
            " or stop it to redeem by hand",
            file=sys.stderr,
        )
        return EXIT_IN_USE


async def _redeem(settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    from redemption.build import build_redeemer

    url = settings.database_url  # PostgreSQL when set, else the SQLite file at DB_PATH
    lock = make_writer_lock(db_path=settings.db_path, database_url=url)
    await lock.acquire()
    try:
        if not url:
            settings.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = make_database(
            db_path=settings.db_path, database_url=url, busy_timeout_ms=settings.db_busy_timeout_ms
        )
        await db.open()
        try:
            async with aiohttp.ClientSession() as session:
                redeemer = build_redeemer(settings, db=db, session=session)
                report = await redeemer.run(dry_run=dry_run)
        finally:
            await db.close()
    finally:
        await lock.release()
    if as_json:
        print(json.dumps({"dry_run": dry_run, "markets": report.lines}))
    else:
        for line in report.lines:
            rest = " ".join(
                f"{k}={v}" for k, v in line.items() if k not in ("condition_id", "outcome")
            )
            print(f"{line['outcome']:<17} {line['condition_id']} {rest}".rstrip())
        if not report.lines:
            print("nothing to redeem")
    return EXIT_ATTENTION if ATTENTION & set(report.outcomes()) else EXIT_OK


async def _approve(settings: Settings, *, as_json: bool) -> int:
    from redemption.build import approve
    from redemption.senders import SendRefused
    from venue.chain.relayer import RelayerError
    from venue.chain.rpc import ChainError

    async with aiohttp.ClientSession() as session:
        try:
            done = await approve(settings, session)
        except (PolydError, TimeoutError, SendRefused, ChainError, RelayerError) as e:
            print(f"polyd approve: {e}", file=sys.stderr)
            return EXIT_ATTENTION
    if as_json:
        print(json.dumps({"approved": done}))
    else:
        print("\n".join(f"approved {name}" for name in done) or "every approval is already set")
    return EXIT_OK
