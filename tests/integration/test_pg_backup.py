"""The documented PostgreSQL backup and restore (deploy/polyd-pg-backup.sh, polyd-pg-restore.sh,
docs/storage-postgres.md#backups) run as written against a throwaway database: the dump is a
custom-format archive, old dumps go after the retention and nothing else does, and the journal
restored into another database equals the original row for row."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from models import Fill, OrderStatus
from storage import Repositories
from storage.pg import PgDatabase
from tests.helpers import ROOT, make_order
from tests.pg import PgServer

BACKUP = ROOT / "deploy" / "polyd-pg-backup.sh"
RESTORE = ROOT / "deploy" / "polyd-pg-restore.sh"
TABLES = ("orders", "order_events", "fills", "positions", "audit_log", "schema_migrations")


def in_db(url: str, dbname: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, ""))


def table(url: str, name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return sorted(c.execute(f"SELECT * FROM {name}").fetchall(), key=repr)


async def journal_something(url: str) -> None:
    """Orders in several states, a fill and its position, audit entries: the daemon's writes."""
    async with PgDatabase(url) as db:
        repos = Repositories.over(db, daemon_id="east")
        repos.orders.for_account("0x" + "ab" * 20)
        for i, status in enumerate((OrderStatus.LIVE, OrderStatus.FILLED, OrderStatus.CANCELED)):
            req = make_order(strategy="sniper", price=Decimal("0.41"), size=Decimal("12.5"))
            await repos.orders.record(req, venue_order_id=f"0x{i:064x}", payload_hash="h")
            await repos.orders.transition(req.client_order_id, status, detail="test")
            if status is OrderStatus.FILLED:
                await repos.fills.record(
                    Fill(
                        trade_id=f"trade-{i}",
                        venue_order_id=f"0x{i:064x}",
                        client_order_id=req.client_order_id,
                        token_id=req.token_id,
                        side=req.side,
                        price=Decimal("0.41"),
                        size=Decimal("12.5"),
                        fee=Decimal("0.0307"),
                        ts=datetime.now(UTC),
                    )
                )
        await repos.audit.append("halted", reason="a ñ unicode reason", limit=Decimal("100.10"))


def run(*args: str | Path, env: dict[str, str]) -> str:
    res = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@contextlib.contextmanager
def database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the test server (its public schema), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield in_db(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_documented_backup_and_restore_give_back_the_journal_row_for_row(
    tmp_path: Path, pg_server: PgServer
) -> None:
    with database(pg_server.admin_url, "polyd_backup") as url:
        asyncio.run(journal_something(url))
        backups = tmp_path / "backups"
        backups.mkdir()
        # Retention: a dump of ours 30 days old goes; a recent one and a file not ours stay.
        names = ("polyd-20000101T000000Z.dump", "polyd-x.dump", "o")
        old, recent, other = (backups / n for n in names)
        for f in (old, recent, other):
            f.write_bytes(b"x")
        month_ago = time.time() - 30 * 86_400
        for f in (old, other):
            os.utime(f, (month_ago, month_ago))
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": url,
            "POLYD_BACKUP_DIR": str(backups),
            "POLYD_BACKUP_KEEP_DAYS": "14",
        }
        dump = Path(run(BACKUP, env=env).strip())
        assert dump.parent == backups and dump.name.startswith("polyd-")
        assert dump.suffix == ".dump"
        assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        assert dump.stat().st_mode & 0o077 == 0  # the journal is private
        kept = sorted(p.name for p in backups.iterdir())
        assert kept == sorted([dump.name, recent.name, other.name])

        # Restore into a new database, as documented, and compare every journal table.
        with database(pg_server.admin_url, "polyd_restore") as target:
            out = run(RESTORE, dump, target, env={"PATH": os.environ["PATH"]})
            checked = dict(line.split(" ", 1) for line in out.split("\n") if line)
            assert checked["schema_version"] == str(len(table(url, "schema_migrations")))
            assert checked["orders"] == "3" and checked["fills"] == "1"
            for name in TABLES:
                original = table(url, name)
                assert original, f"{name} is empty: nothing was compared"
                assert table(target, name) == original, name
            missing = subprocess.run(
                [str(RESTORE), str(tmp_path / "missing.dump"), target],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert missing.returncode != 0 and "cannot read" in missing.stderr
