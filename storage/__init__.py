"""Durable storage: the aiosqlite database, its migrations, the repositories over it (one module
per concern, gathered by `storage.repositories.Repositories`), and the read-only reports
operators see (`storage.reports`)."""

from storage.audit import AuditEntry, AuditLog, now_iso
from storage.cursors import CursorRepository
from storage.db import Database, load_migrations
from storage.fills import FillRepository
from storage.journal import JournalRow, OrderEvent, OrderJournal, OrderNotFound
from storage.keys import TRADING_STATE_KEY
from storage.repositories import Repositories
from storage.state import StateRepository

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
