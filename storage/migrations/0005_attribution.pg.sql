-- 0005 (PostgreSQL): fills carry their strategy and positions are kept per (strategy, token);
-- the data step (storage/migrations/steps.py) runs here too (see 0005_attribution.sql).

ALTER TABLE fills ADD COLUMN strategy TEXT NOT NULL DEFAULT 'unattributed';
UPDATE fills SET strategy = COALESCE(
    (SELECT o.strategy FROM orders o WHERE o.client_order_id = fills.client_order_id),
    (SELECT o.strategy FROM orders o WHERE o.venue_order_id = fills.venue_order_id),
    'unattributed'
);
CREATE INDEX fills_strategy_token ON fills (strategy, token_id);

ALTER TABLE positions RENAME TO positions_0003;
ALTER INDEX positions_pkey RENAME TO positions_0003_pkey;
CREATE TABLE positions (
    strategy     TEXT NOT NULL,
    token_id     TEXT NOT NULL,
    size         NUMERIC NOT NULL,
    avg_cost     NUMERIC NOT NULL,
    realized_pnl NUMERIC NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (strategy, token_id)
);
