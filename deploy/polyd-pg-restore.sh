#!/usr/bin/env bash
# Restore a dump made by deploy/polyd-pg-backup.sh into a database, in one transaction (all or
# nothing), then print what it holds so it can be checked: the schema version and the journal's
# row counts. See docs/storage-postgres.md#backups.
#
#   deploy/polyd-pg-restore.sh DUMP TARGET_URL
#
# TARGET_URL must be an empty database (createdb polyd_restore) or one to be replaced: objects
# the dump holds are dropped first (--clean --if-exists). Stop every daemon using it first.
set -euo pipefail

dump="${1:?usage: polyd-pg-restore.sh DUMP TARGET_URL}"
url="${2:?usage: polyd-pg-restore.sh DUMP TARGET_URL}"
[ -r "$dump" ] || { echo "cannot read $dump" >&2; exit 2; }

pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction \
    --exit-on-error --dbname="$url" "$dump"
# The restore check: the tables polyd needs are there and readable.
psql --no-psqlrc --quiet --tuples-only --no-align --set=ON_ERROR_STOP=1 --dbname="$url" <<'SQL'
SELECT 'schema_version ' || COALESCE(MAX(version), 0) FROM schema_migrations;
SELECT 'orders ' || COUNT(*) FROM orders;
SELECT 'order_events ' || COUNT(*) FROM order_events;
SELECT 'fills ' || COUNT(*) FROM fills;
SELECT 'positions ' || COUNT(*) FROM positions;
SELECT 'audit_log ' || COUNT(*) FROM audit_log;
SQL
