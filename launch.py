"""`python -m orchestrator`'s command line: the argument parser, and everything that runs instead
of the daemon (`--version`, `--check-config`, `doctor`, the operator commands).

`before_daemon(args)` answers an exit code when the command line asks for something other than
running the daemon, or None when the daemon (or the demo) should run. Nothing here builds the
trading stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import read_text_file
from errors import ConfigError

EXIT_OK, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 2, 3
DEFAULT_ENV_FILE = ".env"


def build_parser() -> argparse.ArgumentParser:
    """The daemon's flags and the operator sub-commands (`cli.add_commands`)."""
    p = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="polyd: a Polymarket CLOB trading daemon (sniper + copy trader).",
        epilog="Settings come from the environment and .env; see .env.example.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate settings, rule files and notifications as the daemon would, print every "
        "problem (exit 2) or the settings with secrets redacted (exit 0); no network",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run live against the built-in venue simulator with a throwaway key",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="N",
        help="with --demo: run the simulator's makers, takers and whale N times as often (1)",
    )
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds"
    )
    p.add_argument(
        "--env-file",
        default=None,
        metavar="PATH",
        help="settings file (default: .env, which may be absent; a file named here must exist; "
        "'none' for no file)",
    )
    from cli import add_commands  # status|positions|orders|halt|reduce|resume|cancel-all|...

    add_commands(p)
    return p


def env_file_of(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The settings file the command line names (None for none) and whether it was named."""
    named = args.env_file is not None
    raw = args.env_file if named else DEFAULT_ENV_FILE
    return (None if raw in ("", "none") else raw), named


def print_config_error(e: ConfigError) -> None:
    print("polyd: configuration error:", file=sys.stderr)
    for line in e.problems:
        print(f"  {line}", file=sys.stderr)


def before_daemon(args: argparse.Namespace, *, version: str) -> int | None:
    """Run what the command line asks for instead of the daemon; None: run the daemon."""
    if args.version:
        print(f"polyd {version}")
        return EXIT_OK
    if args.duration is not None and args.duration <= 0:
        print("polyd: --duration must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    if args.speed is not None and not (args.demo and args.command is None):
        print("polyd: --speed is for the demo's simulator: use it with --demo", file=sys.stderr)
        return EXIT_CONFIG
    if args.speed is not None and not args.speed > 0:
        print("polyd: --speed must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    env_file, named = env_file_of(args)
    if args.command is not None and args.demo:
        from demo import OPERATE_ENV  # written by the running demo, in this folder

        if not OPERATE_ENV.is_file():
            print(
                f"polyd {args.command}: no demo has run from this folder ({OPERATE_ENV} is "
                "missing); start one with `python -m orchestrator --demo`",
                file=sys.stderr,
            )
            return EXIT_NOT_RUNNING
        env_file, named = str(OPERATE_ENV), True
    if named and env_file is not None:
        # A settings file named on the command line must be there: running on defaults
        # because of a typo in its path would trade with limits nobody chose.
        try:
            read_text_file(Path(env_file), setting="settings file", allow_empty=True)
        except ConfigError as e:
            print_config_error(e)
            return EXIT_CONFIG
    if args.command == "doctor":
        from doctor import run_doctor

        return run_doctor(env_file=env_file, as_json=args.json)
    if args.command is not None:
        from cli import run_command

        code: int = run_command(args, env_file=env_file)
        return code
    if args.check_config:
        from preflight import check_config

        return check_config(env_file)
    return None
