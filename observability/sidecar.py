"""The HTTP sidecar on the daemon's own event loop: `/health`, `/metrics` and the control routes.

`/health` answers 200 only when the daemon is running and every registered check passes; otherwise
503 with the same JSON body, so an uptime monitor needs nothing but the status code. Control routes
(`POST /halt`, `/resume`, …) exist only when a `CONTROL_TOKEN` is configured, and demand it as a
bearer token, compared in constant time. Every answer carries the security headers of
`SECURITY_HEADERS` (the web console at `/ui`, `observability.console`, is served here too).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from errors import AlreadyRunning, ConfigError
from observability.health import CheckFn, CheckResult
from observability.metrics import Metrics

log = structlog.get_logger("sidecar")


class Phase(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


ControlFn = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


@dataclass
class Health:
    """The daemon's health: a life-cycle phase plus checks registered by components."""

    mode: str
    version: str
    check_timeout_s: float = 1.0
    phase: Phase = Phase.STARTING
    started_monotonic: float = field(default_factory=time.monotonic)
    _checks: dict[str, CheckFn] = field(default_factory=dict)

    def register(self, name: str, check: CheckFn) -> None:
        """Add a named check; it is called on every /health request and must be cheap."""
        self._checks[name] = check

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    async def evaluate(self) -> tuple[str, dict[str, Any]]:
        """Run every check; return the overall status word and the JSON body."""
        results: dict[str, dict[str, Any]] = {}
        for name, fn in list(self._checks.items()):
            try:
                res = fn()
                if inspect.isawaitable(res):
                    res = await asyncio.wait_for(res, self.check_timeout_s)
                assert isinstance(res, CheckResult)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a broken check is a failed check, never a broken endpoint
                res = CheckResult(False, f"check raised {type(e).__name__}")
            results[name] = {"ok": res.ok, "detail": res.detail}
        if self.phase is not Phase.RUNNING:
            status = self.phase.value
        elif all(r["ok"] for r in results.values()):
            status = "ok"
        else:
            status = "degraded"
        body = {
            "status": status,
            "mode": self.mode,
            "version": self.version,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "checks": results,
        }
        return status, body


SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""No inline script or style, no framing, no MIME sniffing, no referrer: on every answer."""


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as e:  # 404, 405: the same headers on an error page
        e.headers.update(SECURITY_HEADERS)
        raise
    if not resp.prepared:  # a stream (server-sent events) sets its own before it starts
        resp.headers.update(SECURITY_HEADERS)
    return resp


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json"
    )


class Sidecar:
    """aiohttp app served with AppRunner + TCPSite inside the daemon's loop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        health: Health,
        metrics: Metrics,
        control_token: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._health = health
        self._metrics = metrics
        self._token = control_token.encode() if control_token else None
        self._controls: dict[str, ControlFn] = {}
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None
        self.app = web.Application(middlewares=[security_headers])
        self.app.router.add_get("/health", self._get_health)
        self.app.router.add_get("/metrics", self._get_metrics)
        self.app.router.add_post("/{action:[a-z][a-z0-9-]*}", self._post_control)

    def add_control(self, action: str, handler: ControlFn) -> None:
        """Expose `POST /<action>` (bearer-token protected) calling `handler(json_body)`."""
        self._controls[action] = handler

    def set_control_token(self, token: str | None) -> None:
        """Demand `token` from the next control request on (None disables the routes)."""
        self._token = token.encode() if token else None

    @property
    def host(self) -> str:
        return self._host

    @property
    def controls_enabled(self) -> bool:
        return self._token is not None

    def authorized(self, request: web.Request) -> bool:
        """Whether `request` carries the control token as its bearer token (constant time)."""
        if self._token is None:
            return False
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self._token)

    async def start(self) -> None:
        """Listen on `host:port`; raise `AlreadyRunning` if another process has that address,
        `ConfigError` if this machine cannot listen there (unknown host, privileged port)."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise self._bind_error(e) from None
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("sidecar_listening", host=self._host, port=self.bound_port)

    def _bind_error(self, e: OSError) -> Exception:
        where = f"{self._host}:{self._port}"
        if e.errno == errno.EADDRINUSE:
            return AlreadyRunning(
                f"the sidecar address {where} is in use by another process (another polyd?); "
                "stop it, or set HTTP_PORT to a free port"
            )
        reason = e.strerror or type(e).__name__
        return ConfigError([f"HTTP_HOST, HTTP_PORT: cannot listen on {where}: {reason}"])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_health(self, request: web.Request) -> web.Response:
        status, body = await self._health.evaluate()
        return _json(body, 200 if status == "ok" else 503)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self._metrics.render())
        resp.headers["Content-Type"] = self._metrics.content_type
        return resp

    async def _post_control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        handler = self._controls.get(action)
        if handler is None:
            return _json({"error": f"no such action: {action}"}, 404)
        if self._token is None:
            return _json({"error": "control routes are disabled: set CONTROL_TOKEN"}, 403)
        if not self.authorized(request):
            log.warning("control_refused", action=action, remote=request.remote)
            return _json({"error": "missing or wrong bearer token"}, 401)
        try:
            raw = await request.read()
            payload = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
        except (ValueError, orjson.JSONDecodeError) as e:
            return _json({"error": f"invalid JSON body: {e}"}, 400)
        result = await self.run_control(action, payload, actor="http")
        return _json({"ok": True, "action": action, **result})

    async def run_control(
        self, action: str, body: Mapping[str, Any], *, actor: str
    ) -> Mapping[str, Any]:
        """Run the control `action` for `actor` (who asked: `http` for the bearer-token route,
        `telegram:<chat id>` for chat control), the one path every operator command takes. The
        handler records `actor` in the audit entry it writes. Raise KeyError for no such action.
        """
        handler = self._controls[action]
        log.info("control_action", action=action, actor=actor)
        return await handler({**body, "actor": actor})
