"""One re-price after the venue refused an order for its tick.

The venue refuses an order whose price (the one its signed amounts imply) is off the market's
current grid with `order {id} is invalid. Price ({price}) breaks minimum tick size rule:
{tick}` (https://docs.polymarket.com/resources/error-codes). The tick changes at 0.96 / 0.04
and back (docs/venue-mechanics.md §4), so a tick the daemon had cached can be stale. Then:

1. the market rules are refetched and take the tick the refusal names;
2. the order is priced again **once**, on the new grid and never looser than the strategy asked
   (a BUY rounds down, a SELL up), as a **new** order: a new client order id, signed anew with
   a new salt; the refused order is never re-signed or re-sent;
3. if that price falls outside [tick, 1 - tick], or is the same price, it gives up with a reason
   saying so (the refused order's result, its reason extended).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

import structlog

from execution.market_rules import MarketRules
from models import ONE, OrderRequest, OrderResult, OrderStatus, Side

log = structlog.get_logger("execution.repricing")

REPRICE_SUFFIX = "-rp"
_TICK_RULE = re.compile(r"breaks minimum tick size rule: ([0-9.]+)")


def refused_tick(reason: str) -> Decimal | None:
    """The tick a venue tick refusal names, or None if `reason` is not one."""
    m = _TICK_RULE.search(reason)
    if m is None:
        return None
    try:
        tick = Decimal(m.group(1))
    except InvalidOperation:
        return None
    return tick if Decimal(0) < tick < ONE else None


def repriced(req: OrderRequest, tick: Decimal) -> OrderRequest | str:
    """`req` on the `tick` grid, no looser (BUY down, SELL up), under a new client order id;
    or why it cannot be."""
    rounding = ROUND_FLOOR if req.side is Side.BUY else ROUND_CEILING
    price = ((req.price / tick).to_integral_value(rounding=rounding) * tick).quantize(tick)
    if not tick <= price <= ONE - tick:
        return f"re-priced {req.price} on tick {tick} is {price}, outside [{tick}, {ONE - tick}]"
    if price == req.price:
        return f"price {req.price} is on tick {tick} already: refused for its amounts"
    coid = req.client_order_id[: 64 - len(REPRICE_SUFFIX)] + REPRICE_SUFFIX
    return req.model_copy(update={"price": price, "client_order_id": coid})


async def reprice_once(
    req: OrderRequest,
    result: OrderResult,
    rules: MarketRules,
    submit: Callable[[OrderRequest], Awaitable[OrderResult]],
) -> OrderResult:
    """After a venue tick refusal of `req`, send it once more on the venue's grid (see the
    module docstring); any other result is returned as it is."""
    if result.status is not OrderStatus.REJECTED or req.client_order_id.endswith(REPRICE_SUFFIX):
        return result
    tick = refused_tick(result.reason)
    if tick is None:
        return result
    await rules.refresh(req.token_id)
    rules.set_tick_size(req.token_id, tick)  # the refusal is the venue's word at this instant
    new = repriced(req, tick)
    if isinstance(new, str):
        log.warning("reprice_given_up", client_order_id=req.client_order_id, why=new)
        return result.model_copy(update={"reason": f"{result.reason}; not re-priced: {new}"})
    log.info(
        "order_repriced",
        client_order_id=req.client_order_id,
        new_client_order_id=new.client_order_id,
        old=str(req.price),
        new=str(new.price),
        tick=str(tick),
    )
    return await submit(new)
