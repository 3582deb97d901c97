"""The sniper: buy when a fresh book offers a price inside a rule's band, once per opportunity.

| module | owns |
|---|---|
| `rules` | the rule schema (`SniperRule`, `Selector`) and loading TOML/JSON rule files |
| `state` | the per-(rule, token) firing slots, bounded to the watched tokens |
| `sizing` | band, window, limit price, depth and size of an opportunity; the take-profit quote |
| `strategy` | the loop (`Sniper`): discovery's markets, book changes, firing, take-profit |
"""

from strategies.sniper.rules import (
    MAX_WINDOW_MINUTES,
    RulesFile,
    Selector,
    SniperRule,
    load_rules,
    parse_rules,
)
from strategies.sniper.sizing import (
    MIN_MARKETABLE_NOTIONAL,
    SIZE_STEP,
    Decision,
    ceil_to,
    floor_to,
    opportunity,
)
from strategies.sniper.state import Slot, Slots
from strategies.sniper.strategy import FILL_POLL_S, FILL_WAIT_S, Sniper

__all__ = [
    "FILL_POLL_S",
    "FILL_WAIT_S",
    "MAX_WINDOW_MINUTES",
    "MIN_MARKETABLE_NOTIONAL",
    "SIZE_STEP",
    "Decision",
    "RulesFile",
    "Selector",
    "Slot",
    "Slots",
    "Sniper",
    "SniperRule",
    "ceil_to",
    "floor_to",
    "load_rules",
    "opportunity",
    "parse_rules",
]
