"""Logging redaction, metrics exposition and the health model."""

from __future__ import annotations

import io
import logging
import subprocess

import orjson
import structlog

from observability.health import CheckResult
from observability.logging import REDACTED, Redactor, configure_logging
from observability.metrics import Metrics
from observability.sidecar import Health, Phase
from tests.helpers import require_tool

SECRET = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def capture(redactor: Redactor) -> tuple[io.StringIO, structlog.stdlib.BoundLogger]:
    out = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", redactor=redactor, stream=out)
    return out, structlog.get_logger("test")


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in out.getvalue().splitlines() if x.strip()]


def test_secret_values_are_redacted_wherever_they_appear() -> None:
    out, log = capture(Redactor([SECRET]))
    log.info("leak", note=f"key is {SECRET}!", nested={"deep": [SECRET[2:]]})
    log.info("header", private_key="abc", api_secret="zzz", token_count=3)
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        log.exception("boom")
    logging.getLogger("some.library").warning("stdlib says %s", SECRET)
    text = out.getvalue()
    assert SECRET not in text
    assert SECRET[2:] not in text
    events = lines(out)
    assert events[0]["note"] == f"key is {REDACTED}!"
    assert events[1]["private_key"] == REDACTED
    assert events[1]["api_secret"] == REDACTED
    assert events[1]["token_count"] == 3
    assert any(str(e.get("event", "")).startswith("stdlib says") for e in events)


def test_secrets_added_at_run_time_are_redacted_too() -> None:
    redactor = Redactor()
    out, log = capture(redactor)
    derived = "derived-passphrase-1234567890"
    redactor.add(derived)
    log.info("creds_derived", detail=f"passphrase={derived}")
    assert derived not in out.getvalue()


def test_metrics_pass_promtool_check_metrics() -> None:
    promtool = require_tool("promtool", "prometheus")
    m = Metrics()
    m.build_info.labels("0.1.0", "paper").set(1)
    m.orders_total.labels("sniper", "BUY", "filled").inc()
    m.submit_seconds.labels("live").observe(0.002)
    m.breaker_state.labels("clob").set(0)
    m.copy_lag_seconds.observe(0.4)
    res = subprocess.run(
        [promtool, "check", "metrics"], input=m.render(), capture_output=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_metric_names_are_polyd_prefixed_and_listed() -> None:
    m = Metrics()
    names = m.names()
    assert "polyd_orders_total" in names
    assert "polyd_submit_seconds_bucket" in names
    assert all(n.startswith("polyd_") for n in names)


async def test_health_status_follows_phase_and_checks() -> None:
    h = Health(mode="paper", version="0")
    h.register("db", lambda: CheckResult(True, "ok"))
    assert (await h.evaluate())[0] == "starting"
    h.phase = Phase.RUNNING
    assert (await h.evaluate())[0] == "ok"

    async def failing() -> CheckResult:
        return CheckResult(False, "stale")

    h.register("feed", failing)
    status, body = await h.evaluate()
    assert status == "degraded"
    assert body["checks"]["feed"] == {"ok": False, "detail": "stale"}

    def broken() -> CheckResult:
        raise RuntimeError("bug")

    h.register("feed", broken)
    status, body = await h.evaluate()
    assert status == "degraded"
    assert body["checks"]["feed"]["detail"] == "check raised RuntimeError"
    h.phase = Phase.STOPPING
    assert (await h.evaluate())[0] == "stopping"
