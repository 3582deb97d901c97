"""Logging: structlog configured once, stdlib loggers routed through it, secrets redacted.

Events are snake_case names with context bound through contextvars (`strategy`, `token_id`,
`client_order_id`). JSON when stderr is not a TTY, a readable console format when it is.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from observability.tracing import add_trace_ids

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(private_?key|secret|passphrase|password|api_?key|authorization|token|signature)", re.I
)


class Redactor:
    """A structlog processor that removes secret values wherever they appear in an event.

    Known secret values (from settings, or credentials derived at run time via `add`) are replaced
    inside every string, however deeply nested; values under secret-looking keys are replaced
    whole. Cheap when there is nothing to find.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register more secret values (e.g. API credentials derived after start-up)."""
        variants = set()
        for s in secrets:
            if s and len(s) >= 6:
                variants.add(s)
                # A hex key may be printed with or without its prefix, in either case.
                if s[:2].lower() == "0x" and len(s) > 8:
                    variants.update({s[2:], s[2:].lower(), s[2:].upper()})
        with self._lock:
            merged = set(self._secrets) | variants
            # Longest first so a secret containing another is replaced whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """Return `text` with every known secret value replaced."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if depth > 6:
            return value
        if isinstance(value, dict):
            return {
                k: (
                    REDACTED
                    if isinstance(k, str) and _SECRET_KEY.search(k) and not _harmless(k, v)
                    else self._clean(v, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v, depth + 1) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key in list(event.keys()):
            value = event[key]
            if key != "event" and _SECRET_KEY.search(key) and not _harmless(key, value):
                event[key] = REDACTED
            else:
                event[key] = self._clean(value)
        return event


def _harmless(key: str, value: Any) -> bool:
    # Counts, booleans and None under secret-looking names ("token_count", "has_api_key") are fine.
    return value is None or isinstance(value, bool | int | float) or key.endswith("_id")


def _scrub_exception(redactor: Redactor) -> Processor:
    def proc(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        exc = event.get("exception")
        if isinstance(exc, str):
            event["exception"] = redactor.scrub(exc)
        return event

    return proc


class MarketFields:
    """A structlog processor that puts `market` (the question) and `outcome` next to a
    `token_id` field, from a lookup that never does I/O (`storage.market_names.MarketNames`).
    An event that already carries `market` is left as it is; an unknown token adds nothing."""

    def __init__(self, lookup: Callable[[str], Mapping[str, str]]) -> None:
        self._lookup = lookup

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        token = event.get("token_id")
        if isinstance(token, str) and token and "market" not in event:
            for key, value in self._lookup(token).items():
                event.setdefault(key, value)
        return event


def install_market_fields(fields: MarketFields | None) -> None:
    """Put `fields` into the configured pipeline right after the contextvars merge (so a bound
    `token_id` is named too), replacing one installed before; None takes it out."""
    processors = [
        p for p in structlog.get_config()["processors"] if not isinstance(p, MarketFields)
    ]
    if fields is not None:
        at = next(
            (
                i + 1
                for i, p in enumerate(processors)
                if p is structlog.contextvars.merge_contextvars
            ),
            0,
        )
        processors.insert(at, fields)
    structlog.configure(processors=processors)


def _orjson_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(
    *,
    level: str = "INFO",
    fmt: Literal["json", "console"] | None = None,
    redactor: Redactor | None = None,
    stream: Any = None,
) -> Redactor:
    """Configure structlog and the stdlib root logger once; return the redactor in use."""
    redactor = redactor or Redactor()
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,  # logs inside a span carry its trace_id/span_id (join logs and traces)
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redactor,
        _scrub_exception(redactor),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    set_level(level)
    return redactor


def set_level(level: str) -> None:
    """Set the log level of the whole pipeline (at start-up, and on a settings reload)."""
    logging.getLogger().setLevel(level)
    # Chatty libraries: keep their warnings, drop their per-request debug noise.
    for name in ("aiohttp.access", "websockets", "httpx", "httpcore", "hpack", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def bind(**context: Any) -> None:
    """Bind context (strategy, token_id, client_order_id…) to every event in this task."""
    structlog.contextvars.bind_contextvars(**context)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def event_dict(event: MutableMapping[str, Any]) -> EventDict:
    """Typed view of a mutable mapping as an EventDict (for tests of processors)."""
    return dict(event)
