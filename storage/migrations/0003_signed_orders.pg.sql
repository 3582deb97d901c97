-- 0003 (PostgreSQL): the signed order is journaled with its PENDING row (see 0003_signed_orders.sql).

ALTER TABLE orders ADD COLUMN signed_order TEXT;
