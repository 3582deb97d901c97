-- 0011: strategies are instances with a name (SNIPER_NAME, COPY_NAME), so two daemons on one
-- database may each run a copy trader or a sniper. What was keyed by a copy trader's wallet or
-- leader trade, or by a sniper rule's name, is now keyed by the strategy's name too: two copy
-- traders following the same leader (for two venue accounts) each copy its trades once, and
-- two snipers with a rule of the same name each count its own entries. Existing rows belong to
-- the default names ('copy', 'sniper'). The copy trader's cursors and seen keys need no column:
-- an instance other than 'copy' uses the source `copy:<name>:<wallet>`
-- (storage/copy_intents.py), which cannot be mistaken for the default's `copy:<wallet>`.
--
-- SQLite cannot change a primary key or drop a UNIQUE column constraint in place: both tables
-- are rebuilt, keeping their rows and their order (`rowid`).

CREATE TABLE copy_intents_0011 (
    client_order_id TEXT PRIMARY KEY,
    strategy        TEXT NOT NULL DEFAULT 'copy',
    wallet          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL,
    leader_ts       INTEGER NOT NULL,
    request         TEXT NOT NULL,  -- models.OrderRequest as JSON (Decimal money as strings)
    created_at      TEXT NOT NULL
);
INSERT INTO copy_intents_0011
    (rowid, client_order_id, strategy, wallet, dedupe_key, leader_ts, request, created_at)
SELECT rowid, client_order_id, 'copy', wallet, dedupe_key, leader_ts, request, created_at
FROM copy_intents ORDER BY rowid;
DROP TABLE copy_intents;
ALTER TABLE copy_intents_0011 RENAME TO copy_intents;
CREATE UNIQUE INDEX copy_intents_strategy_dedupe ON copy_intents (strategy, dedupe_key);

CREATE TABLE sniper_slots_0011 (
    strategy      TEXT NOT NULL DEFAULT 'sniper',
    rule          TEXT NOT NULL,     -- the rule's name: its identity (renaming resets it)
    token_id      TEXT NOT NULL,
    entries       INTEGER NOT NULL DEFAULT 0,
    armed         INTEGER NOT NULL DEFAULT 1,
    last_fire_at  REAL,              -- unix seconds (wall clock) of the last order journaled
    last_order_id TEXT,              -- client order id of that order (its refusal gives it back)
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (strategy, rule, token_id)
);
INSERT INTO sniper_slots_0011
    (strategy, rule, token_id, entries, armed, last_fire_at, last_order_id, updated_at)
SELECT 'sniper', rule, token_id, entries, armed, last_fire_at, last_order_id, updated_at
FROM sniper_slots;
DROP TABLE sniper_slots;
ALTER TABLE sniper_slots_0011 RENAME TO sniper_slots;

ALTER TABLE sniper_take_profits ADD COLUMN strategy TEXT NOT NULL DEFAULT 'sniper';

-- Item leases: besides its strategies' leases (`leases`), a daemon on a shared PostgreSQL
-- database leases each wallet it follows and each sniper rule it runs, per venue account
-- (`wallet:<account>:<address>`, `rule:<account>:<rule name>`), so two daemons on one account
-- never copy the same wallet or run the same rule twice (storage/leases.py). Times as in
-- `leases` (0008).
CREATE TABLE item_leases (
    item        TEXT PRIMARY KEY,
    daemon_id   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
