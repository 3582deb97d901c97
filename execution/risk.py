"""Risk limits (read once from settings, never hot-reloaded) and the trading state.

A BUY commits its notional plus the most the venue's taker fee can charge it.

Trading states: ACTIVE (everything allowed), REDUCING (only SELLs that reduce a holding, and
cancels), HALTED (cancels only). Limits apply to BUYs — a SELL of a holding only lowers risk —
except that a SELL may not exceed the holding not already offered by other open SELLs.

Each strategy owns what its orders bought: a SELL is measured against the selling strategy's
own holding minus its own open SELLs, never another strategy's shares nor the unattributed ones.
The per-order, per-token and total-exposure caps apply to the account (the sum over every
strategy, unattributed holdings included); a strategy's budget (`RISK_STRATEGY_BUDGETS`) caps
that strategy's cost basis plus its open BUY notional.

When several daemons trade one account (`ACCOUNT_SHARED`), the account caps (open orders, total
exposure, per token) are checked a second time as the order is journaled, against the account's
commitments over every daemon read from the database under a per-account lock
(`account_refusal`, `storage.accounts`); the first check, on this daemon's own book, still runs.
There, too, the daily loss limit applies to the account: to today's PnL summed over its daemons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from config import Settings
from execution.funds import Funds
from execution.ports import MarketMeta
from execution.positions import PositionBook
from models import UNATTRIBUTED, ZERO, OrderRequest, Side
from storage.accounts import AccountCommitments


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits in pUSD (and counts) an order must fit inside."""

    max_order_notional: Decimal
    max_position_notional: Decimal
    max_total_exposure: Decimal
    max_open_orders: int
    strategy_budgets: dict[str, Decimal] = field(default_factory=dict)
    daily_loss_limit: Decimal = Decimal("100")
    daily_loss_warn_fraction: float = 0.8

    @classmethod
    def from_settings(cls, s: Settings) -> RiskLimits:
        return cls(
            max_order_notional=s.risk_max_order_notional,
            max_position_notional=s.risk_max_position_notional,
            max_total_exposure=s.risk_max_total_exposure,
            max_open_orders=s.risk_max_open_orders,
            strategy_budgets=dict(s.risk_strategy_budgets),
            daily_loss_limit=s.risk_daily_loss_limit,
            daily_loss_warn_fraction=s.risk_daily_loss_warn_fraction,
        )


def is_reducing(req: OrderRequest, book: PositionBook) -> bool:
    """True if `req` sells no more of its strategy's holding than is not already offered for
    sale by that strategy's open SELLs."""
    if req.side is not Side.SELL:
        return False
    return req.size <= free_to_sell(book, req.strategy, req.token_id)


def free_to_sell(book: PositionBook, strategy: str, token_id: str) -> Decimal:
    """`strategy`'s holding in `token_id` less what its open SELLs already offer."""
    held = book.position(token_id, strategy=strategy).size
    return held - book.open_sell_size(token_id, strategy=strategy)


class RiskEngine:
    """Say why an order would breach a limit, or nothing."""

    def __init__(self, *, limits: RiskLimits, funds: Funds | None = None) -> None:
        self.limits = limits
        self.funds = funds or Funds()

    async def admit(
        self, req: OrderRequest, meta: MarketMeta, book: PositionBook, state: TradingState
    ) -> tuple[OrderRequest, str | None]:
        """Fit a BUY to the free balance (notional + taker fee; it may shrink), then `check` it
        with the most its fee can be. Returns the request to send and why not, if refused."""
        req, fee, why = await self.funds.fit(req, meta, book)
        return req, why or self.check(req, book, state, fee=fee)

    def check(
        self, req: OrderRequest, book: PositionBook, state: TradingState, *, fee: Decimal = ZERO
    ) -> str | None:
        """`fee` is the most the order can be charged (budgeted, rounded up): a BUY commits its
        notional plus that fee."""
        lim = self.limits
        if state is TradingState.HALTED:
            return "trading is halted"
        if req.strategy == UNATTRIBUTED:
            return f"strategy name {UNATTRIBUTED!r} is reserved for holdings no order explains"
        reducing = is_reducing(req, book)
        if state is TradingState.REDUCING and not reducing:
            return "trading is reducing-only: only SELLs of held positions are allowed"
        if book.open_count >= lim.max_open_orders:
            return f"open orders at the limit ({lim.max_open_orders})"
        if req.side is Side.SELL:
            if not reducing:
                free = free_to_sell(book, req.strategy, req.token_id)
                return (
                    f"SELL of {req.size} exceeds what strategy {req.strategy} holds and has not "
                    f"already offered for sale ({free})"
                )
            return None
        notional = req.notional + fee
        if notional > lim.max_order_notional:
            with_fee = f" (fee {fee} included)" if fee else ""
            return (
                f"order notional {notional}{with_fee} exceeds the per-order cap "
                f"{lim.max_order_notional}"
            )
        token_total = (
            book.cost_exposure(req.token_id)
            + book.open_buy_notional(token_id=req.token_id)
            + notional
        )
        if token_total > lim.max_position_notional:
            return (
                f"position in token would reach {token_total}, over the per-token cap "
                f"{lim.max_position_notional}"
            )
        total = book.exposure() + notional
        if total > lim.max_total_exposure:
            return f"total exposure would reach {total}, over the cap {lim.max_total_exposure}"
        budget = lim.strategy_budgets.get(req.strategy)
        if budget is not None:
            used = (
                book.cost_exposure(strategy=req.strategy)
                + book.open_buy_notional(strategy=req.strategy)
                + notional
            )
            if used > budget:
                return f"strategy {req.strategy} would commit {used}, over its budget {budget}"
        return None

    def account_refusal(self, req: OrderRequest, account: AccountCommitments) -> str | None:
        """Why the account's commitments over every daemon on it, `req` included (its row is
        already written), pass a per-account cap, or its daily PnL summed over its daemons is at
        the daily loss limit; or nothing. Held positions count at cost and open BUYs at price x
        unmatched size (the fee is left to the per-daemon check)."""
        lim = self.limits
        if account.daily_pnl <= -lim.daily_loss_limit:
            return (
                f"daily loss limit of the account reached, every daemon counted "
                f"({account.daily_pnl} <= -{lim.daily_loss_limit})"
            )
        if account.open_orders > lim.max_open_orders:
            return (
                f"open orders on the account, every daemon counted, at the limit "
                f"({lim.max_open_orders})"
            )
        if req.side is Side.SELL:
            return None
        if account.token_exposure > lim.max_position_notional:
            return (
                f"position in token on the account, every daemon counted, would reach "
                f"{account.token_exposure}, over the per-token cap {lim.max_position_notional}"
            )
        if account.exposure > lim.max_total_exposure:
            return (
                f"total exposure of the account, every daemon counted, would reach "
                f"{account.exposure}, over the cap {lim.max_total_exposure}"
            )
        return None
