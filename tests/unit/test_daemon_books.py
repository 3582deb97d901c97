"""Two daemons on one database, each with its own position book: after a restart a daemon's book
holds its own strategies' positions and the unattributed holdings, not the other daemon's, so
the marks of the other's positions move none of its figures (daily PnL and its loss limit,
exposure, the PnL gauges); a strategy it takes over joins its book without moving its day's PnL.

Two paper executors (`DAEMON_ID` east and west) over one database, on both engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from structlog.testing import capture_logs

from execution.ports import MarketMeta
from execution.risk import TradingState
from executor import Executor
from models import UNATTRIBUTED, Fill, OrderStatus, OrderType, Side
from storage import Repositories
from tests.unit.test_executor_paper import COND, TOKEN, DictBooks, make_executor, req
from wiring.leases import adopt_positions

D = Decimal
OTHER = "8" * 20 + "88"  # the token only west's strategy holds


async def started(repos: Repositories, books: DictBooks, loss_limit: str = "100") -> Executor:
    ex = make_executor(repos, books, loss_limit=loss_limit)
    ex.rules.put(MarketMeta(OTHER, COND, D("0.01"), D("5"), False))
    await ex.start()
    return ex


async def buy(ex: Executor, strategy: str, token: str) -> None:
    res = await ex.submit(
        req(strategy=strategy, token_id=token, order_type=OrderType.FOK, price=D("0.50"))
    )
    assert res.status is OrderStatus.FILLED, res


def quote(books: DictBooks, token: str, bid: str, ask: str) -> None:
    books.b[token], books.a[token] = [(D(bid), D("100"))], [(D(ask), D("100"))]


async def seed(repos: Repositories, books: DictBooks) -> tuple[Repositories, Executor]:
    """east buys for alpha, west for beta (on a token east does not hold), and a manual trade
    on the account leaves an unattributed holding. Returns east's repositories and west's
    executor, still running."""
    east = Repositories.over(repos.db, daemon_id="east")
    west = Repositories.over(repos.db, daemon_id="west")
    quote(books, TOKEN, "0.49", "0.50")
    quote(books, OTHER, "0.49", "0.50")
    first_east, west_ex = await started(east, books), await started(west, books)
    await buy(first_east, "alpha", TOKEN)
    await buy(west_ex, "beta", OTHER)
    manual = Fill(
        trade_id="manual-1",
        venue_order_id="0xmanual",
        client_order_id=None,
        token_id=TOKEN,
        side=Side.BUY,
        price=D("0.40"),
        size=D("3"),
        ts=datetime.now(UTC),
    )
    await east.fills.record(manual)
    return east, west_ex


async def test_a_restarted_daemons_book_holds_its_own_and_unattributed_positions_only(
    repos: Repositories,
) -> None:
    books = DictBooks()
    east, west_ex = await seed(repos, books)
    again = await started(east, books, loss_limit="2")
    held = {(p.strategy, p.token_id): p.size for p in again.positions.positions()}
    assert held == {("alpha", TOKEN): D("10"), (UNATTRIBUTED, TOKEN): D("3")}
    assert again.positions.left_out == {"beta"}
    assert again.positions.strategies() == ["alpha", UNATTRIBUTED]
    assert again.position(OTHER, strategy="beta").size == 0

    pnl, exposure = again.positions.daily_pnl(), again.positions.exposure()
    unrealized, west_pnl = again.positions.unrealized(), west_ex.positions.daily_pnl()
    quote(books, OTHER, "0.04", "0.06")  # beta's token falls: west loses 4.45, east nothing
    assert west_ex.positions.daily_pnl() == west_pnl - D("4.45")
    assert again.positions.daily_pnl() == pnl
    assert again.positions.exposure() == exposure
    assert again.positions.unrealized() == unrealized
    await again.check_guards()  # east's loss limit is 2: west's loss must not halt east
    assert again.state is TradingState.ACTIVE, again.state_reason
    again._publish()
    gauge = again.metrics.registry.get_sample_value
    assert gauge("polyd_daily_pnl_usd") == float(pnl)
    assert gauge("polyd_strategy_exposure_usd", {"strategy": "beta"}) is None


@dataclass
class Notices:
    """A notifier that keeps what it was asked to send."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def notify(self, kind: str, key: str, text: str, **fields: object) -> bool:
        self.sent.append((kind, key, text))
        return True


@dataclass
class Taking:
    """What `adopt_positions` reads of the daemon's context."""

    repos: Repositories
    executor: Executor
    strategies: list[object] = field(default_factory=list)
    notifier: Notices = field(default_factory=Notices)


@dataclass(frozen=True)
class Named:
    name: str


async def test_a_strategy_taken_over_joins_the_book_without_moving_the_days_pnl(
    repos: Repositories,
) -> None:
    books = DictBooks()
    east, west_ex = await seed(repos, books)
    await west_ex.drain()
    again = await started(east, books)
    pnl = again.positions.daily_pnl()
    ctx = Taking(east, again, [Named("alpha"), Named("beta")])  # east now runs beta too
    await adopt_positions(ctx)  # type: ignore[arg-type]
    assert again.positions.left_out == frozenset()
    assert again.position(OTHER, strategy="beta").size == D("10")
    assert again.positions.daily_pnl() == pnl  # beta's PnL so far was west's day
    quote(books, OTHER, "0.04", "0.06")  # from now on beta's marks are east's
    assert again.positions.daily_pnl() == pnl - D("4.45")


async def test_orders_a_gone_daemon_left_on_another_account_are_named_not_taken(
    repos: Repositories,
) -> None:
    """West, gone, left an order of beta open on its venue account; east, which takes beta over
    with no account of its own (a paper daemon), cannot look it up: it warns, naming the order,
    the daemon and what to do, sends a notice, and leaves the order west's."""
    books = DictBooks()
    east, west_ex = await seed(repos, books)
    await west_ex.drain()
    west = Repositories.over(repos.db, daemon_id="west")
    west.orders.for_account("0x" + "cd" * 20)
    left = req(strategy="beta", token_id=OTHER, price=D("0.30"))
    await west.orders.record(left, venue_order_id="0xleft")
    again = await started(east, books)
    ctx = Taking(east, again, [Named("alpha"), Named("beta")])
    with capture_logs() as logs:
        await adopt_positions(ctx)  # type: ignore[arg-type]
    (warning,) = [e for e in logs if e["event"] == "orders_left_unsettled"]
    assert warning["orders"] == [left.client_order_id] and warning["daemons"] == ["west"]
    assert warning["accounts"] == ["0x" + "cd" * 20]
    assert "start that DAEMON_ID once with its account's key" in warning["detail"]
    assert [e for e in logs if e["event"] == "orders_taken_over"] == []
    ((kind, _, text),) = ctx.notifier.sent
    assert kind == "orders_left_unsettled" and text == warning["detail"]
    row = await east.orders.get(left.client_order_id)
    assert row is not None and row.daemon_id == "west"
