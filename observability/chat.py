"""Two-way Telegram control: commands from the operator's chats, messages to them.

Built on python-telegram-bot (https://docs.python-telegram-bot.org/en/stable/): its `Application`
runs inside the daemon's loop (`initialize`/`start`/`updater.start_polling`, no signal handling of
its own) and long-polls `getUpdates` (https://core.telegram.org/bots/api#getupdates), retrying
failed polls itself (1 s, then x1.5 up to 30 s). This module adds what the daemon needs around it:

- only the chats in `NOTIFY_TELEGRAM_CHAT_ID` are answered; any other chat gets a one-line
  refusal naming its id (so an operator can find it) and an audit entry `chat_refused`, both at
  most once per chat per `REFUSAL_EVERY_S`, for at most `MAX_REFUSED_CHATS` chats remembered;
- `/status`, `/positions`, `/pnl`, `/daily` answer from the `Desk` (the CLI's read model);
  `/halt`, `/resume`, `/cancel_all` run the sidecar's control path with `telegram:<chat id>` as
  the actor; `/halt` and `/cancel_all` ask for a confirmation first (`/halt confirm`, or the
  button, valid for `CONFIRM_S`);
- messages (notifications handed over by the `Notifier`, fills, the daily digest) go through one
  bounded outbox to every configured chat; a full outbox drops and counts;
- a bot that cannot start (network down, token refused) is retried with backoff up to
  `RETRY_MAX_S`; nothing here ever ends the daemon; a reload with new Telegram settings restarts
  the bot on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from observability.chat_config import ChatConfig
from observability.metrics import Metrics
from observability.notify import TELEGRAM_LIMIT, Notification

log = structlog.get_logger("chat")

READ_COMMANDS: Final = ("status", "positions", "pnl", "daily")
CONFIRMED: Final = {"halt": "halt", "cancel_all": "cancel-all"}
"""Chat command -> control action, for the commands that ask for a confirmation first."""
CONFIRM_S: Final = 120.0
REFUSAL_EVERY_S: Final = 600.0
MAX_REFUSED_CHATS: Final = 256
RETRY_MAX_S: Final = 300.0
HELP: Final = (
    "polyd commands:\n"
    "/status - trading state, today's PnL against the limit, orders, fills\n"
    "/positions - open positions\n"
    "/pnl - realized PnL, fees, today's PnL\n"
    "/daily - fills, pUSD bought and sold, fees per day (7 days)\n"
    "/halt - stop new orders (asks to confirm; cancels still go)\n"
    "/resume - trade again\n"
    "/cancel_all - cancel every resting order (asks to confirm)"
)


class Desk(Protocol):
    """What the bot reads and does: the daemon's figures as text, and its control path."""

    async def report(self, name: str) -> str:
        """The text of one read command (`status`, `positions`, `pnl`, `daily`, `digest`)."""
        ...

    async def new_fills(self) -> list[str]:
        """One line per fill journaled since the last call (none on the first call)."""
        ...

    async def control(self, action: str, body: Mapping[str, Any], *, actor: str) -> str:
        """Run a control action (`halt`, `resume`, `cancel-all`); return the answer as text."""
        ...


class Audit(Protocol):
    async def append(self, event: str, **detail: Any) -> None: ...


class ChatStalled(Exception):
    """No `getUpdates` succeeded for too long (the library's polling gave up, e.g. on a token
    revoked while running): the bot is restarted, with backoff."""


class _Polls(HTTPXRequest):
    """The `getUpdates` connection, noting when a poll was last answered with success."""

    def __init__(self, on_ok: Callable[[], None]) -> None:
        super().__init__()
        self._on_ok = on_ok

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, body = await super().do_request(*args, **kwargs)
        if 200 <= code < 300:
            self._on_ok()
        return code, body


