-- 0009 (PostgreSQL): the account of each order and of each strategy (see 0009_accounts.sql).

ALTER TABLE orders ADD COLUMN account TEXT NOT NULL DEFAULT '';

CREATE INDEX orders_account_open ON orders (account)
    WHERE status NOT IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED');

CREATE TABLE strategy_accounts (
    strategy TEXT PRIMARY KEY,
    account  TEXT NOT NULL
);
