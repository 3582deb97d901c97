-- 0002 (PostgreSQL): the copy trader's intents get their own table. SQLite's twin also carries
-- over `copy:intent:<id>` rows of daemon_state written by versions older than this table; no
-- PostgreSQL database ever held that format (PostgreSQL support came later), so there is
-- nothing to carry over here.

CREATE TABLE copy_intents (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    client_order_id TEXT PRIMARY KEY,
    wallet          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    leader_ts       BIGINT NOT NULL,
    request         TEXT NOT NULL,  -- models.OrderRequest as JSON (Decimal money as strings)
    created_at      TIMESTAMPTZ NOT NULL
);
