"""Share the event loop between CPU slices on it: at most `per_tick` slices per loop iteration.

polyd signs orders on the event loop (one slice is ~0.1-0.2 ms: cheaper than a thread hand-off).
One order at a time that is nothing; but a burst of hundreds of `prepare` calls started together
would each run to completion in the same loop iteration and hold the loop for all of them (500
orders: ~100 ms), starving timers and sockets. `LoopShare.turn()` lets `per_tick` slices run per
iteration and queues the rest in arrival order (FIFO, no spinning): between two batches the loop
serves its timers and I/O. A lone caller never waits.
"""

from __future__ import annotations

import asyncio
from collections import deque


class LoopShare:
    """At most `per_tick` turns per event-loop iteration; later callers wait their turn in order."""

    def __init__(self, per_tick: int = 2) -> None:
        if per_tick < 1:
            raise ValueError("per_tick must be at least 1")
        self._per_tick = per_tick
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    async def turn(self) -> None:
        """Return when the caller may run one slice on the loop (now if this iteration has room)."""
        if self._used < self._per_tick and not self._waiters:
            self._used += 1
            self._schedule()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._schedule()
        await fut  # the turn was counted when it was handed out (`_tick`)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        """Runs once per loop iteration while there is work: a fresh budget, handed out in order."""
        self._scheduled = False
        self._used = 0
        while self._waiters and self._used < self._per_tick:
            fut = self._waiters.popleft()
            if not fut.done():  # a cancelled waiter gives its turn away
                fut.set_result(None)
                self._used += 1
        if self._waiters or self._used:
            self._schedule()
