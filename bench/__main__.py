"""Benchmark runner: `python -m bench <name> [args]` prints one JSON line of figures.

Each benchmark is a module `bench/<name>.py` exposing `main(argv: list[str]) -> dict[str, object]`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import structlog


def available() -> list[str]:
    """Return the names of the benchmark modules in this package."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in names:
        print(f"usage: python -m bench {{{'|'.join(names)}}} [args]", file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    # stdout carries the one JSON line only: log lines (structlog prints to stdout unless told
    # otherwise; a benchmark may reconfigure levels, and keeps this factory) go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    module = importlib.import_module(f"bench.{argv[0]}")
    figures = module.main(argv[1:])
    print(json.dumps({"bench": argv[0], **figures}, default=str))
    return 0


if __name__ == "__main__":
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    raise SystemExit(main(sys.argv[1:]))
