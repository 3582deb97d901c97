"""Time as a collaborator: a `Clock` protocol, the real clock, and a fake one for tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Read monotonic time and sleep; injected so timing logic is testable without waiting."""

    def monotonic(self) -> float:
        """Return seconds from an arbitrary fixed origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for `seconds`."""
        ...


class SystemClock:
    """Use the event loop's real time: `time.monotonic` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop (never blocks it)."""
        await asyncio.sleep(seconds)


class FakeClock:
    """Advance time instantly on `sleep` and record every requested delay.

    `sleep` still yields to the event loop once, so other tasks run and a cancellation
    delivered mid-sleep raises `CancelledError` just as with a real sleep. Concurrent sleepers
    each move time forward to their own deadline; time never goes backwards.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """Return the fake current time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without sleeping."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record `seconds`, yield once, then jump to the deadline."""
        self.sleeps.append(seconds)
        deadline = self._now + max(seconds, 0.0)
        await asyncio.sleep(0)
        self._now = max(self._now, deadline)
