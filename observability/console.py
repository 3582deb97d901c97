"""The web console at `/ui`: what the daemon holds, does and earns, live, on one page.

Served by the sidecar (same loop, same port) from plain files in `observability/ui/static` (no
build step, no CDN: the charting library is vendored, see `observability/ui/VENDORED.md`). The
page reads one JSON "board" built from the operator read model (`storage.views`, the CLI's) plus
the sidecar's health checks:

- `GET /ui/api/access`: whether reads are public and a token is set (no data: open to all);
- `GET /ui/api/board`: the board once;
- `GET /ui/api/events`: the board as server-sent events, pushed every `interval_s` while at least
  one page listens (the browser never queries the database). At most `MAX_CLIENTS` streams; a
  client whose queue is full (it does not read) or whose write stalls `WRITE_TIMEOUT_S` is
  dropped;
- `POST /ui/api/control/<action>`: halt, reduce, resume, cancel-all through the sidecar's control
  path (`Sidecar.run_control`, actor `console`): the same handlers and audit entries as the CLI.

Reads demand the control token as a bearer header unless `UI_PUBLIC_READ=true` (and then only
for a Host header that is an address, not a domain: no DNS rebinding); controls always demand
it. The page keeps the token in the tab's session storage and sends it as a header, never in a
URL or a cookie, so another site cannot act through the browser (no ambient credential).
`exposure_problems` refuses a sidecar bound beyond loopback with no token set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web

from errors import ConfigError, ReportError
from observability.sidecar import SECURITY_HEADERS, Health, Sidecar
from storage.views import MAX_TRADES, Views, jsonable

log = structlog.get_logger("console")

STATIC: Final = Path(__file__).parent / "ui" / "static"
MAX_CLIENTS: Final = 4
"""The most event streams open at once (a console is one operator's page or two)."""
QUEUE_SIZE: Final = 2
"""Boards waiting for one client; a client this far behind is dropped."""
WRITE_TIMEOUT_S: Final = 5.0
KEEPALIVE_S: Final = 15.0
CONTROLS: Final = ("halt", "reduce", "resume", "cancel-all")
RECENT_TRADES: Final = 30
OPEN_ORDERS: Final = 50
CHART_DAYS: Final = 7
_END: Final = b""
"""Put in a client's queue to end its stream."""


def exposure_problems(host: str, token_set: bool) -> list[str]:
    """The ConfigError lines for a sidecar reachable beyond this machine with no token."""
    if token_set or host == "localhost":
        return []
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        loopback = False
    if loopback:
        return []
    return [
        f"HTTP_HOST: {host} is not a loopback address and CONTROL_TOKEN is not set; set "
        "CONTROL_TOKEN (the console and control routes demand it), or keep HTTP_HOST=127.0.0.1 "
        "and reach the sidecar through an SSH tunnel"
    ]


@dataclass(eq=False)
class _Client:
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False

    def offer(self, data: bytes) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:  # it does not read: drop it rather than buffer for it
            self.drop()

    def drop(self) -> None:
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_END)


TRADES_TTL_S: Final = 60.0
"""The longest the fills part of the board is reused while nothing in `status` moved."""


@dataclass
class _TradesCache:
    """The fills part of the board (recent fills, the PnL charts) is a replay of every fill
    (`Views.trades`, `Views.pnl_days`): rebuilt only when the day, the fill count, realized PnL,
    fees, a strategy's cost basis (a new fill, a failed one) or the number of named markets moved,
    or after `TRADES_TTL_S`."""

    entry: tuple[tuple[Any, ...], float, dict[str, Any]] | None = None
    """(key, when, part), replaced whole: two readers in worker threads never mix entries."""


