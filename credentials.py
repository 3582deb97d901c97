"""`python -m orchestrator rotate-api-key`: new API credentials without stopping the daemon.

1. Create a new API key at the venue (L1: signed by `PRIVATE_KEY`, a nonce never used before).
2. Write it to the settings file (`CLOB_API_KEY`, `CLOB_API_SECRET`, `CLOB_API_PASSPHRASE`),
   atomically, mode 0600; every other line is kept as it was.
3. Reload the running daemon: `POST /reload` with `CONTROL_TOKEN`, or `SIGHUP` to `--pid`. Its
   next request is signed with the new key and its user feed re-subscribes with it.
4. Delete the old key at the venue (L2, signed with the old key): it is refused from then on.

If the daemon refuses the reload, the file is put back and the new key deleted: nothing changes.
No credential is ever printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Settings
from errors import PolydError
from venue.clob.keys import ApiKeys, Credentials

ENV_KEYS = ("CLOB_API_KEY", "CLOB_API_SECRET", "CLOB_API_PASSPHRASE")


class RotationError(Exception):
    """Rotation stopped; the message says what was left as it was."""


@dataclass
class Rotation:
    """What a rotation did, in lines for the operator (no secret in any of them)."""

    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def set_env_values(path: Path, values: Mapping[str, str]) -> str:
    """Set `values` in the env file at `path` (replacing `KEY=` lines, appending missing keys),
    written atomically with mode 0600; return the previous text ("" if there was no file)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = old.splitlines()
    left = dict(values)
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if "=" in line and not line.lstrip().startswith("#") and name in left:
            lines[i] = f"{name}={left.pop(name)}"
    lines.extend(f"{k}={v}" for k, v in left.items())
    write_private(path, "\n".join(lines) + "\n")
    return old


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (temp file, fsync, rename), mode 0600, owned as
    before."""
    owner = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:  # run as root (sudo): the daemon's user keeps reading its file
            with contextlib.suppress(PermissionError):
                os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rotate_api_key(
    settings: Settings,
    *,
    env_file: Path,
    reload: Callable[[], Mapping[str, Any] | None],
    keys: ApiKeys | None = None,
    nonce: int | None = None,
) -> Rotation:
    """Rotate the API key; see the module docstring. `reload` asks the running daemon to reload
    and returns its answer (None when no daemon runs, or when it cannot say: `SIGHUP`)."""
    if settings.private_key is None:
        raise RotationError("PRIVATE_KEY is not set: API keys are created with it")
    api = keys or ApiKeys(
        host=settings.clob_host,
        chain_id=settings.chain_id,
        private_key=settings.private_key.get_secret_value(),
        timeout_s=settings.http_timeout_s,
    )
    out = Rotation()
    try:
        old = _current(settings, api)
        try:
            new = api.create(nonce if nonce is not None else int(time.time()))
        except PolydError as e:
            raise RotationError(f"the venue did not create a new API key: {e}") from None
        out.say(f"created a new API key for {api.address}")
        previous = set_env_values(
            env_file,
            dict(zip(ENV_KEYS, (new.api_key, new.api_secret, new.api_passphrase), strict=True)),
        )
        out.say(f"wrote it to {env_file} (mode 0600)")
        try:
            answer = reload()
        except Exception as e:
            _undo(api, new, env_file, previous)
            raise RotationError(
                f"the daemon did not reload ({e}); the settings file was restored and the new "
                "key deleted, nothing changed"
            ) from None
        if answer is not None and answer.get("reload") != "applied":
            _undo(api, new, env_file, previous)
            problems = "; ".join(str(p) for p in answer.get("problems") or [])
            raise RotationError(
                f"the daemon refused the reload ({answer.get('reload')}: {problems}); the "
                "settings file was restored and the new key deleted, nothing changed"
            )
        out.say(
            "the daemon reloaded: it signs with the new key from its next request"
            if answer is not None
            else "no daemon answered: the next start uses the new key"
        )
        try:
            api.delete(old)
        except PolydError as e:
            raise RotationError(
                f"the new key is in use, but the venue did not delete the old one ({e}); "
                "delete it later or run rotate-api-key again"
            ) from None
        out.say("deleted the old API key at the venue")
        return out
    finally:
        if keys is None:
            api.close()


def _current(settings: Settings, api: ApiKeys) -> Credentials:
    """The credentials in use: the configured ones, or those derived from the private key."""
    if settings.clob_api_key and settings.clob_api_secret and settings.clob_api_passphrase:
        return Credentials(
            settings.clob_api_key.get_secret_value(),
            settings.clob_api_secret.get_secret_value(),
            settings.clob_api_passphrase.get_secret_value(),
        )
    try:
        return api.derive(0)
    except PolydError as e:
        raise RotationError(f"cannot find the API key in use (derive failed: {e})") from None


def _undo(api: ApiKeys, new: Credentials, env_file: Path, previous: str) -> None:
    if previous:
        write_private(env_file, previous)
    else:
        env_file.unlink(missing_ok=True)
    with contextlib.suppress(PolydError):  # an unused key left behind is harmless
        api.delete(new)


def sighup(pid: int) -> Callable[[], None]:
    """A `reload` that signals the daemon `pid` and cannot confirm the outcome."""

    def send() -> None:
        os.kill(pid, signal.SIGHUP)
        time.sleep(2.0)  # the daemon reloads in well under this; SIGHUP has no answer

    return send
