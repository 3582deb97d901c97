"""Metrics: one `Metrics` object owning its `CollectorRegistry`, created by the orchestrator.

Names are `polyd_<noun>_<unit>`; labels come from small fixed sets (strategy, side, outcome,
reason…), never from ids. `deploy/prometheus/` alert rules refer to these names; a test checks that.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LAG_BUCKETS = (0.1, 0.25, 0.5, 0.6, 0.75, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)

BREAKER_STATE_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
TRADING_STATE_VALUE = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


class Metrics:
    """Every metric the daemon exports, registered in one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)

        # -- process --------------------------------------------------------------------------
        self.build_info = Gauge(
            "polyd_build_info",
            "Build and mode of the running daemon",
            ["version", "mode"],
            registry=r,
        )
        self.start_time_seconds = Gauge(
            "polyd_start_time_seconds", "Unix time the daemon started", registry=r
        )
        self.ready = Gauge(
            "polyd_ready",
            "1 once start-up reconciliation is done and trading may start",
            registry=r,
        )

        # -- orders and executor --------------------------------------------------------------
        self.orders_total = Counter(
            "polyd_orders_total",
            "Orders by final outcome of submission",
            ["strategy", "side", "outcome"],
            registry=r,
        )
        self.order_rejections_total = Counter(
            "polyd_order_rejections_total",
            "Orders refused, by who refused them (rules, risk, breaker, halted, venue)",
            ["strategy", "source"],
            registry=r,
        )
        self.submit_seconds = Histogram(
            "polyd_submit_seconds",
            "OrderRequest to venue acknowledgement, signing included",
            ["broker"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.venue_retries_total = Counter(
            "polyd_venue_retries_total", "Retried venue calls", ["endpoint", "reason"], registry=r
        )
        self.venue_errors_total = Counter(
            "polyd_venue_errors_total",
            "Venue calls that failed after retries",
            ["endpoint", "kind"],
            registry=r,
        )
        self.outcome_unknown_total = Counter(
            "polyd_outcome_unknown_total",
            "Submissions whose outcome was unknown (timeout) and went to reconciliation",
            registry=r,
        )
        self.reconciled_total = Counter(
            "polyd_reconciled_total",
            "Journal rows settled by reconciliation, by the status they settled to",
            ["status"],
            registry=r,
        )
        self.rate_limit_wait_seconds_total = Counter(
            "polyd_rate_limit_wait_seconds_total",
            "Seconds spent waiting for the local rate limiter",
            ["endpoint"],
            registry=r,
        )
        self.rate_limit_waits_total = Counter(
            "polyd_rate_limit_waits_total",
            "Calls that had to wait for the local rate limiter",
            ["endpoint"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "polyd_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["breaker"],
            registry=r,
        )
        self.breaker_opened_total = Counter(
            "polyd_breaker_opened_total", "Times a breaker opened", ["breaker"], registry=r
        )
        self.trading_state = Gauge(
            "polyd_trading_state", "Trading state: 0 active, 1 reducing, 2 halted", registry=r
        )
        self.open_orders = Gauge("polyd_open_orders", "Orders resting or in flight", registry=r)
        self.fills_total = Counter(
            "polyd_fills_total", "Fills of our orders", ["side", "role"], registry=r
        )
        self.fees_paid_usd_total = Counter(
            "polyd_fees_paid_usd_total",
            "Taker fees booked on our fills (pUSD), by side; a maker fill pays none",
            ["side"],
            registry=r,
        )
        self.heartbeat_failures_total = Counter(
            "polyd_heartbeat_failures_total", "Failed exchange heartbeats", registry=r
        )
        self.heartbeat_ok = Gauge(
            "polyd_heartbeat_ok",
            "1 unless exchange heartbeats lapsed (new resting orders held until a reconcile)",
            registry=r,
        )
        self.heartbeat_ok.set(1)  # an unlabelled gauge starts at 0, which would read "lapsed"
        self.heartbeat_lapses_total = Counter(
            "polyd_heartbeat_lapses_total", "Times exchange heartbeats lapsed", registry=r
        )

        # -- positions and PnL ----------------------------------------------------------------
        self.exposure_usd = Gauge(
            "polyd_exposure_usd", "Marked value of open positions plus open BUY orders", registry=r
        )
        self.pnl_realized_usd = Gauge(
            "polyd_pnl_realized_usd", "Realized PnL since the database was created", registry=r
        )
        self.pnl_unrealized_usd = Gauge(
            "polyd_pnl_unrealized_usd", "Unrealized PnL of open positions at book marks", registry=r
        )
        # The same figures per strategy (`unattributed`: holdings no order of ours explains).
        self.strategy_exposure_usd = Gauge(
            "polyd_strategy_exposure_usd",
            "Marked value of a strategy's positions plus its open BUY orders",
            ["strategy"],
            registry=r,
        )
        self.strategy_pnl_realized_usd = Gauge(
            "polyd_strategy_pnl_realized_usd",
            "A strategy's realized PnL since the database was created",
            ["strategy"],
            registry=r,
        )
        self.strategy_pnl_unrealized_usd = Gauge(
            "polyd_strategy_pnl_unrealized_usd",
            "A strategy's unrealized PnL of open positions at book marks",
            ["strategy"],
            registry=r,
        )
        self.daily_pnl_usd = Gauge(
            "polyd_daily_pnl_usd", "Realized plus marked PnL since 00:00 UTC", registry=r
        )
        self.redeemable_usd = Gauge(
            "polyd_redeemable_pusd",
            "Value of positions in resolved markets (shares x payout), not yet redeemed on chain;"
            " not cash",
            registry=r,
        )
        self.markets_resolved_total = Counter(
            "polyd_markets_resolved_total",
            "Markets seen resolved with a position or order of ours, by how we learned it",
            ["source"],
            registry=r,
        )
        self.daily_loss_limit_usd = Gauge(
            "polyd_daily_loss_limit_usd", "Configured daily loss limit", registry=r
        )
        self.account_daily_pnl_usd = Gauge(
            "polyd_account_daily_pnl_usd",
            "Shared venue account (ACCOUNT_SHARED): PnL since 00:00 UTC summed over its daemons"
            " (this daemon's live, the others' as last synced), the daily loss limit's figure",
            registry=r,
        )
        self.account_halted = Gauge(
            "polyd_account_halted",
            "Shared venue account (ACCOUNT_SHARED): 1 while any daemon on it has halted it",
            registry=r,
        )

        # -- market feed ----------------------------------------------------------------------
        self.feed_messages_total = Counter(
            "polyd_feed_messages_total",
            "Websocket events received, by feed and event type",
            ["feed", "event_type"],
            registry=r,
        )
        self.feed_malformed_total = Counter(
            "polyd_feed_malformed_total",
            "Venue input that could not be parsed or was out of bounds, by source "
            "(market, user, rest, data_api, gamma)",
            ["feed"],
            registry=r,
        )
        self.feed_reconnects_total = Counter(
            "polyd_feed_reconnects_total",
            "Websocket reconnects, by reason (closed, no_pong, stall, error)",
            ["feed", "reason"],
            registry=r,
        )
        self.feed_connected = Gauge(
            "polyd_feed_connected", "Connected websocket shards", ["feed"], registry=r
        )
        self.feed_last_message_age_seconds = Gauge(
            "polyd_feed_last_message_age_seconds",
            "Seconds since the feed last delivered data",
            ["feed"],
            registry=r,
        )
        self.books_total = Gauge(
            "polyd_books",
            "Subscribed order books, by usability (fresh, stale)",
            ["state"],
            registry=r,
        )
        self.book_max_age_seconds = Gauge(
            "polyd_book_max_age_seconds", "Age of the oldest update among usable books", registry=r
        )
        self.book_resyncs_total = Counter(
            "polyd_book_resyncs_total", "REST /book resyncs after a gap or doubt", registry=r
        )
        self.gamma_rows_skipped_total = Counter(
            "polyd_gamma_rows_skipped_total",
            "Gamma market rows that could not be used (no order book, bad ids)",
            registry=r,
        )
        self.v2_markets_skipped_total = Counter(
            "polyd_v2_markets_skipped_total",
            "Protocol-V2 markets (Gamma version v2) discovery refused: polyd cannot trade them",
            registry=r,
        )
        self.redemptions_total = Counter(
            "polyd_redemptions_total",
            "Redemptions of resolved positions by outcome (redeemed, zero_payout, failed,"
            " already_redeemed, unknown, refused; pass_failed: a background pass crashed)",
            ["outcome"],
            registry=r,
        )
        self.watched_markets = Gauge(
            "polyd_watched_markets", "Markets selected by discovery for the strategies", registry=r
        )
        self.sniper_blocked_total = Counter(
            "polyd_sniper_blocked_total",
            "Sniper opportunities not acted on, by reason (cooldown, max_entries, rejected)",
            ["reason"],
            registry=r,
        )

        # -- strategies -----------------------------------------------------------------------
        self.strategy_up = Gauge(
            "polyd_strategy_up", "1 while the strategy task runs", ["strategy"], registry=r
        )
        self.strategy_restarts_total = Counter(
            "polyd_strategy_restarts_total",
            "Strategy crashes followed by a restart",
            ["strategy"],
            registry=r,
        )
        self.strategy_signals_total = Counter(
            "polyd_strategy_signals_total",
            "Orders a strategy decided to emit",
            ["strategy"],
            registry=r,
        )
        self.copy_leader_trades_total = Counter(
            "polyd_copy_leader_trades_total", "Leader trades seen by the copy trader", registry=r
        )
        self.copy_copied_total = Counter(
            "polyd_copy_copied_total", "Leader trades copied", registry=r
        )
        self.copy_skipped_total = Counter(
            "polyd_copy_skipped_total",
            "Leader trades not copied, by reason",
            ["reason"],
            registry=r,
        )
        self.copy_lag_seconds = Histogram(
            "polyd_copy_lag_seconds",
            "Leader trade timestamp to our order acknowledged",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.data_api_errors_total = Counter(
            "polyd_data_api_errors_total",
            "Data API calls or rows that failed, by kind",
            ["kind"],
            registry=r,
        )

        # -- storage and operations -----------------------------------------------------------
        self.db_batch_size = Histogram(
            "polyd_db_batch_size",
            "Jobs per group commit",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self.db_commit_seconds = Histogram(
            "polyd_db_commit_seconds",
            "Time to run and commit one write batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_write_errors_total = Counter(
            "polyd_db_write_errors_total", "Write batches that failed", registry=r
        )
        self.db_checkpoint_seconds = Histogram(
            "polyd_db_checkpoint_seconds",
            "Time one WAL checkpoint took on its own thread (SQLite), failed ones included",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_checkpoint_failures_total = Counter(
            "polyd_db_checkpoint_failures_total",
            "WAL checkpoints that failed (SQLite; the log grows until one succeeds)",
            registry=r,
        )
        self.db_query_seconds = Histogram(
            "polyd_db_query_seconds",
            "Time to run one read query (a pooled connection's wait included on PostgreSQL)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_pool_size = Gauge(
            "polyd_db_pool_size",
            "Open connections in the PostgreSQL read pool (0 on SQLite)",
            registry=r,
        )
        self.db_pool_available = Gauge(
            "polyd_db_pool_available",
            "Idle connections in the PostgreSQL read pool",
            registry=r,
        )
        self.db_pool_waiting = Gauge(
            "polyd_db_pool_waiting",
            "Reads waiting for a PostgreSQL pool connection",
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "polyd_gc_pause_seconds",
            "Time one garbage collection stopped the process, by generation (2: full)",
            ["generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.gc_frozen_objects = Gauge(
            "polyd_gc_frozen_objects",
            "Objects frozen out of garbage collection when the daemon became ready",
            registry=r,
        )
        self.writer_lock_held = Gauge(
            "polyd_writer_lock_held",
            "1 while this daemon holds its writer lock, 0 while a PostgreSQL lock is lost",
            registry=r,
        )
        self.writer_lock_losses_total = Counter(
            "polyd_writer_lock_losses_total",
            "Times the PostgreSQL writer lock's connection was found dropped",
            registry=r,
        )
        self.notifications_total = Counter(
            "polyd_notifications_total",
            "Operator notifications, by outcome (sent, deduped, throttled, dropped, failed)",
            ["outcome"],
            registry=r,
        )
        self.settings_reloads_total = Counter(
            "polyd_settings_reloads_total",
            "Settings reloads (SIGHUP or POST /reload), by outcome "
            "(applied, unchanged, refused, invalid)",
            ["outcome"],
            registry=r,
        )

    def observe_db_batch(self, jobs: int, seconds: float) -> None:
        """Hook for `Database(observe_batch=...)`."""
        self.db_batch_size.observe(jobs)
        self.db_commit_seconds.observe(seconds)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        """Hook for `GcPauses`; called on the thread the collection ran on."""
        self.gc_pause_seconds.labels(str(generation)).observe(seconds)

    def observe_db_checkpoint(self, seconds: float, ok: bool) -> None:
        """Hook for `Database(observe_checkpoint=...)`; called on the checkpoint thread."""
        self.db_checkpoint_seconds.observe(seconds)
        if not ok:
            self.db_checkpoint_failures_total.inc()

    def observe_db_pool(self, stats: Mapping[str, int] | None) -> None:
        """Set the pool gauges from `Database.pool_stats()` (None, on SQLite: all 0)."""
        stats = stats or {}
        self.db_pool_size.set(stats.get("size", 0))
        self.db_pool_available.set(stats.get("available", 0))
        self.db_pool_waiting.set(stats.get("waiting", 0))

    def render(self) -> bytes:
        """Return the registry in Prometheus text format."""
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Return every sample name this registry can export (for alert-rule cross-checks)."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }
        out: set[str] = set()
        for family in self.registry.collect():
            # Labelled families export no sample until first used; derive their names instead.
            ends = suffixes.get(family.type, ("",))
            out.update(family.name + end for end in ends)
            out.update(sample.name for sample in family.samples)
        return out
