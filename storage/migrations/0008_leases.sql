-- 0008: several daemons on one database. Each strategy is traded by the one daemon holding its
-- lease (storage/leases.py); a lease that is not renewed before `expires_at` may be taken by
-- another daemon. Orders carry the daemon that journaled them, so each daemon reconciles only
-- its own; rows journaled before this migration belong to the default daemon id.
--
-- Times in `leases` are written by the database's own clock (one clock for every daemon), as
-- `strftime('%Y-%m-%dT%H:%M:%fZ', ...)` text, so they compare as text.

CREATE TABLE leases (
    strategy    TEXT PRIMARY KEY,
    daemon_id   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);

ALTER TABLE orders ADD COLUMN daemon_id TEXT NOT NULL DEFAULT 'default';
