-- 0004: the sniper's per-(rule, token) state survives restarts and crashes.
-- A slot row is written in the same transaction as the PENDING journal row of the order it
-- justifies (entries + 1, disarmed, last fire), so a crash can never leave an order at the
-- venue that the slot does not count. A take-profit is stored once its BUY filled and deleted
-- in the transaction that journals the SELL (or when the SELL is refused).

CREATE TABLE sniper_slots (
    rule          TEXT NOT NULL,     -- the rule's name: its identity (renaming resets it)
    token_id      TEXT NOT NULL,
    entries       INTEGER NOT NULL DEFAULT 0,
    armed         INTEGER NOT NULL DEFAULT 1,
    last_fire_at  REAL,              -- unix seconds (wall clock) of the last order journaled
    last_order_id TEXT,              -- client order id of that order (its refusal gives it back)
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (rule, token_id)
);

CREATE TABLE sniper_take_profits (
    client_order_id TEXT PRIMARY KEY, -- of the SELL: found in the journal means already sent
    rule            TEXT NOT NULL,
    token_id        TEXT NOT NULL,
    entry_order_id  TEXT NOT NULL,    -- the BUY it takes profit on
    request         TEXT NOT NULL,    -- models.OrderRequest as JSON (Decimal money as strings)
    created_at      TEXT NOT NULL
);
