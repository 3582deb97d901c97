-- 0006: redemptions of resolved positions, journaled step by step (redemption/).
-- A row is written with its signed payload (an EOA's raw transaction and its hash, or the
-- relayer envelope and its nonce) *before* it is sent: status SENDING. A restart finds it and
-- looks it up (by hash on chain, by nonce at the relayer) instead of signing a second one.
-- At most one unfinished redemption per (wallet, condition): the partial unique index.

CREATE TABLE redemptions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    wallet          TEXT NOT NULL,     -- the funder whose positions are redeemed (lower-case)
    wallet_type     TEXT NOT NULL,     -- EOA, PROXY, SAFE or WALLET (deposit wallet)
    condition_id    TEXT NOT NULL,
    kind            TEXT NOT NULL,     -- binary, neg_risk or v2
    shares          TEXT NOT NULL,     -- JSON {token_id: [shares, pUSD per share]} when planned
    expected_payout TEXT NOT NULL,     -- pUSD, from the on-chain payout vector
    balance_before  TEXT NOT NULL,     -- the wallet's pUSD before sending
    status          TEXT NOT NULL,     -- SENDING, SENT, REDEEMED, ZERO_PAYOUT, FAILED, UNKNOWN,
                                       -- ALREADY_REDEEMED
    payload         TEXT,              -- signed raw transaction (hex) or relayer envelope (JSON)
    tx_hash         TEXT,
    relayer_id      TEXT,
    relayer_nonce   TEXT,
    payout          TEXT,              -- pUSD the balance actually rose by
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX redemptions_one_open ON redemptions (wallet, condition_id)
    WHERE status IN ('SENDING', 'SENT', 'UNKNOWN');
CREATE INDEX redemptions_status ON redemptions (status);
