"""Record markets' Gamma rows (`market` records): the metadata a replay or backtest needs.

Rows are recorded as Gamma answered them (tick size, minimum size, fee schedule, neg_risk, end
date, resolution fields), open or closed, found by condition id or by token id.
"""

from __future__ import annotations

from collections.abc import Sequence

from recording import format as fmt
from recording.writer import RecordWriter
from venue import parse
from venue.gamma import IDS_PER_REQUEST, GammaClient


async def record_markets(
    gamma: GammaClient,
    writer: RecordWriter,
    ids: Sequence[str],
    *,
    by: str = "condition_ids",
) -> set[str]:
    """Record the Gamma row of every market named in `ids` (`by`: `condition_ids` or
    `clob_token_ids`); return the condition ids recorded. Raises what `GammaClient` raises."""
    if by not in ("condition_ids", "clob_token_ids"):
        raise ValueError(f"record_markets: cannot look markets up by {by!r}")
    found: set[str] = set()
    covered: set[str] = set()
    for closed in (None, "true"):  # Gamma lists open markets unless asked for closed ones
        missing = [i for i in ids if i not in covered]
        for i in range(0, len(missing), IDS_PER_REQUEST):
            chunk = missing[i : i + IDS_PER_REQUEST]
            params = [(by, x) for x in chunk]
            if closed is not None:
                params.append(("closed", closed))
            for row in await gamma.pages("/markets", params):
                cid = row.get("conditionId")
                if not isinstance(cid, str) or cid in found:
                    continue
                names = row_ids(row, by)
                if not names & set(chunk):
                    continue
                found.add(cid)
                covered |= names
                writer.put(fmt.MARKET, {"gamma": row})
    return found


def row_ids(row: dict[str, object], by: str) -> set[str]:
    """The ids a Gamma market row answers to when looked up `by` (its condition id, or its
    token ids; none if they cannot be read)."""
    if by == "condition_ids":
        return {str(row.get("conditionId"))}
    try:
        return {str(t) for t in parse.json_list(row.get("clobTokenIds"), "clobTokenIds")}
    except ValueError:
        return set()
