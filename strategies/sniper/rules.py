"""Sniper rules: the schema of a rule (which markets, which band, how much) and its loading.

Owns `Selector` (explicit ids and/or a Gamma filter), `SniperRule` and the loaders for TOML or
JSON rule files (`SNIPER_RULES_PATH`; see `deploy/sniper-rules.example.toml`), which raise
`ConfigError` naming the rule and the field. Nothing here trades or keeps state.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config import MAX_PATH_ECHO, clip, load_document
from errors import ConfigError
from models import ONE, ZERO, _to_decimal, validate_condition_id, validate_token_id
from venue.gamma import MarketQuery


def _rule_decimal(v: Any) -> Decimal:
    # TOML has no decimal type: a float is taken through its shortest repr (0.95 -> "0.95"),
    # which is exactly the text the operator wrote. Strings are preferred and documented.
    if isinstance(v, float):
        v = repr(v)
    return _to_decimal(v)


RuleDecimal = Annotated[Decimal, BeforeValidator(_rule_decimal)]

SETTING: Final = "SNIPER_RULES_PATH"

MAX_WINDOW_MINUTES: Final = 525_600
"""A year: the largest `ends_within_minutes` (TOML accepts `inf`, which Gamma's window cannot)."""


class Selector(BaseModel):
    """Which markets a rule watches: explicit ids, and/or a Gamma filter."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    token_ids: tuple[str, ...] = ()
    condition_ids: tuple[str, ...] = ()
    slugs: tuple[str, ...] = ()
    ends_within_minutes: float | None = Field(default=None, gt=0, le=MAX_WINDOW_MINUTES)
    tags: tuple[str, ...] = ()
    tag_ids: tuple[str, ...] = ()
    min_liquidity: RuleDecimal | None = None
    min_volume: RuleDecimal | None = None

    @model_validator(mode="after")
    def _check(self) -> Selector:
        for t in self.token_ids:
            validate_token_id(t)
        for c in self.condition_ids:
            validate_condition_id(c)
        explicit = self.token_ids or self.condition_ids or self.slugs
        gamma = self.ends_within_minutes is not None or self.tags or self.tag_ids
        if not explicit and not gamma:
            raise ValueError(
                "select needs token_ids, condition_ids, slugs, or a Gamma filter "
                "(ends_within_minutes, tags, tag_ids)"
            )
        return self

    def queries(self) -> list[MarketQuery]:
        """Gamma queries whose union is this selection."""
        out: list[MarketQuery] = []
        if self.token_ids or self.condition_ids or self.slugs:
            out.append(
                MarketQuery(
                    token_ids=self.token_ids,
                    condition_ids=tuple(c.lower() for c in self.condition_ids),
                    slugs=self.slugs,
                )
            )
        if self.ends_within_minutes is not None or self.tags or self.tag_ids:
            out.append(
                MarketQuery(
                    tags=self.tags,
                    tag_ids=self.tag_ids,
                    ends_within_s=(
                        self.ends_within_minutes * 60 if self.ends_within_minutes else None
                    ),
                    min_liquidity=self.min_liquidity,
                    min_volume=self.min_volume,
                )
            )
        return out


class SniperRule(BaseModel):
    """One sniper rule (see `deploy/sniper-rules.example.toml` for every field)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$")
    enabled: bool = True
    select: Selector
    outcome: str | None = None
    min_price: RuleDecimal
    max_price: RuleDecimal
    min_size: RuleDecimal
    max_notional: RuleDecimal
    order_type: Literal["FAK", "FOK"] = "FAK"
    max_entries: int = Field(default=1, ge=1, le=1000)
    cooldown_s: float = Field(default=60.0, ge=0)
    ends_within_minutes: float | None = Field(default=None, gt=0, le=MAX_WINDOW_MINUTES)
    take_profit: RuleDecimal | None = None
    take_profit_post_only: bool = True
    """Rest the take-profit as post-only: it never takes, so it never pays the taker fee (the
    venue refuses it if it would cross, rather than filling it as a taker)."""
    max_book_age_s: float | None = Field(default=None, gt=0)

    @field_validator("min_price", "max_price")
    @classmethod
    def _price(cls, v: Decimal) -> Decimal:
        if not ZERO < v < ONE:
            raise ValueError("must be strictly between 0 and 1")
        return v

    @field_validator("max_price")
    @classmethod
    def _band(cls, v: Decimal, info: ValidationInfo) -> Decimal:
        # Checked on max_price (validated after min_price) so the refusal names a field, like
        # every other rule error: "rule 'x' (#1) field max_price: must not be below min_price".
        low = info.data.get("min_price")
        if low is not None and v < low:
            raise ValueError(f"must not be below min_price ({low})")
        return v

    @field_validator("min_size", "max_notional")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("take_profit")
    @classmethod
    def _tp(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and not ZERO < v < ONE:
            raise ValueError("must be a fraction between 0 and 1 (0.02 = +2%)")
        return v


class RulesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[SniperRule, ...] = ()


def _problems(err: ValidationError, raw_rules: Any) -> list[str]:
    lines = []
    for e in err.errors(include_url=False, include_context=False, include_input=False):
        loc = list(e.get("loc", ()))
        where = "rules file"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            i = loc[1]
            name = "'?'"
            if isinstance(raw_rules, list) and i < len(raw_rules):
                r = raw_rules[i]
                if isinstance(r, dict) and isinstance(r.get("name"), str):
                    # repr first: a name with a line break shows as '\n', not as a space
                    name = clip(repr(r["name"]), 66)
            field = clip(".".join(str(p) for p in loc[2:]))
            where = f"rule {name} (#{i + 1})" + (f" field {field}" if field else "")
        elif loc:
            where = f"field {clip('.'.join(str(p) for p in loc))}"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"SNIPER_RULES_PATH: {where}: {msg}")
    return lines


def parse_rules(data: Any) -> list[SniperRule]:
    """Validate rules from decoded TOML/JSON (`{"rules": [...]}` or a bare list)."""
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise ConfigError(["SNIPER_RULES_PATH: expected a table with [[rules]] or a list"])
    try:
        parsed = RulesFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(e, data.get("rules"))) from None
    names = [r.name for r in parsed.rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError([f"SNIPER_RULES_PATH: rule names must be unique: {', '.join(dupes)}"])
    return [r for r in parsed.rules if r.enabled]


def load_rules(path: str | Path) -> list[SniperRule]:
    """Read and validate a TOML (`.toml`) or JSON (any other name) rules file.

    Raise ConfigError on any problem, one line each, every line naming the file: the file's
    own problems (`config.load_document`: missing, a folder, unreadable, huge, empty, NUL
    bytes, not UTF-8, not TOML/JSON, nested too deep) and each rule's.
    """
    p = Path(path)
    data = load_document(p, setting=SETTING, fmt="toml" if p.suffix.lower() == ".toml" else "json")
    try:
        return parse_rules(data)
    except ConfigError as e:
        head = f"{SETTING} {clip(str(p), MAX_PATH_ECHO)}: "
        raise ConfigError(
            [head + line.removeprefix(f"{SETTING}: ") for line in e.problems]
        ) from None
