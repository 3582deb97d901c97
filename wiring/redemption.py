"""Build the background redeemer (`AUTO_REDEEM=true`, live mode only): one pass of
`redemption.redeemer` every `AUTO_REDEEM_INTERVAL_S`, on the daemon's database and HTTP session,
moving the executor's in-memory positions with the journal's (docs/redemption.md)."""

from __future__ import annotations

import asyncio

import structlog

from models import Position
from redemption.build import build_redeemer
from redemption.redeemer import Alert
from wiring.execution import ExecutionStage
from wiring.shared import Shared
from wiring.stage import Stage

log = structlog.get_logger("wiring.redemption")


def build_redemption(
    shared: Shared, execution: ExecutionStage, *, alert: Alert | None = None
) -> Stage:
    """A stage with the `redeemer` service, or an empty one (off, or paper mode). `alert` is the
    operator notifier (zero payouts, unknown outcomes, a POL floor). Missing redemption settings
    (a relayer key for a non-EOA wallet) raise `ConfigError` (exit 2)."""
    s = shared.settings
    stage = Stage()
    if not s.auto_redeem or s.mode != "live":
        return stage
    book = execution.executor.positions

    def moved(positions: list[Position]) -> None:
        for p in positions:
            book.set_position(p)
        shared.metrics.redeemable_usd.set(float(book.redeemable()))

    redeemer = build_redeemer(
        s,
        db=shared.db,
        session=shared.http,
        metrics=shared.metrics,
        on_positions=moved,
        alert=alert,
    )

    async def loop() -> None:
        while True:
            try:
                report = await redeemer.run()
                if report.lines:
                    log.info("redemption_pass", outcomes=report.outcomes())
            except Exception:  # the task's loop boundary: log, count, try again next interval
                log.exception("redemption_pass_failed")
                shared.metrics.redemptions_total.labels("pass_failed").inc()
            await asyncio.sleep(s.auto_redeem_interval_s)

    stage.services.append(("redeemer", loop))
    log.info("auto_redeem_on", interval_s=s.auto_redeem_interval_s, wallet=redeemer.wallet)
    return stage
