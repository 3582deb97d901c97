"""The `record` sub-command: `python -m orchestrator record --out DIR [--slugs … | --tags … |
--rules FILE] [--duration S]`.

Settings (URLs, timeouts, feed keepalive, log format) come from the environment and the settings
file as for the daemon; no key is needed. Prints one JSON summary line on stdout at exit.

Exit codes: 0 the recording ended (duration, SIGINT/SIGTERM); 1 the disk failed (full, size
limit, I/O error): the recorder stopped and kept what it wrote; 2 bad configuration (no market
selection, an unusable rules file or output directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from config import load_settings
from errors import ConfigError
from observability.logging import Redactor, configure_logging
from recording.format import RecordingError
from recording.recorder import Selection, record

EXIT_OK, EXIT_DISK, EXIT_CONFIG = 0, 1, 2


def add_parser(sub: Any) -> None:
    """Register `record` on the operator sub-command parser `sub`."""
    p = sub.add_parser(
        "record",
        help="record markets' websocket frames, REST books and Gamma metadata to a directory",
    )
    # SUPPRESS: `record --env-file X` and `--env-file X record` both work, neither overrides.
    p.add_argument("--env-file", default=argparse.SUPPRESS, metavar="PATH", help="settings file")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="recording directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--slugs", nargs="+", default=(), metavar="SLUG", help="market slugs")
    which.add_argument("--tags", nargs="+", default=(), metavar="TAG", help="Gamma tag slugs")
    which.add_argument(
        "--rules", type=Path, default=None, metavar="FILE", help="sniper rules file (selectors)"
    )
    p.add_argument(
        "--duration", type=float, default=None, dest="record_duration", metavar="S",
        help="stop after S seconds (default: until SIGINT/SIGTERM)",
    )  # fmt: skip
    p.add_argument(
        "--snapshot-interval", type=float, default=60.0, metavar="S",
        help="REST /book snapshot of every token each S seconds (60)",
    )  # fmt: skip
    p.add_argument(
        "--progress-interval", type=float, default=30.0, metavar="S",
        help="progress log line each S seconds (30)",
    )  # fmt: skip


def run(args: argparse.Namespace, *, env_file: str | Path | None) -> int:
    """Run `record` to its end; return the exit code."""
    try:
        for flag, value in (
            ("--duration", args.record_duration),
            ("--snapshot-interval", args.snapshot_interval),
            ("--progress-interval", args.progress_interval),
        ):
            if value is not None and not value > 0:
                raise ConfigError([f"record: {flag} must be greater than 0"])
        settings = load_settings(env_file=env_file)
        selection = Selection(slugs=tuple(args.slugs), tags=tuple(args.tags), rules_path=args.rules)
        selection.queries()
    except ConfigError as e:
        print("polyd record: configuration error:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        redactor=Redactor(settings.secret_values()),
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        summary = await record(
            settings,
            selection,
            args.out,
            duration_s=args.record_duration,
            stop=stop,
            snapshot_interval_s=args.snapshot_interval,
            progress_interval_s=args.progress_interval,
        )
        print(json.dumps(summary.as_dict()), flush=True)
        if summary.failed:
            print(
                f"polyd record: stopped: {summary.failed}; {summary.records} records kept in "
                f"{summary.out}",
                file=sys.stderr,
            )
            return EXIT_DISK
        return EXIT_OK

    try:
        return asyncio.run(main())
    except (RecordingError, ConfigError) as e:
        text = "; ".join(e.problems) if isinstance(e, ConfigError) else str(e)
        print(f"polyd record: {text}", file=sys.stderr)
        return EXIT_CONFIG
