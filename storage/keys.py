"""Names of the rows in the `daemon_state` table, shared by the code that writes them and the
reports that read them."""

from typing import Final

from config_types import DEFAULT_DAEMON_ID as DEFAULT_DAEMON_ID


def daemon_key(key: str, daemon_id: str) -> str:
    """The name under which daemon `daemon_id` keeps its own copy of `key` (a trading state, a
    cursor) when several daemons share one database. The default daemon keeps the bare name, so
    a database written before daemons had names reads on as it was."""
    return key if daemon_id == DEFAULT_DAEMON_ID else f"{key}@{daemon_id}"


TRADING_STATE_KEY: Final = "trading_state"
"""The executor's trading state (ACTIVE, REDUCING, HALTED) and why, as JSON:
`{"state": ..., "reason": ...}`."""

RESOLUTIONS_KEY: Final = "resolutions"
"""Resolved markets the daemon held or traded: `{token_id: {"payout": "1", "condition_id": ...,
"source": ...}}` as JSON. A position in one is worth shares x payout until redeemed on chain."""

ACCOUNT_SNAPSHOT_KEY: Final = "account_snapshot"
"""What only the running daemon knows, written every few seconds by the summary service
(`wiring.summary`) for the read model (`storage.views`): marks per held token, today's PnL and
its baseline, unrealized PnL, exposure, the last pUSD balance read, feed health, as JSON with
Decimal money as strings, `at` (ISO-8601 UTC) and `daemon` (its DAEMON_ID). Each daemon keeps its
own under `daemon_key`; a bare row without `daemon` was written before that, by whichever daemon
wrote last."""
