-- 0004: each strategy owns what it bought. Fills carry the strategy of the order they belong to
-- (attributed when first recorded; 'unattributed' when no order of ours explains them: manual
-- trades on the same account, orders missing from the journal), and positions are kept per
-- (strategy, token).
--
-- Existing holdings are re-derived from the journal by the data step that runs in the same
-- transaction (storage/migrations/steps.py): per (strategy, token) from the attributed fills
-- where they account for the token's recorded holding; otherwise the whole old row is booked
-- as 'unattributed'. Each token whose old row could not be split is audited
-- (`position_unattributed_on_migration`) and its fills become unattributed with it; the old table
-- is dropped by the step.

ALTER TABLE fills ADD COLUMN strategy TEXT NOT NULL DEFAULT 'unattributed';
UPDATE fills SET strategy = COALESCE(
    (SELECT o.strategy FROM orders o WHERE o.client_order_id = fills.client_order_id),
    (SELECT o.strategy FROM orders o WHERE o.venue_order_id = fills.venue_order_id),
    'unattributed'
);
CREATE INDEX fills_strategy_token ON fills (strategy, token_id);

ALTER TABLE positions RENAME TO positions_0003;
CREATE TABLE positions (
    strategy     TEXT NOT NULL,
    token_id     TEXT NOT NULL,
    size         TEXT NOT NULL,
    avg_cost     TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (strategy, token_id)
);
