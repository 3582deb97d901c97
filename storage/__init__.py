"""Durable storage: the aiosqlite database, its migrations, the repositories over it, and the
read-only reports operators see (`storage.reports`)."""

from storage.db import Database, load_migrations
from storage.keys import TRADING_STATE_KEY
from storage.repositories import (
    AuditEntry,
    AuditLog,
    CursorRepository,
    FillRepository,
    JournalRow,
    OrderEvent,
    OrderJournal,
    OrderNotFound,
    Repositories,
    StateRepository,
    now_iso,
)

__all__ = [
    "TRADING_STATE_KEY",
    "AuditEntry",
    "AuditLog",
    "CursorRepository",
    "Database",
    "FillRepository",
    "JournalRow",
    "OrderEvent",
    "OrderJournal",
    "OrderNotFound",
    "Repositories",
    "StateRepository",
    "load_migrations",
    "now_iso",
]
