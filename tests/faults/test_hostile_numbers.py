"""Hostile numbers on the real market websocket never trade; a stalled user websocket shows on
/health and ends with a reconcile. The daemon runs as a subprocess against the simulator."""

from __future__ import annotations

import time

import orjson

from tests.faults.conftest import RigFactory
from tests.harness import wait_until

# An ask inside the trigger rule's band (0.40-0.60, >= 5 shares) whose other number is hostile:
# without bounds, the first one makes the sniper buy (the venue's real book is empty).
HOSTILE_ASKS = [
    ("0.50", "1e308"),  # an absurd size
    ("0.50", "-10"),  # a negative size
    ("1.5", "10"),  # a price above 1
    ("NaN", "10"),
    ("0.50", "NaN"),
    ("0.50", "1e999"),
]


def _book_frame(token: str, price: str, size: str) -> str:
    return orjson.dumps(
        {
            "event_type": "book",
            "asset_id": token,
            "market": "0x" + "ab" * 32,
            "bids": [],
            "asks": [{"price": price, "size": size}],
            "timestamp": str(int(time.time() * 1000)),
            "hash": "hostile",
        }
    ).decode()


def test_out_of_bound_book_frames_on_the_market_ws_never_reach_the_venue(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    assert rig.our_orders() == []
    before = rig.d.metric("polyd_feed_malformed_total", feed="market")
    for price, size in HOSTILE_ASKS:
        rig.sim.fault(kind="ws_frame", channel="market", frame=_book_frame(rig.token, price, size))
    wait_until(
        lambda: (
            rig.d.metric("polyd_feed_malformed_total", feed="market") >= before + len(HOSTILE_ASKS)
        ),
        15,
        what="every hostile book counted as malformed",
    )
    time.sleep(1.5)  # room for a (wrong) order to reach the venue
    assert rig.our_orders() == []
    events = rig.d.log_events()
    assert any(e.get("event") == "feed_malformed" and e.get("source") == "market" for e in events)
    assert "order_submitted" not in rig.d.event_names()
    # The books were refused, not the feed: a real opportunity still trades, once.
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 1


def test_a_hostile_price_change_leaves_the_book_unusable_until_a_fresh_snapshot(
    make_rig: RigFactory,
) -> None:
    rig = make_rig()
    frame = orjson.dumps(
        {
            "event_type": "price_change",
            "market": "0x" + "ab" * 32,
            "price_changes": [
                {"asset_id": rig.token, "price": "0.50", "size": "1e308", "side": "SELL"}
            ],
            "timestamp": str(int(time.time() * 1000)),
        }
    ).decode()
    before = rig.d.metric("polyd_feed_malformed_total", feed="market")
    rig.sim.fault(kind="ws_frame", channel="market", frame=frame)
    wait_until(
        lambda: rig.d.metric("polyd_feed_malformed_total", feed="market") > before,
        15,
        what="the hostile price_change counted",
    )
    time.sleep(1.0)
    assert rig.our_orders() == []
    # The book was marked in doubt and fetched again over REST.
    wait_until(lambda: "book_resynced" in rig.d.event_names(), 10, what="a REST resync")
    rig.trade_once()
    assert rig.assert_consistent().venue_orders == 1


def test_a_stalled_user_ws_degrades_health_then_reconnects_and_reconciles(
    make_rig: RigFactory,
) -> None:
    pong_timeout_s = "1"
    rig = make_rig(
        sniper=False,
        FEED_PING_INTERVAL_S="0.5",
        USER_FEED_PONG_TIMEOUT_S=pong_timeout_s,
        USER_FEED_STALE_AFTER_S="2",
    )
    rig.wait_health(200)
    _, body = rig.d.health()
    first = body["checks"]["venue:user_feed"]["detail"]
    assert first["reconciled"] is True and first["reconciles"] >= 1
    rig.sim.fault(kind="ws_stall", channel="user", seconds=30)
    stalled_at = time.monotonic()

    def degraded() -> dict[str, object] | None:
        status, b = rig.d.health()
        check = b.get("checks", {}).get("venue:user_feed", {})
        return b if status == 503 and check.get("ok") is False else None

    wait_until(degraded, 10, interval=0.05, what="/health 503 for the user feed")
    # Within the configured window: the PONG deadline plus a ping interval and some slack.
    assert time.monotonic() - stalled_at < 0.5 + float(pong_timeout_s) + 2.0

    def recovered() -> dict[str, object] | None:
        status, b = rig.d.health()
        detail = b.get("checks", {}).get("venue:user_feed", {}).get("detail", {})
        return (
            detail if status == 200 and detail.get("reconciles", 0) > first["reconciles"] else None
        )

    detail = wait_until(recovered, 20, interval=0.1, what="a reconnect and its reconcile")
    assert detail["last_lost"] == "no_pong"
    assert detail["connects"] > first["connects"]
    names = rig.d.event_names()
    lost = names.index("user_feed_no_pong")
    assert "user_feed_reconciled" in names[lost:]
    assert rig.d.metric("polyd_feed_reconnects_total", feed="user", reason="no_pong") >= 1
