"""One writer per database: the lock a daemon takes before it touches its database.

SQLite's own locks cannot do this job. They are held per transaction and dropped at each COMMIT,
so a second daemon sees nothing wrong until two writers interleave; `locking_mode=EXCLUSIVE`
would hold one for the connection's life but also shuts out the read-only operator commands
(`status`, `positions`, `orders`); and they are POSIX record locks, which a process loses as soon
as it closes *any* descriptor of the file. So the daemon takes `flock(LOCK_EX)` on a sidecar file,
`<database>.lock`, and keeps the descriptor open for its whole life. The kernel drops the lock
when the process ends, however it ends (`kill -9` included): there is never a stale lock to
clean up, and the file's presence means nothing. The holder writes its pid into the file so the
daemon that is refused can say who holds it.

`WriterLock` is the whole contract the daemon relies on, so a PostgreSQL advisory lock (or
per-strategy leases) can take this one's place without touching the life cycle.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

import structlog

from errors import AlreadyRunning, FatalError

log = structlog.get_logger("storage")


class WriterLock(Protocol):
    """Held by the one process allowed to write a database, from before it opens it until after
    it closes it."""

    async def acquire(self) -> None:
        """Take the lock or raise `AlreadyRunning` at once (never wait for it)."""

    async def release(self) -> None:
        """Give the lock up (idempotent)."""


class NoLock:
    """For an in-memory database: each process has its own, so there is nothing to share."""

    async def acquire(self) -> None:
        return None

    async def release(self) -> None:
        return None


class FileLock:
    """`flock(LOCK_EX | LOCK_NB)` on `<path>.lock`, held through an open descriptor.

    `what` names the thing guarded in the refusal and `hint` says what to do about it.
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str = "the database",
        hint: str = "stop it first, or give this one another DB_PATH",
    ) -> None:
        self.target = Path(path).expanduser().absolute()
        self.path = self.target.with_name(self.target.name + ".lock")
        self.what = what
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self) -> None:
        # A few syscalls on a local file, once at start-up: not worth a thread.
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise FatalError(f"cannot open the lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another polyd ({holder}) is running on {self.what} {self.target} "
                f"(it holds {self.path.name}); {self.hint}"
            ) from None
        except OSError as e:  # e.g. a filesystem without locks
            os.close(fd)
            raise FatalError(f"cannot lock {self.path}: {e.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # the lock holds anyway; only the refusal's message loses the pid
            log.warning("lock_pid_not_written", path=str(self.path), error=e.strerror)
        self._fd = fd

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The file stays: removing it would let a newcomer lock a fresh file while a third
        # process still waits on the old one. Emptying it says nobody holds it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        if pid > 0:
            return f"pid {pid}"
    # The holder writes its pid just after it locks: between the two, the file is empty.
    return "pid unknown"


def writer_lock(db_path: Path) -> WriterLock:
    """The lock that guards `db_path`: a file lock beside it, none for `:memory:`."""
    if str(db_path) == ":memory:":
        return NoLock()
    return FileLock(db_path)
