"""Wire helpers shared by the CLOB route handlers: JSON answers, errors and cursor paging."""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from simulator.engine import OrderError

Json = dict[str, Any]
MICRO = Decimal(1_000_000)
START_CURSOR = "MA=="
END_CURSOR = "LTE="


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error(message: str, status: int = 400, **extra: object) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


def decimals(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return max(0, -int(exp))


def encode_cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if cursor == END_CURSOR:
        return -1
    try:
        return max(0, int(base64.b64decode(cursor).decode()))
    except (ValueError, binascii.Error) as e:
        raise OrderError("invalid next_cursor") from e


def paginate(rows: list[Json], cursor: str | None, page_size: int) -> Json:
    off = decode_cursor(cursor)
    if off < 0:
        return {"limit": page_size, "next_cursor": END_CURSOR, "count": 0, "data": []}
    page = rows[off : off + page_size]
    nxt = off + page_size
    return {
        "limit": page_size,
        "next_cursor": encode_cursor(nxt) if nxt < len(rows) else END_CURSOR,
        "count": len(page),
        "data": page,
    }
