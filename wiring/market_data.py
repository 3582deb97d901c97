"""Build the market data stage: the market websocket feed and its order books, market discovery
on Gamma, and the sniper that trades on them."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from execution.market_rules import MarketRules
from execution.resolution import Resolutions
from models import Market
from recording.live import LiveRecording
from recording.writer import RecordWriter
from strategies.sniper import Sniper
from strategies.sniper import load_rules as load_sniper_rules
from venue.gamma import Discovery, DiscoveryResult, GammaClient, resolved_markets
from venue.market_feed import ClobBookFetcher, MarketFeed
from venue.order_book import BookStore
from wiring.execution import ExecutionStage
from wiring.shared import Shared
from wiring.stage import Stage

log = structlog.get_logger("wiring.market_data")


@dataclass(kw_only=True)
class MarketDataStage(Stage):
    """The feed's books (what the paper broker, position marks and strategies read), the feed,
    and the sniper when its rules are on."""

    books: BookStore
    feed: MarketFeed
    resolutions: Resolutions | None = None
    sniper: Sniper | None = None


def with_live_tick(market: Market, books: BookStore) -> Market:
    """`market` with the tick of its books where that differs: Gamma's tick can lag a
    websocket `tick_size_change`, and the book's tick is the newer."""
    for t in market.token_ids:
        b = books.get(t)
        if b is not None and b.tick_size is not None and b.tick_size != market.tick_size:
            return market.model_copy(update={"tick_size": b.tick_size})
    return market


def load_markets(found: DiscoveryResult, rules: MarketRules, books: BookStore) -> None:
    """Load every market discovery found (once each) into the executor's market rules."""
    for m in {m.condition_id: m for ms in found.values() for m in ms}.values():
        rules.load_market(with_live_tick(m, books))


def build_resolutions(
    shared: Shared, execution: ExecutionStage, stage: MarketDataStage, gamma: GammaClient
) -> Resolutions:
    """Resolution tracking over the executor's rules and positions. The feed watches every
    token with a position or an open order (its tick changes and `market_resolved` reach the
    rules whatever strategy traded it); feed events and user-feed `CANCELED_MARKET_RESOLVED`
    report to it, and Gamma is polled every `RESOLUTION_POLL_S`."""
    executor, feed = execution.executor, stage.feed
    res = Resolutions(
        rules=execution.rules,
        positions=executor.positions,
        repos=shared.repos,
        settle=executor.settle,
        metrics=shared.metrics,
        source=execution.rules.source,
        gamma_poll=lambda tokens: resolved_markets(gamma, tokens),
        poll_interval_s=shared.settings.resolution_poll_s,
        on_tokens=lambda tokens: feed.watch("holdings", tokens),
    )
    feed.on_resolved = res.on_feed
    if execution.user_feed is not None:
        execution.user_feed.on_market_resolved = res.suspect

    async def load() -> None:
        await res.load()
        feed.watch("holdings", res.tokens_to_watch())

    stage.startup.append(("resolutions", load))
    stage.services.append(("resolutions", res.run))
    return res


def build_recording(shared: Shared, stage: MarketDataStage, gamma: GammaClient) -> None:
    """`RECORD_DIR`: record the market feed while trading (`recording.live`). The tap is set by
    a start-up step, before the feed's first frame; a stopped recording never stops trading."""
    s = shared.settings
    assert s.record_dir is not None
    source = {"market_ws_url": str(s.market_ws_url), "clob_host": str(s.clob_host)}
    rec = LiveRecording(
        writer=RecordWriter(s.record_dir, source=source),
        feed=stage.feed,
        gamma=gamma,
        interval_s=s.discovery_interval_s,
        clock=shared.clock,
    )
    stage.startup.append(("recording", rec.start))
    stage.services.append(("recording", rec.run))
    stage.checks.append(("recording", rec.check))
    stage.closers.append(("recording", rec.close))


def build_market_data(shared: Shared, execution: ExecutionStage) -> MarketDataStage:
    """The market feed (tick changes go to the executor's rules) and, with sniper rules, market
    discovery and the sniper. A bad rules file raises `ConfigError` (the daemon exits 2)."""
    s = shared.settings
    rules = []
    if s.sniper_enabled and s.sniper_rules_path is not None:
        rules = load_sniper_rules(s.sniper_rules_path)
    limiter = shared.budget.limiter
    executor = execution.executor
    store = BookStore(stale_after_s=s.feed_stale_after_s, clock=shared.clock.monotonic)
    feed = MarketFeed(
        url=s.market_ws_url,
        store=store,
        metrics=shared.metrics,
        tick_sink=executor,  # tick_size_change -> the executor's market rules
        fetcher=ClobBookFetcher(
            session=shared.http, base_url=s.clob_host, limiter=limiter, timeout_s=s.http_timeout_s
        ),
        shard_size=s.feed_shard_size,
        ping_interval_s=s.feed_ping_interval_s,
        stale_after_s=s.feed_stale_after_s,
        clock=shared.clock,
        rest_malformed=shared.malformed_log("rest"),
        tracing=shared.tracing,
    )
    stage = MarketDataStage(books=store, feed=feed)
    stage.services.append(("feed:market", feed.run))
    stage.checks.append(("feed:market", feed.health))
    gamma = GammaClient(
        base_url=s.gamma_api_url,
        session=shared.http,
        limiter=limiter,
        metrics=shared.metrics,
        timeout_s=s.http_timeout_s,
        malformed=shared.malformed_log("gamma"),
    )
    stage.resolutions = build_resolutions(shared, execution, stage, gamma)
    if s.record_dir is not None:
        build_recording(shared, stage, gamma)
    if not rules:
        log.info("sniper_off", enabled=s.sniper_enabled, rules=str(s.sniper_rules_path))
        return stage
    sniper = stage.sniper = Sniper(
        rules=rules,
        books=store,
        orders=executor,
        metrics=shared.metrics,
        fees=execution.rules.fee,
        state=shared.repos.sniper_state,  # entries, cooldowns, take-profits survive restarts
        tracing=shared.tracing,
        name=s.sniper_name,
    )
    sniper.on_watch = lambda tokens: feed.watch("sniper", tokens)
    market_rules = execution.rules

    def on_markets(found: DiscoveryResult) -> None:
        load_markets(found, market_rules, store)
        for markets in found.values():
            for m in markets:
                shared.names.learn_market(m)
        sniper.set_markets(found)

    discovery = Discovery(
        gamma=gamma,
        queries=sniper.market_queries(),
        on_update=on_markets,
        interval_s=s.discovery_interval_s,
        metrics=shared.metrics,
        clock=shared.clock,
    )
    stage.services.append(("discovery", discovery.run))
    stage.strategies.append(sniper)
    log.info("sniper_built", rules=[r.name for r in rules])
    return stage
