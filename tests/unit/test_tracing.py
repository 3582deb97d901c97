"""Tracing with the SDK's in-memory exporter: the order's span tree, refusals, fills linked to
their order, log lines carrying trace ids, settings, and nothing recorded when off."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from errors import ConfigError
from executor import Executor
from models import OrderStatus, OrderType
from observability.logging import configure_logging
from observability.tracing import OrderTraces, Tracing
from storage import Database, Repositories
from tests.helpers import make_settings
from tests.unit.test_executor_paper import TOKEN, DictBooks, make_executor, req

ORDER_STEPS = ["market_rules", "risk", "sign", "journal_pending", "breaker", "post_order"]


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing.with_exporter(exporter), exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@contextlib.asynccontextmanager
async def executor_with(tmp_path: Path, tracing: Tracing | None) -> AsyncIterator[Executor]:
    """A paper executor over a fresh database, with an ask of 100 at 0.50."""
    async with Database(tmp_path / "polyd.db") as db:
        books = DictBooks()
        books.a[TOKEN] = [(Decimal("0.50"), Decimal("100"))]
        ex = make_executor(Repositories.over(db), books, tracing=tracing)
        await ex.start()
        yield ex


async def test_filled_order_is_one_execute_order_span_with_every_step_and_a_linked_fill(
    tmp_path: Path,
) -> None:
    tracing, exporter = traced()
    async with executor_with(tmp_path, tracing) as ex:
        with tracing.span("sniper_evaluation", strategy="test"):
            res = await ex.submit(req(order_type=OrderType.FOK))
    assert res.status is OrderStatus.FILLED
    spans = exporter.get_finished_spans()
    (root,) = by_name(spans, "sniper_evaluation")
    (order,) = by_name(spans, "execute_order")
    assert parent_of(order) == root.context.span_id
    assert order.attributes is not None
    assert order.attributes["client_order_id"] == res.client_order_id
    assert order.attributes["token_id"] == TOKEN
    assert (order.attributes["side"], order.attributes["order_type"]) == ("BUY", "FOK")
    assert order.attributes["outcome"] == "FILLED"
    children = [s.name for s in spans if parent_of(s) == order.context.span_id]
    assert [n for n in children if n in ORDER_STEPS] == ORDER_STEPS
    assert "journal_outcome" in children
    # The paper broker's fill is a span of its own, linked to the order's span.
    (fill,) = by_name(spans, "fill")
    assert [link.context.span_id for link in fill.links] == [order.context.span_id]
    assert {s.context.trace_id for s in spans if s.name != "fill"} == {root.context.trace_id}


async def test_refused_order_span_names_who_refused_and_is_an_error(tmp_path: Path) -> None:
    tracing, exporter = traced()
    async with executor_with(tmp_path, tracing) as ex:
        res = await ex.submit(req(size=Decimal("1000")))
    assert res.status is OrderStatus.REJECTED
    (order,) = by_name(exporter.get_finished_spans(), "execute_order")
    assert order.attributes is not None and order.attributes["refusal_source"] == "risk"
    assert not order.status.is_ok
    names = [s.name for s in exporter.get_finished_spans()]
    assert "post_order" not in names and "sign" not in names


async def test_tracing_off_records_nothing_and_changes_no_outcome(tmp_path: Path) -> None:
    off = Tracing()
    assert not off.enabled
    async with executor_with(tmp_path, off) as ex:
        res = await ex.submit(req(order_type=OrderType.FOK))
    assert res.status is OrderStatus.FILLED
    assert len(off.orders) == 0
    with off.span("anything", token_id=TOKEN) as span:
        assert span is None


async def test_log_lines_inside_a_span_carry_its_trace_and_span_ids() -> None:
    tracing, exporter = traced()
    out = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=out)
    log = structlog.get_logger("test")
    with tracing.span("execute_order"):
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(x) for x in out.getvalue().splitlines())
    (span,) = exporter.get_finished_spans()
    assert inside["trace_id"] == format(span.context.trace_id, "032x")
    assert inside["span_id"] == format(span.context.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside


def test_order_traces_forget_the_oldest_past_the_limit() -> None:
    tracing, _ = traced()
    traces = OrderTraces(limit=3)
    with tracing.span("x"):
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
    for i in range(5):
        traces.remember(f"o{i}", ctx)
    assert len(traces) == 3
    assert traces.get("o0") is None and traces.get("o4") == ctx


def test_settings_turn_tracing_on_only_with_an_exporter_or_endpoint(tmp_path: Path) -> None:
    assert make_settings(tmp_path).otel_traces_endpoint is None
    on = make_settings(tmp_path, otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    assert on.otel_traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    default = make_settings(tmp_path, otel_traces_exporter="otlp")
    assert default.otel_traces_endpoint == "http://localhost:4318/v1/traces"
    specific = make_settings(
        tmp_path,
        otel_exporter_otlp_endpoint="http://a:1",
        otel_exporter_otlp_traces_endpoint="http://b:2/custom",
    )
    assert specific.otel_traces_endpoint == "http://b:2/custom"
    off = make_settings(
        tmp_path, otel_traces_exporter="none", otel_exporter_otlp_endpoint="http://a:1"
    )
    assert off.otel_traces_endpoint is None
    assert not Tracing.from_settings(off).enabled
    ratio = make_settings(
        tmp_path, otel_traces_sampler="parentbased_traceidratio", otel_traces_sampler_arg=0.25
    )
    assert ratio.otel_traces_sampler_ratio == 0.25
    hdr = make_settings(tmp_path, otel_exporter_otlp_headers="authorization=Bearer%20abc,x=1")
    assert hdr.otel_headers() == {"authorization": "Bearer abc", "x": "1"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"otel_exporter_otlp_endpoint": "ftp://collector"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"otel_traces_exporter": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"otel_traces_sampler_arg": 2}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"otel_exporter_otlp_headers": "no-equals-sign"}, "OTEL_EXPORTER_OTLP_HEADERS"),
    ],
)
def test_bad_tracing_settings_name_the_key_and_not_the_value(
    tmp_path: Path, overrides: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as e:
        make_settings(tmp_path, **overrides)
    assert any(line.startswith(key) for line in e.value.problems), e.value.problems
    assert "no-equals-sign" not in " ".join(e.value.problems)
