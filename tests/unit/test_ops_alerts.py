"""Alert rules and dashboard queries name only metrics the daemon exports; promtool agrees."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from observability.metrics import Metrics
from tests.helpers import ROOT, require_tool

PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "polyd-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "polyd.json"
BUILTINS = {"up"}  # series Prometheus makes itself
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "le",
}  # fmt: skip
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def alert_expressions(text: str) -> dict[str, str]:
    """Map alert name to its PromQL, from the rules YAML (single-line and `|` block exprs)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    name = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("expr:") and name is not None:
            value = stripped.split(":", 1)[1].strip()
            if value in ("|", ">", "|-", ">-"):
                indent = len(line) - len(line.lstrip())
                block = []
                for nxt in lines[i + 1 :]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    block.append(nxt.strip())
                value = " ".join(block)
            out[name] = value
    return out


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (labels, functions and keywords removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery selectors
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr
    )  # grouping label lists
    expr = re.sub(r"\b\d+(?:ms|[smhdwy])\b", " ", expr)  # durations (offset 5m)
    expr = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", " ", expr)  # numbers, 1e-9
    names = set()
    for m in IDENT.finditer(expr):
        word = m.group(0)
        following = expr[m.end() :].lstrip()
        if following.startswith("("):  # a function call
            continue
        if word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def dashboard_expressions() -> dict[str, str]:
    board = json.loads(DASHBOARD.read_text())
    out = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} / {target.get('refId', '?')}"] = target["expr"]
    return out


def test_the_extractor_finds_series_and_skips_syntax() -> None:
    expr = (
        'sum by (instance, le) (rate(polyd_copy_lag_seconds_bucket{job="x"}[10m])) > 1 '
        "and on (instance) polyd_ready == 0 or absent(up) > 1e-9 offset 5m"
    )
    assert metric_names(expr) == {"polyd_copy_lag_seconds_bucket", "polyd_ready", "up"}


def test_every_alert_names_only_exported_metrics() -> None:
    exprs = alert_expressions(RULES.read_text())
    assert len(exprs) == RULES.read_text().count("- alert:") >= 15
    exported = Metrics().names() | BUILTINS
    for alert, expr in exprs.items():
        names = metric_names(expr)
        assert names, alert
        assert names <= exported, f"{alert}: not exported: {sorted(names - exported)}"


def test_every_dashboard_query_names_only_exported_metrics() -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 15
    exported = Metrics().names() | BUILTINS
    for panel, expr in exprs.items():
        names = metric_names(expr)
        assert names, panel
        assert names <= exported, f"{panel}: not exported: {sorted(names - exported)}"


def test_the_alerts_operators_need_are_all_there() -> None:
    alerts = set(alert_expressions(RULES.read_text()))
    wanted = {
        "PolydDown", "PolydAbsent", "PolydBreakerOpen", "PolydFeedStale", "PolydStrategyDown",
        "PolydStrategyCrashLooping", "PolydOrderErrorRateHigh", "PolydOrderRejectionRateHigh",
        "PolydRateLimitWaitsHigh", "PolydDailyLossNearLimit", "PolydDbWriteErrors",
        "PolydWalCheckpointFailing",
    }  # fmt: skip
    assert wanted <= alerts


def test_every_alert_has_a_runbook_link() -> None:
    text = RULES.read_text()
    for alert in alert_expressions(text):
        assert f'runbook: "docs/operations.md#{alert.lower()}"' in text, alert


def test_promtool_accepts_config_rules_and_rule_unit_tests() -> None:
    promtool = require_tool("promtool", "prometheus")
    for args in (
        ["check", "config", "prometheus.example.yml"],
        ["check", "rules", "polyd-rules.yml"],
        ["test", "rules", "polyd-alerts.test.yml"],
    ):
        res = subprocess.run(
            [promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
        )
        assert res.returncode == 0, res.stdout + res.stderr


def test_rules_files_match_the_ci_glob() -> None:
    # .ci/run checks deploy/prometheus/*rules*.yml with `check rules`: the unit-test file must
    # not match that glob (it is not a rules file).
    matched = sorted(p.name for p in Path(PROM).glob("*rules*.yml"))
    assert matched == ["polyd-rules.yml"]


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    board = json.loads(DASHBOARD.read_text())
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    assert board["templating"]["list"][0]["type"] == "datasource"
