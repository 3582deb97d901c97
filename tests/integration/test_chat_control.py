"""Telegram chat control against a fake Bot API on loopback (tests/fake_bot_api.py): the real
python-telegram-bot client long-polls it, commands are answered from a database the test builds,
unknown chats are refused and audited, the digest goes out at its time, failed polls back off
and recover, and a reload moves the bot to new settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, PartialCreateOrderOptions

from demo import funded_key, simulator_overrides
from execution.risk import TradingState
from models import Fill, OrderStatus, Side
from observability.chat import ChatBot
from observability.chat_config import ChatConfig
from observability.logging import Redactor
from observability.metrics import Metrics
from observability.notify import Notifier
from observability.sidecar import Health, Sidecar
from orchestrator import EXIT_OK, Context, Daemon
from simulator import Simulator
from storage import Database, Repositories
from storage.reports import Reports
from tests.fake_bot_api import TOKEN, FakeBotApi
from tests.helpers import make_order, make_settings
from wiring.chat import DaemonDesk, money, short

OPERATOR, STRANGER = 4242, 999_001
TOKEN_A = "7" * 69 + "12345678"


async def seed(path: Path) -> str:
    """One sniper order: bought 10 @ 0.40, sold 4 @ 0.50 -> 6 held @ 0.40, 0.40 realized."""
    async with Database(path) as db:
        repos = Repositories.over(db)
        order = make_order(strategy="sniper", token_id=TOKEN_A, price="0.40")
        await repos.orders.record(order, venue_order_id="0xa1", payload_hash="h1")
        await repos.orders.transition(
            order.client_order_id, OrderStatus.FILLED, size_matched=Decimal("10")
        )
        for trade, side, price, size in (
            ("t1", Side.BUY, "0.40", "10"),
            ("t2", Side.SELL, "0.50", "4"),
        ):
            await repos.fills.record(
                Fill(
                    trade_id=trade,
                    venue_order_id="0xa1",
                    client_order_id=order.client_order_id,
                    token_id=TOKEN_A,
                    side=side,
                    price=Decimal(price),
                    size=Decimal(size),
                )
            )
    return order.client_order_id


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Bench:
    """A bot over a seeded database, its audit log, and the fake server."""

    def __init__(self, api: FakeBotApi, db: Database, bot: ChatBot, path: Path) -> None:
        self.api, self.db, self.bot, self.path = api, db, bot, path

    async def audit(self, event: str) -> list[dict[str, Any]]:
        return [e.detail for e in await Repositories.over(self.db).audit.tail(event=event)]


def config(api: FakeBotApi, **kw: Any) -> ChatConfig:
    base: dict[str, Any] = {
        "token": TOKEN,
        "api_url": api.url,
        "chat_ids": frozenset({OPERATOR}),
        "poll_timeout_s": 1,
    }
    base.update(kw)
    return ChatConfig(**base)


@contextlib.asynccontextmanager
async def bench(
    tmp_path: Path, clock: Clock | None = None, stall_s: float | None = None, **kw: Any
) -> AsyncIterator[Bench]:
    path = tmp_path / "polyd.db"
    await seed(path)
    async with FakeBotApi() as api, Database(path) as db:
        desk = DaemonDesk(
            db_path=path,
            daily_loss_limit=Decimal("100"),
            mode="paper",
            executor=lambda: None,
            run_control=None,
            now=clock or (lambda: datetime.now(UTC)),
        )
        bot = ChatBot(
            config=config(api, **kw),
            desk=desk,
            audit=Repositories.over(db).audit,
            metrics=Metrics(),
            mode="paper",
            now=clock or (lambda: datetime.now(UTC)),
            fill_poll_s=0.05,
            stall_s=stall_s,
        )
        tasks = [asyncio.create_task(fn(), name=name) for name, fn in bot.services()]
        try:
            yield Bench(api, db, bot, path)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            for t in tasks:
                assert t.cancelled(), t  # no service ended on its own (an error)


async def test_each_read_command_answers_with_the_figures_in_the_database(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        status = await b.api.reply_to(OPERATOR, "/status")
        positions = await b.api.reply_to(OPERATOR, "/positions")
        pnl = await b.api.reply_to(OPERATOR, "/pnl")
        daily = await b.api.reply_to(OPERATOR, "/daily")
        help_text = await b.api.reply_to(OPERATOR, "/help")
        unknown = await b.api.reply_to(OPERATOR, "/frobnicate")
    with Reports.open(b.path) as r:
        summary = r.summary()
    assert summary.realized_pnl == "0.40" or Decimal(summary.realized_pnl) == Decimal("0.4")
    assert status.startswith("polyd (paper): ACTIVE")
    assert "realized PnL: 0.40, fees paid: 0.00" in status
    assert "open orders: 0, positions: 1, fills: 2" in status
    assert f"{short(TOKEN_A)}: 6 @ 0.4, realized 0.40" in positions
    assert short(TOKEN_A) == "…12345678"
    assert "realized PnL: 0.40" in pnl and "fees paid: 0.00" in pnl
    today = datetime.now(UTC).date().isoformat()
    # Bought 10 x 0.40 = 4.00 pUSD, sold 4 x 0.50 = 2.00, today; the six days before are empty.
    assert f"{today}: 2 fills, bought 4.00, sold 2.00, fees 0.00" in daily
    assert len(daily.splitlines()) == 1 + 7
    assert "/cancel_all" in help_text and f"This chat's id: {OPERATOR}" in help_text
    assert unknown.startswith("Unknown command")


async def test_an_unknown_chat_is_refused_once_audited_and_never_answered(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path) as b:
        refusal = await b.api.reply_to(STRANGER, "/status")
        assert refusal == f"This chat (id {STRANGER}) may not use this bot."
        b.api.message(STRANGER, "/halt confirm")
        b.api.press(STRANGER, "halt:9999999999")
        # The operator's command after the stranger's: once answered, the stranger's were seen.
        await b.api.reply_to(OPERATOR, "/status")
        refused = await b.audit("chat_refused")
    assert b.api.texts(STRANGER) == [refusal]  # one refusal per chat per 10 minutes
    assert refused == [{"chat_id": STRANGER, "user_id": STRANGER, "what": "/status"}]
    assert b.api.answered == []  # the stranger's button press was not handled either


async def test_the_digest_goes_out_once_at_its_time(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 5, 20, 59, 30, tzinfo=UTC))
    async with bench(tmp_path, clock=clock, digest_at=(21, 0)) as b:
        await b.api.wait_for(lambda: b.api.calls["getUpdates"] > 0)
        assert await b.bot.digest_tick() is False  # 20:59: not yet
        clock.at += timedelta(seconds=31)
        assert await b.bot.digest_tick() is True  # 21:00:01
        await b.api.wait_for(lambda: len(b.api.texts(OPERATOR)) == 1)
        assert await b.bot.digest_tick() is False  # once a day
        clock.at += timedelta(days=1)
        assert await b.bot.digest_tick() is True
        await b.api.wait_for(lambda: len(b.api.texts(OPERATOR)) == 2)
    first, second = b.api.texts(OPERATOR)
    assert first.startswith("polyd daily digest 2026-12-05\npolyd (paper): ACTIVE")
    assert "realized PnL: 0.40" in first
    assert second.startswith("polyd daily digest 2026-12-06")


async def test_a_daemon_started_after_the_digest_time_waits_for_the_next_day(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 12, 5, 22, 0, tzinfo=UTC))
    async with bench(tmp_path, clock=clock, digest_at=(21, 0)) as b:
        assert await b.bot.digest_tick() is False
        clock.at += timedelta(hours=22)  # 20:00 next day
        assert await b.bot.digest_tick() is False
        clock.at += timedelta(hours=1)
        assert await b.bot.digest_tick() is True


async def test_failed_polls_back_off_and_the_bot_recovers(tmp_path: Path) -> None:
    async with bench(tmp_path) as b:
        b.api.fail_polls = 2  # 502 Bad Gateway twice: waits 1 s, then 1.5 s
        started = asyncio.get_running_loop().time()
        answer = await b.api.reply_to(OPERATOR, "/status", within_s=15)
        took = asyncio.get_running_loop().time() - started
        assert b.bot.poll_errors == 2
        assert answer.startswith("polyd (paper)")
        assert took >= 2.0  # it backed off rather than hammering the server


async def test_a_token_refused_while_running_restarts_the_bot_until_it_is_accepted(
    tmp_path: Path,
) -> None:
    async with bench(tmp_path, stall_s=0.6) as b:
        assert (await b.api.reply_to(OPERATOR, "/pnl")).startswith("realized PnL")
        b.api.token = "987654321:" + "B" * 35  # the bot's token revoked: 401 Unauthorized
        await b.api.wait_for(lambda: b.bot.failures >= 1, within_s=10)  # stalled, getMe refused
        b.api.token = TOKEN
        answer = await b.api.reply_to(OPERATOR, "/pnl", within_s=15)
        assert answer.startswith("realized PnL")


async def test_a_bot_that_cannot_reach_the_api_retries_and_never_raises(tmp_path: Path) -> None:
    async with FakeBotApi() as gone:
        pass  # closed: connections to its port are refused
    path = tmp_path / "polyd.db"
    await seed(path)
    async with Database(path) as db:
        bot = ChatBot(
            config=config(gone),
            desk=DaemonDesk(
                db_path=path,
                daily_loss_limit=Decimal(100),
                mode="paper",
                executor=lambda: None,
                run_control=None,
            ),
            audit=Repositories.over(db).audit,
        )
        task = asyncio.create_task(bot.run())
        await asyncio.sleep(1.5)  # first try, 1 s backoff, second try
        assert not task.done()
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert bot.failures >= 2


async def test_notifications_and_fills_reach_every_configured_chat(tmp_path: Path) -> None:
    async with bench(tmp_path, chat_ids=frozenset({OPERATOR, -100_200}), notify_fills=True) as b:
        notifier = Notifier(metrics=Metrics(), mode="paper")  # no webhook: the bot only
        notifier.add_sink(b.bot.push)
        assert notifier.notify("halt", "halt", "trading halted: daily loss limit")
        await b.api.wait_for(lambda: len(b.api.sent) == 2)
        assert {m["text"] for m in b.api.sent} == {
            "polyd halt (paper): trading halted: daily loss limit"
        }
        await asyncio.sleep(0.2)  # the fill watch took its starting mark (no backlog)
        async with Database(b.path) as db:
            await Repositories.over(db).fills.record(
                Fill(
                    trade_id="t3",
                    venue_order_id="0xa1",
                    client_order_id=None,
                    token_id=TOKEN_A,
                    side=Side.SELL,
                    price=Decimal("0.55"),
                    size=Decimal("2"),
                )
            )
        await b.api.wait_for(lambda: len(b.api.sent) == 4)
    assert b.api.texts(-100_200)[1] == f"fill: SELL 2 of {short(TOKEN_A)} @ 0.55, fee 0 (taker)"
    assert b.api.texts(OPERATOR)[1] == b.api.texts(-100_200)[1]


async def test_a_reload_moves_the_bot_to_the_new_chats(tmp_path: Path) -> None:
    other = 5151
    async with bench(tmp_path) as b:
        assert (await b.api.reply_to(other, "/status")).startswith("This chat")
        s = make_settings(
            tmp_path,
            telegram_bot_token=TOKEN,
            telegram_api_url=b.api.url,
            notify_telegram_chat_id=f"{OPERATOR},{other}",
            telegram_poll_timeout_s=1,
        )
        b.bot.reconfigure(s)
        assert b.bot.config.chat_ids == {OPERATOR, other}
        answer = await b.api.reply_to(other, "/pnl", within_s=15)
        assert answer.startswith("realized PnL: 0.40")
        b.bot.reconfigure(make_settings(tmp_path))  # no token: the bot stops and idles
        await asyncio.sleep(0.3)
        assert b.bot.app is None
        assert b.bot.say("anything") is False


async def test_an_unreadable_database_is_answered_not_crashed(tmp_path: Path) -> None:
    desk = DaemonDesk(
        db_path=tmp_path / "missing.db",
        daily_loss_limit=Decimal(100),
        mode="paper",
        executor=lambda: None,
        run_control=None,
    )
    answer = await desk.report("status")
    assert answer.startswith("Cannot answer /status: no database at ")


@pytest.mark.parametrize("amount", ["0.405", "-3.2"])
def test_money_is_shown_to_the_cent(amount: str) -> None:
    assert money(Decimal(amount)) == {"0.405": "0.40", "-3.2": "-3.20"}[amount]


# --- the daemon: chat control through the sidecar's control path -----------------------------


def place_resting(clob_url: str, key: str, token: str, prices: list[str]) -> list[str]:
    """Rest BUY orders at the venue under the daemon's key with the real SDK (blocking)."""
    client = ClobClient(clob_url, 137, key=key)
    client.set_api_creds(client.create_or_derive_api_key())
    ids = []
    for p in prices:
        order = client.create_order(
            OrderArgsV2(token_id=token, price=float(p), size=10.0, side="BUY"),
            PartialCreateOrderOptions(tick_size="0.01", neg_risk=False),
        )
        res: dict[str, Any] = client.post_order(order)
        assert res["success"] and res["status"] == "live", res
        ids.append(res["orderID"])
    return ids


