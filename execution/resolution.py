"""Market resolution: learn that a market we hold or trade resolved, and act on it.

A market resolves through the oracle; each winning share then redeems for 1 pUSD, a losing one
for 0, each share of a 50-50 outcome for 0.5 (https://docs.polymarket.com/concepts/resolution).
Redemption is an on-chain call outside the daemon, so a resolved position is value, not cash.

The venue's `market_resolved` event is not reliable alone (NautilusTrader polls Gamma after a
market's end for that reason: nautechsystems/nautilus_trader PRs #4088 and #4164), so this
learns of a resolution from any of:

* the market feed's `market_resolved` with its `winning_asset_id` (`on_feed`);
* a user-feed order ended `CANCELED_MARKET_RESOLVED` (`suspect`): the CLOB's `/markets` row is
  then read for `tokens[].winner` / `is_50_50_outcome`;
* a Gamma poll, every `poll_interval_s`, of the markets of held tokens and open orders: closed,
  `umaResolutionStatus == "resolved"` and exactly one outcome priced 1 (the poll function, from
  `venue.gamma`, skips `["0","0"]` and non-binary prices, which stay polled);
* the CLOB `/markets` row of a suspected token (`MetadataSource`).

On a resolution: the market rules refuse every order there with a reason naming it, the
positions are marked at the payout (PnL settled at 1/0/0.5, `redeemable` = shares x payout), the
journal's open orders of those tokens are marked canceled, and the fact is stored in
`daemon_state` (`storage.keys.RESOLUTIONS_KEY`) so a restart, and the CLI, know it. It also
publishes `polyd_redeemable_pusd`.

What is known is bounded (`MAX_RESOLVED`): the market feed tells of every watched market that
resolves, not only of those we trade, and the set is stored whole on each resolution. Past the
bound the oldest resolved tokens we neither hold nor have an open order in are forgotten (here,
in the positions' marks and in storage; `MarketRules` keeps its own bounded record).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation

import structlog

from errors import FeedError, TransientError
from execution.market_rules import MarketRules
from execution.ports import MetadataSource
from execution.positions import PositionBook
from execution.settlement import Settlement
from observability.metrics import Metrics
from storage import Repositories
from storage.keys import RESOLUTIONS_KEY

log = structlog.get_logger("execution.resolution")

Payouts = dict[str, Decimal]
"""Payout per token of one resolved market."""
GammaPoll = Callable[[list[str]], Awaitable[list[tuple[str, Payouts]]]]
"""Resolved markets among those of the given tokens: [(condition id, payouts)]."""
QUEUE_MAX = 1000
MAX_RESOLVED = 10_000
"""Resolved tokens remembered; more only while more are held or have an open order."""
VALID = (Decimal(0), Decimal("0.5"), Decimal(1))


def valid_payouts(payouts: Mapping[str, Decimal]) -> bool:
    """Two tokens paying 1/0 or 0.5/0.5: anything else is not a resolution we settle on."""
    values = sorted(payouts.values())
    return len(values) == 2 and values in ([VALID[0], VALID[2]], [VALID[1], VALID[1]])


class Resolutions:
    """The one owner of what the daemon knows about resolved markets; see the module docstring."""

    def __init__(
        self,
        *,
        rules: MarketRules,
        positions: PositionBook,
        repos: Repositories,
        settle: Settlement,
        metrics: Metrics,
        source: MetadataSource | None = None,
        gamma_poll: GammaPoll | None = None,
        poll_interval_s: float = 60.0,
        on_tokens: Callable[[set[str]], None] | None = None,
        watch_interval_s: float = 1.0,
        max_resolved: int = MAX_RESOLVED,
    ) -> None:
        self.rules = rules
        self.positions = positions
        self.repos = repos
        self.settle = settle
        self.metrics = metrics
        self.source = source
        self.gamma_poll = gamma_poll
        self.poll_interval_s = poll_interval_s
        self.on_tokens = on_tokens
        self.watch_interval_s = watch_interval_s
        self._known: dict[str, dict[str, str]] = {}  # oldest first, stored in that order
        self._max_resolved = max(1, max_resolved)
        self._queue: asyncio.Queue[tuple[str, str, Payouts | None, str]] = asyncio.Queue(QUEUE_MAX)

    # --- state ---------------------------------------------------------------------------
    async def load(self) -> None:
        """Restore the resolutions stored by earlier runs (after the positions are loaded)."""
        raw = await self.repos.state.get(RESOLUTIONS_KEY)
        try:
            stored = json.loads(raw) if raw else {}
            for token, d in stored.items():
                self._apply_one(str(token), str(d["condition_id"]), Decimal(str(d["payout"])))
                self._known[str(token)] = {k: str(v) for k, v in d.items()}
        except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as e:
            log.error("resolutions_unreadable", error=str(e)[:200])
        self._forget_oldest()  # stored by a version with no bound, or a larger one
        self.metrics.redeemable_usd.set(float(self.positions.redeemable()))

    @property
    def known(self) -> int:
        """How many resolved tokens are remembered."""
        return len(self._known)

    def _forget_oldest(self) -> None:
        excess = len(self._known) - self._max_resolved
        if excess <= 0:
            return
        keep = self.tokens_of_interest()
        gone = [t for t in self._known if t not in keep][:excess]
        for token in gone:
            del self._known[token]
            self.positions.forget_payout(token)

    def payout(self, token_id: str) -> Decimal | None:
        d = self._known.get(token_id)
        return Decimal(d["payout"]) if d is not None else None

    def tokens_of_interest(self) -> set[str]:
        """Tokens with a position or an open order: what the feed must watch and the poll ask."""
        held = {p.token_id for p in self.positions.positions() if p.size > 0}
        return held | {o.token_id for o in self.positions.open_orders()}

    def tokens_to_watch(self) -> set[str]:
        """Tokens of interest whose market has not resolved (a resolved book never trades)."""
        return self.tokens_of_interest() - set(self._known)

    # --- inputs (synchronous: callbacks of the feeds) ------------------------------------
    def on_feed(self, condition_id: str, token_ids: list[str], winner: str | None) -> None:
        """The market feed's `market_resolved`. Without a usable winner the CLOB is asked."""
        if winner and winner in token_ids and len(token_ids) == 2:
            payouts = {t: Decimal(1) if t == winner else Decimal(0) for t in token_ids}
            self._put(("payouts", condition_id, payouts, "market_feed"))
        elif token_ids:
            self._put(("suspect", token_ids[0], None, "market_feed"))

    def suspect(self, token_id: str, source: str = "user_feed") -> None:
        """Something says the token's market resolved (an order `CANCELED_MARKET_RESOLVED`)."""
        if token_id and token_id not in self._known:
            self._put(("suspect", token_id, None, source))

    def _put(self, item: tuple[str, str, Payouts | None, str]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("resolution_queue_full", kind=item[0], source=item[3])

    # --- the service ---------------------------------------------------------------------
    async def run(self) -> None:
        """Watch the tokens of interest, handle feed reports, poll Gamma; until cancelled."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while True:
            if self.on_tokens is not None:
                self.on_tokens(self.tokens_to_watch())
            self.metrics.redeemable_usd.set(float(self.positions.redeemable()))
            try:
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self.poll_interval_s
                    await self.poll()
                try:
                    async with asyncio.timeout(self.watch_interval_s):
                        item = await self._queue.get()
                except TimeoutError:
                    continue
                await self._handle(item)
            except (TransientError, FeedError) as e:
                log.warning("resolution_check_failed", error=str(e)[:200])
            except Exception:  # the task boundary: log and keep watching
                log.exception("resolution_loop_failed")

    async def _handle(self, item: tuple[str, str, Payouts | None, str]) -> None:
        kind, key, payouts, source = item
        if kind == "payouts" and payouts is not None:
            await self.resolved(key, payouts, source)
        elif kind == "suspect" and key not in self._known and self.source is not None:
            metas = await self.source.market_meta(key)
            found = {m.token_id: m.payout for m in metas if m.payout is not None}
            if metas and len(found) == len(metas):
                await self.resolved(metas[0].condition_id, dict(found), "clob")
            else:
                log.info("resolution_not_confirmed", token_id=key, source=source)

    async def poll(self) -> None:
        """Ask Gamma about the markets of held tokens and open orders not known resolved."""
        if self.gamma_poll is None:
            return
        tokens = sorted(self.tokens_of_interest() - set(self._known))
        if not tokens:
            return
        for cid, payouts in await self.gamma_poll(tokens):
            await self.resolved(cid, payouts, "gamma")

    # --- acting on a resolution ----------------------------------------------------------
    async def resolved(
        self, condition_id: str, payouts: Mapping[str, Decimal], source: str
    ) -> bool:
        """Apply a resolution once; False if already known or not a settleable outcome."""
        new = {t: p for t, p in payouts.items() if t not in self._known}
        if not new:
            return False
        if not valid_payouts(payouts):
            log.warning("resolution_skipped", condition_id=condition_id, source=source)
            return False
        for token, pay in new.items():
            self._apply_one(token, condition_id, pay)
            self._known[token] = {
                "payout": str(pay),
                "condition_id": condition_id,
                "source": source,
            }
        self._forget_oldest()
        await self.repos.state.set(
            RESOLUTIONS_KEY,
            json.dumps(self._known),  # oldest first: a restart forgets in the same order
            audit=(
                "market_resolved",
                {"condition_id": condition_id, "payouts": {t: str(p) for t, p in new.items()}},
            ),
        )
        self.metrics.markets_resolved_total.labels(source).inc()
        self.metrics.redeemable_usd.set(float(self.positions.redeemable()))
        log.info(
            "market_resolved",
            condition_id=condition_id,
            source=source,
            payouts={t[:12]: str(p) for t, p in new.items()},
            redeemable=str(self.positions.redeemable()),
        )
        await self._cancel_open(set(new))
        return True

    def _apply_one(self, token: str, condition_id: str, payout: Decimal) -> None:
        self.rules.mark_resolved(token, condition_id, payout)
        self.positions.set_payout(token, payout)

    async def _cancel_open(self, tokens: set[str]) -> None:
        """The venue ended every resting order there: mark ours canceled in the journal."""
        venue_ids = []
        for o in self.positions.open_orders():
            if o.token_id in tokens:
                row = await self.repos.orders.get(o.client_order_id)
                if row is not None and row.venue_order_id is not None:
                    venue_ids.append(row.venue_order_id)
        if venue_ids:
            await self.settle.canceled(venue_ids)
