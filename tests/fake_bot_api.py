"""A fake of the Telegram Bot API on loopback, for chat control tests.

It answers the methods the bot uses as https://core.telegram.org/bots/api shapes them: every
answer is `{"ok": true, "result": ...}` or `{"ok": false, "error_code": ..., "description": ...}`
(#making-requests); `getMe` a User (#getme); `deleteWebhook` True (#deletewebhook, the library
calls it before polling); `getUpdates` an array of Update, long-polled up to `timeout` seconds,
updates below `offset` confirmed and forgotten (#getupdates); `sendMessage` the sent Message
(#sendmessage); `answerCallbackQuery` True (#answercallbackquery). A command arrives as a
Message whose `entities` start with a `bot_command` entity at offset 0 (#messageentity), as the
real server sends it. Requests come form-encoded (python-telegram-bot's default) or as JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from tests.helpers import free_port

TOKEN = "123456789:AAHf3kq9ZxFakeBotTokenForTests0000000"
BOT = {"id": 123456789, "is_bot": True, "first_name": "polyd", "username": "polyd_test_bot"}


class FakeBotApi:
    """The fake server; `message()` and `press()` queue updates, `sent` records what the bot sent.
    `fail_polls` makes that many next `getUpdates` calls answer 502 Bad Gateway."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.fail_polls = 0
        self._updates: list[dict[str, Any]] = []
        self._next_update = 1000
        self._next_message = 1
        self._arrived = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what a test does -------------------------------------------------------------------

    def message(self, chat_id: int, text: str, *, user_id: int | None = None) -> None:
        """Queue a text message from `chat_id` (a command if it starts with /)."""
        msg = self._message(chat_id, text, sender={"id": user_id or chat_id, "is_bot": False})
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        self._queue({"message": msg})

    def press(self, chat_id: int, data: str, *, user_id: int | None = None) -> None:
        """Queue a press of an inline button with `data` under a message of the bot's."""
        user = {"id": user_id or chat_id, "is_bot": False, "first_name": "op"}
        query = {
            "id": str(self._next_update),
            "from": user,
            "chat_instance": f"ci{chat_id}",
            "data": data,
            "message": self._message(chat_id, "confirm?", sender=BOT),
        }
        self._queue({"callback_query": query})

    def texts(self, chat_id: int) -> list[str]:
        return [str(m["text"]) for m in self.sent if int(m["chat_id"]) == chat_id]

    async def wait_for(self, cond: Callable[[], bool], within_s: float = 10.0) -> None:
        """Wait until `cond()` holds (checked whenever the bot calls the API)."""
        async with asyncio.timeout(within_s):
            while not cond():
                self._changed.clear()
                await self._changed.wait()

    async def reply_to(self, chat_id: int, text: str, within_s: float = 10.0) -> str:
        """Send `text` from `chat_id`; return the next message the bot sends to that chat."""
        before = len(self.texts(chat_id))
        self.message(chat_id, text)
        await self.wait_for(lambda: len(self.texts(chat_id)) > before, within_s)
        return self.texts(chat_id)[before]

    # -- the server -------------------------------------------------------------------------

    def _message(self, chat_id: int, text: str, *, sender: dict[str, Any]) -> dict[str, Any]:
        self._next_message += 1
        return {
            "message_id": self._next_message,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": {"first_name": "op", **sender},
            "text": text,
        }

    def _queue(self, update: dict[str, Any]) -> None:
        self._next_update += 1
        self._updates.append({"update_id": self._next_update, **update})
        self._arrived.set()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls[method] += 1
        self._changed.set()
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        try:
            params = await _params(request)
        except ConnectionResetError:  # the bot went away mid-request (it restarted)
            return _error(400, "Bad Request: connection lost")
        if method == "getMe":
            return _ok(BOT)
        if method == "deleteWebhook":
            return _ok(True)
        if method == "getUpdates":
            return await self._get_updates(params)
        if method == "sendMessage":
            self.sent.append(params)
            self._changed.set()
            chat = {"id": int(params["chat_id"]), "type": "private"}
            self._next_message += 1
            return _ok(
                {
                    "message_id": self._next_message,
                    "date": int(time.time()),
                    "chat": chat,
                    "from": BOT,
                    "text": params["text"],
                }
            )
        if method == "answerCallbackQuery":
            self.answered.append(params)
            self._changed.set()
            return _ok(True)
        return _error(404, "Not Found: method not found")

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        if self.fail_polls > 0:
            self.fail_polls -= 1
            return _error(502, "Bad Gateway")
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._arrived.clear()
            wait = min(float(params.get("timeout") or 0), 1.0)
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._arrived.wait()
                except TimeoutError:
                    pass
        return _ok(list(self._updates))


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        try:  # python-telegram-bot sends non-string values JSON-encoded
            out[key] = json.loads(text) if text[:1] in "[{" else text
        except ValueError:
            out[key] = text
    return out


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )
