"""The fault rig: a simulator subprocess, one quiet "trigger" market, and the daemon against it.

The sniper watches only the trigger market, with one rule (BUY FAK when an ask sits inside
0.40-0.60 with at least 5 shares). `Rig.trigger()` makes exactly one opportunity: it sweeps any
ask left over (so the rule re-arms), then rests a 5-share ask at 0.50 from a simulated maker.
Each trigger therefore asks the daemon for one order, and the venue's ledger says whether it
arrived once, never, or twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    TERMINAL,
    Comparison,
    DaemonProcess,
    HarnessError,
    Json,
    SimProcess,
    TcpProxy,
    check_exactly_once,
    compare,
    wait_until,
)
from tests.helpers import ExactlyOnce

SLUG = "fault-trigger"
MAKER = "0x" + "5e" * 20
ASK_PRICE = Decimal("0.50")
ASK_SIZE = Decimal("5")


def trigger_rules(workdir: Path, *, take_profit: str | None = None) -> Path:
    path = workdir / "trigger-rules.toml"
    tp = f'take_profit = "{take_profit}"\n' if take_profit else ""
    path.write_text(
        "[[rules]]\n"
        'name = "trigger"\n'
        'min_price = "0.40"\n'
        'max_price = "0.60"\n'
        'min_size = "5"\n'
        'max_notional = "3"\n'
        'order_type = "FAK"\n'
        "max_entries = 1000\n"
        "cooldown_s = 0\n"
        f"{tp}"
        "[rules.select]\n"
        f'slugs = ["{SLUG}"]\n'
    )
    return path


@dataclass
class Rig:
    sim: SimProcess
    d: DaemonProcess
    token: str
    workdir: Path
    proxy: TcpProxy | None = None

    # the venue side ------------------------------------------------------------------------
    def our_orders(self) -> list[Json]:
        me = self.d.address.lower()
        return [o for o in self.sim.ledger()["orders"] if str(o["maker"]).lower() == me]

    def asks_in_band(self) -> Decimal:
        book = self.sim.book(self.token)
        return sum(
            (Decimal(a["size"]) for a in book["asks"] if Decimal(a["price"]) <= Decimal("0.60")),
            Decimal(0),
        )

    def trigger(self) -> None:
        """Offer exactly one opportunity (sweep leftovers first so the rule re-arms)."""
        left = self.asks_in_band()
        if left > 0:
            self.sim.seed_orders(
                [
                    {
                        "maker": "0x" + "7a" * 20,
                        "token_id": self.token,
                        "side": "BUY",
                        "price": "0.60",
                        "size": str(left),
                    }
                ]
            )
            time.sleep(0.4)  # let the feed show the empty book: the rule sees "false", re-arms
        self.sim.seed_orders(
            [
                {
                    "maker": MAKER,
                    "token_id": self.token,
                    "side": "SELL",
                    "price": str(ASK_PRICE),
                    "size": str(ASK_SIZE),
                }
            ]
        )

    def wait(self, pred: Callable[[], Any], timeout: float, *, what: str) -> Any:
        """`wait_until`, whose failure shows the daemon's stderr: what it was doing meanwhile."""
        try:
            return wait_until(pred, timeout, interval=0.2, what=what)
        except HarnessError as e:
            tail = self.d.stderr()[-4000:]
            raise HarnessError(f"{e}\n--- daemon stderr (tail) ---\n{tail}") from e

    def wait_orders(self, n: int, timeout: float = 20.0) -> list[Json]:
        """Wait until the venue holds at least `n` orders of ours."""
        orders: list[Json] = self.wait(
            lambda: (o := self.our_orders()) and len(o) >= n and o,
            timeout,
            what=f"{n} venue orders of ours",
        )
        return orders

    def trade_once(self, timeout: float = 20.0) -> Json:
        """Trigger and wait for the resulting venue order and its settled journal row."""
        before = len(self.our_orders())
        self.trigger()
        order = self.wait_orders(before + 1, timeout)[-1]
        self.wait_settled(timeout)
        return order

    def trade_eventually(self, attempts: int = 8, each_s: float = 3.0) -> Json:
        """Trigger until one order reaches the venue (a half-open breaker refuses some)."""
        for _ in range(attempts):
            before = len(self.our_orders())
            self.trigger()
            try:
                order = self.wait_orders(before + 1, each_s)[-1]
            except HarnessError:
                continue
            self.wait_settled()
            return order
        raise HarnessError(f"no order reached the venue in {attempts} triggers")

    # the daemon side -----------------------------------------------------------------------
    def journal(self) -> list[Json]:
        return [dict(r) for r in self.d.rows("SELECT * FROM orders ORDER BY created_at")]

    def wait_settled(self, timeout: float = 20.0) -> None:
        """Wait until no journal row is PENDING or UNKNOWN."""
        self.wait(
            lambda: (
                not self.d.rows(
                    "SELECT 1 FROM orders WHERE status IN ('PENDING', 'UNKNOWN') LIMIT 1"
                )
            ),
            timeout,
            what="every journal row settled",
        )

    def wait_health(
        self,
        code: int,
        timeout: float = 20.0,
        *,
        until: Callable[[Json], bool] | None = None,
        what: str = "",
    ) -> Json:
        """Wait for /health to answer `code` (and, with `until`, a body it accepts): a daemon
        can answer 503 for another reason first (a check that fails sooner under load)."""

        def check() -> Json | None:
            status, body = self.d.health()
            return body if status == code and (until is None or until(body)) else None

        body: Json = self.wait(check, timeout, what=f"/health {code}{what and ' with ' + what}")
        return body

    def compare(self, *, settled: bool = True) -> Comparison:
        return compare(
            self.sim.ledger(),
            self.d.db_path,
            address=self.d.address,
            settled=settled,
            database_url=self.d.database_url,
        )

    def assert_consistent(self, *, settled: bool = True, wait_s: float = 8.0) -> Comparison:
        """No venue order without its one journal row, nothing sent twice, states agree, and
        every order body the venue received is one the journal signed, byte for byte.

        Fills arrive on the user feed (or the next REST reconcile) a moment after the order's
        answer, so this polls for up to `wait_s` before failing.
        """
        deadline = time.monotonic() + wait_s
        while True:
            c = self.compare(settled=settled)
            if c.ok or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert c.ok, str(c)
        assert c.lost == 0 and c.duplicates == 0 and c.orphans == 0
        sent = self.exactly_once()
        assert sent.ok, str(sent)
        return c

    def exactly_once(self) -> ExactlyOnce:
        """Every order body the venue received against the journal's signed orders."""
        return check_exactly_once(
            self.sim, self.d.db_path, address=self.d.address, database_url=self.d.database_url
        )

    def terminal_rows(self) -> list[Json]:
        return [r for r in self.journal() if r["status"] in TERMINAL]


