"""The health-check verdict every component reports to the sidecar (no web framework here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """One health check's verdict. `detail` must hold no secret."""

    ok: bool
    detail: Any = None


CheckFn = Callable[[], CheckResult | Awaitable[CheckResult]]
