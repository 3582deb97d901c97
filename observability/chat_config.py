"""The Telegram chat-control settings: their checks (used by `config.Settings`) and the
`ChatConfig` the bot runs on. Imports nothing of the daemon, so `config` may use it.

Each check raises `ValueError` with a message that names the problem, never the value (the bot
token is a secret).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

# A Bot API token is "<bot id>:<secret>" (https://core.telegram.org/bots/api#authorizing-your-bot);
# a chat id a signed integer, or @channelusername for sendMessage (#sendmessage).
BOT_TOKEN: Final = re.compile(r"[0-9]{3,20}:[A-Za-z0-9_-]{30,100}")
CHAT_ID: Final = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31}")
DIGEST_AT: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def check_token(v: SecretStr | None) -> SecretStr | None:
    """TELEGRAM_BOT_TOKEN: the shape @BotFather gives, surrounding blanks removed."""
    if v is None:
        return None
    raw = v.get_secret_value().strip()
    if not BOT_TOKEN.fullmatch(raw):
        raise ValueError(
            "must be a bot token as @BotFather gives it: the bot's numeric id, a colon, "
            "then 30 or more letters, digits, '_' or '-'"
        )
    return SecretStr(raw)


def check_chat_ids(v: str | None) -> str | None:
    """NOTIFY_TELEGRAM_CHAT_ID: one chat id or several separated by commas."""
    if v is None:
        return None
    items = [item.strip() for item in v.split(",")]
    for n, item in enumerate(items, 1):
        if not CHAT_ID.fullmatch(item):
            raise ValueError(
                f"entry {n} is not a chat id: use the chat's number (123456789, or "
                "-1001234567890 for a group) or @channelname, several separated by commas"
            )
    return ",".join(items)


def check_digest_at(v: str) -> str:
    """TELEGRAM_DIGEST_AT: HH:MM (UTC) or `off`."""
    v = v.strip().lower()
    if v != "off" and not DIGEST_AT.fullmatch(v):
        raise ValueError("must be a UTC time as HH:MM (e.g. 21:00), or off for no digest")
    return v


def chat_ids(raw: str | None) -> tuple[str, ...]:
    return tuple(raw.split(",")) if raw else ()


def chat_problems(s: Any) -> list[str]:
    """The problems of the Telegram settings taken together, one line each."""
    ids = chat_ids(s.notify_telegram_chat_id)
    if s.telegram_bot_token is None:
        if s.notify_kind == "telegram" and len(ids) > 1:
            return [
                "NOTIFY_TELEGRAM_CHAT_ID: the Telegram webhook sends to one chat; set "
                "TELEGRAM_BOT_TOKEN (chat control) to reach several"
            ]
        return []
    problems = []
    if not ids:
        problems.append(
            "NOTIFY_TELEGRAM_CHAT_ID: required when TELEGRAM_BOT_TOKEN is set (the numeric "
            "ids of the chats allowed to use the bot; the bot tells a chat its id)"
        )
    elif any(i.startswith("@") for i in ids):
        problems.append(
            "NOTIFY_TELEGRAM_CHAT_ID: with TELEGRAM_BOT_TOKEN every entry must be a numeric "
            "chat id (commands arrive from numeric ids, not @names)"
        )
    if s.notify_kind == "telegram" and s.notify_webhook_url is not None:
        problems.append(
            "NOTIFY_WEBHOOK_URL: leave it unset (or NOTIFY_KIND generic/discord) when "
            "TELEGRAM_BOT_TOKEN is set: the bot sends the notifications itself"
        )
    return problems


@dataclass(frozen=True)
class ChatConfig:
    """The Telegram settings the bot runs on (from `config.Settings`)."""

    token: str | None = None
    api_url: str = "https://api.telegram.org"
    chat_ids: frozenset[int] = frozenset()
    notify_fills: bool = False
    digest_at: tuple[int, int] | None = None
    poll_timeout_s: int = 30

    @classmethod
    def from_settings(cls, s: Any) -> ChatConfig:
        """Typed loosely so this module does not import config."""
        token = s.telegram_bot_token
        at = s.telegram_digest_at
        return cls(
            token=token.get_secret_value() if token is not None else None,
            api_url=s.telegram_api_url,
            chat_ids=frozenset(
                int(c) for c in chat_ids(s.notify_telegram_chat_id) if not c.startswith("@")
            ),
            notify_fills=s.telegram_notify_fills,
            digest_at=None if at == "off" else (int(at[:2]), int(at[3:])),
            poll_timeout_s=s.telegram_poll_timeout_s,
        )

    @property
    def enabled(self) -> bool:
        return self.token is not None and bool(self.chat_ids)
