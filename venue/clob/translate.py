"""Venue failures -> the daemon's exception tree (`errors`).

HTTP 429 -> RateLimited; 425/503/403 -> VenueUnavailable; other 5xx -> TransientError;
401 -> FatalError; the venue already holding the same order -> DuplicateOrder; other 4xx ->
OrderRejected(source="venue"); a transport failure after the request may have left ->
OutcomeUnknown (a connection that never opened is a TransientError: nothing left the process).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from errors import (
    DuplicateOrder,
    FatalError,
    OrderRejected,
    OutcomeUnknown,
    PolydError,
    RateLimited,
    TransientError,
    VenueUnavailable,
)
from venue import parse

_HTML_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_DUPLICATE_MARK: Final = "duplicated"


def is_duplicate(text: str) -> bool:
    """Whether the venue refused an order because it already holds one with the same hash.

    The CLOB answers a second `POST /order` of the same signed order (same EIP-712 hash) with
    HTTP 400 `{"error": "order {id} is invalid. Duplicated."}`, and a batch `POST /orders` with
    that text as the order's `errorMsg`; the symbolic name in the venue's older error list is
    `INVALID_ORDER_DUPLICATED`. Both contain "duplicated" (any case), and no other refusal in the
    venue's list does. Source: https://docs.polymarket.com/resources/error-codes (POST /order).
    """
    return _DUPLICATE_MARK in text.lower()


def message(error_msg: Any) -> str:
    """The venue's error text, short enough for a journal row and a log line.

    An HTML body (Cloudflare's 403 page) is reduced to `HTML error page (<title>)`: the page
    itself is neither kept in the journal nor logged.
    """
    if isinstance(error_msg, dict):
        text = str(
            error_msg.get("error")
            or error_msg.get("errorMsg")
            or error_msg.get("error_msg")  # heartbeat refusals (Polymarket/py-sdk)
            or error_msg
        )
    else:
        text = str(error_msg)
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<head", "<body")) or "<html" in head:
        m = _HTML_TITLE.search(text)
        title = " ".join(html.unescape(m.group(1)).split())[:80] if m else ""
        return f"HTML error page ({title})" if title else "HTML error page"
    return text[:300]


def retry_after(error_msg: Any, headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from a `Retry-After` header, else the body's `retry_after_seconds`."""
    if headers is not None:
        ra = parse.float_or_none(headers.get("Retry-After") or None)
        if ra is not None:
            return ra
    if isinstance(error_msg, dict) and error_msg.get("retry_after_seconds") is not None:
        try:
            return float(error_msg["retry_after_seconds"])
        except (TypeError, ValueError):
            return None
    return None


class VenueHttpError(Exception):
    """The venue answered with an error status (`status`), or not at all (`status` None).

    `error_msg` is the answer's JSON (or its text); `headers` its headers (for Retry-After).
    `connect_failed` says the connection never opened, so nothing left the process. Raised by
    `venue.clob.transport`; `translate` turns it into the daemon's exception tree.
    """

    def __init__(
        self,
        status: int | None,
        error_msg: Any,
        *,
        headers: Mapping[str, str] | None = None,
        connect_failed: bool = False,
    ) -> None:
        super().__init__(status, error_msg)
        self.status = status
        self.error_msg = error_msg
        self.headers = headers
        self.connect_failed = connect_failed

    @classmethod
    def answer(cls, status: int, raw: bytes, headers: Mapping[str, str]) -> VenueHttpError:
        """An error answer: its body read as JSON if it is JSON, else as text."""
        text = raw.decode("utf-8", errors="replace")
        try:
            msg: Any = json.loads(text)
        except ValueError:
            msg = text
        return cls(status, msg, headers=headers)

    def __str__(self) -> str:
        return f"VenueHttpError[status={self.status}, error={message(self.error_msg)}]"


def translate(e: BaseException, *, order_id: str | None = None) -> PolydError:
    """Map a venue failure onto the daemon's exception tree (callers `raise ... from e`)."""
    if isinstance(e, VenueHttpError):
        status = e.status
        msg = message(e.error_msg)
        if status is None:
            cause = e.__cause__ or e.__context__
            if e.connect_failed:
                # The connection never opened: nothing left the process.
                return TransientError(f"connect failed: {type(cause).__name__}")
            return OutcomeUnknown(
                f"no answer ({type(cause).__name__ if cause else 'request exception'})",
                order_id=order_id,
            )
        ra = retry_after(e.error_msg, e.headers)
        if status == 429:
            return RateLimited(msg, status=status, retry_after=ra)
        if status in (425, 503, 403):
            return VenueUnavailable(msg, status=status, retry_after=ra)
        if status >= 500:
            return TransientError(msg, status=status, retry_after=ra)
        if status == 401:
            return FatalError(f"venue refused our credentials: {msg}")
        if is_duplicate(msg):
            return DuplicateOrder(msg, order_id=order_id, status=status)
        return OrderRejected(msg, source="venue", status=status)
    if isinstance(e, PolydError):
        return e
    return TransientError(f"{type(e).__name__}")
