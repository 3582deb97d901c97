"""`LoopShare`: a burst of CPU slices on the loop takes turns, so timers still fire between them."""

from __future__ import annotations

import asyncio
import time

import pytest

from venue.clob.pacing import LoopShare

PER_TICK = 2


async def test_a_lone_caller_never_waits() -> None:
    share = LoopShare(per_tick=2)
    for _ in range(5):
        await share.turn()
        await asyncio.sleep(0.001)  # a new loop iteration each time


async def test_a_burst_takes_turns_in_order_and_timers_fire_between_them() -> None:
    share = LoopShare(per_tick=PER_TICK)
    order: list[int] = []
    seen: list[str] = []  # "s" for a slice, "t" for a tick of the timer task, in run order
    stop = False

    async def slice_(i: int) -> None:
        await share.turn()
        order.append(i)
        seen.append("s")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.0005:  # 0.5 ms of CPU, as a signature might
            pass

    async def ticker() -> None:
        while not stop:
            await asyncio.sleep(0.001)
            seen.append("t")

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(*(slice_(i) for i in range(200)))  # 100 ms of CPU in all
    stop = True
    await tick
    assert order == list(range(200))
    # Unshared, all 200 slices would run back to back and the timer once, after them. Shared,
    # each loop iteration runs at most two slices (>= 1 ms of CPU), so the 1 ms timer is due at
    # every iteration's end: the timer task runs between every few slices. Counted, not timed:
    # a slower or loaded machine only makes the timer more due.
    runs = [len(r) for r in "".join(seen).split("t")]
    assert max(runs) <= 3 * PER_TICK, runs
    assert seen.count("t") >= 200 // (3 * PER_TICK)


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    share = LoopShare(per_tick=1)
    first, waiting, after = (asyncio.create_task(share.turn()) for _ in range(3))
    await asyncio.sleep(0)  # all three asked in the same iteration: the first got the turn
    assert first.done() and not waiting.done() and not after.done()
    waiting.cancel()
    await asyncio.wait_for(after, 1.0)
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_a_share_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="per_tick"):
        LoopShare(per_tick=0)
