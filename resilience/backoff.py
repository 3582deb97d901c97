"""Jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random


def jittered(base_s: float, jitter: float, cap_s: float, rng: random.Random) -> float:
    """Return `base_s` spread uniformly by ±`jitter` (a fraction), never above `cap_s`.

    Jitter keeps many clients (or many of our own tasks) from retrying in lockstep.
    """
    spread = base_s * jitter
    return min(cap_s, max(0.0, base_s + rng.uniform(-spread, spread)))


def exponential(initial_s: float, multiplier: float, step: int, cap_s: float) -> float:
    """Return `initial_s * multiplier**step`, capped at `cap_s` (and safe from float overflow)."""
    try:
        return min(cap_s, initial_s * multiplier**step)
    except OverflowError:
        return cap_s


def _check_shape(initial_s: float, max_s: float, multiplier: float, jitter: float) -> None:
    if initial_s < 0 or max_s < initial_s:
        raise ValueError("need 0 <= initial_s <= max_s")
    if multiplier < 1.0:
        raise ValueError("multiplier must be >= 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be a fraction in [0, 1)")


class Backoff:
    """Produce growing, jittered delays for a reconnect loop; `reset()` after a good connection.

    Delay *k* (from 0) is `initial_s * multiplier**k` capped at `max_s`, spread by ±`jitter`
    and never above `max_s`. The first delay is at most `initial_s * (1 + jitter)`, so with
    `initial_s <= 0.8` a dropped socket is re-dialled within a second.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        *,
        rng: random.Random | None = None,
    ) -> None:
        _check_shape(initial_s, max_s, multiplier, jitter)
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._step = 0

    @property
    def attempts(self) -> int:
        """Return how many delays were handed out since the last reset."""
        return self._step

    def next(self) -> float:
        """Return the next delay in seconds and advance."""
        base = exponential(self.initial_s, self.multiplier, self._step, self.max_s)
        self._step += 1
        return jittered(base, self.jitter, self.max_s, self._rng)

    def reset(self) -> None:
        """Start again from `initial_s` (call once a connection has proved healthy)."""
        self._step = 0
