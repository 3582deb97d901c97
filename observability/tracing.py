"""OpenTelemetry tracing: one trace per order, from the event that caused it to its fills.

Off by default. `Tracing.from_settings` turns it on when `OTEL_TRACES_EXPORTER=otlp` and an
OTLP/HTTP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the traces-only
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); spans are batched and exported from the SDK's own thread,
so the event loop never waits on the collector.

Span names and attributes come from small fixed sets (see `docs/observability.md`): strategy,
side, order type, outcome, refusal source, plus the token id and client order id as attributes
(never metric labels). No value passed here may be a secret: callers pass ids and enums only.

Off, `span()` returns one shared no-op context manager and records nothing: the hot path pays a
method call. `OrderTraces` remembers (bounded) each recent order's span context, so a fill that
arrives later on the user feed starts its own span *linked* to the order's trace.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACER_NAME = "polyd"
MAX_REMEMBERED_ORDERS = 10_000

Attr = str | bool | int | float


def attr(value: Any) -> Attr:
    """An attribute value OpenTelemetry accepts: enums by value, Decimals as text."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _attrs(values: Mapping[str, Any]) -> dict[str, Attr]:
    return {k: attr(v) for k, v in values.items() if v is not None}


class _NoSpan(contextlib.AbstractContextManager[None]):
    """The context manager `span()` returns with tracing off: does nothing, allocates nothing."""

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class OrderTraces:
    """The span context of each recent order (at most `limit`, oldest forgotten first)."""

    def __init__(self, limit: int = MAX_REMEMBERED_ORDERS) -> None:
        self._limit = limit
        self._by_order: OrderedDict[str, SpanContext] = OrderedDict()

    def remember(self, client_order_id: str, context: SpanContext) -> None:
        self._by_order[client_order_id] = context
        self._by_order.move_to_end(client_order_id)
        while len(self._by_order) > self._limit:
            self._by_order.popitem(last=False)

    def get(self, client_order_id: str | None) -> SpanContext | None:
        return self._by_order.get(client_order_id) if client_order_id else None

    def __len__(self) -> int:
        return len(self._by_order)


class Tracing:
    """The daemon's tracer, or nothing (`Tracing()` is off). Built once, passed to components."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
        self.enabled = self._tracer is not None
        self.orders = OrderTraces()

    @classmethod
    def from_settings(cls, settings: Any) -> Tracing:
        """Build from `config.Settings` (off unless `OTEL_TRACES_EXPORTER=otlp`)."""
        endpoint = settings.otel_traces_endpoint
        if settings.otel_traces_exporter != "otlp" or endpoint is None:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = settings.otel_headers()
        exporter = OTLPSpanExporter(
            endpoint=endpoint, headers=headers or None, timeout=settings.otel_export_timeout_s
        )
        return cls.with_exporter(
            exporter,
            service_name=settings.otel_service_name,
            sample_ratio=settings.otel_traces_sampler_ratio,
            batch=True,
        )

    @classmethod
    def with_exporter(
        cls,
        exporter: SpanExporter,
        *,
        service_name: str = "polyd",
        sample_ratio: float = 1.0,
        batch: bool = False,
    ) -> Tracing:
        """Tracing that exports to `exporter` (tests pass an in-memory one, `batch=False`)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        processor = (
            BatchSpanProcessor(exporter, max_queue_size=4096, schedule_delay_millis=1000)
            if batch
            else SimpleSpanProcessor(exporter)
        )
        provider.add_span_processor(processor)
        return cls(provider)

    def span(
        self, name: str, *, links: list[Link] | None = None, **attributes: Any
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A span named `name`, current inside the `with` block (a child of the current one).

        An exception leaving the block is recorded on the span and marks it as an error.
        """
        if self._tracer is None:
            return _NO_SPAN
        return self._tracer.start_as_current_span(name, attributes=_attrs(attributes), links=links)

    def set(self, **attributes: Any) -> None:
        """Add attributes to the current span (nothing when off)."""
        if self._tracer is None:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(_attrs(attributes))

    def error(self, description: str) -> None:
        """Mark the current span as failed (an order refused or lost), with a short reason."""
        if self._tracer is None:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, description[:200]))

    def remember_order(self, client_order_id: str) -> None:
        """Remember the current span as `client_order_id`'s, for its later fills."""
        if self._tracer is None:
            return
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            self.orders.remember(client_order_id, ctx)

    @contextlib.contextmanager
    def fill_span(self, client_order_id: str | None, **attributes: Any) -> Iterator[None]:
        """A span for one fill, linked to its order's trace when the order is remembered."""
        if self._tracer is None:
            yield
            return
        order = self.orders.get(client_order_id)
        with self._tracer.start_as_current_span(
            "fill",
            attributes=_attrs({"client_order_id": client_order_id, **attributes}),
            links=[Link(order)] if order is not None else None,
        ):
            yield

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is buffered (blocking, up to `timeout_s`)."""
        if self._provider is None:
            return True
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()


def add_trace_ids(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `trace_id` and `span_id` of the current span, if one is recording."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event
