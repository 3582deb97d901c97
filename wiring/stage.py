"""What a builder in `wiring/` hands the orchestrator: one typed stage of the daemon.

A stage is plain data. The orchestrator folds each stage into its life cycle in build order:
health checks and control routes are registered, `startup` steps run (before `/health` turns ok),
services and strategies start in its TaskGroup, and at stop drainers run first and closers run in
reverse build order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from observability.health import CheckResult
from observability.sidecar import ControlFn
from strategies.base import Strategy

Service: TypeAlias = tuple[str, Callable[[], Coroutine[Any, Any, None]]]
"""A named long-lived task, started in the orchestrator's TaskGroup and cancelled at stop."""
Step: TypeAlias = tuple[str, Callable[[], Awaitable[None]]]
"""A named one-shot step (start-up, drain, close), run under a deadline."""
Check: TypeAlias = tuple[str, Callable[[], CheckResult]]
"""A named `/health` check; called on every request, so it must be cheap."""
Control: TypeAlias = tuple[str, ControlFn]
"""A bearer-token protected `POST /<action>` route of the sidecar."""


@dataclass
class Stage:
    """The parts of one stage the orchestrator runs, each list in the order it was built."""

    startup: list[Step] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    strategies: list[Strategy] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    drainers: list[Step] = field(default_factory=list)
    closers: list[Step] = field(default_factory=list)
