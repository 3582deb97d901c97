-- 0010 (PostgreSQL): the account's halt, its daemons' daily PnL and each daemon's account and
-- ACCOUNT_SHARED setting (see 0010_account_trading.sql).

CREATE TABLE account_halts (
    account   TEXT PRIMARY KEY,
    daemon_id TEXT NOT NULL,
    reason    TEXT NOT NULL,
    halted_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE account_daily_pnl (
    account    TEXT NOT NULL,
    day        TEXT NOT NULL,
    daemon_id  TEXT NOT NULL,
    pnl        NUMERIC NOT NULL,
    baseline   NUMERIC NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account, day, daemon_id)
);

CREATE TABLE daemon_accounts (
    daemon_id  TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    shared     INTEGER NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
