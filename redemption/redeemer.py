"""The redeemer: find resolved positions, redeem each market once, prove the payout, settle.

One pass (`run`):

1. Resume the wallet's unfinished redemptions (SENDING, SENT) — looked up, never re-signed.
2. Ask the Data API for the funder's `redeemable=true` positions; for each market, Gamma for its
   version and neg-risk flag, then the chain for the payout vector and the wallet's balances.
3. Balances already zero → the auto-redeem operator (or a human) redeemed: journal
   ALREADY_REDEEMED, settle the positions, send nothing.
4. Otherwise build the call (`redemption.plan`), sign it, journal it as SENDING with its signed
   payload, send, journal SENT, poll to confirmation.
5. Check the pUSD balance rose: a winning position that paid nothing is ZERO_PAYOUT (an alert:
   the silent trap of the wrong collateral); a payout settles the positions (each strategy's
   shares sold at the payout, PnL realized) in the same transaction as the REDEEMED row.

Exactly once: the partial unique index of `redemptions` allows one unfinished redemption per
(wallet, market), and a SENDING row is resumed by lookup, so a `kill -9` at any point cannot
produce a second transaction for the same redemption.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
import structlog

from errors import FeedError, TransientError
from models import Position, Side
from observability.metrics import Metrics
from redemption.plan import UNIT, Candidate, calls_for, confirm
from redemption.senders import Sender, SendRefused
from storage.fills import FillRepository
from storage.redemptions import Redemption, RedemptionConflict, RedemptionRepository
from venue.chain import contracts as cc
from venue.chain.rpc import ChainError, RpcClient
from venue.chain.sources import MarketKind, market_kind, redeemable_positions

log = structlog.get_logger("redemption")

Planner = Callable[[Candidate, bool], list[cc.Call]]
Alert = Callable[[str, str, str], object]
"""`(kind, key, text)`: the operator notifier's `notify` (never blocks)."""
MAX_FAILED = 3
"""FAILED redemptions of one market after which passes stop trying it (a human looks)."""


@dataclass
class Report:
    """What one pass did, per market: `outcome` is one of planned (dry run), redeemed,
    zero_payout, failed, already_redeemed, unknown, refused, pending, skipped."""

    lines: list[dict[str, str]] = field(default_factory=list)

    def add(self, condition_id: str, outcome: str, **detail: object) -> None:
        self.lines.append(
            {
                "condition_id": condition_id,
                "outcome": outcome,
                **{k: str(v) for k, v in detail.items()},
            }
        )

    def outcomes(self) -> list[str]:
        return [line["outcome"] for line in self.lines]


