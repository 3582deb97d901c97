"""Copy rules: the schema of a followed wallet's rule and the loading of TOML/JSON rule files.

Owns `WalletRule` (how to copy one wallet), `CopyRules` (the whole file: `[defaults]` merged
under each `[[wallets]]` entry) and the loaders, which raise `ConfigError` naming the wallet and
the field. Nothing here trades or keeps state.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from config import MAX_PATH_ECHO, clip, load_document
from errors import ConfigError
from models import Side, _to_decimal

Dec = Annotated[Decimal, BeforeValidator(_to_decimal)]


def _address(v: Any) -> str:
    s = v.strip().lower() if isinstance(v, str) else ""
    if len(s) != 42 or not s.startswith("0x") or any(c not in "0123456789abcdef" for c in s[2:]):
        raise ValueError("must be a wallet address: 0x followed by 40 hex characters")
    return s


class WalletRule(BaseModel):
    """How to copy one wallet. Every money field is a decimal (string or integer, never float)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    address: Annotated[str, BeforeValidator(_address)]
    label: str = Field(default="", max_length=64)
    enabled: bool = True
    sizing: Literal["ratio", "fixed_notional", "percent"] = "ratio"
    ratio: Dec | None = None
    fixed_notional: Dec | None = None
    percent: Dec | None = None
    percent_min_notional: Dec = Decimal("1")
    percent_max_notional: Dec | None = None
    max_trade_notional: Dec = Decimal("25")
    max_market_exposure: Dec = Decimal("100")
    sides: frozenset[Side] = frozenset({Side.BUY, Side.SELL})
    mirror_exits: bool = True
    max_slippage: Dec = Decimal("0.02")
    order_type: Literal["FAK", "FOK"] = "FAK"
    max_trade_age_s: float | None = Field(default=None, gt=0, le=86_400)
    backfill_s: float = Field(default=0, ge=0, le=86_400, allow_inf_nan=False)
    """On the first start for this wallet (no stored cursor), copy its trades of the last
    `backfill_s` seconds; older ones are recorded as seen, never copied. 0 (the default): start
    from now. At most the wallet's max trade age."""
    min_leader_notional: Dec = Decimal("0")
    poll_interval_s: float | None = Field(default=None, ge=0.1, le=3600)
    allow_slugs: frozenset[str] = frozenset()
    block_slugs: frozenset[str] = frozenset()
    allow_tags: frozenset[str] = frozenset()
    block_tags: frozenset[str] = frozenset()

    @field_validator("sides", mode="before")
    @classmethod
    def _sides(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple | set | frozenset):
            return frozenset(str(x).upper() for x in v)
        return v

    @field_validator("allow_tags", "block_tags", "allow_slugs", "block_slugs", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        if isinstance(v, list | tuple | set | frozenset):
            return frozenset(str(x).strip().lower() for x in v)
        return v

    @field_validator(
        "ratio",
        "fixed_notional",
        "percent",
        "percent_max_notional",
        "max_trade_notional",
        "max_market_exposure",
    )
    @classmethod
    def _positive(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("percent_min_notional", "min_leader_notional")
    @classmethod
    def _non_negative(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v

    @field_validator("max_slippage")
    @classmethod
    def _slippage(cls, v: Decimal) -> Decimal:
        if not Decimal(0) <= v < Decimal(1):
            raise ValueError("must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _sizing_fields(self) -> WalletRule:
        need = {"ratio": self.ratio, "fixed_notional": self.fixed_notional, "percent": self.percent}
        if need[self.sizing] is None:
            raise ValueError(f"sizing = {self.sizing!r} needs the field {self.sizing!r}")
        if self.percent is not None and self.percent > 100:
            raise ValueError("percent must be at most 100 (it is a percentage)")
        if (
            self.percent_max_notional is not None
            and self.percent_max_notional < self.percent_min_notional
        ):
            raise ValueError("percent_max_notional must be at least percent_min_notional")
        if not self.sides:
            raise ValueError("sides must name BUY, SELL or both")
        if self.max_trade_age_s is not None and self.backfill_s > self.max_trade_age_s:
            raise ValueError(
                f"backfill_s ({self.backfill_s:g}) must be at most max_trade_age_s "
                f"({self.max_trade_age_s:g}): older trades are never copied"
            )
        return self

    @property
    def name(self) -> str:
        return self.label or self.address[:10]


class CopyRules(BaseModel):
    """The whole rules file: optional `[defaults]` merged under each `[[wallets]]` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wallets: tuple[WalletRule, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> CopyRules:
        seen: set[str] = set()
        for w in self.wallets:
            if w.address in seen:
                raise ValueError(f"wallet {w.address} is listed twice")
            seen.add(w.address)
        return self

    @property
    def active(self) -> tuple[WalletRule, ...]:
        return tuple(w for w in self.wallets if w.enabled)


def parse_rules(data: Mapping[str, Any]) -> CopyRules:
    """Validate a rules document; raise ConfigError naming the wallet and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(["COPY_RULES: the file must be a table/object with a `wallets` list"])
    unknown = set(data) - {"defaults", "wallets"}
    if unknown:
        keys = clip(", ".join(sorted(map(str, unknown))))
        raise ConfigError([f"COPY_RULES: unknown top-level key(s): {keys}"])
    defaults = data.get("defaults") or {}
    wallets = data.get("wallets") or []
    if not isinstance(defaults, Mapping) or not isinstance(wallets, list):
        raise ConfigError(["COPY_RULES: `defaults` must be a table and `wallets` a list"])
    problems: list[str] = []
    rules: list[WalletRule] = []
    for i, raw in enumerate(wallets):
        if not isinstance(raw, Mapping):
            problems.append(f"COPY_RULES wallets[{i}]: must be a table")
            continue
        who = clip(str(raw.get("label") or raw.get("address") or f"#{i}"), 64)
        try:
            rules.append(WalletRule.model_validate({**defaults, **raw}))
        except ValidationError as e:
            for err in e.errors(include_input=False, include_url=False, include_context=False):
                loc = clip(".".join(str(p) for p in err.get("loc", ()))) or "(rule)"
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                problems.append(f"COPY_RULES wallet {who} ({i}): {loc}: {msg}")
    if problems:
        raise ConfigError(problems)
    try:
        return CopyRules(wallets=tuple(rules))
    except ValidationError as e:
        raise ConfigError(
            [
                f"COPY_RULES: {str(x.get('msg', '')).removeprefix('Value error, ')}"
                for x in e.errors()
            ]
        ) from None


def load_rules(path: Path) -> CopyRules:
    """Read and validate a JSON (`.json`) or TOML (any other name) rules file.

    Raise ConfigError on any problem, one line each, every line naming the file: the file's
    own problems (`config.load_document`: missing, a folder, unreadable, huge, empty, NUL
    bytes, not UTF-8, not TOML/JSON, nested too deep) and each wallet's.
    """
    path = Path(path)
    data = load_document(
        path, setting="COPY_RULES_PATH", fmt="json" if path.suffix.lower() == ".json" else "toml"
    )
    try:
        return parse_rules(data)
    except ConfigError as e:
        head = f"COPY_RULES_PATH {clip(str(path), MAX_PATH_ECHO)}: "
        raise ConfigError(
            [head + line.removeprefix("COPY_RULES").lstrip(": ") for line in e.problems]
        ) from None
