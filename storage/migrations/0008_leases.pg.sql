-- 0008 (PostgreSQL): strategy leases and the daemon of each order (see 0008_leases.sql).

CREATE TABLE leases (
    strategy    TEXT PRIMARY KEY,
    daemon_id   TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE orders ADD COLUMN daemon_id TEXT NOT NULL DEFAULT 'default';