class Redeemer:
    """Redeems one wallet's resolved positions; see the module docstring."""

    def __init__(
        self,
        *,
        wallet: str,
        sender: Sender,
        rpc: RpcClient,
        repo: RedemptionRepository,
        fills: FillRepository,
        session: aiohttp.ClientSession,
        data_url: str,
        gamma_url: str,
        metrics: Metrics | None = None,
        on_positions: Callable[[list[Position]], None] | None = None,
        alert: Alert | None = None,
        poll_interval_s: float = 2.0,
        confirm_timeout_s: float = 120.0,
        planner: Planner | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        addresses: cc.Addresses = cc.ADDRESSES,
    ) -> None:
        self.wallet = wallet.lower()
        self.sender = sender
        self.rpc = rpc
        self.repo = repo
        self.fills = fills
        self.session = session
        self.data_url = data_url
        self.gamma_url = gamma_url
        self.metrics = metrics
        self.on_positions = on_positions
        self.alert = alert
        self.poll_interval_s = poll_interval_s
        self.confirm_timeout_s = confirm_timeout_s
        self.planner: Planner = planner or (
            lambda c, one: calls_for(c, one_tx_per_call=one, a=addresses)
        )
        self.sleep = sleep
        self.a = addresses

    # --- the pass ---------------------------------------------------------------------------
    async def run(self, *, dry_run: bool = False) -> Report:
        report = Report()
        if not dry_run:
            for row in await self.repo.open(self.wallet):
                await self._resume(row, report)
        rows = await redeemable_positions(self.session, self.data_url, self.wallet)
        sizes: dict[str, dict[str, Decimal]] = {}
        for r in rows:
            sizes.setdefault(r.condition_id, {})[r.token_id] = r.size
        for cid in sorted(sizes):
            try:
                await self._market(cid, sizes[cid], report, dry_run=dry_run)
            except (TransientError, FeedError, ChainError) as e:
                log.warning("redemption_market_failed", condition_id=cid, error=str(e)[:200])
                report.add(cid, "skipped", why=str(e)[:200])
        return report

    async def _market(
        self, cid: str, sizes: dict[str, Decimal], report: Report, *, dry_run: bool
    ) -> None:
        statuses = await self.repo.statuses(self.wallet, cid)
        if statuses.keys() & {"SENDING", "SENT", "UNKNOWN"}:
            report.add(cid, "pending", why="an unfinished redemption is journaled")
            return
        if "ZERO_PAYOUT" in statuses:
            report.add(cid, "skipped", why="an earlier redemption paid nothing: needs a human")
            return
        if statuses.get("FAILED", 0) >= MAX_FAILED:
            why = f"{statuses['FAILED']} redemptions failed: needs a human (see the audit log)"
            report.add(cid, "skipped", why=why)
            return
        market = await market_kind(self.session, self.gamma_url, cid)
        if market is None:
            report.add(cid, "skipped", why="Gamma does not list the market")
            return
        cand = await confirm(self.rpc, self.wallet, market, self.a)
        if cand is None:
            report.add(cid, "skipped", why="not resolved on chain yet")
            return
        if not any(cand.balances):
            if statuses.keys() & {"REDEEMED", "ALREADY_REDEEMED"}:
                return  # done earlier; the Data API index has not caught up
            await self._already_redeemed(cand, sizes, report, dry_run=dry_run)
            return
        calls = self.planner(cand, self.sender.one_call_per_tx)
        if dry_run:
            report.add(
                cid,
                "planned",
                kind=market.kind,
                shares=cand.shares,
                expected=cand.expected_payout,
                calls=len(calls),
            )
            return
        before = await self.pusd()
        shares = {
            t: (Decimal(b) / UNIT, p)
            for t, b, p in zip(market.token_ids, cand.balances, cand.payouts, strict=True)
            if b > 0
        }
        try:
            prepared = await self.sender.prepare(calls)
        except SendRefused as e:
            # Nothing was signed or sent: logged and counted, not journaled (a POL floor that
            # holds for days must not add a row every pass).
            log.error("redemption_refused", condition_id=cid, error=str(e))
            self._count("refused")
            self._alert("redemption_refused", cid, f"redemption of {cid} refused: {e}")
            report.add(cid, "refused", why=str(e))
            return
        try:
            rid = await self._begin(
                cand,
                shares,
                before,
                "SENDING",
                payload=prepared.payload,
                tx_hash=prepared.tx_hash,
                nonce=prepared.nonce,
            )
        except RedemptionConflict as e:
            report.add(cid, "pending", why=str(e))
            return
        try:
            sent = await self.sender.send(prepared.payload, prepared.tx_hash)
        except SendRefused as e:
            await self.repo.transition(rid, "FAILED", error=str(e)[:500])
            self._count("failed")
            report.add(cid, "failed", why=str(e))
            return
        except TransientError as e:
            log.warning("redemption_send_unknown", condition_id=cid, error=str(e))
            report.add(cid, "pending", why="send outcome unknown: looked up on the next pass")
            return
        await self.repo.transition(rid, "SENT", tx_hash=sent.tx_hash, relayer_id=sent.relayer_id)
        await self._follow(await self.repo.get(rid), report)

    async def _begin(
        self,
        cand: Candidate,
        shares: dict[str, tuple[Decimal, Decimal]],
        before: Decimal,
        status: str,
        *,
        payload: str | None = None,
        tx_hash: str | None = None,
        nonce: str | None = None,
        error: str | None = None,
    ) -> int:
        return await self.repo.begin(
            wallet=self.wallet,
            wallet_type=self.sender.wallet_type,
            condition_id=cand.condition_id,
            kind=cand.market.kind,
            shares=shares,
            expected_payout=cand.expected_payout,
            balance_before=before,
            status=status,
            payload=payload,
            tx_hash=tx_hash,
            relayer_nonce=nonce,
            error=error,
        )

    async def _already_redeemed(
        self, cand: Candidate, sizes: dict[str, Decimal], report: Report, *, dry_run: bool
    ) -> None:
        """The chain holds none of what the Data API says we hold: someone (the auto-redeem
        operator, most likely) redeemed it. Nothing is sent; the positions are settled."""
        m: MarketKind = cand.market
        shares = {
            t: (sizes.get(t, Decimal(0)), p)
            for t, p in zip(m.token_ids, cand.payouts, strict=True)
            if sizes.get(t)
        }
        expected = sum((s * p for s, p in shares.values()), Decimal(0))
        report.add(m.condition_id, "already_redeemed", expected=expected)
        if dry_run:
            return
        log.info("redemption_already_done", condition_id=m.condition_id, expected=str(expected))
        rid = await self._begin(cand, shares, await self.pusd(), "ALREADY_REDEEMED")
        await self._settle(rid, shares, expected, status="ALREADY_REDEEMED")
        self._count("already_redeemed")

    # --- follow-up --------------------------------------------------------------------------
    async def _resume(self, row: Redemption, report: Report) -> None:
        if row.status == "UNKNOWN":
            report.add(row.condition_id, "unknown", why=row.error or "")
            return
        if row.status == "SENDING":
            verdict, sent, why = await self.sender.resume(row)
            log.warning("redemption_resumed", id=row.id, verdict=verdict, why=why)
            if verdict == "unknown":
                await self.repo.transition(row.id, "UNKNOWN", error=why)
                self._count("unknown")
                self._alert(
                    "redemption_unknown",
                    row.condition_id,
                    f"redemption {row.id} of {row.condition_id}: outcome unknown ({why}); check the"
                    " relayer and the wallet before redeeming it again",
                )
                report.add(row.condition_id, "unknown", why=why)
                return
            if verdict == "failed" or sent is None:
                await self.repo.transition(row.id, "FAILED", error=why)
                self._count("failed")
                report.add(row.condition_id, "failed", why=why)
                return
            await self.repo.transition(
                row.id, "SENT", tx_hash=sent.tx_hash, relayer_id=sent.relayer_id
            )
            row = await self.repo.get(row.id)
        await self._follow(row, report)

    async def _follow(self, row: Redemption, report: Report) -> None:
        """Poll a SENT redemption to its end, then prove the payout."""
        waited = 0.0
        while True:
            state, tx_hash, why = await self.sender.outcome(row.tx_hash, row.relayer_id)
            if state != "pending":
                break
            if waited >= self.confirm_timeout_s:
                report.add(row.condition_id, "pending", why=f"not confirmed after {waited:.0f} s")
                return
            await self.sleep(self.poll_interval_s)
            waited += self.poll_interval_s
        if state == "failed":
            log.error("redemption_failed", id=row.id, condition_id=row.condition_id, error=why)
            await self.repo.transition(row.id, "FAILED", tx_hash=tx_hash, error=why[:500])
            self._count("failed")
            report.add(row.condition_id, "failed", why=why)
            return
        after = await self.pusd()
        rose = after - row.balance_before
        if row.expected_payout > 0 and rose <= 0:
            log.error(
                "redemption_zero_payout",
                id=row.id,
                condition_id=row.condition_id,
                expected=str(row.expected_payout),
                tx_hash=tx_hash,
                hint="a winning position paid nothing: wrong contract or collateral",
            )
            await self.repo.transition(
                row.id,
                "ZERO_PAYOUT",
                tx_hash=tx_hash,
                payout=rose,
                error=f"expected {row.expected_payout} pUSD, balance rose {rose}",
            )
            self._count("zero_payout")
            self._alert(
                "redemption_zero_payout",
                row.condition_id,
                f"redemption {row.id} of {row.condition_id} paid nothing (expected"
                f" {row.expected_payout} pUSD, tx {tx_hash}): wrong contract or collateral",
            )
            report.add(row.condition_id, "zero_payout", expected=row.expected_payout, rose=rose)
            return
        if rose != row.expected_payout:
            log.warning(
                "redemption_payout_differs",
                id=row.id,
                expected=str(row.expected_payout),
                rose=str(rose),
            )
        if tx_hash and tx_hash != row.tx_hash:
            await self.repo.transition(row.id, "SENT", tx_hash=tx_hash)
        await self._settle(row.id, row.shares, rose)
        self._count("redeemed")
        log.info("redemption_redeemed", id=row.id, condition_id=row.condition_id, payout=str(rose))
        report.add(row.condition_id, "redeemed", payout=rose, tx_hash=tx_hash or "")

    async def _settle(
        self,
        rid: int,
        shares: dict[str, tuple[Decimal, Decimal]],
        payout: Decimal,
        *,
        status: str = "REDEEMED",
    ) -> None:
        """Each strategy's holding of each redeemed token is sold at the payout (no fee)."""
        moved: list[Position] = []
        for token, (_, per_share) in shares.items():
            for p in await self.fills.positions_in(token):
                if p.size > 0:
                    moved.append(p.apply(Side.SELL, per_share, p.size))
        await self.repo.settle(rid, payout=payout, positions=moved, status=status)
        if self.on_positions is not None and moved:
            self.on_positions(moved)

    async def pusd(self) -> Decimal:
        """The wallet's pUSD balance on chain."""
        raw = await self.rpc.call(cc.erc20_balance_of(self.a.collateral, self.wallet))
        return Decimal(cc.decode_uint(raw)) / UNIT

    def _alert(self, kind: str, condition_id: str, text: str) -> None:
        if self.alert is not None:
            self.alert(kind, f"{kind}:{condition_id}", text)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.redemptions_total.labels(outcome).inc()
