-- 0002: the copy trader's intents get their own table (they were `copy:intent:<id>` rows of
-- daemon_state). An intent is a copy order decided but maybe not sent yet: the exact
-- OrderRequest, stored in the same transaction that marks the leader trade seen.

CREATE TABLE copy_intents (
    client_order_id TEXT PRIMARY KEY,
    wallet          TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    leader_ts       INTEGER NOT NULL,
    request         TEXT NOT NULL,  -- models.OrderRequest as JSON (Decimal money as strings)
    created_at      TEXT NOT NULL
);

-- Carry over intents a previous version left pending, so an upgrade loses none.
INSERT OR IGNORE INTO copy_intents
    (client_order_id, wallet, dedupe_key, leader_ts, request, created_at)
SELECT substr(key, length('copy:intent:') + 1),
       json_extract(value, '$.wallet'),
       json_extract(value, '$.dedupe_key'),
       json_extract(value, '$.leader_ts'),
       json_extract(value, '$.request'),
       updated_at
FROM daemon_state
WHERE key LIKE 'copy:intent:%' AND json_valid(value);
DELETE FROM daemon_state WHERE key LIKE 'copy:intent:%' AND json_valid(value);
