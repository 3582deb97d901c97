"""Item leases on both engines: each followed wallet and sniper rule on one venue account is
leased to one daemon, beside its strategy's lease. Claimed, refused, waited out, lost and
released as strategy leases are (`tests/unit/test_leases.py`), by the same `LeaseKeeper`."""

from __future__ import annotations

import asyncio

import pytest

from errors import AlreadyRunning
from storage import Repositories
from storage.leases import LeaseRepository, parse_item, rule_item, wallet_item
from tests.unit.test_leases import Forever
from wiring.leases import LeaseKeeper

TTL = 30.0
SHORT = 0.3
ACCOUNT = "0x" + "AC" * 20
OTHER_ACCOUNT = "0x" + "bd" * 20
WALLET = "0x" + "5E" * 20
W = wallet_item(ACCOUNT, WALLET)


@pytest.fixture
def strategies(repos: Repositories) -> LeaseRepository:
    return LeaseRepository(db=repos.db)


@pytest.fixture
def items(repos: Repositories) -> LeaseRepository:
    return LeaseRepository(db=repos.db, items=True)


def keeper(
    strategies: LeaseRepository,
    items: LeaseRepository,
    daemon_id: str,
    owned: dict[str, str],
    ttl: float = TTL,
    **kw: object,
) -> LeaseKeeper:
    return LeaseKeeper(
        strategies,
        daemon_id=daemon_id,
        strategies=sorted(set(owned.values())),
        ttl_s=ttl,
        items=owned,
        item_repo=items,
        **kw,  # type: ignore[arg-type]  # the keyword arguments of LeaseKeeper
    )


def test_item_keys_are_scoped_by_account_and_lower_cased() -> None:
    assert f"wallet:{ACCOUNT.lower()}:{WALLET.lower()}" == W
    assert wallet_item(OTHER_ACCOUNT, WALLET) != W
    assert rule_item(ACCOUNT, "Near:Close") == f"rule:{ACCOUNT.lower()}:Near:Close"
    assert parse_item(rule_item(ACCOUNT, "Near:Close")) == ("rule", ACCOUNT.lower(), "Near:Close")


async def test_item_leases_are_their_own_table_beside_the_strategies(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    assert (await items.claim(W, "east", TTL)).held_by("east")
    assert (await items.claim(W, "west", TTL)).daemon_id == "east"
    assert await strategies.get(W) is None and await strategies.all() == []
    assert [(x.strategy, x.daemon_id) for x in await items.all()] == [(W, "east")]
    assert await strategies.held_elsewhere("west") == frozenset()
    assert await items.release([W], "west") == 0
    assert await items.release([W], "east") == 1 and await items.all() == []


async def test_a_wallet_followed_by_another_daemon_on_the_account_refuses_the_start(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    held = await items.claim(W, "east", TTL)
    rule = rule_item(ACCOUNT, "near-close")
    west = keeper(strategies, items, "west", {rule: "sniper-w", W: "copy-w"})
    with pytest.raises(AlreadyRunning) as e:
        await west.acquire()
    until = held.expires_at.isoformat(timespec="seconds")
    assert str(e.value) == (
        f"followed wallet {WALLET.lower()} on account {ACCOUNT.lower()} is leased to daemon east"
        f" until {until} (database time); this daemon (DAEMON_ID=west) must not follow it too:"
        " follow each wallet from one daemon per account, or stop east first"
    )
    # What west had taken (both strategies and the rule) is given back; east keeps the wallet.
    assert await strategies.all() == []
    assert [(x.strategy, x.daemon_id) for x in await items.all()] == [(W, "east")]
    # On another account the same wallet is free to follow.
    other = keeper(strategies, items, "west", {wallet_item(OTHER_ACCOUNT, WALLET): "copy-w"})
    await other.acquire()
    assert other.check().ok and other.check().detail["items"] == [
        wallet_item(OTHER_ACCOUNT, WALLET)
    ]
    await other.release()
    assert [x.strategy for x in await items.all()] == [W]


async def test_a_rule_run_by_another_daemon_on_the_account_refuses_the_start(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    rule = rule_item(ACCOUNT, "near-close")
    await items.claim(rule, "east", TTL)
    west = keeper(strategies, items, "west", {rule: "sniper-w"})
    with pytest.raises(AlreadyRunning, match=r"^sniper rule near-close on account 0xacac"):
        await west.acquire()
    assert await strategies.get("sniper-w") is None


async def test_an_item_left_under_the_own_id_is_waited_out_then_taken(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    old = await items.claim(W, "east", SHORT)  # a killed run's lease
    east = keeper(strategies, items, "east", {W: "copy"}, ttl=2.0)
    await east.acquire()
    now = await items.get(W) or pytest.fail("not held")
    assert now.held_by("east") and now.acquired_at > old.acquired_at
    assert sorted(east.deadlines) == ["copy", W]
    await east.release()  # released from both tables
    assert await items.all() == [] and await strategies.all() == []


async def test_a_lost_item_lease_stops_the_strategy_that_owns_it_only(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    sent: list[str] = []
    rule = rule_item(ACCOUNT, "near-close")
    # east's clock stands still: what stops the copy trader is west holding the wallet.
    east = keeper(
        strategies,
        items,
        "east",
        {W: "copy", rule: "sniper"},
        ttl=SHORT,
        monotonic=lambda: 100.0,
        notify=lambda kind, key, text, **_: sent.append(text),
    )
    await east.acquire()
    copy, sniper = Forever("copy"), Forever("sniper")
    running = [asyncio.create_task(east.guard(s).run()) for s in (copy, sniper)]
    await asyncio.sleep(SHORT + 0.2)  # every lease expires in the database
    assert (await items.claim(W, "west", TTL)).held_by("west")
    await east.renew_once()
    await asyncio.wait_for(running[0], 5)
    assert copy.stopped and not sniper.stopped and not running[1].done()
    assert sorted(east.deadlines) == ["copy", rule, "sniper"]  # the rest is renewed
    health = east.check()
    assert not health.ok and (
        f"followed wallet {WALLET.lower()} on account {ACCOUNT.lower()} taken by daemon west"
        in str(health.detail)
    )
    assert sent and sent[0].startswith(
        f"strategy copy stopped: the lease of followed wallet {WALLET.lower()}"
    )
    running[1].cancel()
    await asyncio.gather(running[1], return_exceptions=True)
    await east.release()
    assert [(x.strategy, x.daemon_id) for x in await items.all()] == [(W, "west")]


def test_item_leases_must_belong_to_a_leased_strategy(
    strategies: LeaseRepository, items: LeaseRepository
) -> None:
    with pytest.raises(ValueError, match="must belong to leased strategies"):
        LeaseKeeper(
            strategies,
            daemon_id="east",
            strategies=["sniper"],
            ttl_s=TTL,
            items={W: "copy"},
            item_repo=items,
        )
    with pytest.raises(ValueError, match="need an item lease repository"):
        LeaseKeeper(strategies, daemon_id="east", strategies=["copy"], ttl_s=TTL, items={W: "copy"})
