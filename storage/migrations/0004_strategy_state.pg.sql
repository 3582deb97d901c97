-- 0004 (PostgreSQL): the sniper's per-(rule, token) state (see 0004_strategy_state.sql).

CREATE TABLE sniper_slots (
    rule          TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    entries       INTEGER NOT NULL DEFAULT 0,
    armed         INTEGER NOT NULL DEFAULT 1,
    last_fire_at  DOUBLE PRECISION,  -- unix seconds (wall clock) of the last order journaled
    last_order_id TEXT,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rule, token_id)
);

CREATE TABLE sniper_take_profits (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    client_order_id TEXT PRIMARY KEY,
    rule            TEXT NOT NULL,
    token_id        TEXT NOT NULL,
    entry_order_id  TEXT NOT NULL,
    request         TEXT NOT NULL,    -- models.OrderRequest as JSON (Decimal money as strings)
    created_at      TIMESTAMPTZ NOT NULL
);
