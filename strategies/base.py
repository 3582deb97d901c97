"""The Strategy contract: strategies decide and emit `OrderRequest`s; only the executor trades."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from models import OrderRequest, OrderResult, Position


@runtime_checkable
class OrderSink(Protocol):
    """Where a strategy sends orders. The executor implements it; tests may use a recorder."""

    async def submit(self, request: OrderRequest) -> OrderResult:
        """Validate, journal, send and return the outcome of `request`."""
        ...


@runtime_checkable
class PositionSource(Protocol):
    """Our current holdings, as the executor knows them (journaled fills), per strategy.

    A strategy reads only its own holding: what its orders bought and have not sold. Shares
    another strategy bought, or that no order of ours explains, are not its to sell.
    """

    def position(self, token_id: str, *, strategy: str) -> Position:
        """Return `strategy`'s position in `token_id` (size 0 if none)."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A long-lived task that watches data and emits `OrderRequest`s into an `OrderSink`.

    `run()` returns only when the strategy has nothing more to do, and raises only on a bug: the
    orchestrator's supervisor restarts it with backoff and halts it after repeated crashes.
    """

    name: str

    async def run(self) -> None:
        """Run until cancelled."""
        ...
