"""Durable storage: the aiosqlite database, its migrations and the repositories over it."""

from storage.db import Database, load_migrations
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
