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
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode

from errors import RefusalSource

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACER_NAME = "polyd"
MAX_REMEMBERED_ORDERS = 10_000

Attr = str | bool | int | float
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
F = TypeVar("F")
REFUSAL_SOURCES = frozenset(s.value for s in RefusalSource)


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

    def __enter__(self) -> None:
        return None

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
        """Build from `config.Settings`: off unless it names an OTLP endpoint to export to
        (`Settings.otel_traces_endpoint`)."""
        endpoint = settings.otel_traces_endpoint
        if endpoint is None:
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

    def remember_order(self, order_id: str) -> None:
        """Remember the current span as the order's (client or venue order id), for fills."""
        if self._tracer is None:
            return
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            self.orders.remember(order_id, ctx)

    async def within(self, name: str, aw: Awaitable[T], **attributes: Any) -> T:
        """Await `aw` inside a span named `name` (just await it when tracing is off)."""
        if self._tracer is None:
            return await aw
        with self.span(name, **attributes):
            return await aw

    def call(self, name: str, fn: Callable[[], T], **attributes: Any) -> T:
        """Call `fn` inside a span named `name` (just call it when tracing is off)."""
        if self._tracer is None:
            return fn()
        with self.span(name, **attributes):
            return fn()

    async def order(self, request: Any, submission: Awaitable[T]) -> T:
        """Await an order's `submission` inside its `execute_order` span; record the outcome."""
        if self._tracer is None:
            return await submission
        with self.order_span(request):
            return self.order_outcome(await submission)

    def order_span(self, request: Any) -> contextlib.AbstractContextManager[Any]:
        """`execute_order` for an `OrderRequest`, remembered for the order's later fills."""
        if self._tracer is None:
            return _NO_SPAN
        return self._order_span(request)

    @contextlib.contextmanager
    def _order_span(self, request: Any) -> Iterator[None]:
        with self.span(
            "execute_order",
            strategy=request.strategy,
            side=request.side,
            order_type=request.order_type,
            token_id=request.token_id,
            client_order_id=request.client_order_id,
        ):
            self.remember_order(request.client_order_id)
            yield

    def order_outcome(self, result: T) -> T:
        """Record an `OrderResult` on the current span: its outcome, who refused it (the prefix
        of a refusal's reason), and an error status unless the venue took it."""
        if self._tracer is None:
            return result
        status = getattr(result, "status", None)
        reason = str(getattr(result, "reason", ""))
        source = reason.partition(":")[0]
        self.set(
            outcome=status,
            refusal_source=source if source in REFUSAL_SOURCES else None,
        )
        venue_order_id = getattr(result, "venue_order_id", None)
        if venue_order_id:
            self.remember_order(venue_order_id)
        if not (getattr(result, "accepted", False) or getattr(result, "filled_size", 0) > 0):
            self.error(reason or str(attr(status)))
        return result

    def fill_span(self, fill: Any) -> contextlib.AbstractContextManager[Any]:
        """A `fill` span for a `Fill`, linked to its order's trace when the order is known
        (by client order id, or by the venue's order id for a fill from the user feed)."""
        if self._tracer is None:
            return _NO_SPAN
        order = self.orders.get(fill.client_order_id) or self.orders.get(fill.venue_order_id)
        return self.span(
            "fill",
            links=[Link(order)] if order is not None else None,
            client_order_id=fill.client_order_id,
            token_id=fill.token_id,
            side=fill.side,
            trade_status=fill.status,
        )

    def traced_fills(
        self, on_fill: Callable[[F], Awaitable[None]]
    ) -> Callable[[F], Awaitable[None]]:
        """`on_fill` with each call inside a `fill_span` (as given when tracing is off)."""
        if self._tracer is None:
            return on_fill

        async def traced(fill: F) -> None:
            with self.fill_span(fill):
                await on_fill(fill)

        return traced

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is buffered (blocking, up to `timeout_s`)."""
        if self._provider is None:
            return True
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()


class _Traced(Protocol):
    tracing: Tracing


S = TypeVar("S", bound=_Traced)


def traced_order(
    submit: Callable[Concatenate[S, R, P], Awaitable[T]],
) -> Callable[Concatenate[S, R, P], Coroutine[Any, Any, T]]:
    """Decorate an `OrderSink.submit` method: each call runs in its `execute_order` span."""

    async def traced(self: S, request: R, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.tracing.order(request, submit(self, request, *args, **kwargs))

    functools.update_wrapper(traced, submit)  # its name, docstring and signature
    return traced


def add_trace_ids(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `trace_id` and `span_id` of the current span, if one is recording."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event
