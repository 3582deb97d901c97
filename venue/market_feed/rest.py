"""REST `/book` snapshots: where the feed resyncs a book it no longer trusts.

Owns the `GET /book?token_id=` call and its slot in the venue budget (the `book` rate-limit
bucket); a failed or unusable answer is a `FeedError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from errors import FeedError
from resilience.rate_limit import RateLimiter


class BookFetcher(Protocol):
    """Fetch one REST `/book` body (a resync source)."""

    async def fetch_book(self, token_id: str) -> Mapping[str, Any]:
        """Return the parsed JSON body of `GET /book?token_id=`; raise FeedError if unusable."""
        ...


class ClobBookFetcher:
    """`GET {clob_host}/book?token_id=` over aiohttp, through the `book` rate-limit bucket."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        limiter: RateLimiter | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/book"
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch_book(self, token_id: str) -> Mapping[str, Any]:
        if self._limiter is not None:
            await self._limiter.acquire("book")
        try:
            async with self._session.get(
                self._url, params={"token_id": token_id}, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise FeedError(f"/book answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise FeedError(f"/book request failed: {type(e).__name__}") from e
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise FeedError("/book body is not JSON") from e
        if not isinstance(data, dict):
            raise FeedError("/book body is not an object")
        return data
