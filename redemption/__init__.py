"""Redemption of resolved positions (docs/redemption.md): `plan` (what and which call),
`senders` (EOA or relayer), `redeemer` (the journaled pass), `build` (from `Settings`)."""
