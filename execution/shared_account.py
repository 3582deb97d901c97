"""This daemon's part in a venue account other daemons trade too (`ACCOUNT_SHARED=true`).

The trading guard halts the account when it halts and clears the account's halt when it
resumes; reads its daily loss limit against the account's PnL of the day (this daemon's own,
live, plus the other daemons' as they last wrote theirs); and shows a halt another daemon put
on the account as its own trading state (HALTED, reason "account halted by daemon ..."). What
makes the halt binding is not this view but the check every PENDING row runs under the
account's lock (`storage.accounts.account_check`): once a halt has committed, no order of any
daemon on the account is journaled, so none is sent.

`sync()` (once a second, `TradingGuard.run_account_sync`) writes this daemon's row of the day
when its PnL changed and reads the account's halt and the other daemons' PnL. This daemon's PnL
is over its own strategies only (those it leased: `own`), so a position is counted by the one
daemon that trades it, measured from the first look after 00:00 UTC (the baseline, kept in the
row so a restart the same day goes on from it).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from execution.positions import PositionBook
from models import ZERO, utc_day
from observability.health import CheckResult
from storage.accounts import AccountRepository, halted_text


class SharedAccount:
    """The account's halt and daily PnL as this daemon last synced them, and its own PnL."""

    def __init__(
        self, *, repo: AccountRepository, account: str, daemon_id: str, positions: PositionBook
    ) -> None:
        self._repo = repo
        self.account = account.lower()
        self.daemon_id = daemon_id
        self._positions = positions
        self.strategies: frozenset[str] = frozenset()
        self.halted_by: str | None = None
        self.halt_reason = ""
        self.others_pnl = ZERO  # the other daemons' rows of `_others_day`, summed
        self._others_day: str | None = None
        self._day: str | None = None
        self._baseline = ZERO
        self._written: tuple[str, Decimal, Decimal] | None = None
        self._restored = False  # today's baseline came from this daemon's row

    @property
    def halt(self) -> str | None:
        """The reason to show for the account's halt, or None if it is not halted."""
        if self.halted_by is None:
            return None
        return halted_text(self.halted_by, self.halt_reason)

    def own(self, strategies: Iterable[str]) -> None:
        """The strategies this daemon trades (leased): its PnL is theirs. A baseline restored
        from today's row stays; otherwise it is taken over them at the next look."""
        self.strategies = frozenset(strategies)
        if not self._restored:
            self._day = None

    def _total(self) -> Decimal:
        book = self._positions
        return sum(
            (book.realized(strategy=s) + book.unrealized(strategy=s) for s in self.strategies),
            ZERO,
        )

    def own_pnl(self, day: str | None = None) -> Decimal:
        """This daemon's PnL of `day` (today) over its own strategies."""
        day = day or utc_day()
        total = self._total()
        if self._day != day:
            self._day, self._baseline = day, total
        return total - self._baseline

    def daily_pnl(self) -> Decimal:
        """The account's PnL of today: this daemon's now, the others' as last synced."""
        day = utc_day()
        others = self.others_pnl if self._others_day == day else ZERO
        return self.own_pnl(day) + others

    def health(self) -> CheckResult:
        """The `account` check: ok unless the account is halted; today's PnL of the account
        (this daemon's own now, the others' as last synced) for operators to read."""
        return CheckResult(
            self.halted_by is None,
            {
                "account": self.account,
                "halted": self.halt or "",
                "daily_pnl": str(self.daily_pnl()),
                "own_daily_pnl": str(self.own_pnl()),
                "strategies": sorted(self.strategies),
            },
        )

    async def load(self) -> None:
        """Read the account's halt and, if this daemon wrote a row today, its baseline."""
        day = utc_day()
        view = await self._repo.view(self.account, day, self.daemon_id)
        if view.own_baseline is not None:
            self._day, self._baseline = day, view.own_baseline
            self._written = (day, ZERO, view.own_baseline)  # rewritten at the first sync
            self._restored = True
        self._take(day, view.halted_by, view.halt_reason, view.others_pnl)

    async def sync(self) -> None:
        """Write this daemon's PnL of today if it changed; read the account's halt and the other
        daemons' PnL."""
        day = utc_day()
        pnl = self.own_pnl(day)
        row = (day, pnl, self._baseline)
        if row != self._written:
            await self._repo.record_pnl(self.account, day, self.daemon_id, pnl, self._baseline)
            self._written = row
        view = await self._repo.view(self.account, day, self.daemon_id)
        self._take(day, view.halted_by, view.halt_reason, view.others_pnl)

    def _take(self, day: str, halted_by: str | None, reason: str, others: Decimal) -> None:
        self.halted_by, self.halt_reason = halted_by, reason
        self._others_day, self.others_pnl = day, others

    async def halt_account(self, reason: str) -> None:
        """Halt the account for every daemon on it (a halt already there is kept)."""
        await self._repo.halt(self.account, self.daemon_id, reason)
        if self.halted_by is None:
            self.halted_by, self.halt_reason = self.daemon_id, reason

    async def resume_account(self) -> None:
        """Clear the account's halt, for every daemon on it."""
        await self._repo.resume(self.account, self.daemon_id)
        self.halted_by, self.halt_reason = None, ""
