"""Chat-control settings: every problem on its own line, all at once, never echoing the token;
the bot's view of them; reloads reach the bot through the notifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from errors import ConfigError
from observability.chat_config import ChatConfig
from observability.metrics import Metrics
from observability.notify import Notification, Notifier
from tests.helpers import make_settings
from wiring.reload import RELOADABLE

TOKEN = "123456789:AAHf3kq9ZxFakeBotTokenForTests0000000"


def problems(tmp_path: Path, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        make_settings(tmp_path, **kw)
    return list(e.value.problems)


def test_bad_token_chat_id_and_digest_time_are_reported_together(tmp_path: Path) -> None:
    bad_token = "123456789:short-" + "secretpart"
    lines = problems(
        tmp_path,
        telegram_bot_token=bad_token,
        notify_telegram_chat_id="4242, me",
        telegram_digest_at="25:00",
    )
    assert sorted(line.split(":")[0] for line in lines) == [
        "NOTIFY_TELEGRAM_CHAT_ID",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_DIGEST_AT",
    ]
    assert "entry 2 is not a chat id" in " ".join(lines)
    assert not any("secretpart" in line for line in lines)  # the token is never echoed


def test_a_token_needs_numeric_chat_ids_and_no_telegram_webhook(tmp_path: Path) -> None:
    assert problems(tmp_path, telegram_bot_token=TOKEN) == [
        "NOTIFY_TELEGRAM_CHAT_ID: required when TELEGRAM_BOT_TOKEN is set (the numeric ids of "
        "the chats allowed to use the bot; the bot tells a chat its id)"
    ]
    lines = problems(
        tmp_path,
        telegram_bot_token=TOKEN,
        notify_telegram_chat_id="@polyd_alerts",
        notify_kind="telegram",
        notify_webhook_url=f"https://api.telegram.org/bot{TOKEN}",
    )
    assert [line.split(":")[0] for line in lines] == [
        "NOTIFY_TELEGRAM_CHAT_ID",
        "NOTIFY_WEBHOOK_URL",
    ]


def test_the_telegram_webhook_alone_sends_to_one_chat(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        notify_kind="telegram",
        notify_webhook_url=f"https://api.telegram.org/bot{TOKEN}",
        notify_telegram_chat_id="1,2",
    )
    assert lines[0].startswith("NOTIFY_TELEGRAM_CHAT_ID: the Telegram webhook sends to one chat")
    assert make_settings(tmp_path, notify_telegram_chat_id="@polyd_alerts")


def test_settings_become_the_bots_config(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path,
        telegram_bot_token=f"  {TOKEN} ",
        notify_telegram_chat_id=" 4242 ,-1001234567890",
        telegram_digest_at="07:30",
        telegram_notify_fills=True,
    )
    c = ChatConfig.from_settings(s)
    assert c.token == TOKEN and c.enabled
    assert c.chat_ids == {4242, -1001234567890}
    assert c.digest_at == (7, 30) and c.notify_fills
    assert TOKEN in s.secret_values()  # so the log redactor knows it
    assert (
        ChatConfig.from_settings(make_settings(tmp_path, telegram_digest_at="OFF")).digest_at
        is None
    )
    assert not ChatConfig.from_settings(make_settings(tmp_path)).enabled


def test_telegram_settings_reload_and_reach_the_bot_through_the_notifier(tmp_path: Path) -> None:
    assert {
        "telegram_bot_token",
        "telegram_api_url",
        "telegram_notify_fills",
        "telegram_digest_at",
        "telegram_poll_timeout_s",
        "notify_telegram_chat_id",
    } <= RELOADABLE
    seen: list[Any] = []
    taken: list[Notification] = []
    n = Notifier(metrics=Metrics())
    assert not n.notify("halt", "halt", "nobody listens")  # no webhook, no sink

    def sink(m: Notification) -> bool:
        taken.append(m)
        return True

    on = False
    n.add_sink(sink, active=lambda: on, reconfigure=seen.append)
    assert not n.notify("halt", "halt", "the bot is off")
    on = True
    assert n.notify("halt", "halt", "trading halted")
    assert [m.text for m in taken] == ["trading halted"]
    new = make_settings(tmp_path, telegram_bot_token=TOKEN, notify_telegram_chat_id="1")
    n.reconfigure(new)
    assert seen == [new]
