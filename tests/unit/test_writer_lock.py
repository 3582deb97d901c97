"""One writer per database (`storage.lock`), the sidecar's taken address, the demo's folder.

A held lock refuses a second taker at once, naming the holder's pid and the database; the
kernel drops it when its holder dies, `kill -9` included; a refused daemon never creates or
opens the database; `:memory:` takes no lock. The sidecar turns "address in use" into
`AlreadyRunning` (exit 3) and an address it can never listen on into `ConfigError` (exit 2).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import demo
from errors import AlreadyRunning, ConfigError
from observability.logging import Redactor
from observability.metrics import Metrics
from observability.sidecar import Health, Sidecar
from storage.lock import FileLock, NoLock, writer_lock
from storage.pg_lock import PgWriterLock
from storage.schema_lock import SchemaLock
from tests.helpers import ROOT, make_settings
from tests.pg import PgServer
from wiring.shared import build_shared


async def test_a_held_database_refuses_a_second_lock_naming_pid_and_path(tmp_path: Path) -> None:
    db = tmp_path / "polyd.db"
    first, second = writer_lock(db), writer_lock(db)
    await first.acquire()
    try:
        with pytest.raises(AlreadyRunning) as refused:
            await second.acquire()
        text = str(refused.value)
        assert f"pid {os.getpid()}" in text
        assert str(db) in text and "DB_PATH" in text
        assert "\n" not in text
    finally:
        await first.release()
    await second.acquire()  # released: the next taker gets it
    await second.release()
    assert (tmp_path / "polyd.db.lock").read_text() == ""  # kept, emptied: nobody holds it


async def test_the_lock_dies_with_its_holder_even_on_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "polyd.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import asyncio, sys, time
                from pathlib import Path
                from storage.lock import writer_lock
                asyncio.run(writer_lock(Path({str(db)!r})).acquire())
                print("locked", flush=True)
                time.sleep(60)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        lock = FileLock(db)
        with pytest.raises(AlreadyRunning, match=rf"\(pid {holder.pid}\)"):
            await lock.acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        await lock.acquire()  # no stale lock: the kernel released it with the process
        assert (tmp_path / "polyd.db.lock").read_text().strip() == str(os.getpid())
        await lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)


async def test_refused_daemon_never_creates_or_opens_the_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    held = writer_lock(settings.db_path)
    await held.acquire()
    try:
        with pytest.raises(AlreadyRunning):
            await build_shared(settings, redactor=Redactor([]), metrics=Metrics())
        assert not settings.db_path.exists()
        assert not settings.db_path.with_name("polyd.db-wal").exists()
    finally:
        await held.release()
    shared = await build_shared(settings, redactor=Redactor([]), metrics=Metrics())
    try:
        assert settings.db_path.exists()
        with pytest.raises(AlreadyRunning):  # held for the daemon's life ...
            await writer_lock(settings.db_path).acquire()
    finally:
        for _, close in reversed(shared.closers):
            await close()
    again = writer_lock(settings.db_path)  # ... and released after storage closes
    await again.acquire()
    await again.release()


async def test_an_in_memory_database_takes_no_lock(tmp_path: Path) -> None:
    assert isinstance(writer_lock(Path(":memory:")), NoLock)
    assert isinstance(writer_lock(tmp_path / "x.db"), FileLock)


async def test_a_second_demo_is_refused_before_it_wipes_the_running_ones_folder(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "polyd-demo.db").write_text("the running demo's database")
    running = FileLock(workdir, what="the demo folder")
    await running.acquire()
    try:
        with pytest.raises(AlreadyRunning, match="demo folder"):
            async with demo.prepared(workdir):
                pytest.fail("a second demo started")
        assert (workdir / "polyd-demo.db").read_text() == "the running demo's database"
    finally:
        await running.release()


def _sidecar(host: str, port: int) -> Sidecar:
    return Sidecar(
        host=host, port=port, health=Health(mode="paper", version="t"), metrics=Metrics()
    )


async def test_a_taken_sidecar_port_is_already_running_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(AlreadyRunning) as refused:
            await _sidecar("127.0.0.1", port).start()
    assert f"127.0.0.1:{port}" in str(refused.value)
    assert "HTTP_PORT" in str(refused.value)
    sc = _sidecar("127.0.0.1", port)  # the failed start left nothing behind
    await sc.start()
    await sc.stop()


async def test_an_address_the_machine_cannot_listen_on_is_a_config_error() -> None:
    # 192.0.2.1 (TEST-NET-1) is never an address of this machine.
    with pytest.raises(ConfigError) as bad:
        await _sidecar("192.0.2.1", 0).start()
    (line,) = bad.value.problems
    assert line.startswith("HTTP_HOST, HTTP_PORT: cannot listen on 192.0.2.1:0")


async def test_a_locked_schema_refuses_a_second_holder_naming_the_first(
    pg_server: PgServer,
) -> None:
    running = SchemaLock(pg_server.url, "polyd_demo_lock_test", what="the demo")
    await running.acquire()
    try:
        second = SchemaLock(pg_server.url, "polyd_demo_lock_test", what="the demo")
        with pytest.raises(AlreadyRunning, match=f"the demo .* in use by pid {os.getpid()} on "):
            await second.acquire()
        other = SchemaLock(pg_server.url, "another_schema")  # another schema: its own lock
        await other.acquire()
        await other.release()
    finally:
        await running.release()
    again = SchemaLock(pg_server.url, "polyd_demo_lock_test")  # released with its connection
    await again.acquire()
    await again.release()


async def test_a_released_lock_is_free_at_once_for_the_next_process(pg_server: PgServer) -> None:
    """A restart straight after a stop: the lock the stopped daemon released is taken at once.
    Closing the lock's connection alone left the lock to the old server process's exit, which
    comes after the close returns, and the next session was refused by it (seen as a refusal
    naming no holder: the holder had gone by the time it was looked up)."""
    for _ in range(30):
        daemon = PgWriterLock(pg_server.url, daemon_id="restarted")
        await daemon.acquire()
        await daemon.release()
        demo_lock = SchemaLock(pg_server.url, "polyd_restarted")
        await demo_lock.acquire()
        await demo_lock.release()
