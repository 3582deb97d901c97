-- 0006: reserved. Another branch adds its own 0006; when that branch lands, this placeholder is
-- deleted (two files numbered 0006 fail `load_migrations`, so a forgotten one cannot slip by).
SELECT 1;