class ChatBot:
    """The daemon's Telegram bot; see the module docstring. Its three services run in the
    orchestrator's TaskGroup and idle while no bot token is configured."""

    def __init__(
        self,
        *,
        config: ChatConfig,
        desk: Desk,
        audit: Audit,
        metrics: Metrics | None = None,
        mode: str = "",
        outbox_size: int = 100,
        fill_poll_s: float = 2.0,
        digest_tick_s: float = 20.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stall_s: float | None = None,
    ) -> None:
        self.config = config
        self._desk = desk
        self._audit = audit
        self._metrics = metrics
        self._mode = mode
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=outbox_size)
        self._fill_poll_s = fill_poll_s
        self._digest_tick_s = digest_tick_s
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep
        self._changed = asyncio.Event()
        self._refused: OrderedDict[int, float] = OrderedDict()
        self._digest_day: str | None = None
        self.app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self.poll_errors = 0
        self.failures = 0
        self._stall_s = stall_s
        self._polled_at = 0.0

    def reconfigure(self, settings: Any) -> None:
        """Take new Telegram settings (a reload): the bot restarts on them."""
        new = ChatConfig.from_settings(settings)
        if new != self.config:
            self.config = new
            self._changed.set()

    def services(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The bot (polling and sending), the fill watch and the digest timer."""
        return [
            ("chat", self.run),
            ("chat:fills", self.run_fills),
            ("chat:digest", self.run_digest),
        ]

    # -- outbound ---------------------------------------------------------------------------

    def push(self, msg: Notification) -> bool:
        """A `Notifier` sink: queue the message for every configured chat; never blocks."""
        title = "polyd " + msg.kind + (f" ({self._mode})" if self._mode else "")
        return self.say(f"{title}: {msg.text}")

    def say(self, text: str) -> bool:
        """Queue `text` for every configured chat; False if the bot is off or the outbox full."""
        if not self.config.enabled:
            return False
        try:
            self._outbox.put_nowait(text[:TELEGRAM_LIMIT])
        except asyncio.QueueFull:
            self._count("dropped")
            log.warning("chat_message_dropped", reason="outbox full")
            return False
        return True

    async def _send_outbox(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        while True:
            text = await self._outbox.get()
            for chat_id in sorted(self.config.chat_ids):
                await self._send(app, chat_id, text)

    async def _send(
        self, app: Application[Any, Any, Any, Any, Any, Any], chat_id: int, text: str
    ) -> None:
        for attempt in (1, 2):
            try:
                await app.bot.send_message(chat_id=chat_id, text=text)
                self._count("sent")
                return
            except RetryAfter as e:  # Telegram's flood control says how long to wait
                wait = e.retry_after
                seconds = wait.total_seconds() if not isinstance(wait, int) else float(wait)
                if attempt == 2 or seconds > 60:
                    break
                await self._sleep(seconds)
            except TelegramError as e:
                log.warning("chat_send_failed", chat_id=chat_id, error=type(e).__name__)
                break
        self._count("failed")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications_total.labels(outcome).inc()

    # -- the bot's life ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run the bot until cancelled; restart it on new settings, retry it with backoff."""
        delay = 1.0
        while True:
            self._changed.clear()
            config = self.config
            if not config.enabled:
                await self._changed.wait()
                continue
            started = self._monotonic()
            try:
                await self._session(config)
                continue  # settings changed: start again on them
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the task boundary: the bot must never end the daemon
                self.failures += 1
                log.warning("chat_bot_failed", error=f"{type(e).__name__}: {e}", retry_s=delay)
            if self._monotonic() - started > 60:
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()
            delay = min(delay * 2, RETRY_MAX_S)

    async def _session(self, config: ChatConfig) -> None:
        """One run of the bot on `config`, until the settings change."""
        assert config.token is not None
        # httpx logs every request at INFO, URL (and so the token) included: one per long poll.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        app = (
            ApplicationBuilder()
            .token(config.token)
            .base_url(config.api_url + "/bot")
            .base_file_url(config.api_url + "/file/bot")
            .get_updates_request(_Polls(self._polled))
            .build()
        )
        self._register(app)
        async with app:  # initialize (getMe) ... shutdown
            self.app = app
            try:
                await app.start()
                assert app.updater is not None
                await app.updater.start_polling(
                    timeout=config.poll_timeout_s,
                    allowed_updates=["message", "callback_query"],
                    error_callback=self._poll_failed,
                )
                log.info("chat_bot_started", bot=app.bot.username, chats=len(config.chat_ids))
                # Owned here: cancelled and awaited below whatever ends the session.
                sender = asyncio.create_task(self._send_outbox(app), name="chat:send")
                try:
                    await self._watch(config)
                finally:
                    sender.cancel()
                    await asyncio.wait([sender])
            finally:
                self.app = None
                async with asyncio.timeout(5):
                    if app.updater is not None and app.updater.running:
                        await app.updater.stop()
                    if app.running:
                        await app.stop()
        log.info("chat_bot_restarting", reason="settings changed")

    def _polled(self) -> None:
        self._polled_at = self._monotonic()

    async def _watch(self, config: ChatConfig) -> None:
        """Return when the settings change; raise ChatStalled when polls stop succeeding."""
        stall_s = self._stall_s or config.poll_timeout_s + 90.0
        self._polled_at = self._monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(stall_s / 2, 30.0)):
                    await self._changed.wait()
                    return
            quiet = self._monotonic() - self._polled_at
            if quiet > stall_s:
                raise ChatStalled(f"no successful getUpdates for {quiet:.0f} s")

    def _poll_failed(self, e: TelegramError) -> None:
        self.poll_errors += 1
        log.warning("chat_poll_failed", error=type(e).__name__, count=self.poll_errors)

    # -- inbound ----------------------------------------------------------------------------

    def _register(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        app.add_handler(CommandHandler(["start", "help"], self._help))
        for name in READ_COMMANDS:
            app.add_handler(CommandHandler(name, self._read))
        app.add_handler(CommandHandler(list(CONFIRMED), self._confirmed))
        app.add_handler(CommandHandler("resume", self._resume))
        app.add_handler(CallbackQueryHandler(self._button))
        # Other commands, and plain text in a private chat (group chatter is left alone).
        unknown = filters.COMMAND | (filters.TEXT & filters.ChatType.PRIVATE)
        app.add_handler(MessageHandler(unknown, self._unknown))
        app.add_error_handler(self._handler_failed)

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Let only the configured chats through; refuse (and audit) the others."""
        chat = update.effective_chat
        if chat is not None and chat.id in self.config.chat_ids:
            return
        if chat is not None and self._may_refuse(chat.id):
            user = update.effective_user
            if update.callback_query is not None:
                what = "button " + (update.callback_query.data or "").split(":")[0][:24]
            else:
                text = update.effective_message.text if update.effective_message else None
                what = (text or "").split(" ", 1)[0][:32]
            log.warning("chat_refused", chat_id=chat.id, what=what)
            with contextlib.suppress(Exception):  # the audit must not stop the refusal
                await self._audit.append(
                    "chat_refused",
                    chat_id=chat.id,
                    user_id=user.id if user is not None else None,
                    what=what,
                )
            with contextlib.suppress(TelegramError):
                await context.bot.send_message(
                    chat_id=chat.id,
                    text=f"This chat (id {chat.id}) may not use this bot.",
                )
        raise ApplicationHandlerStop

    def _may_refuse(self, chat_id: int) -> bool:
        """At most one refusal per chat per REFUSAL_EVERY_S, for MAX_REFUSED_CHATS chats."""
        now = self._monotonic()
        last = self._refused.get(chat_id)
        if last is not None and now - last < REFUSAL_EVERY_S:
            return False
        self._refused[chat_id] = now
        self._refused.move_to_end(chat_id)
        while len(self._refused) > MAX_REFUSED_CHATS:
            self._refused.popitem(last=False)
        return True

    async def _reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(chat_id=update.effective_chat.id, text=text[:TELEGRAM_LIMIT])

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await self._reply(update, context, f"{HELP}\n\nThis chat's id: {update.effective_chat.id}")

    async def _read(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        name = _command(update)
        log.info("chat_command", command=name, chat_id=_chat_id(update))
        await self._reply(update, context, await self._desk.report(name))

    async def _confirmed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        name = _command(update)
        args = list(context.args or [])
        if args[:1] == ["confirm"]:
            await self._control(update, context, CONFIRMED[name], " ".join(args[1:]))
            return
        what = (
            "Halt trading: new orders stop, cancels still go."
            if name == "halt"
            else ("Cancel every resting order at the venue.")
        )
        stamp = int(self._now().timestamp())
        button = InlineKeyboardButton(
            "Confirm " + name.replace("_", " "), callback_data=f"{name}:{stamp}"
        )
        assert update.effective_chat is not None
        await context.bot.send_message(
            chat_id=update.effective_chat.id,
            text=f"{what} Press the button or send /{name} confirm within {CONFIRM_S:.0f} s.",
            reply_markup=InlineKeyboardMarkup([[button]]),
        )

    async def _resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._control(update, context, "resume", " ".join(context.args or []))

    async def _button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        name, _, stamp = (query.data or "").partition(":")
        fresh = stamp.isdigit() and self._now().timestamp() - int(stamp) <= CONFIRM_S
        if name not in CONFIRMED or not fresh:
            await query.answer("This button has expired; send the command again.")
            return
        await query.answer()
        await self._control(update, context, CONFIRMED[name], "")

    async def _control(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, action: str, reason: str
    ) -> None:
        actor = f"telegram:{_chat_id(update)}"
        log.info("chat_command", command=action, chat_id=_chat_id(update))
        body = {"reason": reason[:200]} if reason else {"reason": f"manual {action} (telegram)"}
        if action == "cancel-all":
            body = {}
        await self._reply(update, context, await self._desk.control(action, body, actor=actor))

    async def _unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, context, "Unknown command. /help lists the commands.")

    async def _handler_failed(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        e = context.error
        log.error("chat_command_failed", error=f"{type(e).__name__}: {e}")
        if isinstance(update, Update) and update.effective_chat is not None:
            with contextlib.suppress(TelegramError):
                await self._reply(update, context, f"Failed: {type(e).__name__}. See the log.")

    # -- fills and the digest ---------------------------------------------------------------

    async def run_fills(self) -> None:
        """Announce each new fill when TELEGRAM_NOTIFY_FILLS is on (polls the journal)."""
        started = False
        while True:
            if self.config.enabled and self.config.notify_fills:
                try:
                    lines = await self._desk.new_fills()
                    if started:
                        for line in lines[:20]:
                            self.say(line)
                        if len(lines) > 20:
                            self.say(f"… and {len(lines) - 20} more fills")
                    started = True
                except Exception:  # the task boundary: a bad read must not end the watch
                    log.exception("chat_fills_failed")
            else:
                started = False
            await self._sleep(self._fill_poll_s)

    async def run_digest(self) -> None:
        """Send the daily digest at TELEGRAM_DIGEST_AT (UTC) while the daemon runs."""
        while True:
            try:
                await self.digest_tick()
            except Exception:  # the task boundary: a bad read must not end the timer
                log.exception("chat_digest_failed")
            await self._sleep(self._digest_tick_s)

    async def digest_tick(self) -> bool:
        """Send today's digest if its time has come and it has not gone out; True if sent.
        A daemon started after the time sends the next day's first."""
        at = self.config.digest_at
        if at is None or not self.config.enabled:
            return False
        now = self._now().astimezone(UTC)
        day = now.date().isoformat()
        due = (now.hour, now.minute) >= at
        if self._digest_day is None:
            self._digest_day = day if due else ""
            if due:
                return False
        if not due or self._digest_day == day:
            return False
        self._digest_day = day
        return self.say(await self._desk.report("digest"))


def _command(update: Update) -> str:
    text = update.effective_message.text if update.effective_message else None
    return (text or "/").split()[0][1:].split("@")[0].lower()


def _chat_id(update: Update) -> int | None:
    return update.effective_chat.id if update.effective_chat is not None else None
