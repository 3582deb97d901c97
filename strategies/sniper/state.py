"""Sniper state: one firing slot per (rule, token), bounded to the tokens the sniper watches.

A slot says whether a rule is armed on a token (disarmed after firing until it sees the
condition false again), how many entries it made there (counted when the order is journaled,
given back when it is refused) and when it last fired. Slots of tokens the sniper stops watching
are set aside; a token that comes back (discovery can drop a market for a pass and list it
again) gets its old slot back, so `max_entries` and the cooldown still hold. Set-aside slots are
kept for the `retired_max` most recently retired pairs; a slot that never fired carries nothing
and is simply dropped. With durable state (`storage.strategy_state`) these slots are a cache: a
pair not here is read back from the database before the sniper decides on it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

RETIRED_SLOTS: Final = 4096
"""How many slots of tokens no longer watched are remembered."""

SlotKey = tuple[str, str]
"""(rule name, token id)."""


@dataclass(slots=True)
class Slot:
    """State of one (rule, token) pair."""

    armed: bool = True
    entries: int = 0
    last_fire: float = float("-inf")

    @property
    def blank(self) -> bool:
        """True if the slot is as new: forgetting it changes nothing."""
        return self.armed and self.entries == 0 and self.last_fire == float("-inf")


class Slots:
    """The slots of watched (rule, token) pairs, and a bounded memory of retired ones."""

    def __init__(self, *, retired_max: int = RETIRED_SLOTS) -> None:
        if retired_max < 0:
            raise ValueError("retired_max must be 0 or more")
        self._live: dict[SlotKey, Slot] = {}
        self._retired: OrderedDict[SlotKey, Slot] = OrderedDict()
        self._retired_max = retired_max

    def __len__(self) -> int:
        return len(self._live) + len(self._retired)

    @property
    def live(self) -> int:
        """How many slots belong to watched pairs."""
        return len(self._live)

    @property
    def retired(self) -> int:
        """How many slots of pairs no longer watched are remembered."""
        return len(self._retired)

    def known(self, rule: str, token: str) -> bool:
        """True if (rule, token) has a slot here, watched or retired."""
        key = (rule, token)
        return key in self._live or key in self._retired

    def restore(self, rule: str, token: str, slot: Slot) -> None:
        """Install a slot read back from storage as the live slot of (rule, token)."""
        key = (rule, token)
        self._retired.pop(key, None)
        self._live[key] = slot

    def forget(self, rule: str, token: str) -> None:
        """Drop the slot of (rule, token), watched or retired: it is no longer known."""
        key = (rule, token)
        self._live.pop(key, None)
        self._retired.pop(key, None)

    def get(self, rule: str, token: str) -> Slot:
        """Return the slot of (rule, token), bringing a retired one back, or a new one."""
        key = (rule, token)
        slot = self._live.get(key)
        if slot is None:
            slot = self._retired.pop(key, None)
            if slot is None:
                slot = Slot()
            self._live[key] = slot
        return slot

    def keep_only(self, watched: Iterable[SlotKey]) -> None:
        """Retire the slots of every pair not in `watched`."""
        keep = set(watched)
        for key in [k for k in self._live if k not in keep]:
            slot = self._live.pop(key)
            if slot.blank or self._retired_max == 0:
                continue
            self._retired[key] = slot
            self._retired.move_to_end(key)
        while len(self._retired) > self._retired_max:
            self._retired.popitem(last=False)
