-- 0010: trading state shared by the daemons on one venue account (ACCOUNT_SHARED=true,
-- storage/accounts.py). `account_halts` holds the account's halt, one row per halted account,
-- written and cleared under the account's advisory lock, and read under it with every PENDING
-- row; `account_daily_pnl` holds each daemon's PnL of the day over its own strategies (and the
-- baseline it is measured from), summed for the account's daily loss limit;
-- `daemon_accounts` says which account each daemon trades and with which ACCOUNT_SHARED
-- setting, so a daemon starting with the other setting is refused. PostgreSQL is where these
-- are used (a SQLite file has one daemon); SQLite has the tables so both schemas stay alike.

CREATE TABLE account_halts (
    account   TEXT PRIMARY KEY,
    daemon_id TEXT NOT NULL,
    reason    TEXT NOT NULL,
    halted_at TEXT NOT NULL
);

CREATE TABLE account_daily_pnl (
    account    TEXT NOT NULL,
    day        TEXT NOT NULL,
    daemon_id  TEXT NOT NULL,
    pnl        TEXT NOT NULL,
    baseline   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (account, day, daemon_id)
);

CREATE TABLE daemon_accounts (
    daemon_id  TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    shared     INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
