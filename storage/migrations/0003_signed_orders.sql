-- 0003: the signed order is journaled with its PENDING row, so reconciliation can re-send the
-- identical bytes when the venue never read them (a crash between the journal write and the
-- POST). Re-sending the same signed order is idempotent at the venue (a second order with the
-- same EIP-712 hash is refused as "Duplicated"); re-signing is what invariant 2 forbids.
-- JSON: the signed order struct (salt, maker, signer, tokenId, amounts, side, signatureType,
-- timestamp, metadata, builder, expiration, signature) plus orderType/postOnly/deferExec. Never
-- the owner (API key id) nor any credential: the POST body is rebuilt with the current owner.
-- NULL for rows written before this migration, refusals and paper orders.

ALTER TABLE orders ADD COLUMN signed_order TEXT;
