-- 0007: what an operator reads instead of a 77-digit token id: the market's question, the
-- token's outcome and the market's slug, learned from Gamma (discovery, the name resolver) and
-- the venue (Data API rows). A cache: rows are replaced when a source says otherwise, and the
-- oldest are dropped beyond a fixed number (storage/market_names.py), so it never grows without
-- bound. The CLI reads it read-only (it has no network).

CREATE TABLE market_names (
    token_id     TEXT PRIMARY KEY,
    condition_id TEXT NOT NULL DEFAULT '',
    question     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    slug         TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX market_names_updated ON market_names (updated_at);
