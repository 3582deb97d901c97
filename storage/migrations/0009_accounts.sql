-- 0009: several daemons on one venue account. Each order names the account (the funder/wallet
-- address, lower case) it was signed for, so the open orders of an account can be counted over
-- every daemon that trades it; `strategy_accounts` says which account each strategy's positions
-- sit in (written when a daemon with ACCOUNT_SHARED=true starts, first claim wins), so their
-- cost counts towards that account's caps (storage/accounts.py). Rows journaled before this
-- migration name no account ('').

ALTER TABLE orders ADD COLUMN account TEXT NOT NULL DEFAULT '';

CREATE INDEX orders_account_open ON orders (account)
    WHERE status NOT IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED');

CREATE TABLE strategy_accounts (
    strategy TEXT PRIMARY KEY,
    account  TEXT NOT NULL
);
