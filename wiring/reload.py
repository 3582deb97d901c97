"""Settings reload while running (`SIGHUP`, `systemctl reload polyd`, or `POST /reload`).

The settings file and the environment are read again and compared with the running settings.
What can change safely is applied in place, nothing else:

- API credentials (`CLOB_API_KEY`, `CLOB_API_SECRET`, `CLOB_API_PASSPHRASE`, all three): new L2
  headers from the next request; the user feed re-subscribes with them;
- `CONTROL_TOKEN`: demanded from the next control request;
- `NOTIFY_WEBHOOK_URL`, `NOTIFY_KIND`, `NOTIFY_TELEGRAM_CHAT_ID`, `NOTIFY_MIN_INTERVAL_S`: used
  from the next notification; the `TELEGRAM_*` settings (chat control) restart the bot on them;
- `LOG_LEVEL`: at once.

A change to any other setting (the private key, funder, signature type, database, ports, risk
limits, URLs, strategy names and rules files, …) refuses the whole reload, with one line per
key, and changes nothing; so does a file that does not validate. The rules files themselves are
not read again: the wallets followed and the sniper rules run, and so their leases on a shared
database (`wiring.leases`), stay as they were at start-up. The daemon keeps running on what it
had. Every reload is audited (the keys that changed, never a value), counted in
`polyd_settings_reloads_total{outcome}` and announced to the notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from config import Settings
from errors import ConfigError, StorageError
from observability.logging import Redactor, set_level
from observability.metrics import Metrics
from observability.notify import Notifier
from observability.sidecar import Sidecar
from storage import Repositories
from wiring.shared import Shared
from wiring.stage import Service

log = structlog.get_logger("reload")

CREDENTIALS = ("clob_api_key", "clob_api_secret", "clob_api_passphrase")
CHAT = (
    "telegram_bot_token",
    "telegram_api_url",
    "telegram_notify_fills",
    "telegram_digest_at",
    "telegram_poll_timeout_s",
)
NOTIFY = (
    "notify_webhook_url",
    "notify_kind",
    "notify_telegram_chat_id",
    "notify_min_interval_s",
    *CHAT,
)
RELOADABLE = frozenset({*CREDENTIALS, "control_token", *NOTIFY, "log_level"})

WHY_FIXED = {
    "private_key": "orders are signed with it and the API key belongs to its address",
    "funder_address": "every signed and journaled order names it",
    "signature_type": "every signed and journaled order names it",
    "db_path": "the journal is open on it",
    "database_url": "the journal is open on it",
    "http_host": "the sidecar is listening on it",
    "http_port": "the sidecar is listening on it",
    "mode": "paper and live build different brokers",
    "sniper_name": "the sniper's orders, positions, state and lease are under its name",
    "copy_name": "the copy trader's orders, positions, ledger and lease are under its name",
    "sniper_rules_path": "the rules are read at start-up, and each rule's lease taken then",
    "copy_rules_path": "the wallets are read at start-up, and each wallet's lease taken then",
}

Outcome = Literal["applied", "unchanged", "refused", "invalid"]


class CredentialSink(Protocol):
    """What takes new API credentials: the live broker and the user feed."""

    def set_creds(self, *, api_key: str, api_secret: str, api_passphrase: str) -> None: ...


class Audit(Protocol):
    async def append(self, event: str, **detail: Any) -> None: ...


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the keys it applied, or the lines saying why it changed nothing."""

    outcome: Outcome
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        changed = [k.upper() for k in self.changed]
        return {"reload": self.outcome, "changed": changed, "problems": self.problems}


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The settings whose values differ (secrets compared by value, never shown)."""
    return [name for name in type(old).model_fields if getattr(old, name) != getattr(new, name)]


def refusals(changed: list[str]) -> list[str]:
    """One line per changed key that cannot change while running."""
    lines = []
    for name in changed:
        if name in RELOADABLE:
            continue
        why = WHY_FIXED.get(name, "it is read once at start-up")
        lines.append(f"{name.upper()}: cannot change while running ({why}); restart to apply")
    return lines


class Reloader:
    """Re-read settings and apply what may change; see the module docstring.

    `load` returns the new settings (raising `ConfigError`); the daemon passes one that reads its
    settings file and the environment. Reloads run one at a time.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        load: Callable[[], Settings],
        metrics: Metrics,
        redactor: Redactor,
        audit: Audit,
        notify: Callable[..., object],
        set_control_token: Callable[[str | None], None],
        reconfigure_notifier: Callable[[Settings], None],
        credential_sinks: list[CredentialSink] | None = None,
        on_applied: Callable[[Settings], None] | None = None,
    ) -> None:
        self.settings = settings
        self._load = load
        self._metrics = metrics
        self._redactor = redactor
        self._audit = audit
        self._notify = notify
        self._set_control_token = set_control_token
        self._reconfigure_notifier = reconfigure_notifier
        self._sinks = list(credential_sinks or [])
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self.count = 0

    def request(self) -> None:
        """Ask for a reload (safe from a signal handler); `run()` performs it."""
        self._wanted.set()

    async def run(self) -> None:
        """Perform requested reloads until cancelled (a TaskGroup service)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.reload(source="signal")
            except Exception:  # the task boundary: a failed reload must not end reloading
                log.exception("settings_reload_failed")

    async def control(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The `POST /reload` control route."""
        return (await self.reload(source="control")).as_dict()

    async def reload(self, *, source: str) -> ReloadResult:
        """Re-read the settings and apply what may change; return what happened."""
        async with self._lock:
            result = await self._reload()
            await self._record(result, source)
            return result

    async def _reload(self) -> ReloadResult:
        try:
            new = await asyncio.to_thread(self._load)
        except ConfigError as e:
            return ReloadResult("invalid", problems=list(e.problems))
        old = self.settings
        changed = changed_keys(old, new)
        if not changed:
            return ReloadResult("unchanged")
        problems = refusals(changed)
        if any(k in changed for k in CREDENTIALS) and new.clob_api_key is None:
            problems.append(
                "CLOB_API_KEY, CLOB_API_SECRET, CLOB_API_PASSPHRASE: cannot be removed while "
                "running (they would be derived from PRIVATE_KEY at start-up); restart to apply"
            )
        if problems:
            return ReloadResult("refused", changed=changed, problems=problems)
        self._apply(old, new, changed)
        return ReloadResult("applied", changed=changed)

    def _apply(self, old: Settings, new: Settings, changed: list[str]) -> None:
        # Secrets first into the redactor, so no log line below can carry them.
        self._redactor.add(*new.secret_values())
        if any(k in changed for k in CREDENTIALS):
            assert new.clob_api_key and new.clob_api_secret and new.clob_api_passphrase
            for sink in self._sinks:
                sink.set_creds(
                    api_key=new.clob_api_key.get_secret_value(),
                    api_secret=new.clob_api_secret.get_secret_value(),
                    api_passphrase=new.clob_api_passphrase.get_secret_value(),
                )
        if "control_token" in changed:
            token = new.control_token
            self._set_control_token(token.get_secret_value() if token is not None else None)
        if any(k in changed for k in NOTIFY):
            self._reconfigure_notifier(new)
        if "log_level" in changed:
            set_level(new.log_level)
        self.settings = new
        if self._on_applied is not None:
            self._on_applied(new)

    async def _record(self, result: ReloadResult, source: str) -> None:
        self.count += 1
        self._metrics.settings_reloads_total.labels(result.outcome).inc()
        keys = [k.upper() for k in result.changed]
        if result.outcome == "applied":
            log.info("settings_reloaded", source=source, keys=keys)
            text = f"settings reloaded ({source}): {', '.join(keys)} changed"
        elif result.outcome == "unchanged":
            log.info("settings_reload_unchanged", source=source)
            text = f"settings reloaded ({source}): nothing changed"
        else:
            for line in result.problems:
                log.error("settings_reload_refused", source=source, problem=line)
            text = f"settings reload {result.outcome} ({source}); nothing changed: " + "; ".join(
                result.problems
            )
        try:
            await self._audit.append(
                f"settings_reload_{result.outcome}",
                source=source,
                keys=keys,
                problems=result.problems,
            )
        except StorageError:
            log.error("settings_reload_not_audited", outcome=result.outcome)
        self._notify("reload", f"reload:{self.count}", text, outcome=result.outcome, keys=keys)


