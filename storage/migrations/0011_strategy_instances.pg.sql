-- 0011 (PostgreSQL): strategies are instances with a name (see 0011_strategy_instances.sql).
-- Existing rows belong to the default names ('copy', 'sniper').

ALTER TABLE copy_intents ADD COLUMN strategy TEXT NOT NULL DEFAULT 'copy';
ALTER TABLE copy_intents DROP CONSTRAINT copy_intents_dedupe_key_key;
CREATE UNIQUE INDEX copy_intents_strategy_dedupe ON copy_intents (strategy, dedupe_key);

ALTER TABLE sniper_slots ADD COLUMN strategy TEXT NOT NULL DEFAULT 'sniper';
ALTER TABLE sniper_slots DROP CONSTRAINT sniper_slots_pkey;
ALTER TABLE sniper_slots ADD PRIMARY KEY (strategy, rule, token_id);

ALTER TABLE sniper_take_profits ADD COLUMN strategy TEXT NOT NULL DEFAULT 'sniper';

CREATE TABLE item_leases (
    item        TEXT PRIMARY KEY,
    daemon_id   TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);
