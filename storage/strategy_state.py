"""Durable sniper state: per-(rule, token) slots and the take-profits still to send.

Owns the `sniper_slots` and `sniper_take_profits` tables (migration `strategy_state`).

A slot counts the entries a rule made on a token for the life of the rule, whether the rule is
armed there, and when it last fired (wall clock, so a cooldown survives a restart). The counting
write (`fired`) is not run here: it is handed to the executor, which runs it in the transaction
that journals the order's PENDING row (`storage.journal.StateWrite`), so the slot and the order
are durable together. A refusal gives the entry back (`give_back`), only if that same order was
the one counted, so a refusal that came before any PENDING row changes nothing.

A rule's identity is its name within its sniper: every row carries the sniper's name
(`SNIPER_NAME`, the column `strategy`), and a repository reads and writes only its sniper's rows
(`scoped`), so two snipers with a rule of the same name keep apart. State stored under a rule
name the rules file no longer has is not loaded, and is deleted `ABSENT_RULE_RETENTION_DAYS`
after it last changed (`prune_absent`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from models import OrderRequest
from storage.audit import append_audit, now_iso
from storage.db import Database
from storage.journal import StateWrite

SNIPER_STRATEGY: Final = "sniper"
"""The default sniper's name (`SNIPER_NAME`)."""
ABSENT_RULE_RETENTION_DAYS: Final = 30
"""How long the state of a rule that left the rules file is kept (a rule put back within this
time finds its entries; after it, the rule starts afresh)."""

SlotKey = tuple[str, str]
"""(rule name, token id)."""


@dataclass(frozen=True, slots=True)
class StoredSlot:
    """A slot as stored: entries made, armed or not, last fire (unix seconds, wall clock)."""

    entries: int
    armed: bool
    last_fire_at: float | None


@dataclass(frozen=True, slots=True)
class StoredTakeProfit:
    """A take-profit SELL decided after its BUY filled, not yet journaled."""

    rule: str
    entry_order_id: str
    request: OrderRequest


