"""Liveness of one websocket connection: the PONG deadline and silence detection.

Shared by the market feed's shards and the user feed. The venue answers the text `PING` with
`PONG` and drops a socket that sent nothing for ~10 s; a socket can also stay open while the
venue sends nothing at all (a silent stall), which only a deadline notices. This holds the
clocks of one connection and says when to ping and whether the connection is dead; sending
and reconnecting are the owner's business.
"""

from __future__ import annotations

from typing import Final

NO_PONG: Final = "no_pong"
STALL: Final = "stall"


class Liveness:
    """The clocks of one connection (monotonic seconds), reset by `on_connect`."""

    def __init__(self) -> None:
        self.connected_at = float("-inf")
        self.last_frame = float("-inf")
        self.last_data = float("-inf")
        self.data_frames = 0
        self.gap_ewma = 0.0
        self.ping_sent_at = float("-inf")
        self.ping_outstanding_since: float | None = None

    def on_connect(self, now: float) -> None:
        """Start the clocks of a fresh connection."""
        self.connected_at = now
        self.last_frame = now
        self.last_data = now
        self.data_frames = 0
        self.gap_ewma = 0.0
        self.ping_sent_at = now
        self.ping_outstanding_since = None

    def on_frame(self, now: float) -> None:
        """Any frame arrived (data or `PONG`)."""
        self.last_frame = now

    def on_data(self, now: float) -> None:
        """Record a data frame (not a PONG): the stall rule learns the usual gap."""
        if self.data_frames:
            gap = now - self.last_data
            self.gap_ewma = gap if self.data_frames == 1 else 0.8 * self.gap_ewma + 0.2 * gap
        self.data_frames += 1
        self.last_data = now

    def on_pong(self) -> None:
        """The venue answered the outstanding PING."""
        self.ping_outstanding_since = None

    def ping_due(self, now: float, interval_s: float) -> bool:
        """True when `interval_s` has passed since the last PING."""
        return now - self.ping_sent_at >= interval_s

    def pinged(self, now: float) -> None:
        """A PING was sent; its deadline runs from the first unanswered one."""
        self.ping_sent_at = now
        if self.ping_outstanding_since is None:
            self.ping_outstanding_since = now

    def pong_overdue(self, now: float, pong_timeout_s: float) -> float | None:
        """Seconds the oldest unanswered PING has waited, if past `pong_timeout_s`; else None."""
        since = self.ping_outstanding_since
        if since is not None and now - since > pong_timeout_s:
            return now - since
        return None

    def data_stalled(self, now: float, stale_after_s: float) -> float | None:
        """Seconds of data silence if data was flowing and then stopped for `stale_after_s` and
        for several times its usual gap (a busy market feed); else None."""
        silence = now - self.last_data
        if self.data_frames >= 2 and silence > stale_after_s and silence > 4 * self.gap_ewma:
            return silence
        return None

    def silent(self, now: float, stale_after_s: float) -> float | None:
        """Seconds since any frame (PONGs included) if more than `stale_after_s`; else None.

        For a feed whose data is sparse (the user channel of a quiet account), where PONGs are
        the only regular traffic."""
        silence = now - self.last_frame
        return silence if silence > stale_after_s else None
