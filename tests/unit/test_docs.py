"""The README stays short and every link in the docs lands somewhere.

README.md is the front page (at most 300 lines); the detail lives in docs/*.md. Every relative
link in README.md and docs/*.md must name a file in the repository and, with a `#anchor`, a
heading of that file (GitHub's slug rules); the alert rules' `runbook:` links must land on a
heading of docs/operations.md. No page may point outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, file: ...
OUTSIDE = ("../shared", "/work/")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out: list[tuple[int, str]] = []
    fenced = False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped,
    each space a hyphen (github-slugger)."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code blocks and code spans."""
    out: list[tuple[int, str]] = []
    for no, line in _prose_lines(path.read_text(encoding="utf-8")):
        prose = CODE_SPAN.sub("", line)
        out.extend((no, m.group(1)) for m in LINK.finditer(prose))
    return out


def broken_link(source: Path, target: str) -> str | None:
    """Why `target`, linked from `source`, does not resolve; None when it does."""
    if EXTERNAL.match(target):
        return None
    file_part, _, anchor = target.partition("#")
    dest = (source.parent / file_part).resolve() if file_part else source.resolve()
    if not dest.is_relative_to(ROOT.resolve()):
        return "points outside the repository"
    if not dest.exists():
        return "no such file"
    if anchor:
        if dest.suffix != ".md":
            return "an anchor into a file that is not markdown"
        if anchor not in anchors(dest):
            return f"no heading #{anchor} in {dest.relative_to(ROOT.resolve())}"
    return None


def problems(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        for no, target in links(path):
            why = broken_link(path, target)
            if why:
                out.append(f"{path.relative_to(ROOT)}:{no}: ({target}) {why}")
    return out


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_keeps_the_quick_start() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(path: Path) -> None:
    assert problems([path]) == []


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_no_reference_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert [s for s in OUTSIDE if s in text] == []


def test_every_page_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for _, target in links(README)}
    assert [p.name for p in PAGES if f"docs/{p.name}" not in linked] == []


def test_alert_runbook_links_land_on_operations_headings() -> None:
    rules = ROOT / "deploy" / "prometheus"
    found = 0
    for yml in sorted(rules.glob("*.yml")):
        for target in re.findall(r'runbook:\s*"([^"]+)"', yml.read_text(encoding="utf-8")):
            found += 1
            assert target.startswith("docs/operations.md#"), (yml.name, target)
            assert broken_link(README, target) is None, (yml.name, target)
    assert found > 0


def test_the_checker_notices_a_broken_link(tmp_path: Path) -> None:
    """A test that cannot fail is a defect: break a link and an anchor on purpose."""
    page = ROOT / "docs" / "operations.md"
    assert broken_link(page, "no-such-page.md") == "no such file"
    assert broken_link(page, "#no-such-heading") is not None
    assert broken_link(page, "../../outside.md") == "points outside the repository"
    assert broken_link(page, "#polyddown") is None
    assert broken_link(README, "docs/operations.md#polyddown") is None
    assert slug("The user feed (`venue/user_feed.py`)") == "the-user-feed-venueuser_feedpy"
    assert slug("Cost (`python -m bench executor`, with and without `--tracing`)") == (
        "cost-python--m-bench-executor-with-and-without---tracing"
    )
    assert "headings-1" in anchors(_page(tmp_path, "# Headings\n\n## Headings\n```\n# no\n```\n"))
    assert "no" not in anchors(_page(tmp_path, "# Headings\n```sh\n# no\n```\n"))


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return path
