"""Settings: one frozen, validated object read from the environment and `.env`.

This is the only module that reads the process environment. Risk limits and strategy rules are
read once at start-up and never hot-reloaded. Invalid configuration raises `ConfigError` carrying
one line per problem, none of which echoes a value (so no secret can leak through an error).
"""

from __future__ import annotations

import os
import re
import stat
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from errors import ConfigError
from models import _to_decimal

HEX = set("0123456789abcdefABCDEF")


def _address(v: str | None) -> str | None:
    if v is None or v == "":
        return None
    if len(v) != 42 or not v.startswith("0x") or not set(v[2:]) <= HEX:
        raise ValueError("must be an address: 0x followed by 40 hex characters")
    return v


def _private_key(v: SecretStr | None) -> SecretStr | None:
    if v is None:
        return None
    raw = v.get_secret_value().strip()
    if raw == "":
        return None
    body = raw[2:] if raw.startswith("0x") else raw
    if len(body) != 64 or not set(body) <= HEX or int(body, 16) == 0:
        raise ValueError("must be 64 hex characters, optionally 0x-prefixed")
    return SecretStr("0x" + body.lower())


def _chain_id(v: int) -> int:
    if v not in (137, 80002):
        raise ValueError("must be 137 (Polygon) or 80002 (Amoy)")
    return v


def _empty_secret_none(v: Any) -> Any:
    return None if v == "" else v


def _positive_money(v: Decimal) -> Decimal:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


Money = Annotated[Decimal, BeforeValidator(_to_decimal), AfterValidator(_positive_money)]
Address = Annotated[str | None, AfterValidator(_address)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_secret_none)]

PROD_CLOB = "https://clob.polymarket.com"
PROD_GAMMA = "https://gamma-api.polymarket.com"
PROD_DATA = "https://data-api.polymarket.com"
PROD_MARKET_WS = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
PROD_USER_WS = "wss://ws-subscriptions-clob.polymarket.com/ws/user"


def _url(schemes: tuple[str, ...]) -> Any:
    def check(v: str) -> str:
        v = v.strip().rstrip("/")
        if not any(v.startswith(s + "://") and len(v) > len(s) + 3 for s in schemes):
            raise ValueError(
                f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
            )
        return v

    return AfterValidator(check)


HttpUrl = Annotated[str, _url(("https", "http"))]
WsUrl = Annotated[str, _url(("wss", "ws"))]


class Settings(BaseSettings):
    """Every URL, limit, timeout and secret the daemon uses. See `.env.example` for each key."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        env_ignore_empty=True,
    )

    # --- mode and venue ------------------------------------------------------------------------
    mode: Literal["paper", "live"] = "paper"
    clob_host: HttpUrl = PROD_CLOB
    gamma_api_url: HttpUrl = PROD_GAMMA
    data_api_url: HttpUrl = PROD_DATA
    market_ws_url: WsUrl = PROD_MARKET_WS
    user_ws_url: WsUrl = PROD_USER_WS
    chain_id: Annotated[int, AfterValidator(_chain_id)] = 137

    # --- credentials (never logged) ------------------------------------------------------------
    private_key: Annotated[SecretStr | None, AfterValidator(_private_key)] = None
    clob_api_key: OptionalSecret = None
    clob_api_secret: OptionalSecret = None
    clob_api_passphrase: OptionalSecret = None
    signature_type: int = Field(default=0, ge=0, le=3)
    funder_address: Address = None

    # --- storage, sidecar, logging -------------------------------------------------------------
    db_path: Path = Path("data/polyd.db")
    db_busy_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8787, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    control_token: OptionalSecret = None
    kill_switch_path: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)
    cancel_on_shutdown: bool = False
    strategy_max_restarts: int = Field(default=5, ge=0, le=1000)
    strategy_restart_window_s: float = Field(default=300.0, gt=0)

    # --- venue client --------------------------------------------------------------------------
    http_timeout_s: float = Field(default=5.0, gt=0, le=120)
    signer_threads: int = Field(default=2, ge=1, le=32)
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=10)
    # Heartbeats are lapsed after this many consecutive failures, or this long since the last
    # success (the venue cancels resting orders after 10 s without one).
    heartbeat_max_failures: int = Field(default=2, ge=1, le=100)
    heartbeat_lapse_s: float = Field(default=8.0, gt=0, le=10)
    rate_limit_fraction: float = Field(default=0.5, ge=0.05, le=1)
    retry_attempts: int = Field(default=4, ge=1, le=20)
    retry_base_delay_s: float = Field(default=0.25, gt=0, le=60)
    retry_max_delay_s: float = Field(default=10.0, gt=0, le=600)
    breaker_failure_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_reset_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    reconcile_interval_s: float = Field(default=30.0, gt=0, le=3600)
    drain_timeout_s: float = Field(default=5.0, gt=0, le=300)
    order_lookup_grace_s: float = Field(default=30.0, gt=0, le=3600)
    # Must stay below the grace, so a re-sent order can still be found before it is given up.
    order_resend_window_s: float = Field(default=20.0, ge=0, le=3600)
    # A `delayed` order (a market's taker delay) not settled by the user feed is looked up this
    # long after the market's delay (`sd`) has passed.
    delayed_order_margin_s: float = Field(default=5.0, gt=0, le=600)

    # --- risk (read once, never hot-reloaded) --------------------------------------------------
    risk_max_order_notional: Money = Decimal("50")
    risk_max_position_notional: Money = Decimal("200")
    risk_max_total_exposure: Money = Decimal("1000")
    risk_max_open_orders: int = Field(default=50, ge=1, le=100_000)
    risk_strategy_budgets: dict[str, Decimal] = Field(default_factory=dict)
    risk_daily_loss_limit: Money = Decimal("100")
    risk_daily_loss_warn_fraction: float = Field(default=0.8, gt=0, le=1)

    # --- market feed and sniper ----------------------------------------------------------------
    sniper_enabled: bool = True
    sniper_rules_path: Path | None = None
    feed_ping_interval_s: float = Field(default=10.0, gt=0, le=60)
    feed_stale_after_s: float = Field(default=15.0, gt=0, le=600)
    feed_shard_size: int = Field(default=200, ge=1, le=500)
    # The user websocket: a PING unanswered this long, or no frame at all (PONGs included) for
    # USER_FEED_STALE_AFTER_S, makes /health degraded and the socket reconnect and reconcile.
    user_feed_pong_timeout_s: float = Field(default=5.0, gt=0, le=60)
    user_feed_stale_after_s: float = Field(default=30.0, gt=0, le=600)
    discovery_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    # How often Gamma is asked whether the markets we hold or trade resolved.
    resolution_poll_s: float = Field(default=60.0, gt=0, le=86_400)
    # Record the market feed while trading (raw frames with receive time, gaps, REST resyncs,
    # Gamma rows) to this directory, in the recording format of docs/recording.md. None: off.
    record_dir: Path | None = None

    # --- copy trader ---------------------------------------------------------------------------
    copy_enabled: bool = True
    copy_rules_path: Path | None = None
    copy_poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    copy_max_trade_age_s: float = Field(default=60.0, gt=0, le=86_400)

    # --- operations ----------------------------------------------------------------------------
    notify_webhook_url: OptionalSecret = None
    notify_kind: Literal["generic", "telegram", "discord"] = "generic"
    notify_telegram_chat_id: str | None = None
    notify_min_interval_s: float = Field(default=60.0, ge=0, le=86_400)
    # Set by systemd for Type=notify units; not meant for .env.
    notify_socket: str | None = None
    watchdog_usec: int | None = Field(default=None, ge=0)

    @field_validator("db_path")
    @classmethod
    def _db_path(cls, v: Path) -> Path:
        problems = _db_folder_problems(v)
        if problems:
            raise ValueError(problems[0].removeprefix("DB_PATH: "))
        return v

    @field_validator("risk_strategy_budgets")
    @classmethod
    def _budgets(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for name, amount in v.items():
            d = _to_decimal(str(amount))
            if d <= 0:
                raise ValueError(f"budget for strategy {name!r} must be greater than 0")
            out[name] = d
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        problems: list[str] = []
        if self.mode == "live" and self.private_key is None:
            problems.append("PRIVATE_KEY: required when MODE=live")
        creds = [self.clob_api_key, self.clob_api_secret, self.clob_api_passphrase]
        if any(c is not None for c in creds) and not all(c is not None for c in creds):
            problems.append(
                "CLOB_API_KEY, CLOB_API_SECRET, CLOB_API_PASSPHRASE: set all three or none "
                "(with none, credentials are derived from PRIVATE_KEY)"
            )
        if self.signature_type in (1, 2, 3) and self.funder_address is None:
            problems.append(
                "FUNDER_ADDRESS: required when SIGNATURE_TYPE is 1, 2 or 3 "
                "(the proxy, Safe or deposit-wallet address that holds the funds)"
            )
        if self.retry_max_delay_s < self.retry_base_delay_s:
            problems.append("RETRY_MAX_DELAY_S: must be at least RETRY_BASE_DELAY_S")
        if (
            "order_resend_window_s" in self.model_fields_set
            and self.order_resend_window_s >= self.order_lookup_grace_s
        ):
            problems.append("ORDER_RESEND_WINDOW_S: must be less than ORDER_LOOKUP_GRACE_S")
        if self.user_feed_stale_after_s <= self.feed_ping_interval_s:
            # On a quiet account PONGs are the user channel's only traffic, one per ping.
            problems.append("USER_FEED_STALE_AFTER_S: must be greater than FEED_PING_INTERVAL_S")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def live(self) -> bool:
        return self.mode == "live"

    @property
    def resend_window_s(self) -> float:
        """ORDER_RESEND_WINDOW_S; left unset with a grace at or below its default, half of
        ORDER_LOOKUP_GRACE_S (a short grace configured on its own keeps the window below it)."""
        window, grace = self.order_resend_window_s, self.order_lookup_grace_s
        if "order_resend_window_s" in self.model_fields_set or window < grace:
            return window
        return grace / 2

    def redacted(self) -> dict[str, str]:
        """Return every setting as display text, secrets replaced by `**********` or `(unset)`."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = "**********"
            elif value is None:
                text = "(unset)"
            else:
                text = str(value)
            out[name.upper()] = text
        return out

    def secret_values(self) -> list[str]:
        """Return the plain values of every secret, for the log redactor. Never log this."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                if raw:
                    found.append(raw)
                    if raw.startswith("0x"):
                        found.append(raw[2:])
        return found


def _db_folder_problems(db_path: Path) -> list[str]:
    folder = db_path.expanduser().resolve().parent
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return [f"DB_PATH: {probe} is not a folder"]
    if not os.access(probe, os.R_OK | os.W_OK | os.X_OK):
        return [f"DB_PATH: folder {probe} is not readable and writable by this user"]
    if db_path.exists() and not os.access(db_path, os.R_OK | os.W_OK):
        return [f"DB_PATH: {db_path} is not readable and writable by this user"]
    return []


def _format_errors(err: ValidationError) -> list[str]:
    lines: list[str] = []
    for e in err.errors(include_input=False, include_url=False, include_context=False):
        msg = str(e.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        loc = ".".join(str(p) for p in e.get("loc", ()))
        if not loc:
            lines.extend(msg.splitlines())
        else:
            lines.append(f"{loc.upper()}: {msg}")
    return lines


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Build Settings from the environment, `env_file` (None for none) and explicit `overrides`.

    Raise ConfigError with one line per problem. Tests pass `env_file=None` and overrides only.
    """
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    except SettingsError as e:
        # A complex value (e.g. RISK_STRATEGY_BUDGETS) that is not JSON fails in the settings
        # source, before validation; its message names the field and never the value.
        m = re.search(r'field "([^"]+)"', str(e))
        key = m.group(1).upper() if m else "SETTINGS"
        raise ConfigError([f'{key}: must be JSON (e.g. {{}} or {{"sniper": "100"}})']) from None


def env_file_warnings(env_file: str | Path = ".env") -> list[str]:
    """Return warnings about the `.env` file itself (e.g. readable by group or others)."""
    path = Path(env_file)
    if not path.is_file():
        return []
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            f"{path} is accessible by group or others (mode {oct(mode & 0o777)}); run chmod 600"
        ]
    return []