def said(api: FakeBotApi, start: str) -> bool:
    return any(t.startswith(start) for t in api.texts(OPERATOR))


async def test_halt_resume_and_cancel_all_from_the_chat_run_the_daemons_control_path(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=41, settle_delay_s=0.01) as sim, FakeBotApi() as api:
        token = sim.add_market(question="Chat?", slug="chat").token_ids[0]
        key = funded_key(sim, Decimal("1000"))
        settings = make_settings(
            tmp_path,
            **simulator_overrides(sim, key),
            sniper_enabled=False,
            copy_enabled=False,
            shutdown_timeout_s=3,
            telegram_bot_token=TOKEN,
            telegram_api_url=api.url,
            notify_telegram_chat_id=str(OPERATOR),
            telegram_poll_timeout_s=1,
        )
        errors: list[BaseException] = []
        daemon: Daemon

        async def script(ctx: Context) -> None:
            ex = ctx.executor
            assert ex is not None
            await api.wait_for(lambda: api.calls["getUpdates"] > 0)
            ask = await api.reply_to(OPERATOR, "/halt")
            assert ask.startswith("Halt trading: new orders stop, cancels still go.")
            assert ex.state is TradingState.ACTIVE  # asking is not doing
            (button,) = api.sent[-1]["reply_markup"]["inline_keyboard"][0]
            api.press(OPERATOR, button["callback_data"])
            await api.wait_for(lambda: said(api, "Trading is HALTED."))
            assert ex.state.value == "HALTED"
            assert len(api.answered) == 1
            # The notifier's watch saw the halt; the bot carried its message to the chat.
            await api.wait_for(lambda: said(api, "polyd halt (live): trading halted"))
            api.message(OPERATOR, "/resume back to work")
            await api.wait_for(lambda: said(api, "Trading is ACTIVE."))
            assert ex.state.value == "ACTIVE"
            ids = await asyncio.to_thread(place_resting, sim.clob_url, key, token, ["0.30", "0.31"])
            api.message(OPERATOR, "/cancel_all confirm")
            await api.wait_for(lambda: said(api, "Canceled 2 resting orders."))
            by_id = {o["id"]: o["status"] for o in sim.ledger()["orders"]}
            assert [by_id[i] for i in ids] == ["CANCELED", "CANCELED"]
            # A reload that adds a chat: the bot restarts on it (SIGHUP takes the same path).
            added = settings.model_copy(update={"notify_telegram_chat_id": f"{OPERATOR},5151"})
            reloader = daemon.reloads.reloader
            assert reloader is not None
            reloader._load = lambda: added
            result = await reloader.reload(source="test")
            assert result.outcome == "applied" and result.changed == ["notify_telegram_chat_id"]
            await api.wait_for(
                lambda: "polyd reload (live): settings reloaded" in str(api.texts(5151))
            )
            api.message(5151, "/status")
            await api.wait_for(
                lambda: any(t.startswith("polyd (live): ACTIVE") for t in api.texts(5151)), 15
            )

        async def wrapped(ctx: Context) -> None:
            try:
                await script(ctx)
            except BaseException as e:
                errors.append(e)
            finally:
                daemon.request_stop("test script done")

        tasks: list[asyncio.Task[None]] = []

        def on_ready(ctx: Context) -> None:
            tasks.append(asyncio.get_running_loop().create_task(wrapped(ctx)))

        daemon = Daemon(settings, redactor=Redactor([]), duration_s=60, on_ready=on_ready)
        code = await daemon.run()
        if errors:
            raise errors[0]
        assert code == EXIT_OK
    async with Database(settings.db_path) as db:
        audit = Repositories.over(db).audit
        moves = [e.detail for e in reversed(await audit.tail(event="trading_state"))]
        cancels = [e.detail for e in await audit.tail(event="cancel_all")]
    actor = f"telegram:{OPERATOR}"
    assert [(m["to"], m.get("actor"), m["reason"]) for m in moves] == [
        ("HALTED", actor, "manual halt (telegram)"),
        ("ACTIVE", actor, "back to work"),
    ]
    assert cancels == [{"canceled": 2, "actor": actor}]


async def test_the_http_route_names_its_actor_and_a_body_cannot_claim_another() -> None:
    sidecar = Sidecar(
        host="127.0.0.1",
        port=0,
        health=Health(mode="paper", version="t"),
        metrics=Metrics(),
        control_token="s3cret-token-for-tests",
    )
    seen: list[str] = []

    async def halt(body: Mapping[str, Any]) -> Mapping[str, Any]:
        seen.append(str(body["actor"]))
        return {"trading_state": "HALTED"}

    sidecar.add_control("halt", halt)
    await sidecar.start()
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"http://127.0.0.1:{sidecar.bound_port}/halt",
                json={"actor": f"telegram:{OPERATOR}"},
                headers={"Authorization": "Bearer s3cret-token-for-tests"},
            )
            assert resp.status == 200
        await sidecar.run_control("halt", {}, actor=f"telegram:{OPERATOR}")
    finally:
        await sidecar.stop()
    assert seen == ["http", f"telegram:{OPERATOR}"]
