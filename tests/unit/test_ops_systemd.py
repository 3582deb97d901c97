"""SystemdNotifier: datagrams, abstract namespace, watchdog period, failures that never raise."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from observability.systemd import SystemdNotifier


def test_notifier_without_socket_is_a_silent_no_op() -> None:
    sd = SystemdNotifier(None, watchdog_usec=1_000_000)
    assert not sd.enabled
    assert sd.ready() is False
    assert sd.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert SystemdNotifier("/x", watchdog_usec=30_000_000).watchdog_interval_s == 15.0
    assert SystemdNotifier("/x", watchdog_usec=None).watchdog_interval_s is None
    assert SystemdNotifier("/x", watchdog_usec=0).watchdog_interval_s is None


def test_abstract_namespace_socket_receives_ready_and_status() -> None:
    name = f"polyd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(2)
        sd = SystemdNotifier("@" + name)
        assert sd.ready(status="running: paper")
        assert server.recv(1024) == b"READY=1\nSTATUS=running: paper"
        assert sd.status("line one\nline two")
        assert server.recv(1024) == b"STATUS=line one"
        assert sd.stopping()
        assert server.recv(1024) == b"STOPPING=1"
        sd.close()


def test_missing_socket_is_reported_once_and_never_raises() -> None:
    with tempfile.TemporaryDirectory() as d:
        sd = SystemdNotifier(str(Path(d) / "gone.sock"))
        assert sd.ready() is False
        assert sd.watchdog() is False


async def test_blocked_event_loop_stops_the_watchdog_pings() -> None:
    with tempfile.TemporaryDirectory(prefix="sdw") as d:
        path = str(Path(d) / "n.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            server.settimeout(0.05)
            stamps: list[float] = []
            done = threading.Event()

            def receive() -> None:  # systemd's side, on its own thread, stamping arrivals
                while not done.is_set():
                    try:
                        if server.recv(64) == b"WATCHDOG=1":
                            stamps.append(time.monotonic())
                    except TimeoutError:
                        pass

            receiver = threading.Thread(target=receive)
            receiver.start()
            sd = SystemdNotifier(path, watchdog_usec=100_000)  # a ping every 50 ms
            task = asyncio.create_task(sd.watchdog_loop())
            try:
                await asyncio.sleep(0.3)
                blocked_at = time.monotonic()
                time.sleep(0.5)  # noqa: ASYNC251  # the point: a blocked loop sends no ping
                await asyncio.sleep(0.3)
            finally:
                task.cancel()
                await asyncio.wait([task])
                done.set()
                receiver.join()
                sd.close()
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert len(stamps) >= 8, stamps
            # The loop was blocked for 0.5 s: one gap that long, and only one.
            assert max(gaps) >= 0.45
            assert sum(1 for g in gaps if g > 0.2) == 1
            assert any(abs(t - blocked_at) < 0.1 for t in stamps)
