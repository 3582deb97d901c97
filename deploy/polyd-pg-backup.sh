#!/usr/bin/env bash
# Back up polyd's PostgreSQL database: one pg_dump in custom format (compressed, restorable
# table by table with pg_restore), written under a temporary name and renamed once complete and
# readable, then dumps older than the retention deleted. Run by deploy/polyd-pg-backup.timer (or
# cron); see docs/storage-postgres.md#backups.
#
#   DATABASE_URL          the daemon's URL (read from the same settings file as the daemon)
#   POLYD_BACKUP_DIR      where dumps go (default /var/backups/polyd)
#   POLYD_BACKUP_KEEP_DAYS  dumps older than this many days are deleted (default 14)
#
# Prints the dump's path. Exits non-zero (and keeps every older dump) if any step fails.
set -euo pipefail

url="${DATABASE_URL:?DATABASE_URL must name the database to back up}"
dir="${POLYD_BACKUP_DIR:-/var/backups/polyd}"
keep_days="${POLYD_BACKUP_KEEP_DAYS:-14}"
case "$keep_days" in '' | *[!0-9]*) echo "POLYD_BACKUP_KEEP_DAYS must be a whole number" >&2; exit 2 ;; esac

umask 077 # the journal is private: dumps readable by their owner only
mkdir -p "$dir"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
final="$dir/polyd-$stamp.dump"
partial="$final.partial"
trap 'rm -f "$partial"' EXIT

pg_dump --format=custom --no-owner --no-privileges --file="$partial" --dbname="$url"
pg_restore --list "$partial" >/dev/null # the archive is complete and readable
mv "$partial" "$final"
# Retention: only our own complete dumps, never the one just written.
find "$dir" -maxdepth 1 -type f -name 'polyd-*.dump' -mtime "+$keep_days" ! -path "$final" -delete
echo "$final"
