"""Market names per token id: the question, outcome and slug an operator reads instead of a
77-digit token id.

Owns the `market_names` table (a cache, bounded at `MAX_STORED` rows: the least recently
learned go first). The daemon keeps the names it knows in a `MarketNames` (bounded too) that
log lines, notifications and chat replies read synchronously; what it learns is written through
`MarketNameRepository.save` in the background. The CLI, which has no network, reads the table
read-only (`read_names`).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from models import Market
from storage.audit import now_iso
from storage.db import Database

MAX_STORED: Final = 20_000
"""Rows kept in `market_names` (a sniper watching thousands of markets stays well inside)."""
MAX_CACHED: Final = 10_000
"""Names a daemon keeps in memory; the least recently used go first."""
QUESTION_CHARS: Final = 300
"""A question is cut to this length (Gamma's are a sentence; a hostile one is not stored whole)."""


@dataclass(frozen=True, slots=True)
class MarketName:
    """What one outcome token is called: its market's question, its outcome, the market's slug."""

    token_id: str
    question: str
    outcome: str
    slug: str = ""
    condition_id: str = ""
    source: str = "gamma"

    def label(self, width: int | None = None) -> str:
        """`question — outcome`, the question cut to `width` characters when given."""
        q = self.question
        if width is not None and len(q) > width:
            q = q[: max(width - 1, 1)] + "…"
        return f"{q} — {self.outcome}" if self.outcome else q


def names_of(market: Market, *, source: str = "gamma") -> list[MarketName]:
    """The names of a market's outcome tokens (none when it has no question)."""
    if not market.question:
        return []
    outcomes = market.outcomes if len(market.outcomes) == len(market.token_ids) else ()
    return [
        MarketName(
            token_id=t,
            question=market.question[:QUESTION_CHARS],
            outcome=outcomes[i] if outcomes else "",
            slug=market.slug,
            condition_id=market.condition_id,
            source=source,
        )
        for i, t in enumerate(market.token_ids)
    ]


class MarketNames:
    """The names the daemon knows, in memory, bounded (least recently used first out).

    `learn` records names (and remembers which changed, for `take_changed`); `get` answers on
    the event loop or in a log processor without I/O. Unknown tokens asked for are remembered
    (bounded) so a resolver can look them up (`take_unknown`).
    """

    def __init__(self, *, capacity: int = MAX_CACHED) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._names: OrderedDict[str, MarketName] = OrderedDict()
        self._changed: dict[str, MarketName] = {}
        self._unknown: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def get(self, token_id: str) -> MarketName | None:
        """The token's name, or None (then it is queued for `take_unknown`)."""
        name = self._names.get(token_id)
        if name is None:
            if token_id and token_id not in self._unknown:
                self._unknown[token_id] = None
                while len(self._unknown) > self._capacity:
                    self._unknown.popitem(last=False)
            return None
        self._names.move_to_end(token_id)
        return name

    def learn(self, names: Iterable[MarketName], *, changed: bool = True) -> int:
        """Record `names`; return how many were new or different. `changed=False` (loading
        from the database) does not queue them to be saved again."""
        n = 0
        for name in names:
            self._unknown.pop(name.token_id, None)
            if self._names.get(name.token_id) == name:
                self._names.move_to_end(name.token_id)
                continue
            self._names[name.token_id] = name
            self._names.move_to_end(name.token_id)
            n += 1
            if changed:
                self._changed[name.token_id] = name
        while len(self._names) > self._capacity:
            gone, _ = self._names.popitem(last=False)
            self._changed.pop(gone, None)
        return n

    def learn_market(self, market: Market, *, source: str = "gamma") -> int:
        return self.learn(names_of(market, source=source))

    def take_changed(self) -> list[MarketName]:
        """The names learned since the last call (to be saved)."""
        out = list(self._changed.values())
        self._changed.clear()
        return out

    def take_unknown(self, limit: int) -> list[str]:
        """Up to `limit` token ids asked for but not known, oldest first (removed from the
        queue: a token the resolver cannot name is asked for again only when next seen)."""
        out: list[str] = []
        while self._unknown and len(out) < limit:
            token, _ = self._unknown.popitem(last=False)
            out.append(token)
        return out

    def fields(self, token_id: str) -> dict[str, str]:
        """`market` and `outcome` log fields for a token id (empty if unknown)."""
        name = self.get(token_id)
        if name is None:
            return {}
        return {"market": name.question, "outcome": name.outcome}


def save_names(c: sqlite3.Connection, names: Sequence[MarketName], *, cap: int = MAX_STORED) -> int:
    """Upsert `names`, then drop the least recently learned rows beyond `cap`; return the
    rows written."""
    at = now_iso()
    c.executemany(
        "INSERT INTO market_names (token_id, condition_id, question, outcome, slug, source,"
        " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(token_id) DO UPDATE SET"
        " condition_id = excluded.condition_id, question = excluded.question,"
        " outcome = excluded.outcome, slug = excluded.slug, source = excluded.source,"
        " updated_at = excluded.updated_at",
        [(n.token_id, n.condition_id, n.question, n.outcome, n.slug, n.source, at) for n in names],
    )
    c.execute(
        "DELETE FROM market_names WHERE token_id IN (SELECT token_id FROM market_names"
        " ORDER BY updated_at DESC, token_id LIMIT -1 OFFSET ?)",
        (cap,),
    )
    return len(names)


def _name(r: sqlite3.Row | tuple[str, ...]) -> MarketName:
    return MarketName(
        token_id=str(r[0]),
        condition_id=str(r[1]),
        question=str(r[2]),
        outcome=str(r[3]),
        slug=str(r[4]),
        source=str(r[5]),
    )


_COLUMNS = "token_id, condition_id, question, outcome, slug, source"


def read_names(
    c: sqlite3.Connection, token_ids: Iterable[str] | None = None
) -> dict[str, MarketName]:
    """Names by token id (of `token_ids`, or all); empty when the table is not there yet (a
    database the daemon of this version has not migrated)."""
    try:
        if token_ids is None:
            rows = c.execute(f"SELECT {_COLUMNS} FROM market_names").fetchall()
        else:
            wanted = sorted(set(token_ids))
            rows = []
            for i in range(0, len(wanted), 500):  # SQLite's parameter limit
                chunk = wanted[i : i + 500]
                rows += c.execute(
                    f"SELECT {_COLUMNS} FROM market_names WHERE token_id IN"
                    f" ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
    return {str(r[0]): _name(r) for r in rows}


class MarketNameRepository:
    """The `market_names` table, written by the daemon."""

    def __init__(self, *, db: Database, cap: int = MAX_STORED) -> None:
        self._db = db
        self._cap = cap

    async def save(self, names: Sequence[MarketName]) -> int:
        if not names:
            return 0
        rows = list(names)
        return await self._db.write(lambda c: save_names(c, rows, cap=self._cap))

    async def load(self, limit: int = MAX_CACHED) -> list[MarketName]:
        """The most recently learned names, oldest first (so a cache filled in this order
        keeps the newest)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM market_names ORDER BY updated_at DESC, token_id LIMIT ?",
            (limit,),
        )
        return [_name(tuple(r)) for r in reversed(rows)]

    async def unnamed(self, limit: int = 500) -> list[str]:
        """Token ids held or ordered (the newest orders first) that have no name yet."""
        rows = await self._db.fetchall(
            "SELECT token_id FROM (SELECT token_id, 0 AS k FROM positions WHERE size != '0'"
            " UNION ALL SELECT token_id, 1 FROM (SELECT token_id FROM orders"
            " ORDER BY rowid DESC LIMIT ?) AS newest) AS wanted"
            " WHERE token_id NOT IN (SELECT token_id FROM market_names) GROUP BY token_id"
            " ORDER BY MIN(k), token_id LIMIT ?",
            (limit, limit),
        )
        return [str(r[0]) for r in rows]
