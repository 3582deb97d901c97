"""The CLOB's public (unauthenticated) REST routes: market rules and order books.

Used in paper mode, where there is no live broker: `PublicMarketMeta` reads the rules a market's
orders must follow, `RestBookSource` serves `/book` snapshots until the market feed's books are
wired in. Each takes room in the venue's rate-limit bucket for its route when given a limiter.
"""

from __future__ import annotations

import time

import httpx
import structlog

from errors import TransientError
from execution.fees import FeeSchedule
from execution.ports import MarketMeta
from models import Level
from resilience.rate_limit import RateLimiter
from venue.clob.wire import fee_from_clob_market, meta_from_market, with_fee
from venue.order_book import BadLevel, parse_levels
from venue.parse import MalformedLog

log = structlog.get_logger("venue.clob")
BOOKS_PRUNE_AT = 1_000
"""`RestBookSource` drops its stale snapshots once it holds more than this many (or twice what
was fresh at its last pruning): one kept per token ever asked for would grow while paper trading
runs, a new market every few minutes."""


class PublicMarketMeta:
    """Market rules from the venue's public `/markets-by-token` + `/markets` (no credentials);
    used in paper mode."""

    def __init__(
        self,
        *,
        host: str,
        timeout_s: float = 5.0,
        limiter: RateLimiter | None = None,
        malformed: MalformedLog | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=host.rstrip("/"), timeout=timeout_s)
        self._limiter = limiter
        self._malformed = malformed

    async def _get(self, path: str) -> httpx.Response:
        if self._limiter is not None:
            await self._limiter.acquire("clob_general")
        return await self._client.get(path)

    async def market_meta(self, token_id: str) -> list[MarketMeta]:
        try:
            r = await self._get(f"/markets-by-token/{token_id}")
            if r.status_code != 200:
                return []
            cid = r.json().get("condition_id")
            if not cid:
                return []
            m = await self._get(f"/markets/{cid}")
        except httpx.HTTPError as e:
            raise TransientError(f"market metadata unavailable: {type(e).__name__}") from e
        if m.status_code != 200:
            return []
        metas = meta_from_market(str(cid), m.json(), malformed=self._malformed)
        return with_fee(metas, await self._fee(str(cid)))

    async def _fee(self, cid: str) -> FeeSchedule | None:
        """The taker fee from `/clob-markets/{cid}` (`fd`); None if it cannot be read now."""
        try:
            r = await self._get(f"/clob-markets/{cid}")
            if r.status_code != 200:
                raise ValueError(f"HTTP {r.status_code}")
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            log.warning("clob_market_fee_unavailable", condition_id=cid, error=str(e)[:80])
            return None
        return fee_from_clob_market(cid, body)

    async def close(self) -> None:
        await self._client.aclose()


class RestBookSource:
    """A `BookSource` over the venue's REST `/book`, for paper trading until the feed's BookStore
    is wired in. Levels arrive best-LAST on the wire; they are reversed here."""

    def __init__(
        self,
        *,
        host: str,
        timeout_s: float = 5.0,
        max_age_s: float = 2.0,
        limiter: RateLimiter | None = None,
        malformed: MalformedLog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=host.rstrip("/"), timeout=timeout_s, transport=transport
        )
        self._malformed = malformed
        self._max_age_s = max_age_s
        self._limiter = limiter
        self._books: dict[str, tuple[float, list[Level], list[Level]]] = {}
        self._prune_at = BOOKS_PRUNE_AT

    @property
    def cached(self) -> int:
        """How many snapshots are held (fresh or not yet pruned)."""
        return len(self._books)

    async def refresh(self, token_id: str) -> None:
        if self._limiter is not None:
            await self._limiter.acquire("book")
        try:
            r = await self._client.get("/book", params={"token_id": token_id})
        except httpx.HTTPError as e:
            log.warning("book_fetch_failed", token_id=token_id, error=type(e).__name__)
            return
        if r.status_code != 200:
            self._books.pop(token_id, None)
            return
        try:
            d = r.json()
            bids = sorted(parse_levels(d.get("bids") or []).items(), reverse=True)
            asks = sorted(parse_levels(d.get("asks") or []).items())
        except (ValueError, ArithmeticError, KeyError, TypeError, AttributeError) as e:
            # Not a book (an HTML page, a level without a price, a size out of bounds): no
            # book, as for a non-200. Raising would fail the paper order being sent, or the
            # paper broker's whole poll.
            log.warning("book_unreadable", token_id=token_id, error=type(e).__name__)
            if isinstance(e, BadLevel) and self._malformed is not None:
                self._malformed(f"/book: {e}", r.text)
            self._books.pop(token_id, None)
            return
        now = time.monotonic()
        self._books[token_id] = (now, bids, asks)
        if len(self._books) > self._prune_at:
            # A stale snapshot is never served (`_get`): drop them all, amortised O(1).
            self._books = {t: b for t, b in self._books.items() if now - b[0] <= self._max_age_s}
            self._prune_at = max(BOOKS_PRUNE_AT, 2 * len(self._books))

    def _get(self, token_id: str) -> tuple[list[Level], list[Level]] | None:
        b = self._books.get(token_id)
        if b is None or time.monotonic() - b[0] > self._max_age_s:
            return None
        return b[1], b[2]

    def bids(self, token_id: str) -> list[Level] | None:
        b = self._get(token_id)
        return b[0] if b else None

    def asks(self, token_id: str) -> list[Level] | None:
        b = self._get(token_id)
        return b[1] if b else None

    def best_ask(self, token_id: str) -> Level | None:
        asks = self.asks(token_id)
        return asks[0] if asks else None

    def best_bid(self, token_id: str) -> Level | None:
        bids = self.bids(token_id)
        return bids[0] if bids else None

    async def close(self) -> None:
        await self._client.aclose()
