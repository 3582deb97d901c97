"""The daemon traced against the simulator: spans go over real OTLP/HTTP to a receiver written
here (aiohttp on loopback, protobuf decoded with `opentelemetry-proto`), one trace per order.

The receiver decodes `ExportTraceServiceRequest` as the OpenTelemetry protocol specifies
(https://opentelemetry.io/docs/specs/otlp/#otlphttp: POST /v1/traces, binary protobuf body).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from config import Settings
from demo import funded_key, simulator_overrides
from observability.logging import Redactor, configure_logging
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from tests.helpers import COPY_LEADER, COPY_RULES, NEAR_CLOSE_SNIPER_RULES, make_settings, until

D = Decimal
LEADER = COPY_LEADER
MAKER = "0x" + "6a" * 20
ORDER_STEPS = {
    "market_rules",
    "risk",
    "sign",
    "journal_pending",
    "breaker",
    "post_order",
    "journal_outcome",
}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        self.requests += 1
        for rs in msg.resource_spans:
            self.resources.append({a.key: _value(a.value) for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                        )
                    )
        empty = b""  # an empty ExportTraceServiceResponse: full success
        return web.Response(body=empty, content_type="application/x-protobuf")

    def named(self, name: str, **attrs: Any) -> list[Span]:
        return [
            s
            for s in self.spans
            if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())
        ]

    def children(self, parent: Span) -> list[Span]:
        return [s for s in self.spans if s.parent_id == parent.span_id]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


SNIPER_RULES = NEAR_CLOSE_SNIPER_RULES


def traced_settings(sim: Simulator, tmp_path: Path, key: str, endpoint: str) -> Settings:
    (tmp_path / "sniper.toml").write_text(SNIPER_RULES)
    (tmp_path / "copy.toml").write_text(COPY_RULES)
    return make_settings(
        tmp_path,
        **simulator_overrides(sim, key),
        sniper_rules_path=tmp_path / "sniper.toml",
        copy_rules_path=tmp_path / "copy.toml",
        copy_poll_interval_s=0.25,
        feed_ping_interval_s=1.0,
        shutdown_timeout_s=3,
        otel_exporter_otlp_endpoint=endpoint,
        otel_service_name="polyd-test",
    )


def assert_order_trace(r: OtlpReceiver, root_name: str, strategy: str) -> Span:
    """One trace: `root_name` -> execute_order -> every step; rate-limit wait under the POST."""
    (order,) = r.named("execute_order", strategy=strategy)
    (root,) = [s for s in r.spans if s.span_id == order.parent_id]
    assert root.name == root_name and root.parent_id == ""
    assert root.attributes["strategy"] == strategy
    assert order.attributes["token_id"] == root.attributes["token_id"]
    assert order.attributes["side"] == "BUY"
    assert order.attributes["outcome"] in ("FILLED", "MATCHED", "LIVE")
    assert order.attributes["client_order_id"]
    steps = {s.name: s for s in r.children(order)}
    assert set(steps) >= ORDER_STEPS, sorted(steps)
    assert {s.trace_id for s in steps.values()} == {order.trace_id}
    assert "rate_limit_wait" in {s.name for s in r.children(steps["post_order"])}
    return order


async def test_daemon_traces_one_sniper_and_one_copy_order_end_to_end(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    logs = io.StringIO()
    async with Simulator(seed=21, settle_delay_s=0.02) as sim:
        soon = datetime.now(UTC) + timedelta(minutes=10)
        snipe = sim.add_market(
            question="Close soon?", slug="close-soon", tags=("crypto",), end_date=soon
        )
        tok = snipe.token_ids[0]
        sim.seed_order(MAKER, tok, "SELL", D("0.97"), D("50"))
        copied = sim.add_market(question="Will the copy fill?", slug="copy-fill", tags=("x",))
        sim.seed_order(MAKER, copied.token_ids[0], "SELL", D("0.51"), D("500"))
        key = funded_key(sim, D("1000"))
        settings = traced_settings(sim, tmp_path, key, receiver.url)
        redactor = configure_logging(
            level="INFO", fmt="json", stream=logs, redactor=Redactor(settings.secret_values())
        )

        def trade_when_ready(ctx: Context) -> None:
            async def later() -> None:
                store = ctx.books
                assert store is not None
                await until(lambda: store.usable_book(tok) is not None, 5.0)
                sim.seed_order(MAKER, tok, "SELL", D("0.93"), D("100"))
                sim.trade_as(
                    wallet=LEADER,
                    token_id=copied.token_ids[0],
                    side="BUY",
                    price=D("0.50"),
                    size=D("100"),
                )

            ctx.services.append(("test:trades", later))

        daemon = Daemon(settings, redactor=redactor, duration_s=4.0, on_ready=trade_when_ready)
        assert await daemon.run() == EXIT_OK
        secrets = [*settings.secret_values()]
        secrets += [
            v
            for k in sim.keys.values()
            if k.address.lower() != MAKER
            for v in (k.api_key, k.secret, k.passphrase)
        ]

    assert receiver.requests >= 1
    assert {r["service.name"] for r in receiver.resources} == {"polyd-test"}
    sniper = assert_order_trace(receiver, "sniper_evaluation", "sniper")
    copy = assert_order_trace(receiver, "copy_decision", "copy")
    assert sniper.trace_id != copy.trace_id  # one trace per order
    # Each fill from the user feed is its own span, linked to its order's trace.
    linked = {link for f in receiver.named("fill") for link in f.links}
    assert (sniper.trace_id, sniper.span_id) in linked
    assert (copy.trace_id, copy.span_id) in linked
    assert receiver.named("reconcile") and receiver.named("user_feed_resync")
    assert receiver.named("market_feed_connected")
    # No secret in any attribute of any span.
    texts = [str(v) for s in receiver.spans for v in s.attributes.values()]
    texts += [str(v) for res in receiver.resources for v in res.values()]
    leaked = [s for s in secrets if len(s) >= 6 and any(s in t for t in texts)]
    assert leaked == [], "a secret reached a span attribute"
    # Log lines emitted inside a span carry its trace and span ids.
    events = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    entry = [e for e in events if e.get("event") == "sniper_entry"]
    assert entry and entry[0]["trace_id"] == sniper.trace_id
    copied_log = [e for e in events if e.get("event") == "copy_copied"]
    assert copied_log and copied_log[0]["trace_id"] == copy.trace_id
    assert all(len(e["span_id"]) == 16 for e in entry + copied_log)
    assert not [e for e in events if e.get("event") == "daemon_ready" and "trace_id" in e]
