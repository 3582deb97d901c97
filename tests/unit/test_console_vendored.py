"""The console's vendored files are the ones VENDORED.md names: same digests, nothing extra."""

from __future__ import annotations

import hashlib
import re

from observability.console import STATIC

TABLE = re.compile(r"^\| `static/([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", re.MULTILINE)


def test_vendored_files_match_their_recorded_digests() -> None:
    recorded = dict(TABLE.findall((STATIC.parent / "VENDORED.md").read_text()))
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE.txt"}
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    ours = {"index.html", "console.css", "console.js"}
    assert {p.name for p in STATIC.iterdir()} == ours | set(recorded)
