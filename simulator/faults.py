"""Fault knobs: HTTP status injection, latency, late responses, engine restarts, WS trouble.

Every fault is a plain dict with a `kind`, the same body `POST /_sim/fault` accepts:

    {"kind": "status", "route": "POST /order", "status": 429, "count": 3, "retry_after": 1}
    {"kind": "latency", "route": "*", "seconds": 0.5, "count": 2}
    {"kind": "late_response", "route": "POST /order", "seconds": 6, "count": 1}
    {"kind": "accept_then_status", "route": "POST /order", "status": 500, "count": 1}
    {"kind": "drop", "route": "POST /v1/heartbeats", "count": 2}
    {"kind": "engine_restart", "seconds": 2, "post_only_s": 5}
    {"kind": "ws_stall", "channel": "market", "seconds": 20}  (also ws_drop, ws_malformed+count)
    {"kind": "ws_frame", "channel": "market", "frame": "{\"event_type\": \"book\", ...}"}
    {"kind": "data_api", "status": 500, "count": 2}
    {"kind": "data_api_garbage", "count": 1}
    {"kind": "clear"}

`ws_frame` sends `frame` (text, as given) once to every open connection of `channel`: a hostile
or out-of-bounds frame a test writes itself (an ask of size `1e308`), where `ws_malformed` sends
the simulator's own garbage.

`route` is `"METHOD /path"` (path without query), `"* /path"`, or `"*"`. `count` defaults to 1.

`drop` closes the connection without an answer and without running the route: the request never
reached the venue (for heartbeats, the dead-man switch does not see it). A heartbeat can also be
delayed (`latency`) or answered 5xx (`status`, not recorded either).

`accept_then_status` is the venue failing *after* its matching engine took the order: the order is
accepted (it matches, or rests on the book) and the client is answered `status` instead of the
acknowledgement. Polymarket documents HTTP 500 `{"error": "could not run the execution"}` on `POST
/order` (https://docs.polymarket.com/resources/error-codes; captured from the real venue as
`clob_rest/post_order_error_500_could_not_run_execution.json` in the team's fixture set); a 5xx
says nothing about whether the engine acted on the order. Here every later POST of the same signed
order (same hash) is answered `status` too, so a client that retries runs out of retries while the
venue holds the order (the real venue may instead refuse such a re-send as a duplicate: either way
no acknowledgement comes back). `count` is the number of requests the fault takes (every order of a
batch is remembered); the re-sends of a remembered order do not use it up. Only a lookup by the
order's hash (`GET /data/order/{hash}`) tells what happened to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CLOUDFLARE_403 = (
    "<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title></head>"
    '<body><div id="cf-wrapper"><h1>Sorry, you have been blocked</h1>'
    "<p>You are unable to access polymarket.com</p></div></body></html>"
)
CANCEL_ONLY = (
    "Trading is currently cancel-only. New orders are not accepted, but cancels are allowed."
)
POST_ONLY_MODE = "post-only mode: only post-only orders and cancels are allowed"
ORDER_ROUTES = frozenset(
    {
        "POST /order",
        "POST /orders",
        "DELETE /order",
        "DELETE /orders",
        "DELETE /cancel-all",
        "DELETE /cancel-market-orders",
    }
)
KINDS = frozenset(
    {
        "status",
        "latency",
        "late_response",
        "accept_then_status",
        "drop",
        "engine_restart",
        "ws_drop",
        "ws_stall",
        "ws_malformed",
        "ws_frame",
        "data_api",
        "data_api_garbage",
        "clear",
    }
)


@dataclass
class Fault:
    kind: str
    route: str = "*"
    status: int = 500
    count: int = 1
    seconds: float = 0.0
    retry_after: int | None = None
    body: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.route == "*":
            return True
        m, _, p = self.route.partition(" ")
        return (m == "*" or m == method) and p == path


@dataclass
class RestartWindow:
    until_425: float
    until_post_only: float


@dataclass
class FaultRegistry:
    """Pending faults, consumed as matching requests arrive."""

    http: list[Fault] = field(default_factory=list)
    data: list[Fault] = field(default_factory=list)
    restart: RestartWindow | None = None
    # Order hashes an `accept_then_status` fault took: their re-sends get the same status.
    failing_after_accept: dict[str, Fault] = field(default_factory=dict)

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind: {kind!r}")
        return spec

    def add_http(self, f: Fault) -> None:
        self.http.append(f)

    def add_data(self, f: Fault) -> None:
        self.data.append(f)

    def start_restart(self, seconds: float, post_only_s: float) -> None:
        now = time.monotonic()
        self.restart = RestartWindow(now + seconds, now + seconds + post_only_s)

    def clear(self) -> None:
        self.http.clear()
        self.data.clear()
        self.restart = None
        self.failing_after_accept.clear()

    def take(self, pending: list[Fault], method: str, path: str, kinds: set[str]) -> Fault | None:
        for f in pending:
            if f.kind in kinds and f.matches(method, path):
                f.count -= 1
                if f.count <= 0:
                    pending.remove(f)
                return f
        return None

    def restart_phase(self) -> tuple[str, float] | None:
        """Return ("425", remaining) or ("post_only", remaining) during a restart window."""
        r = self.restart
        if r is None:
            return None
        now = time.monotonic()
        if now < r.until_425:
            return "425", r.until_425 - now
        if now < r.until_post_only:
            return "post_only", r.until_post_only - now
        self.restart = None
        return None