class SniperStateRepository:
    """The sniper's slots and pending take-profits (see the module docstring)."""

    def __init__(self, *, db: Database, strategy: str = SNIPER_STRATEGY) -> None:
        self._db = db
        self.strategy = strategy

    def scoped(self, strategy: str) -> SniperStateRepository:
        """The state of the sniper named `strategy`, over the same database."""
        return SniperStateRepository(db=self._db, strategy=strategy)

    # -- writes that ride with a PENDING journal row -------------------------------------------
    def fired(self, rule: str, token_id: str, client_order_id: str, at: float) -> StateWrite:
        """The slot write of an entry order: entries + 1, disarmed, last fire `at` (unix s)."""
        ts = now_iso()
        strategy = self.strategy

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO sniper_slots (strategy, rule, token_id, entries, armed,"
                " last_fire_at, last_order_id, updated_at) VALUES (?,?,?,1,0,?,?,?)"
                " ON CONFLICT(strategy, rule, token_id) DO UPDATE SET"
                " entries = sniper_slots.entries + 1, armed = 0,"  # qualified: PostgreSQL needs it
                " last_fire_at = excluded.last_fire_at, last_order_id = excluded.last_order_id,"
                " updated_at = excluded.updated_at",
                (strategy, rule, token_id, at, client_order_id, ts),
            )

        return write

    @staticmethod
    def take_profit_sent(client_order_id: str) -> StateWrite:
        # A client order id is unique in the journal: no need to scope it by sniper.
        """The write that closes a stored take-profit as its SELL is journaled."""

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM sniper_take_profits WHERE client_order_id = ?", (client_order_id,)
            )

        return write

    # -- other writes --------------------------------------------------------------------------
    async def give_back(self, rule: str, token_id: str, client_order_id: str, why: str) -> bool:
        """Return the entry counted for `client_order_id` (refused: it bought nothing).

        A no-op returning False unless that order is the slot's last counted one (a refusal
        before the PENDING row counted nothing)."""

        def job(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                # CASE, not the scalar MAX(a, b) PostgreSQL lacks (nor GREATEST, SQLite's)
                "UPDATE sniper_slots SET entries = CASE WHEN entries > 0 THEN entries - 1 ELSE 0"
                " END, last_order_id = NULL,"
                " updated_at = ? WHERE strategy = ? AND rule = ? AND token_id = ?"
                " AND last_order_id = ?",
                (now_iso(), self.strategy, rule, token_id, client_order_id),
            )
            if cur.rowcount == 0:
                return False
            append_audit(
                c,
                "sniper_entry_returned",
                {"rule": rule, "token_id": token_id, "why": why[:200]},
                strategy=self.strategy,
                client_order_id=client_order_id,
            )
            return True

        result: bool = await self._db.write(job)
        return result

    async def rearm(self, keys: Collection[SlotKey]) -> None:
        """Mark the slots of `keys` armed again (their condition was seen false)."""
        if not keys:
            return
        ts = now_iso()
        rows = [(ts, self.strategy, rule, token) for rule, token in keys]

        def job(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE sniper_slots SET armed = 1, updated_at = ?"
                " WHERE strategy = ? AND rule = ? AND token_id = ? AND armed = 0",
                rows,
            )

        await self._db.write(job)

    async def store_take_profit(
        self, rule: str, token_id: str, entry_order_id: str, request: OrderRequest
    ) -> None:
        """Store the take-profit SELL of a filled entry before it is sent."""
        ts = now_iso()
        body = request.model_dump_json()

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO sniper_take_profits (client_order_id, strategy, rule,"
                " token_id, entry_order_id, request, created_at) VALUES (?,?,?,?,?,?,?)",
                (request.client_order_id, self.strategy, rule, token_id, entry_order_id, body, ts),
            )

        await self._db.write(job)

    async def drop_take_profit(self, client_order_id: str, why: str) -> None:
        """Forget a stored take-profit that will not be sent (refused, or journaled already)."""

        def job(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "DELETE FROM sniper_take_profits WHERE client_order_id = ? AND strategy = ?",
                (client_order_id, self.strategy),
            )
            if cur.rowcount:
                append_audit(
                    c,
                    "sniper_take_profit_dropped",
                    {"why": why[:200]},
                    strategy=self.strategy,
                    client_order_id=client_order_id,
                )

        await self._db.write(job)

    async def prune_absent(self, rules: Iterable[str], *, now: float | None = None) -> int:
        """Delete the state of rules not in `rules` that has not changed for
        `ABSENT_RULE_RETENTION_DAYS`; return how many slots went."""
        names = list(rules)
        cutoff = (now if now is not None else time.time()) - ABSENT_RULE_RETENTION_DAYS * 86_400
        cutoff_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cutoff))
        marks = ",".join("?" * len(names)) or "''"
        mine = self.strategy

        def job(c: sqlite3.Connection) -> int:
            n = c.execute(
                "DELETE FROM sniper_slots WHERE strategy = ?"
                f" AND rule NOT IN ({marks}) AND updated_at < ?",
                (mine, *names, cutoff_iso),
            ).rowcount
            c.execute(
                "DELETE FROM sniper_take_profits WHERE strategy = ?"
                f" AND rule NOT IN ({marks}) AND created_at < ?",
                (mine, *names, cutoff_iso),
            )
            return int(n)

        result: int = await self._db.write(job)
        return result

    # -- reads ---------------------------------------------------------------------------------
    async def load(self, keys: Collection[SlotKey]) -> dict[SlotKey, StoredSlot]:
        """The stored slots among `keys` (pairs never fired have none)."""
        out: dict[SlotKey, StoredSlot] = {}
        by_rule: dict[str, list[str]] = {}
        for rule, token in keys:
            by_rule.setdefault(rule, []).append(token)
        for rule, tokens in by_rule.items():
            for i in range(0, len(tokens), 500):
                chunk = tokens[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = await self._db.fetchall(
                    "SELECT token_id, entries, armed, last_fire_at FROM sniper_slots"
                    f" WHERE strategy = ? AND rule = ? AND token_id IN ({marks})",
                    (self.strategy, rule, *chunk),
                )
                for r in rows:
                    out[(rule, str(r[0]))] = StoredSlot(
                        int(r[1]), bool(r[2]), float(r[3]) if r[3] is not None else None
                    )
        return out

    async def rule_names(self) -> dict[str, int]:
        """Every rule name with stored state, and how many entries it made in all."""
        rows = await self._db.fetchall(
            "SELECT rule, SUM(entries) FROM sniper_slots WHERE strategy = ? GROUP BY rule"
            " UNION SELECT rule, 0 FROM sniper_take_profits WHERE strategy = ?"
            " AND rule NOT IN (SELECT rule FROM sniper_slots WHERE strategy = ?)",
            (self.strategy, self.strategy, self.strategy),
        )
        return {str(r[0]): int(r[1] or 0) for r in rows}

    async def take_profits(self, rules: Collection[str]) -> list[StoredTakeProfit]:
        """The stored take-profits of `rules` still to send, oldest first.

        One whose client order id the journal holds already was journaled (as a local refusal:
        a PENDING row would have deleted it) by a run that died before dropping it: it is
        dropped now, never sent again under an id the journal has."""

        def job(c: sqlite3.Connection) -> list[tuple[str, str, str]]:
            c.execute(
                "DELETE FROM sniper_take_profits WHERE client_order_id IN"
                " (SELECT client_order_id FROM orders)"
            )
            rows = c.execute(
                "SELECT rule, entry_order_id, request FROM sniper_take_profits"
                " WHERE strategy = ? ORDER BY rowid",
                (self.strategy,),
            ).fetchall()
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

        rows = await self._db.write(job)
        return [
            StoredTakeProfit(rule, entry, OrderRequest.model_validate_json(body))
            for rule, entry, body in rows
            if rule in rules
        ]
