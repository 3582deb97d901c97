-- 0001: order journal, fills, positions, cursors, audit log, daemon state.
-- Money is TEXT (Decimal as written by Python); timestamps are ISO-8601 UTC text.

CREATE TABLE order_transitions (
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status)
) WITHOUT ROWID;

-- Mirrors models.ALLOWED_TRANSITIONS; a test keeps the two equal.
INSERT INTO order_transitions (from_status, to_status) VALUES
    ('PENDING', 'CANCELED'),
    ('PENDING', 'EXPIRED'),
    ('PENDING', 'FILLED'),
    ('PENDING', 'LIVE'),
    ('PENDING', 'PARTIALLY_FILLED'),
    ('PENDING', 'REJECTED'),
    ('PENDING', 'UNKNOWN'),
    ('UNKNOWN', 'CANCELED'),
    ('UNKNOWN', 'EXPIRED'),
    ('UNKNOWN', 'FILLED'),
    ('UNKNOWN', 'LIVE'),
    ('UNKNOWN', 'PARTIALLY_FILLED'),
    ('UNKNOWN', 'REJECTED'),
    ('UNKNOWN', 'UNKNOWN'),
    ('LIVE', 'CANCELED'),
    ('LIVE', 'EXPIRED'),
    ('LIVE', 'FILLED'),
    ('LIVE', 'LIVE'),
    ('LIVE', 'PARTIALLY_FILLED'),
    ('PARTIALLY_FILLED', 'CANCELED'),
    ('PARTIALLY_FILLED', 'EXPIRED'),
    ('PARTIALLY_FILLED', 'FILLED'),
    ('PARTIALLY_FILLED', 'PARTIALLY_FILLED');

CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    strategy        TEXT NOT NULL,
    token_id        TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price           TEXT NOT NULL,
    size            TEXT NOT NULL,
    order_type      TEXT NOT NULL CHECK (order_type IN ('GTC', 'GTD', 'FOK', 'FAK')),
    expiration      INTEGER,
    post_only       INTEGER NOT NULL DEFAULT 0,
    reason          TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    venue_order_id  TEXT UNIQUE,
    payload_hash    TEXT,
    size_matched    TEXT NOT NULL DEFAULT '0',
    avg_price       TEXT,
    detail          TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX orders_open ON orders (status)
    WHERE status NOT IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED');



-- Every status a row has had, with when and why. Written by triggers so no code path can skip it.
CREATE TABLE order_events (
    id              INTEGER PRIMARY KEY,
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    from_status     TEXT,
    to_status       TEXT NOT NULL,
    size_matched    TEXT NOT NULL,
    detail          TEXT NOT NULL,
    at              TEXT NOT NULL
);
CREATE INDEX order_events_order ON order_events (client_order_id);

CREATE TRIGGER orders_status_guard BEFORE UPDATE OF status ON orders
WHEN NOT EXISTS (
    SELECT 1 FROM order_transitions WHERE from_status = OLD.status AND to_status = NEW.status
)
BEGIN
    SELECT RAISE(ABORT, 'illegal order status transition');
END;

CREATE TRIGGER orders_event_insert AFTER INSERT ON orders
BEGIN
    INSERT INTO order_events (client_order_id, from_status, to_status, size_matched, detail, at)
    VALUES (NEW.client_order_id, NULL, NEW.status, NEW.size_matched, NEW.detail, NEW.created_at);
END;

CREATE TRIGGER orders_event_update AFTER UPDATE ON orders
WHEN OLD.status IS NOT NEW.status OR OLD.size_matched IS NOT NEW.size_matched
BEGIN
    INSERT INTO order_events (client_order_id, from_status, to_status, size_matched, detail, at)
    VALUES (NEW.client_order_id, OLD.status, NEW.status, NEW.size_matched, NEW.detail, NEW.updated_at);
END;

CREATE TABLE fills (
    trade_id        TEXT NOT NULL,
    venue_order_id  TEXT NOT NULL,
    client_order_id TEXT,
    token_id        TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price           TEXT NOT NULL,
    size            TEXT NOT NULL,
    fee             TEXT NOT NULL DEFAULT '0',
    role            TEXT NOT NULL,
    status          TEXT NOT NULL,
    ts              TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    PRIMARY KEY (trade_id, venue_order_id)
);
CREATE INDEX fills_order ON fills (client_order_id);
CREATE INDEX fills_token ON fills (token_id);

CREATE TABLE positions (
    token_id     TEXT PRIMARY KEY,
    size         TEXT NOT NULL,
    avg_cost     TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- High-water marks per source (e.g. a copied wallet) and ids already handled.
CREATE TABLE cursors (
    source     TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE seen_ids (
    source  TEXT NOT NULL,
    id      TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (source, id)
) WITHOUT ROWID;

CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    event           TEXT NOT NULL,
    strategy        TEXT,
    client_order_id TEXT,
    detail          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_order ON audit_log (client_order_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Small durable facts about the daemon itself (trading state, halt reason, checkpoints).
CREATE TABLE daemon_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