class _Daemon(Protocol):
    """The parts of the orchestrator's `Context` a reloader is built from."""

    settings: Settings
    metrics: Metrics
    redactor: Redactor
    repos: Repositories
    notifier: Notifier
    sidecar: Sidecar | None
    shared: Shared
    services: list[Service]


def build_reloader(ctx: _Daemon, *, load: Callable[[], Settings]) -> Reloader:
    """The daemon's reloader over what it built, with its `POST /reload` route registered."""
    sidecar = ctx.sidecar
    reloader = Reloader(
        ctx.settings,
        load=load,
        metrics=ctx.metrics,
        redactor=ctx.redactor,
        audit=ctx.repos.audit,
        notify=ctx.notifier.notify,
        set_control_token=sidecar.set_control_token if sidecar is not None else lambda _: None,
        reconfigure_notifier=ctx.notifier.reconfigure,
        credential_sinks=ctx.shared.credential_sinks,
    )
    if sidecar is not None:
        sidecar.add_control("reload", reloader.control)
    return reloader


class Reloads:
    """The daemon's reload requests: `SIGHUP` from the first moment, the reloader once the
    daemon is built (a request during start-up waits for it). `load` reads the settings again."""

    def __init__(self, *, load: Callable[[], Settings]) -> None:
        self.load = load
        self.reloader: Reloader | None = None
        self._pending = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take `SIGHUP` (its default would end the process)."""
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.request)

    def request(self) -> None:
        if self.reloader is None:
            log.info("reload_deferred", reason="starting")
            self._pending = True
        else:
            self.reloader.request()

    def start(self, ctx: _Daemon) -> Reloader:
        """Build the reloader, add its service to `ctx`, and run a request made meanwhile."""
        reloader = self.reloader = build_reloader(ctx, load=self.load)
        ctx.services.append(("reload", reloader.run))
        if self._pending:
            reloader.request()
        return reloader
