"""Every repository over one database (`Repositories`), and the names they are imported by.

Each repository lives in the module that owns its tables: `storage.journal` (orders),
`storage.fills` (fills and positions), `storage.cursors` (cursors and seen ids),
`storage.audit` (the audit log), `storage.state` (daemon key/value state),
`storage.copy_intents` (the copy trader's ledger), `storage.strategy_state` (the sniper's
durable slots and take-profits), `storage.accounts` (venue accounts shared by daemons) and
`storage.leases` (which daemon trades which strategy).

Every write goes through `Database.write`, so it is durable when the await returns. Writes that
must be atomic together (a fill and the position it moves; a transition and its audit entry) run
as one job.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import Position
from storage.accounts import AccountRepository
from storage.audit import Audit, AuditEntry, AuditLog, now_iso
from storage.copy_intents import COPY_STRATEGY, CopyIntent, CopyIntentRepository
from storage.cursors import CursorRepository
from storage.db import Database
from storage.fills import FillRepository
from storage.journal import NON_TERMINAL_SQL, JournalRow, OrderEvent, OrderJournal, OrderNotFound
from storage.keys import DEFAULT_DAEMON_ID
from storage.leases import LeaseRepository
from storage.market_names import MarketNameRepository
from storage.state import StateRepository
from storage.strategy_state import SniperStateRepository

__all__ = [
    "COPY_STRATEGY",
    "NON_TERMINAL_SQL",
    "Audit",
    "AuditEntry",
    "AuditLog",
    "CopyIntent",
    "CopyIntentRepository",
    "CursorRepository",
    "FillRepository",
    "JournalRow",
    "OrderEvent",
    "OrderJournal",
    "OrderNotFound",
    "Repositories",
    "SniperStateRepository",
    "StateRepository",
    "now_iso",
]


@dataclass(frozen=True)
class Repositories:
    """Every repository over one database, built once by the orchestrator."""

    db: Database
    orders: OrderJournal
    fills: FillRepository
    cursors: CursorRepository
    audit: AuditLog
    state: StateRepository
    copy_intents: CopyIntentRepository
    sniper_state: SniperStateRepository
    names: MarketNameRepository
    accounts: AccountRepository
    leases: LeaseRepository
    daemon_id: str = DEFAULT_DAEMON_ID
    """The daemon these repositories write for: its orders, its reconciliation, its trading
    state and fills cursor (`storage.keys.daemon_key`), when several daemons share a database."""

    @classmethod
    def over(cls, db: Database, *, daemon_id: str = DEFAULT_DAEMON_ID) -> Repositories:
        return cls(
            db=db,
            daemon_id=daemon_id,
            orders=OrderJournal(db=db, daemon_id=daemon_id),
            fills=FillRepository(db=db),
            cursors=CursorRepository(db=db),
            audit=AuditLog(db=db),
            state=StateRepository(db=db),
            copy_intents=CopyIntentRepository(db=db),
            sniper_state=SniperStateRepository(db=db),
            names=MarketNameRepository(db=db),
            accounts=AccountRepository(db=db),
            leases=LeaseRepository(db=db),
        )

    async def own_positions(self) -> tuple[list[Position], frozenset[str]]:
        """The positions of this daemon's book (flat ones too), and the strategies left out of
        it as another daemon's (`LeaseRepository.held_elsewhere`): with several daemons on one
        database, each book holds its own strategies and the unattributed holdings."""
        others = await self.leases.held_elsewhere(self.daemon_id)
        return await self.fills.positions(include_flat=True, exclude_strategies=others), others
