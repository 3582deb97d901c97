"""Market names: the daemon's cache and the table stay bounded; the read side copes with a
database from before the table existed."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from models import Market, Position
from storage import Database, Repositories
from storage.fills import upsert_position
from storage.market_names import MarketName, MarketNames, names_of, read_names, save_names
from tests.helpers import make_order


def name(i: int, question: str = "Q?") -> MarketName:
    return MarketName(token_id=str(1000 + i), question=question, outcome="Yes")


def test_the_cache_drops_the_least_recently_used_beyond_its_capacity() -> None:
    names = MarketNames(capacity=3)
    names.learn([name(1), name(2), name(3)])
    assert names.get("1001") is not None  # 1001 is now the most recently used
    names.learn([name(4)])
    assert len(names) == 3
    assert names.get("1002") is None and names.get("1001") is not None
    assert [n.token_id for n in names.take_changed()] == ["1001", "1003", "1004"]
    assert names.take_changed() == []
    assert names.learn([name(4)]) == 0  # the same name again changes nothing


def test_unknown_tokens_are_queued_once_and_bounded() -> None:
    names = MarketNames(capacity=2)
    for t in ("a", "b", "a", "c"):
        assert names.get(t) is None
    assert names.take_unknown(10) == ["b", "c"]  # "a" fell out: the queue holds 2
    assert names.take_unknown(10) == []
    names.get("d")
    names.learn([MarketName("d", "Q?", "No")])
    assert names.take_unknown(10) == []  # learned before it was looked up
    assert names.fields("d") == {"market": "Q?", "outcome": "No"}
    assert names.fields("zzz") == {}


def test_names_of_a_market_pair_each_token_with_its_outcome() -> None:
    m = Market(condition_id="0x" + "c" * 64, token_ids=("11", "22"), outcomes=("Up", "Down"),
               question="Up or down?", slug="up-down")  # fmt: skip
    assert [(n.token_id, n.outcome, n.slug) for n in names_of(m)] == [
        ("11", "Up", "up-down"),
        ("22", "Down", "up-down"),
    ]
    assert names_of(m.model_copy(update={"question": ""})) == []


async def test_the_table_keeps_the_newest_rows_up_to_its_cap(repos: Repositories) -> None:
    repo = repos.names
    for i in range(5):
        await repo.save([name(i, f"Q{i}?")])
    await repo.save([name(4, "Q4 renamed?")])  # the upsert: one row, the new question
    await repos.db.write(lambda c: save_names(c, [name(9, "Q9?")], cap=3))
    rows = await repos.db.fetchall("SELECT token_id FROM market_names ORDER BY token_id")
    assert [r[0] for r in rows] == ["1003", "1004", "1009"]
    loaded = await repo.load()
    assert [n.question for n in loaded] == ["Q3?", "Q4 renamed?", "Q9?"]  # oldest first


async def test_unnamed_lists_held_then_newest_ordered_tokens_without_a_name(
    repos: Repositories,
) -> None:
    """Runs on both engines: the query's derived tables are aliased (PostgreSQL 15 needs it)."""
    for token in ("501", "502", "503"):
        await repos.orders.record(make_order(token_id=token))
    await repos.db.write(lambda c: upsert_position(c, Position(token_id="700", size=Decimal(5))))
    await repos.db.write(lambda c: upsert_position(c, Position(token_id="701")))  # flat
    await repos.names.save([MarketName(token_id="502", question="Named?", outcome="Yes")])
    assert await repos.names.unnamed() == ["700", "501", "503"]  # held first, flat skipped
    assert await repos.names.unnamed(limit=1) == ["700"]


def test_reading_names_from_a_database_without_the_table_finds_none() -> None:
    conn = sqlite3.connect(":memory:")
    assert read_names(conn, ["1"]) == {}
    conn.close()


def test_chat_lines_name_the_market_and_fall_back_to_the_id() -> None:
    from decimal import Decimal

    from storage.activity import FillNotice
    from storage.reports import PositionReport
    from wiring.chat import fill_line, positions_text

    token = "9" * 70 + "12345678"
    known = {token: MarketName(token, "Will it rain in Paris on Friday?", "Yes")}
    pos = [PositionReport("sniper", token, Decimal(10), Decimal("0.4"), Decimal(0), "-")]
    assert positions_text(pos, known).startswith(
        "sniper Will it rain in Paris on Friday? — Yes: 10 @ 0.4"
    )
    assert positions_text(pos, {}).startswith("sniper …12345678: 10 @ 0.4")
    fill = FillNotice(1, "sniper", token, "BUY", Decimal("0.4"), Decimal(10), Decimal(0),
                      "TAKER", "CONFIRMED", "-")  # fmt: skip
    assert fill_line(fill, known).startswith(
        "fill: sniper BUY 10 of Will it rain in Paris on Friday? — Yes @ 0.4"
    )


async def test_the_resolver_names_what_gamma_knows_and_waits_before_asking_again(
    tmp_path: Path,
) -> None:
    from wiring.names import RETRY_MISSING_S, NameResolver

    market = Market(condition_id="0x" + "a" * 64, token_ids=("11", "22"), question="Known?")
    asked: list[list[str]] = []
    clock = [0.0]

    async def lookup(tokens: list[str]) -> list[Market]:
        asked.append(sorted(tokens))
        return [market] if "11" in tokens else []

    async with Database(tmp_path / "r.db") as db:
        names = MarketNames()
        resolver = NameResolver(
            names=names, repo=Repositories.over(db).names, lookup=lookup, monotonic=lambda: clock[0]
        )
        names.get("11"), names.get("99")
        assert await resolver.tick() == 2  # both outcomes of the market found, saved
        assert asked == [["11", "99"]]
        saved = await Repositories.over(db).names.load()
        assert {n.token_id for n in saved} == {"11", "22"}
        names.get("99")
        assert await resolver.tick() == 0 and len(asked) == 1  # 99 had no name: not yet again
        clock[0] = RETRY_MISSING_S
        names.get("99")
        await resolver.tick()
        assert asked[-1] == ["99"]
