"""A tiny sd_notify client: tell systemd we are ready, alive, stopping, and what we are doing.

systemd starts a `Type=notify` unit with `NOTIFY_SOCKET` (a unix datagram socket path, or `@name`
for the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC`. The daemon sends
`READY=1` once start-up reconciliation is done, `WATCHDOG=1` from a task on its own event loop at
half the watchdog period (so a blocked loop stops the pings and systemd restarts the service),
`STOPPING=1` when it begins to stop, and `STATUS=` lines for `systemctl status`.

Without `NOTIFY_SOCKET` every call is a cheap no-op, so the daemon runs the same outside systemd.
Sending never raises and never blocks: the socket is non-blocking and a failed send is logged.
"""

from __future__ import annotations

import asyncio
import socket

import structlog

log = structlog.get_logger("systemd")


def _address(path: str) -> str | bytes:
    # "@name" is the abstract namespace: the kernel name starts with a NUL byte.
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


class SystemdNotifier:
    """Send sd_notify messages to `socket_path`; a no-op when it is None or empty."""

    def __init__(self, socket_path: str | None, *, watchdog_usec: int | None = None) -> None:
        self._path = socket_path or None
        self._sock: socket.socket | None = None
        self._failed = False
        usec = watchdog_usec or 0
        # Ping at half the period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s: float | None = usec / 2_000_000 if usec > 0 else None

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; return True if it was sent."""
        if self._path is None or not assignments:
            return False
        data = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, _address(self._path))
        except OSError as e:
            if not self._failed:  # say it once; a dead socket would otherwise flood the log
                log.warning("sd_notify_failed", error=f"{type(e).__name__}: {e}")
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """`READY=1`: start-up is done (systemd marks the unit active)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        """`STOPPING=1`: a graceful stop has begun."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """`STATUS=text`: one line shown by `systemctl status`."""
        return self.notify(f"STATUS={text.splitlines()[0] if text else ''}")

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: the event loop is alive."""
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog every half period until cancelled; return at once if it is off."""
        interval = self.watchdog_interval_s
        if not self.enabled or interval is None:
            return
        log.info("sd_watchdog_started", interval_s=interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
