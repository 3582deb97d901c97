"""Batch sends: several signed orders in one `POST /orders` (up to 15 each), never retried.

An order whose batch failed in transit is looked up by its hash like any order whose answer was
lost; one the batch answer refused or accepted is settled like a single send's.
"""

from __future__ import annotations

import asyncio

from errors import AccountLimitReached, OrderRejected, OutcomeUnknown, RefusalSource, TransientError
from execution.ports import Broker, Prepared
from execution.reconciler import Reconciler
from execution.settlement import Settlement
from execution.tracker import OrderTracker
from models import OrderResult
from resilience import CircuitBreaker

BATCH_MAX = 15


class BatchSender:
    """Journal a set of admitted orders PENDING, then send them in batches of `BATCH_MAX`."""

    def __init__(
        self,
        *,
        broker: Broker,
        breaker: CircuitBreaker,
        tracker: OrderTracker,
        settle: Settlement,
        reconciler: Reconciler,
    ) -> None:
        self.broker = broker
        self.breaker = breaker
        self.tracker = tracker
        self.settle = settle
        self.reconciler = reconciler

    async def journal_and_send(self, ready: list[Prepared]) -> list[OrderResult]:
        out: list[OrderResult] = []

        async def journal(p: Prepared) -> bool:
            try:
                await self.tracker.journal_pending(p)
            except AccountLimitReached as e:  # another daemon on the account took the room
                out.append(await self.settle.over_account_cap(p.request, e))
                return False
            return True

        journaled = await asyncio.gather(*(journal(p) for p in ready))
        ready = [p for p, ok in zip(ready, journaled, strict=True) if ok]
        for i in range(0, len(ready), BATCH_MAX):
            out.extend(await self._send(ready[i : i + BATCH_MAX]))
        return out

    async def _send(self, chunk: list[Prepared]) -> list[OrderResult]:
        venue = RefusalSource.VENUE
        if not self.breaker.allow():
            why = "circuit breaker open"
            return [
                await self.settle.rejected(p.request, RefusalSource.BREAKER, why) for p in chunk
            ]
        try:
            items = await self.broker.send_batch(chunk)
        except OrderRejected as e:
            self.breaker.record_success()
            return [await self.settle.rejected(p.request, venue, e.reason) for p in chunk]
        except OutcomeUnknown as e:
            self.breaker.record_failure()
            return [await self.reconciler.outcome_unknown(p, str(e)) for p in chunk]
        except TransientError as e:
            self.breaker.record_failure()
            return [await self.reconciler.after_errors(p, e) for p in chunk]
        self.breaker.record_success()
        out: list[OrderResult] = []
        for p, item in zip(chunk, items, strict=True):
            if isinstance(item, OrderRejected):
                out.append(await self.settle.rejected(p.request, venue, item.reason))
            elif isinstance(item, OutcomeUnknown):
                out.append(await self.reconciler.outcome_unknown(p, str(item)))
            else:
                out.append(await self.settle.acknowledged(p.request, item))
        return out
