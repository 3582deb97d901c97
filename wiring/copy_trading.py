"""Build the copy trading stage: the Data API client, the Gamma tag index (when rules filter by
tag) and the copy trader."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from resilience.retry import RetryPolicy
from storage.market_names import MarketName, MarketNames
from strategies.copy_trader import CopyTrader, TagIndex, load_rules
from venue.data_api import DataApiClient, Fetched, LeaderPosition, LeaderTrade
from venue.gamma import GammaClient, MarketQuery
from venue.order_book import BookStore
from wiring.execution import ExecutionStage
from wiring.shared import Shared
from wiring.stage import Stage

log = structlog.get_logger("wiring.copy_trading")

TAG_INDEX_SHARE = 0.1
"""The most of Gamma's documented limits the tag index may use on its own."""


@dataclass(kw_only=True)
class CopyTradingStage(Stage):
    """The copy trader when its rules name an enabled wallet (else an empty stage)."""

    copy_trader: CopyTrader | None = None


class NamingReader:
    """The Data API as the copy trader reads it, teaching the daemon the name of every market a
    leader trades (`/activity` rows carry the question as `title`, the outcome and the slug), so
    the copy's own log lines already name it."""

    def __init__(self, api: DataApiClient, names: MarketNames) -> None:
        self._api = api
        self._names = names

    async def activity_trades(
        self, wallet: str, *, start: int | None = None
    ) -> Fetched[LeaderTrade]:
        got = await self._api.activity_trades(wallet, start=start)
        self._names.learn(
            MarketName(t.token_id, t.title, t.outcome, t.slug, t.condition_id, "data_api")
            for t in got.rows
            if t.title and self._names.get(t.token_id) is None
        )
        return got

    async def positions(self, wallet: str, *, market: str | None = None) -> Fetched[LeaderPosition]:
        return await self._api.positions(wallet, market=market)


def build_copy_trading(
    shared: Shared, execution: ExecutionStage, *, books: BookStore | None
) -> CopyTradingStage:
    """The copy trader over the executor, the feed's `books` and the Data API. A bad rules file
    raises `ConfigError` (the daemon exits 2)."""
    s = shared.settings
    stage = CopyTradingStage()
    if not s.copy_enabled or s.copy_rules_path is None:
        log.info("copy_trader_off", enabled=s.copy_enabled, rules=str(s.copy_rules_path))
        return stage
    rules = load_rules(s.copy_rules_path)
    if not rules.active:
        log.info("copy_trader_off", reason="no enabled wallets in the rules file")
        return stage
    metrics = shared.metrics
    executor = execution.executor
    data_api = DataApiClient(
        base_url=s.data_api_url,
        budget=shared.budget.data_api,
        timeout_s=s.http_timeout_s,
        retry=RetryPolicy(
            attempts=min(s.retry_attempts, 3),
            base_delay_s=s.retry_base_delay_s,
            max_delay_s=min(s.retry_max_delay_s, 2.0),
        ),
        clock=shared.clock,
        session=shared.http,
        on_error=lambda kind: metrics.data_api_errors_total.labels(kind).inc(),
        malformed=shared.malformed_log("data_api"),
    )
    stage.closers.append(("data_api", data_api.close))
    tags: TagIndex | None = None
    tag_names = {t for w in rules.active for t in (*w.allow_tags, *w.block_tags)}
    if tag_names:
        # Tag allow/block lists: per-tag market lists from Gamma `/events?tag_slug=` (a few
        # listings every few minutes). They never take more than TAG_INDEX_SHARE of Gamma's
        # limits, and they come out of the process's budget, which discovery shares.
        gamma = GammaClient(
            base_url=s.gamma_api_url,
            session=shared.http,
            limiter=shared.budget.capped(TAG_INDEX_SHARE),
            metrics=metrics,
            timeout_s=s.http_timeout_s,
            malformed=shared.malformed_log("gamma"),
        )

        async def tagged(tag: str) -> list[str]:
            query = MarketQuery(
                tags=(tag,), active=None, accepting_orders=None, enable_order_book=None
            )
            return [m.condition_id for m in await gamma.markets(query)]

        tags = TagIndex(tags=tag_names, lister=tagged, clock=shared.clock)
        log.info("copy_tags_wired", tags=list(tags.watched))
    trader = stage.copy_trader = CopyTrader(
        rules=rules,
        data_api=NamingReader(data_api, shared.names),
        sink=executor,
        positions=executor,
        repos=shared.repos,
        metrics=metrics,
        markets=execution.rules,
        tags=tags,
        books=books,
        poll_interval_s=s.copy_poll_interval_s,
        max_trade_age_s=s.copy_max_trade_age_s,
        clock=shared.clock,
        tracing=shared.tracing,
        name=s.copy_name,
    )
    stage.strategies.append(trader)
    log.info("copy_trader_built", name=trader.name, wallets=[w.name for w in rules.active])
    return stage
