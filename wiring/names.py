"""Market names wired into the daemon: the log pipeline names every token id it sees, and a
resolver looks up the names nobody has told the daemon yet.

Discovery (Gamma) names every market it finds (`wiring.market_data`); whatever else the daemon
trades or logs — a copied trade, a manual holding, a token from before a restart — is looked up
on Gamma by token id, a batch every `RESOLVE_INTERVAL_S`. What is learned is saved to the
`market_names` table (bounded), where the CLI reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import structlog

from config import Settings
from errors import FeedError, TransientError
from models import Market
from observability.logging import MarketFields, install_market_fields
from observability.metrics import Metrics
from storage import Repositories
from storage.market_names import MarketNameRepository, MarketNames
from venue.gamma import IDS_PER_REQUEST, GammaClient, parse_market
from wiring.shared import Shared
from wiring.stage import Service, Step

log = structlog.get_logger("names")

RESOLVE_INTERVAL_S: Final = 2.0
"""How often unknown token ids are looked up: nothing is asked while every name is known, else
one Gamma request for open and one for closed markets, at most 50 ids each."""

RETRY_MISSING_S: Final = 300.0
"""A token Gamma could not name is not asked for again for this long."""
MAX_MISSING: Final = 10_000

Lookup = Callable[[list[str]], Awaitable[list[Market]]]


async def gamma_markets(gamma: GammaClient, token_ids: list[str]) -> list[Market]:
    """The Gamma markets of `token_ids`, open or closed (Gamma lists only open markets unless
    asked for closed ones: `closed=true`); rows it cannot parse are skipped."""
    out: dict[str, Market] = {}
    for closed in ("false", "true"):
        rows = await gamma.pages(
            "/markets", [("closed", closed), *(("clob_token_ids", t) for t in token_ids)]
        )
        for row in rows:
            try:
                m = parse_market(row).market
            except FeedError:
                continue
            out[m.condition_id] = m
    return list(out.values())


class NameResolver:
    """Look up the names of token ids the daemon met but cannot name, and save what it learns."""

    def __init__(
        self,
        *,
        names: MarketNames,
        repo: MarketNameRepository,
        lookup: Lookup,
        interval_s: float = RESOLVE_INTERVAL_S,
        batch: int = IDS_PER_REQUEST,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = names
        self._repo = repo
        self._lookup = lookup
        self._interval_s = interval_s
        self._batch = batch
        self._monotonic = monotonic
        self._missing: OrderedDict[str, float] = OrderedDict()  # token -> when Gamma had none

    async def tick(self) -> int:
        """Look up one batch of unknown tokens, save every name learned; return names saved."""
        now = self._monotonic()
        unknown = [
            t
            for t in self._names.take_unknown(self._batch)
            if now - self._missing.get(t, -RETRY_MISSING_S) >= RETRY_MISSING_S
        ]
        if unknown:
            try:
                for m in await self._lookup(unknown):
                    self._names.learn_market(m)
            except (TransientError, FeedError) as e:
                log.warning("market_names_unavailable", tokens=len(unknown), error=str(e)[:200])
                unknown = []  # asked again when next seen: Gamma did not answer, not "no name"
            for t in unknown:
                if self._names.get(t) is None:
                    self._missing[t] = now
                    self._missing.move_to_end(t)
                else:
                    self._missing.pop(t, None)
            while len(self._missing) > MAX_MISSING:
                self._missing.popitem(last=False)
        return await self._repo.save(self._names.take_changed())

    async def run(self) -> None:
        """Queue the held and ordered tokens without a name, then resolve forever."""
        for token in await self._repo.unnamed():
            self._names.get(token)  # an unknown token is queued by asking for it
        while True:
            try:
                await self.tick()
            except Exception:  # the task's loop boundary: log and go on
                log.exception("market_names_failed")
            await asyncio.sleep(self._interval_s)


class _Daemon(Protocol):
    settings: Settings
    metrics: Metrics
    repos: Repositories
    shared: Shared
    closers: list[Step]


def build_names(ctx: _Daemon) -> list[Service]:
    """Name token ids in the log pipeline (`market=`, `outcome=` beside `token_id=`) and return
    the resolver's service."""
    s, shared = ctx.settings, ctx.shared
    install_market_fields(MarketFields(shared.names.fields))

    async def uninstall() -> None:
        install_market_fields(None)

    ctx.closers.append(("names:log", uninstall))
    gamma = GammaClient(
        base_url=s.gamma_api_url,
        session=shared.http,
        limiter=shared.budget.limiter,
        metrics=shared.metrics,
        timeout_s=s.http_timeout_s,
        malformed=shared.malformed_log("gamma"),
    )
    resolver = NameResolver(
        names=shared.names,
        repo=ctx.repos.names,
        lookup=lambda tokens: gamma_markets(gamma, tokens),
    )
    return [("names:resolver", resolver.run)]