RigFactory = Callable[..., Rig]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The fault matrix runs on both engines: the daemon journals to a SQLite file, or to a
    throwaway PostgreSQL schema. Faults of the SQLite file itself (a lock held by another
    process, a full disk) are marked `sqlite_only`."""
    if (
        "make_rig" in metafunc.fixturenames
        and metafunc.module.__name__.endswith("test_fault_matrix")
        and metafunc.definition.get_closest_marker("sqlite_only") is None
    ):
        metafunc.parametrize("engine", ["sqlite", "postgres"])


@pytest.fixture
def engine() -> str:
    """The daemon's database engine (`sqlite` unless a test is parametrised over both)."""
    return "sqlite"


@pytest.fixture
def make_rig(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> Iterator[RigFactory]:
    """Build a rig; `proxy=True` puts a `TcpProxy` in front of the CLOB (as `rig.proxy`). On
    PostgreSQL the daemon journals to a fresh schema of the session's throwaway database, with
    leases that a killed daemon's restart waits out for 5 s at most."""
    stack = contextlib.ExitStack()
    on_pg: dict[str, Any] = {}
    if engine == "postgres":
        url = request.getfixturevalue("pg_server").fresh_url()
        on_pg = {"DATABASE_URL": url, "LEASE_TTL_S": "5"}

    def build(
        *,
        scenario: str | None = None,
        take_profit: str | None = None,
        proxy: bool = False,
        sniper: bool = True,
        ready: bool = True,
        **settings: Any,
    ) -> Rig:
        sim = stack.enter_context(SimProcess(workdir=tmp_path, seed=11, scenario=scenario))
        market = sim.add_market("Will the fault test pass?", SLUG)
        tcp = stack.enter_context(TcpProxy(sim.clob_url)) if proxy else None
        extra: dict[str, Any] = {}
        if sniper:
            extra |= {
                "SNIPER_ENABLED": "true",
                "SNIPER_RULES_PATH": trigger_rules(tmp_path, take_profit=take_profit),
            }
        extra |= on_pg | settings
        d = DaemonProcess(sim, tmp_path, clob_url=tcp.url if tcp else None, extra=extra)
        stack.callback(d.stop)
        d.start()
        if ready:
            d.wait_ready()
        return Rig(sim, d, market["token_ids"][0], tmp_path, proxy=tcp)

    try:
        yield build
    finally:
        stack.close()


__all__ = ["ASK_PRICE", "ASK_SIZE", "HarnessError", "Rig", "RigFactory"]
