"""The value types of settings (`config.Settings`): addresses, keys, money, URLs. Each checks
its value and says what it must be, never echoing it."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, SecretStr

from models import UNATTRIBUTED, _to_decimal

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
ChainId = Annotated[int, AfterValidator(_chain_id)]
PrivateKey = Annotated[SecretStr | None, AfterValidator(_private_key)]


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


def _database_url(v: str | None) -> str | None:
    if v is None or v == "":
        return None
    if not v.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a PostgreSQL URL: postgresql://user@host:5432/database")
    return v


DatabaseUrl = Annotated[str | None, AfterValidator(_database_url)]


DEFAULT_DAEMON_ID = "default"
_DAEMON_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _daemon_id(v: str) -> str:
    v = v.strip()
    if not _DAEMON_ID.fullmatch(v):
        raise ValueError(
            "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return v


DaemonId = Annotated[str, AfterValidator(_daemon_id)]


_STRATEGY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def _strategy_name(v: str) -> str:
    v = v.strip()
    if not _STRATEGY_NAME.fullmatch(v):
        raise ValueError(
            "must be 1 to 40 lower-case letters, digits, '_' or '-', starting with a letter"
        )
    if v == UNATTRIBUTED:
        raise ValueError(f"{v!r} names the holdings no strategy bought; choose another name")
    return v


StrategyName = Annotated[str, AfterValidator(_strategy_name)]
"""A strategy instance's name (`SNIPER_NAME`, `COPY_NAME`): its identity in the journal, the
positions, the leases, the metrics and the audit log."""