def board(
    views: Views,
    *,
    daily_loss_limit: Decimal,
    now: datetime,
    cache: _TradesCache | None = None,
    monotonic: float = 0.0,
) -> dict[str, Any]:
    """The page's data from the read model: status, positions, open orders, recent fills, the
    realized PnL of today (cumulative, per fill) and of the last `CHART_DAYS` UTC days."""
    today = now.astimezone(UTC).date()
    status = views.status_view(daily_loss_limit=daily_loss_limit, now=now)
    key = (
        today,
        status.fills,
        status.realized_pnl,
        status.fees_paid,
        tuple((st.name, st.positions, st.cost_basis) for st in status.strategies),
        len(views.names()),  # a market named since: the fills show its name
    )
    entry = cache.entry if cache is not None else None
    if entry is not None and entry[0] == key and monotonic - entry[1] < TRADES_TTL_S:
        part = entry[2]
    else:
        part = _trades_part(views, today)
        if cache is not None:
            cache.entry = (key, monotonic, part)
    return {
        "at": now.isoformat(timespec="seconds"),
        "status": jsonable(status),
        "positions": jsonable(views.positions_view()),
        "orders": jsonable(views.orders_view(open_only=True, limit=OPEN_ORDERS)),
        **part,
    }


def _trades_part(views: Views, today: date) -> dict[str, Any]:
    todays = [t for t in reversed(views.trades(day=today, limit=MAX_TRADES)) if t.pnl is not None]
    running = Decimal(0)
    curve: list[dict[str, str]] = []
    for t in todays:
        running += t.pnl or 0
        curve.append({"at": t.at, "pnl": str(running)})
    by_day: dict[str, Decimal] = {}
    for d in views.pnl_days(days=CHART_DAYS):
        by_day[d.day] = by_day.get(d.day, Decimal(0)) + d.realized_pnl
    days = [(today - timedelta(days=n)).isoformat() for n in range(CHART_DAYS - 1, -1, -1)]
    return {
        "trades": jsonable(views.trades(limit=RECENT_TRADES)),
        "pnl_today": curve,
        "pnl_days": [{"day": d, "pnl": str(by_day.get(d, Decimal(0)))} for d in days],
    }


