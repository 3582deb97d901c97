-- 0007 (PostgreSQL): market names by token id, a bounded cache (see 0007_market_names.sql).

CREATE TABLE market_names (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    token_id     TEXT PRIMARY KEY,
    condition_id TEXT NOT NULL DEFAULT '',
    question     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    slug         TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX market_names_updated ON market_names (updated_at);
