"""The wallet's cash as the executor sees it: what a BUY may take (notional + taker fee), a BUY
shrunk to the free balance before the venue would refuse it, and the fees our fills paid.

Polymarket's V2 exchange charges a taker BUY its fee in pUSD **on top of** the notional, and the
venue refuses an order the balance cannot cover with HTTP 400 `not enough balance / allowance`
(https://docs.polymarket.com/resources/error-codes). Both SDKs trim a market BUY for the fee
(`adjust_buy_amount_for_fees` in
https://github.com/Polymarket/py-clob-client-v2/blob/main/py_clob_client_v2/fees.py); here every
BUY is checked, and shrunk to the largest size whose notional + budgeted fee fits the free balance:
the wallet's pUSD minus what our open BUYs already reserve at the venue.

The balance comes from a broker that can tell it (`BalanceSource`, the live broker): a read
serves for a few seconds, less what our BUY fills spent since, and is always read again before an
order is shrunk. Without one (paper) nothing is shrunk. A balance that cannot be read leaves the
order as it is (logged): the venue's own check still stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Final, Protocol, runtime_checkable

import structlog

from errors import TransientError
from execution.fees import buy_cost, fee_budget, max_buy_size
from execution.market_rules import SIZE_STEP, MarketRules
from execution.ports import MarketMeta
from execution.positions import PositionBook
from models import ZERO, Fill, OrderRequest, Side
from observability.metrics import Metrics

log = structlog.get_logger("execution.funds")


@runtime_checkable
class BalanceSource(Protocol):
    """A broker that can read the wallet's pUSD balance (`/balance-allowance`)."""

    async def collateral_balance(self) -> Decimal:
        """The wallet's pUSD balance; raise TransientError if it cannot be read now."""
        ...


BALANCE_MAX_AGE_S: Final = 5.0
"""How long a balance read serves BUYs that fit it comfortably (one read per BUY would spend
the venue's `/balance-allowance` budget at a few orders a second)."""


class Funds:
    """Fits BUYs to the free balance (live: the broker reads it; otherwise nothing is shrunk).

    The balance read is kept for `max_age_s`, less what our BUY fills have spent since (notional
    + fee), less what our open BUYs reserve. A BUY that does not fit that figure is checked
    against a fresh read before it is shrunk.
    """

    def __init__(
        self,
        *,
        broker: object = None,
        max_age_s: float = BALANCE_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = broker if isinstance(broker, BalanceSource) else None
        self._max_age_s = max_age_s
        self._clock = clock
        self._balance: Decimal | None = None
        self._read_at = 0.0
        self._spent = ZERO  # by BUY fills since the read

    @property
    def balance(self) -> Decimal | None:
        """The last pUSD balance read less what BUY fills spent since (None before a read)."""
        return None if self._balance is None else self._balance - self._spent

    def spent(self, fill: Fill) -> None:
        """A BUY fill took notional + fee from the wallet since the last read."""
        if fill.side is Side.BUY and self._balance is not None:
            self._spent += fill.price * fill.size + fill.fee

    async def _free(self, positions: PositionBook, *, fresh: bool) -> Decimal | None:
        assert self._source is not None
        now = self._clock()
        if fresh or self._balance is None or now - self._read_at > self._max_age_s:
            try:
                self._balance = await self._source.collateral_balance()
            except TransientError as e:
                log.warning("balance_unavailable", error=str(e)[:200])
                return None
            self._read_at, self._spent = now, ZERO
        return self._balance - self._spent - positions.open_buy_notional()

    async def fit(
        self, req: OrderRequest, meta: MarketMeta, positions: PositionBook
    ) -> tuple[OrderRequest, Decimal, str | None]:
        """`(request, fee budget, refusal)`: a BUY whose notional + fee the free balance cannot
        pay is shrunk to the largest size it can (refused if that breaks the market's rules).
        A balance that cannot be read leaves the order as it is: the venue's check stands."""
        fee = meta.fee
        if req.side is not Side.BUY:
            return req, fee_budget(req.size, req.price, fee), None
        low = _best_ask(positions, req.token_id)
        cost = buy_cost(req.size, req.price, fee, low=low)
        budget = cost - req.notional
        if self._source is None:
            return req, budget, None
        free = await self._free(positions, fresh=False)
        if free is not None and cost > free:
            free = await self._free(positions, fresh=True)  # the venue's word before shrinking
        if free is None or cost <= free:
            return req, budget, None
        size = max_buy_size(free, req.price, fee, step=SIZE_STEP, low=low)
        shrunk = req.model_copy(update={"size": size})
        broken = MarketRules.check(shrunk, meta) if size > ZERO else "nothing left"
        if broken is not None:
            return req, budget, f"free balance {free} cannot pay notional + fee ({broken})"
        log.info(
            "buy_shrunk_to_balance",
            client_order_id=req.client_order_id,
            size=str(req.size),
            shrunk_to=str(size),
            free=str(free),
        )
        return shrunk, buy_cost(size, req.price, fee, low=low) - shrunk.notional, None


def _best_ask(positions: PositionBook, token_id: str) -> Decimal | None:
    """The lowest ask a BUY can take now (its surplus buys extra shares, which pay the fee)."""
    level = positions.books.best_ask(token_id) if positions.books is not None else None
    return level[0] if level is not None else None


def count_fill(metrics: Metrics, fill: Fill) -> None:
    """Count a recorded fill (`polyd_fills_total`) and the fee it paid
    (`polyd_fees_paid_usd_total`)."""
    metrics.fills_total.labels(fill.side.value, fill.role.value.lower()).inc()
    if fill.fee > 0:
        metrics.fees_paid_usd_total.labels(fill.side.value).inc(float(fill.fee))


def fill_log(fill: Fill) -> dict[str, object]:
    """The fields of a `fill_recorded` log line, fee and liquidity role included."""
    return {
        "client_order_id": fill.client_order_id,
        "token_id": fill.token_id,  # the log pipeline adds `market` and `outcome` beside it
        "trade_id": fill.trade_id,
        "side": fill.side,
        "price": str(fill.price),
        "size": str(fill.size),
        "role": fill.role.value,
        "fee": str(fill.fee),
    }
