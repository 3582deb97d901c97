"""The exception tree. Each class says what the daemon *does* about it.

Adapters in `venue/` translate vendor errors into these (`raise X from e`); nothing outside
`venue/` catches an SDK or HTTP library exception directly.
"""

from __future__ import annotations

from enum import StrEnum


class RefusalSource(StrEnum):
    """Who refused an order: the label on `OrderRejected`, metrics and the audit log."""

    RULES = "rules"
    RISK = "risk"
    BREAKER = "breaker"
    HALTED = "halted"
    VENUE = "venue"


class PolydError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(PolydError):
    """Settings are invalid. The daemon refuses to start and exits with code 2.

    `problems` holds one human-readable line per problem; none of them contains a secret value.
    However hostile the input, what is kept is bounded: each line is cut at `MAX_LINE`
    characters, and past `MAX_LINES` lines a last one says how many were left out.
    """

    MAX_LINE = 300
    MAX_LINES = 50

    def __init__(self, problems: list[str]) -> None:
        # Up to MAX_LINES + 1 lines pass as they are, so bounded problems bound again unchanged.
        shown = problems if len(problems) <= self.MAX_LINES + 1 else problems[: self.MAX_LINES]
        lines = [" ".join(p.splitlines()) for p in shown]
        lines = [p if len(p) <= self.MAX_LINE else p[: self.MAX_LINE - 1] + "…" for p in lines]
        if len(shown) < len(problems):
            lines.append(f"({len(problems) - len(shown)} more problems not shown)")
        self.problems = lines
        super().__init__("; ".join(self.problems) if self.problems else "invalid configuration")


class AlreadyRunning(PolydError):
    """Another process holds what a daemon must have alone: its database's writer lock (another
    daemon runs on the same database) or its sidecar's address (`HTTP_HOST:HTTP_PORT`).

    The daemon exits at once with code 3 and one line saying which and who; it writes nothing.
    Restarting cannot help until the other process stops, so systemd does not retry it.
    """


class FatalError(PolydError):
    """Something a human must fix (bad credentials, banned address, corrupt database).

    The daemon stops trading and exits with code 1.
    """


class StorageError(PolydError):
    """The database refused a write (disk full, I/O error). Trading halts; nothing acked is lost."""


class ReportError(StorageError):
    """The database cannot be read (missing, not a polyd database, unreadable). Raised by the
    read-only reports (`storage.reports`) only: the operator sees the message; nothing is
    written."""


class DatabaseMissing(ReportError):
    """There is no database file at the configured path (the daemon has not run with it)."""


class TransientError(PolydError):
    """A failure that may pass on its own (HTTP 5xx, 425, dropped connection before sending).

    Reads and cancels are retried with backoff; an order is re-sent only as the *same signed
    payload* and only when the venue provably did not accept it (429/425/5xx answers).
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(TransientError):
    """The venue answered 429. Retried after `retry_after` (or backoff); counted as a wait."""


class VenueUnavailable(TransientError):
    """The venue is restarting (425), in cancel-only or post-only mode (503), or blocked us (403).

    New orders are held back by the circuit breaker; cancels keep being attempted.
    """


class OutcomeUnknown(PolydError):
    """An order may or may not have reached the venue (timeout, connection lost after sending).

    Never re-sign or re-send: the journal row goes to UNKNOWN and the order is looked up by its
    locally computed hash until the venue says what happened.
    """

    def __init__(self, message: str, *, order_id: str | None = None) -> None:
        self.order_id = order_id
        super().__init__(message)


class AccountLimitReached(PolydError):
    """An order would take its venue account past a per-account cap counted over every daemon
    trading it (`ACCOUNT_SHARED`). Nothing was sent: its PENDING row (and the strategy state it
    would consume) was rolled back, and it is refused with source "risk" (a REJECTED row)."""


class AccountHalted(AccountLimitReached):
    """The order's venue account is halted (`account_halts`, written by a daemon on the account
    that halted with `ACCOUNT_SHARED`): as `AccountLimitReached`, refused with source "halted"."""


class OrderRejected(PolydError):
    """The order was refused — by our own market rules or risk checks, or by the venue (4xx).

    Not retried. The journal row becomes REJECTED with `reason`, and the refusal is audited.
    `source` is `"rules"`, `"risk"`, `"breaker"`, `"halted"` or `"venue"`.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: RefusalSource | str = RefusalSource.VENUE,
        status: int | None = None,
    ) -> None:
        self.reason = reason
        self.source = RefusalSource(source)
        self.status = status
        super().__init__(reason)


class DuplicateOrder(OrderRejected):
    """The venue already holds an order with this signed payload's hash (it refuses a second
    copy of the same bytes). Not a failure of the order: look it up by its hash and settle
    from what the venue says. Raised by the venue adapter, which alone reads the venue's text.
    """

    def __init__(self, reason: str, *, order_id: str | None = None, status: int | None = None):
        self.order_id = order_id
        super().__init__(reason, source=RefusalSource.VENUE, status=status)


class FeedError(PolydError):
    """A websocket frame or REST payload could not be understood. Counted, logged, skipped."""


class IllegalTransition(PolydError):
    """A journal row was asked to move between statuses that the order life cycle forbids.

    The write is refused and the row keeps its current status; this is a bug to investigate.
    """