class Console:
    """The `/ui` routes on a sidecar (see the module docstring). `mount` before it starts.

    The board is of `daemon_id`'s rows, the scope the CLI reads by default (`storage.views`): its
    trading state, orders, strategies' positions and fills, the unattributed holdings, its
    account snapshot and the shared accounts it trades on (their halt and PnL summed over every
    daemon). The daemon passes its own DAEMON_ID."""

    def __init__(
        self,
        sidecar: Sidecar,
        *,
        health: Health,
        db_path: Path,
        database_url: str | None = None,
        daily_loss_limit: Decimal,
        daemon_id: str | None = None,
        public_read: bool = False,
        interval_s: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sidecar = sidecar
        self._daemon_id = daemon_id  # the rows shown: this daemon's (None: every daemon's)
        self._health = health
        self._db_path = db_path
        self._database_url = database_url
        self._limit = daily_loss_limit
        self._public_read = public_read
        self._interval_s = interval_s
        self._now = now
        self._clients: set[_Client] = set()
        self._pusher: asyncio.Task[None] | None = None
        self._cache = _TradesCache()

    def mount(self) -> None:
        """Add the routes; raise ConfigError for a sidecar bound beyond loopback without a
        token (`exposure_problems`)."""
        if problems := exposure_problems(self._sidecar.host, self._sidecar.controls_enabled):
            raise ConfigError(problems)
        app = self._sidecar.app
        app.router.add_get("/ui", self._redirect)
        app.router.add_get("/ui/", self._index)
        app.router.add_static("/ui/static", STATIC, show_index=False, follow_symlinks=False)
        app.router.add_get("/ui/api/access", self._access)
        app.router.add_get("/ui/api/board", self._get_board)
        app.router.add_get("/ui/api/events", self._events)
        app.router.add_post("/ui/api/control/{action}", self._control)
        app.on_shutdown.append(self._close)

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- access ---------------------------------------------------------------------------------

    def _refusal(self, request: web.Request, *, read: bool) -> web.Response | None:
        """None when `request` may go on, else the answer refusing it."""
        if read and self._public_read and _address_host(request.host):
            return None
        if not self._sidecar.controls_enabled:
            return _json({"error": "the console needs CONTROL_TOKEN set on the daemon"}, 403)
        if not self._sidecar.authorized(request):
            log.warning("console_refused", path=request.path, remote=request.remote)
            return _json({"error": "missing or wrong bearer token"}, 401)
        return None

    # -- pages ----------------------------------------------------------------------------------

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    # -- data -----------------------------------------------------------------------------------

    async def board(self) -> dict[str, Any]:
        """The board, with the sidecar's health; the read model is read in a worker thread."""
        status, body = await self._health.evaluate()
        now, mono = self._now(), time.monotonic()

        def read() -> dict[str, Any]:
            with Views.open(self._db_path, self._database_url, daemon_id=self._daemon_id) as views:
                return board(
                    views, daily_loss_limit=self._limit, now=now, cache=self._cache, monotonic=mono
                )

        try:
            out = await asyncio.to_thread(read)
        except ReportError as e:  # names the database and the problem; no secret in it
            out = {"at": now.isoformat(timespec="seconds"), "error": str(e)}
        out["health"] = {"status": status, "checks": body.get("checks", {})}
        return out

    async def _access(self, request: web.Request) -> web.Response:
        """What the page needs to know before it asks for data (no data, no token needed)."""
        return _json({"public_read": self._public_read, "token": self._sidecar.controls_enabled})

    async def _get_board(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request, read=True)) is not None:
            return refused
        return _json(await self.board())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request, read=True)) is not None:
            return refused
        if len(self._clients) >= MAX_CLIENTS:
            return _json({"error": f"at most {MAX_CLIENTS} console streams at once"}, 503)
        resp = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
            }
        )
        await resp.prepare(request)
        client = _Client()
        self._clients.add(client)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push(), name="console:push")
        log.info("console_stream_opened", clients=len(self._clients), remote=request.remote)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    data = b": keepalive"
                else:
                    if data == _END:
                        break
                    data = b"event: board\ndata: " + data
                await asyncio.wait_for(resp.write(data + b"\n\n"), WRITE_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as e:
            log.info("console_stream_dropped", reason=type(e).__name__)
        finally:
            self._clients.discard(client)
        return resp

    async def _push(self) -> None:
        """Build the board and offer it to every client while any listens."""
        while self._clients:
            try:
                data = orjson.dumps(await self.board(), default=str)
            except Exception:  # the task's loop boundary: log and go on
                log.exception("console_board_failed")
            else:
                for client in list(self._clients):
                    client.offer(data)
            await asyncio.sleep(self._interval_s)

    async def _close(self, app: web.Application) -> None:
        for client in list(self._clients):
            client.drop()
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher

    # -- controls -------------------------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request, read=False)) is not None:
            return refused
        action = request.match_info["action"]
        if action not in CONTROLS:
            return _json({"error": f"no such action: {action}"}, 404)
        try:
            raw = await request.read()
            payload = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
        except (ValueError, orjson.JSONDecodeError) as e:
            return _json({"error": f"invalid JSON body: {e}"}, 400)
        reason = str(payload.get("reason") or "").strip()[:200]
        try:
            result = await self._sidecar.run_control(
                action, {"reason": reason} if reason else {}, actor="console"
            )
        except KeyError:  # the daemon is still building its trading stack
            return _json({"error": f"{action} is not available yet: the daemon is starting"}, 503)
        return _json({"ok": True, "action": action, **result})


def _address_host(host: str) -> bool:
    """Whether a request's Host header names an IP address or localhost, not a domain: the
    public reads are refused to a domain name, so a page elsewhere cannot rebind its own name
    to this address (DNS rebinding) and read the board through the operator's browser."""
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _json(body: Any, status: int = 200) -> web.Response:
    resp = web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json"
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp
