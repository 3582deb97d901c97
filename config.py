"""Settings: one frozen, validated object read from the environment and `.env`.

This is the only module that reads the process environment. Risk limits and strategy rules are
read once at start-up and never hot-reloaded (`wiring.reload` names the few settings a reload may
change while running: credentials, control token, notifications, log level). Invalid
configuration raises `ConfigError` carrying one line per problem, none of which echoes a value
(so no secret can leak through an error).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from config_types import (
    DEFAULT_DAEMON_ID,
    Address,
    ChainId,
    DaemonId,
    DatabaseUrl,
    HttpUrl,
    Money,
    OptionalSecret,
    PrivateKey,
    StrategyName,
    WsUrl,
)
from errors import ConfigError
from models import _to_decimal
from observability.chat_config import chat_problems, check_chat_ids, check_digest_at, check_token

PROD_CLOB = "https://clob.polymarket.com"
PROD_GAMMA = "https://gamma-api.polymarket.com"
PROD_DATA = "https://data-api.polymarket.com"
PROD_MARKET_WS = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
PROD_USER_WS = "wss://ws-subscriptions-clob.polymarket.com/ws/user"
# On polymarket.com, not the API hosts (https://docs.polymarket.com/api-reference/geoblock).
PROD_GEOBLOCK = "https://polymarket.com/api/geoblock"


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
    geoblock_url: HttpUrl = PROD_GEOBLOCK  # asked by `doctor` only
    chain_id: ChainId = 137

    # --- credentials (never logged) ------------------------------------------------------------
    private_key: PrivateKey = None
    clob_api_key: OptionalSecret = None
    clob_api_secret: OptionalSecret = None
    clob_api_passphrase: OptionalSecret = None
    signature_type: int = Field(default=0, ge=0, le=3)
    funder_address: Address = None

    # --- chain: approvals and redemption (docs/redemption.md) ----------------------------------
    rpc_url: HttpUrl = "https://polygon.drpc.org"
    relayer_url: HttpUrl = "https://relayer-v2.polymarket.com"
    relayer_api_key: OptionalSecret = None
    relayer_api_key_address: Address = None
    auto_redeem: bool = False
    auto_redeem_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    pol_floor: Money = Decimal("0.5")

    # --- storage, sidecar, logging -------------------------------------------------------------
    db_path: Path = Path("data/polyd.db")
    # postgresql://user@host:5432/db selects PostgreSQL instead of the SQLite file at DB_PATH
    # (docs/storage-postgres.md).
    database_url: DatabaseUrl = None
    db_busy_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    # Several daemons on one PostgreSQL database: each names itself and leases its strategies
    # (docs/storage-postgres.md). The default is stable across restarts, so one daemon needs none.
    daemon_id: DaemonId = DEFAULT_DAEMON_ID
    lease_ttl_s: float = Field(default=30.0, ge=5, le=600)
    # Other daemons trade this daemon's venue account too (PostgreSQL): the per-account caps
    # count their open orders and positions through the database, a halt and the daily loss
    # limit are the account's, and cancel-all touches only this daemon's orders
    # (docs/storage-postgres.md).
    account_shared: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8787, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    control_token: OptionalSecret = None
    ui_public_read: bool = False  # the console's reads without the token (docs/console.md)
    kill_switch_path: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)
    cancel_on_shutdown: bool = False
    strategy_max_restarts: int = Field(default=5, ge=0, le=1000)
    strategy_restart_window_s: float = Field(default=300.0, gt=0)

    # --- venue client --------------------------------------------------------------------------
    http_timeout_s: float = Field(default=5.0, gt=0, le=120)
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
    # The sniper's name: its identity in the journal, positions, leases, budgets, metrics and
    # audit. Two daemons on one database each running a sniper give them different names.
    sniper_name: StrategyName = "sniper"
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
    copy_name: StrategyName = "copy"  # the copy trader's name (see SNIPER_NAME)
    copy_poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    copy_max_trade_age_s: float = Field(default=60.0, gt=0, le=86_400)

    # --- operations ----------------------------------------------------------------------------
    notify_webhook_url: OptionalSecret = None
    notify_kind: Literal["generic", "telegram", "discord"] = "generic"
    notify_telegram_chat_id: Annotated[str | None, AfterValidator(check_chat_ids)] = None
    notify_min_interval_s: float = Field(default=60.0, ge=0, le=86_400)
    log_summary_interval_s: float = Field(default=300.0, ge=0, le=86_400)  # 0: no summary line
    # --- two-way Telegram control (docs/chat-control.md); on when a bot token is set --------
    telegram_bot_token: Annotated[OptionalSecret, AfterValidator(check_token)] = None
    telegram_api_url: HttpUrl = "https://api.telegram.org"
    telegram_notify_fills: bool = False
    telegram_digest_at: Annotated[str, AfterValidator(check_digest_at)] = "21:00"
    telegram_poll_timeout_s: int = Field(default=30, ge=0, le=50)
    # --- tracing (OpenTelemetry, standard variable names; off unless an exporter is chosen) ----
    otel_traces_exporter: Literal["otlp", "none"] | None = None
    otel_exporter_otlp_endpoint: HttpUrl | None = None
    otel_exporter_otlp_traces_endpoint: HttpUrl | None = None
    otel_exporter_otlp_headers: OptionalSecret = None
    otel_service_name: str = Field(default="polyd", min_length=1, max_length=100)
    otel_traces_sampler: Literal[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ] = "parentbased_always_on"
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0, le=1)
    otel_export_timeout_s: float = Field(default=10.0, gt=0, le=60)

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
        hook = self.notify_webhook_url.get_secret_value() if self.notify_webhook_url else ""
        if hook and not re.match(r"https?://[^/\s]+", hook.strip()):
            problems.append("NOTIFY_WEBHOOK_URL: must be a URL starting with https:// or http://")
        if self.notify_kind == "telegram" and not self.notify_telegram_chat_id:
            problems.append(
                "NOTIFY_TELEGRAM_CHAT_ID: required when NOTIFY_KIND=telegram (the chat the bot "
                "writes to)"
            )
        if self.account_shared and self.database_url is None:
            problems.append(
                "ACCOUNT_SHARED: needs DATABASE_URL (daemons share an account through one "
                "PostgreSQL database; a SQLite file has one daemon)"
            )
        names = (self.sniper_name, self.copy_name)
        for key in sorted(set(self.risk_strategy_budgets) - set(names)):
            problems.append(
                f"RISK_STRATEGY_BUDGETS: {key!r} names no strategy of this daemon (SNIPER_NAME="
                f"{names[0]!r}, COPY_NAME={names[1]!r}): its budget would cap nothing"
            )
        if self.sniper_name == self.copy_name:
            problems.append(
                f"COPY_NAME: must differ from SNIPER_NAME ({self.sniper_name!r}): a strategy's"
                " name is its identity in the journal, positions and leases"
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
        if self.otel_exporter_otlp_headers is not None:
            try:
                self.otel_headers()
            except ValueError:
                problems.append(
                    "OTEL_EXPORTER_OTLP_HEADERS: must be comma-separated key=value pairs"
                )
        problems.extend(chat_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def otel_traces_endpoint(self) -> str | None:
        """Where spans go (OTLP/HTTP), or None when tracing is off.

        On with `OTEL_TRACES_EXPORTER=otlp` (default endpoint `http://localhost:4318`, as the
        OpenTelemetry specification says), or with an endpoint set and no exporter named;
        `OTEL_TRACES_EXPORTER=none` turns it off whatever else is set. The signal-specific
        `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as given; the general one gets `/v1/traces`.
        """
        exporter = self.otel_traces_exporter
        specific = self.otel_exporter_otlp_traces_endpoint
        general = self.otel_exporter_otlp_endpoint
        if exporter == "none" or (exporter is None and specific is None and general is None):
            return None
        if specific is not None:
            return specific
        return (general or "http://localhost:4318") + "/v1/traces"

    @property
    def otel_traces_sampler_ratio(self) -> float:
        """The fraction of new traces kept (children follow their parent's decision)."""
        sampler = self.otel_traces_sampler
        if sampler.endswith("always_on"):
            return 1.0
        if sampler.endswith("always_off"):
            return 0.0
        return self.otel_traces_sampler_arg

    def otel_headers(self) -> dict[str, str]:
        """`OTEL_EXPORTER_OTLP_HEADERS` as a dict (`k=v,k2=v2`, values URL-encoded)."""
        from urllib.parse import unquote

        raw = self.otel_exporter_otlp_headers
        out: dict[str, str] = {}
        if raw is None:
            return out
        for pair in raw.get_secret_value().split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError("not key=value")
            out[key.strip()] = unquote(value.strip())
        return out

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
        if self.database_url and (password := urlsplit(self.database_url).password):
            found += [password, unquote(password)]  # logs show the URL without it anyway
        return found


# --------------------------------------------------------------------------------------------
# Files the operator writes (the settings file, strategy rules)
# --------------------------------------------------------------------------------------------

MAX_FILE_BYTES: Final = 1 << 20
"""The largest settings or rules file read (1 MiB; a real one is a few KiB)."""
MAX_NESTING: Final = 32
"""The deepest nesting of tables and lists a rules file may have (a real one has 4 or 5)."""
MAX_ECHO: Final = 80
"""At most this many characters of a file's content are echoed in an error."""
MAX_PATH_ECHO: Final = 4096
"""A file's path is the operator's own text: echoed whole up to Linux's PATH_MAX."""


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """`text` shortened to `limit` characters (an ellipsis marks the cut), on one line."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_text_file(path: Path, *, setting: str, allow_empty: bool = False) -> str:
    """Read the operator's file `path` (named by `setting` in errors) as UTF-8 text.

    Every way the file can be wrong is a `ConfigError` whose one line names `setting` and the
    file: missing, a folder or a device rather than a file, unreadable, over `MAX_FILE_BYTES`
    (only that much is ever read), empty (unless `allow_empty`), a NUL byte, not UTF-8.
    """
    where = f"{setting} {clip(str(path), MAX_PATH_ECHO)}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError([f"{where}: no such file"]) from None
    except OSError as e:
        raise ConfigError([f"{where}: cannot read it: {e.strerror or type(e).__name__}"]) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError([f"{where}: is a folder, not a file"])
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device could block or never end
        raise ConfigError([f"{where}: is not a regular file"])
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError([f"{where}: cannot read it: {e.strerror or type(e).__name__}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            [f"{where}: is larger than {MAX_FILE_BYTES >> 20} MiB; is it the right file?"]
        )
    if not allow_empty and not raw.strip():
        raise ConfigError([f"{where}: is empty"])
    if (nul := raw.find(b"\0")) >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise ConfigError([f"{where}: has a NUL byte on line {line}; it is not a text file"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            [f"{where}: is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line})"]
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_document(path: Path, *, setting: str, fmt: Literal["toml", "json"]) -> Any:
    """Read `path` with `read_text_file` and decode it as TOML or JSON.

    A file that does not decode, or nests deeper than `MAX_NESTING`, is a `ConfigError` naming
    `setting` and the file, with at most `MAX_ECHO` characters of the decoder's message.
    """
    text = read_text_file(path, setting=setting)
    where = f"{setting} {clip(str(path), MAX_PATH_ECHO)}"
    # Counted before decoding: the decoders recurse once per level, so a 100,000-deep file
    # would take them to the interpreter's recursion limit (or, with a raised limit, past the
    # C stack). The count is loose (table headers, strings it cannot see into); the exact
    # check runs on the decoded document below.
    too_deep = _bracket_depth(text, fmt) > 4 * MAX_NESTING
    data: Any = None
    try:
        if not too_deep:
            data = (
                tomllib.loads(text)
                if fmt == "toml"
                else json.loads(text, parse_constant=_no_constant)
            )
    except RecursionError:  # the decoder's own stack gave out: far deeper than allowed
        too_deep = True
    except ValueError as e:  # TOML/JSON syntax, an integer of thousands of digits, NaN in JSON
        raise ConfigError([f"{where}: is not valid {fmt.upper()}: {clip(str(e))}"]) from None
    if too_deep or _too_deep(data):
        raise ConfigError([f"{where}: nests tables or lists more than {MAX_NESTING} deep"])
    return data


# Strings and comments, whose brackets do not nest: TOML's four kinds of string and its
# comments; JSON's one kind of string. A string left open runs to the end of its line (or, for
# a multi-line one, of the text), as it would for the decoder, which stops there; that also
# keeps the scan linear on any input.
_TOML_OPAQUE = re.compile(
    r'"""[\s\S]*?(?:"""|\Z)'
    r"|'''[\s\S]*?(?:'''|\Z)"
    r'|"(?:[^"\\\n]|\\.)*"?'
    r"|'[^'\n]*'?"
    r"|#[^\n]*"
)
_JSON_OPAQUE = re.compile(r'"(?:[^"\\]|\\.)*"?')


def _bracket_depth(text: str, fmt: Literal["toml", "json"]) -> int:
    """The deepest nesting of `[`/`{` outside strings and comments."""
    bare = (_TOML_OPAQUE if fmt == "toml" else _JSON_OPAQUE).sub("", text)
    steps = (1 if c in "[{" else -1 for c in bare if c in "[]{}")
    return max(itertools.accumulate(steps, initial=0))


def _too_deep(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= MAX_NESTING:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


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


def load_settings(
    env_file: str | Path | None = ".env", *, kind: type[Settings] | None = None, **overrides: Any
) -> Settings:
    """Build Settings (or the subclass `kind`) from the environment, `env_file` (None for none)
    and explicit `overrides`.

    Raise ConfigError with one line per problem. Tests pass `env_file=None` and overrides only.
    The settings file must be a readable UTF-8 text file of at most `MAX_FILE_BYTES` (it may be
    empty); only one named `.env` (the default) may be missing.
    """
    if env_file is not None:
        path = Path(env_file)
        if path.exists() or path.is_symlink() or path.name != ".env":
            read_text_file(path, setting="settings file", allow_empty=True)
    try:
        return (kind or Settings)(_env_file=env_file, **overrides)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    except SettingsError as e:
        # A complex value (e.g. RISK_STRATEGY_BUDGETS) that is not JSON fails in the settings
        # source, before validation; its message names the field and never the value.
        m = re.search(r'field "([^"]+)"', str(e))
        key = m.group(1).upper() if m else "SETTINGS"
        raise ConfigError([f'{key}: must be JSON (e.g. {{}} or {{"sniper": "100"}})']) from None


def environment_names() -> list[str]:
    """The names of the process's environment variables (for the unknown-key warnings)."""
    return list(os.environ)


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
