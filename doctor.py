"""`python -m orchestrator doctor`: check the live account and the rules against the real venue
before trading, each check printed ✔ or ✖ with what to do.

Checks, in order: the settings load (as `--check-config`); the machine is not geoblocked
(https://docs.polymarket.com/api-reference/geoblock); the clock agrees with the CLOB's `/time`;
API credentials work (configured ones are checked, else they are derived from `PRIVATE_KEY`,
without the failed "create" request a restart used to make); `SIGNATURE_TYPE` and
`FUNDER_ADDRESS` agree; the funder holds pUSD and has allowed the exchange contracts to spend
it; every sniper rule's selection, and every copy rule's slug list, names markets Gamma knows.

Exit 0 only if every check is ✔; 1 if one is ✖; 2 if the settings do not load.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from config import Settings, load_settings
from errors import ConfigError, OutcomeUnknown, PolydError, TransientError

if TYPE_CHECKING:  # the SDK loads only when the account is checked
    from venue.account import Account
    from venue.clob.keys import Credentials

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2
MAX_SKEW_S: Final = 5.0
"""The most the local clock may differ from the venue's (the venue's answer has 1 s steps)."""
NETWORK: Final = "check the network and the venue URLs (CLOB_HOST, GEOBLOCK_URL), then retry"
SIGNATURE_TYPES: Final = {
    0: "EOA: the key's own address holds the funds",
    1: "Polymarket proxy (email / Magic login)",
    2: "Polymarket Safe (browser wallet login)",
    3: "deposit wallet",
}


@dataclass
class Check:
    """One line of the report: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        head = f"{'✔' if self.ok else '✖'} {self.name}: {self.detail}"
        return head if self.ok or not self.fix else f"{head}\n    → {self.fix}"


def run_doctor(*, env_file: str | None, as_json: bool) -> int:
    """Load the settings, run every check, print them; return the exit code."""
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as e:
        checks = [
            Check("settings", False, p, "fix it (python -m orchestrator --check-config)")
            for p in e.problems
        ]
        _print(checks, as_json)
        return EXIT_CONFIG
    checks = asyncio.run(diagnose(settings))
    _print(checks, as_json)
    return EXIT_OK if all(c.ok for c in checks) else EXIT_PROBLEM


def _print(checks: list[Check], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}))
        return
    for c in checks:
        print(c.line())
    bad = sum(not c.ok for c in checks)
    print("all checks passed" if not bad else f"{bad} of {len(checks)} checks failed")


async def diagnose(settings: Settings) -> list[Check]:
    """Every check against the venue `settings` name (blocking calls run in threads)."""
    out = [await _guard("geoblock", lambda: asyncio.to_thread(_geoblock, settings))]
    if settings.private_key is None:
        out.append(
            Check(
                "account",
                False,
                "PRIVATE_KEY is not set, so there is no account to check",
                "set PRIVATE_KEY (and MODE=live) in the settings file",
            )
        )
        return out + await _markets(settings)
    from venue.account import Account

    account = Account(
        host=settings.clob_host,
        chain_id=settings.chain_id,
        private_key=settings.private_key.get_secret_value(),
        signature_type=settings.signature_type,
        timeout_s=settings.http_timeout_s,
    )
    try:
        out.append(await _guard("clock", lambda: asyncio.to_thread(_clock, account)))
        out.append(_wallet(settings, account.address))
        creds_check, creds = await asyncio.to_thread(_credentials, settings, account)
        out.append(creds_check)
        if creds is not None:
            out += await asyncio.to_thread(_funds, settings, account, creds)
    finally:
        account.close()
    return out + await _approvals(settings) + await _markets(settings)


async def _guard(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await check()
    except PolydError as e:
        return Check(name, False, f"the venue did not answer ({e})", NETWORK)


def _geoblock(settings: Settings) -> Check:
    from venue.account import geoblock

    g = geoblock(settings.geoblock_url, timeout_s=settings.http_timeout_s)
    where = "-".join(x for x in (g.country, g.region) if x) or "unknown region"
    if g.blocked:
        return Check(
            "geoblock",
            False,
            f"Polymarket blocks orders from this machine ({g.ip}, {where})",
            "run polyd from a region Polymarket allows (a VPS elsewhere); see "
            "https://docs.polymarket.com/api-reference/geoblock",
        )
    return Check("geoblock", True, f"orders allowed from {g.ip} ({where})")


def _clock(account: Account) -> Check:
    before = time.time()
    venue = account.server_time()
    after = time.time()
    skew = (before + after) / 2 - (venue + 0.5)  # the venue truncates to whole seconds
    if abs(skew) > MAX_SKEW_S:
        side = "ahead of" if skew > 0 else "behind"
        return Check(
            "clock",
            False,
            f"this machine's clock is {abs(skew):.0f} s {side} the venue's",
            "turn on time sync (`timedatectl set-ntp true`, or chrony) and check again",
        )
    return Check("clock", True, f"within {MAX_SKEW_S:g} s of the venue's ({skew:+.1f} s)")


def _wallet(settings: Settings, signer: str) -> Check:
    kind, funder = settings.signature_type, settings.funder_address
    name = f"SIGNATURE_TYPE={kind} ({SIGNATURE_TYPES[kind]})"
    if kind == 0 and funder is not None and funder.lower() != signer.lower():
        return Check(
            "wallet",
            False,
            f"{name}, but FUNDER_ADDRESS {funder} is not the key's address {signer}",
            "if the funds are in a Polymarket proxy wallet, set SIGNATURE_TYPE=1 (email) or 2 "
            "(browser wallet); otherwise unset FUNDER_ADDRESS",
        )
    if kind != 0 and funder is not None and funder.lower() == signer.lower():
        return Check(
            "wallet",
            False,
            f"{name}, but FUNDER_ADDRESS is the key's own address {signer}",
            "set FUNDER_ADDRESS to the proxy wallet shown on polymarket.com (your profile's "
            "address), or SIGNATURE_TYPE=0 if the key's address holds the funds",
        )
    return Check("wallet", True, f"{name}; funds at {funder or signer}, signed by {signer}")


def _credentials(settings: Settings, account: Account) -> tuple[Check, Credentials | None]:
    from venue.clob.keys import Credentials

    configured = None
    if settings.clob_api_key and settings.clob_api_secret and settings.clob_api_passphrase:
        configured = Credentials(
            settings.clob_api_key.get_secret_value(),
            settings.clob_api_secret.get_secret_value(),
            settings.clob_api_passphrase.get_secret_value(),
        )
    try:
        creds, how = account.credentials(configured)
    except (TransientError, OutcomeUnknown) as e:  # not an answer about the credentials
        return Check("api key", False, f"the venue did not answer ({e})", NETWORK), None
    except PolydError as e:
        fix = (
            "unset CLOB_API_KEY/SECRET/PASSPHRASE to derive them from PRIVATE_KEY, or run "
            "`python -m orchestrator rotate-api-key`"
            if configured is not None
            else "check PRIVATE_KEY and CLOB_HOST"
        )
        return Check("api key", False, f"the venue refused the credentials ({e})", fix), None
    said = {
        "configured": "the configured CLOB_API_KEY works",
        "derived": "derived from PRIVATE_KEY (nonce 0)",
        "created": "created for PRIVATE_KEY (its first use)",
    }[how]
    return Check("api key", True, said), creds


def _funds(settings: Settings, account: Account, creds: Credentials) -> list[Check]:
    # What the venue reads: the key's own address for SIGNATURE_TYPE=0, else the funder.
    holder = account.address
    if settings.signature_type != 0 and settings.funder_address is not None:
        holder = settings.funder_address
    try:
        c = account.collateral(creds)
    except PolydError as e:
        return [Check("pUSD", False, f"the venue did not say ({e})", NETWORK)]
    out = []
    if c.balance <= 0:
        out.append(
            Check(
                "pUSD balance",
                False,
                f"{holder} holds no pUSD",
                "deposit pUSD (Polymarket's collateral) to it; if your funds are in a "
                "Polymarket proxy wallet, set SIGNATURE_TYPE and FUNDER_ADDRESS to it",
            )
        )
    else:
        low = c.balance < settings.risk_max_order_notional
        note = f" (below RISK_MAX_ORDER_NOTIONAL {settings.risk_max_order_notional})" if low else ""
        out.append(Check("pUSD balance", True, f"{_money(c.balance)} pUSD at {holder}{note}"))
    missing = [k for k, v in c.allowances.items() if v <= 0]
    if not c.allowances or missing:
        out.append(
            Check(
                "pUSD allowance",
                False,
                "no allowance to "
                + (", ".join(missing) if missing else "any exchange contract")
                + f" for {holder}",
                "approve the exchange contracts to spend pUSD (trading once on polymarket.com "
                "does it; or the approvals in py-clob-client-v2's README)",
            )
        )
    else:
        out.append(Check("pUSD allowance", True, f"set for {len(c.allowances)} exchange contracts"))
    return out


def _money(v: Decimal) -> str:
    return str(v.quantize(Decimal("0.01")))


async def _markets(settings: Settings) -> list[Check]:
    """One check per sniper rule and per copy wallet with a slug list: do their markets exist."""
    from strategies.copy_trader import load_rules as load_copy_rules
    from strategies.sniper import load_rules as load_sniper_rules

    sniper = []
    copy = []
    try:
        if settings.sniper_enabled and settings.sniper_rules_path is not None:
            sniper = load_sniper_rules(settings.sniper_rules_path)
        if settings.copy_enabled and settings.copy_rules_path is not None:
            copy = list(load_copy_rules(settings.copy_rules_path).active)
    except ConfigError as e:
        fix = "python -m orchestrator --check-config"
        return [Check("rules", False, p, fix) for p in e.problems]
    if not sniper and not copy:
        from preflight import no_strategy_warning

        fix = "point SNIPER_RULES_PATH or COPY_RULES_PATH at a rules file"
        return [Check("rules", False, no_strategy_warning(settings), fix)]
    import aiohttp

    from venue.gamma import GammaClient

    async with aiohttp.ClientSession() as session:
        gamma = GammaClient(
            base_url=settings.gamma_api_url, session=session, timeout_s=settings.http_timeout_s
        )
        out = []
        for rule in sniper:
            out.append(await _guard_gamma(f"rule {rule.name}", _rule(gamma, rule)))
        for w in copy:
            if w.allow_slugs or w.allow_tags:
                out.append(await _guard_gamma(f"copy {w.name}", _wallet_filters(gamma, w)))
    return out


async def _wallet_filters(gamma: Any, wallet: Any) -> tuple[bool, str, str]:
    """A copy wallet's `allow_slugs` and `allow_tags` each name markets Gamma knows."""
    from venue.gamma import MarketQuery

    said = []
    if wallet.allow_slugs:
        ok, detail, fix = await _slugs(
            gamma, MarketQuery(slugs=tuple(sorted(wallet.allow_slugs))), "allow_slugs"
        )
        if not ok:
            return ok, detail, fix
        said.append(detail)
    for tag in sorted(wallet.allow_tags):
        # As the copy trader's tag index lists them: any market of the tag, open or not.
        q = MarketQuery(tags=(tag,), active=None, accepting_orders=None, enable_order_book=None)
        if not await gamma.markets(q):
            return (
                False,
                f"allow_tags {tag!r} names no market on Gamma",
                "use the tag's slug as in polymarket.com/markets/<tag> (e.g. crypto, politics)",
            )
    if wallet.allow_tags:
        said.append(f"tags {', '.join(sorted(wallet.allow_tags))} found")
    return True, "; ".join(said), ""


async def _guard_gamma(name: str, check: Awaitable[tuple[bool, str, str]]) -> Check:
    try:
        ok, detail, fix = await check
    except PolydError as e:  # TransientError, FeedError: Gamma's answers, translated
        return Check(name, False, f"Gamma did not answer ({e})", "check GAMMA_API_URL, retry")
    return Check(name, ok, detail, fix)


async def _rule(gamma: Any, rule: Any) -> tuple[bool, str, str]:
    found = 0
    for q in rule.select.queries():
        markets = await gamma.markets(q)
        if q.slugs:
            ok, detail, fix = _missing_slugs(q.slugs, markets, "select.slugs")
            if not ok:
                return ok, detail, fix
        found += len(markets)
    if not found:
        return (
            False,
            "its selection matches no open market on Gamma now",
            "check the rule's ids, slugs and tags (a tag's slug is in the market's URL)",
        )
    return True, f"{found} open markets match", ""


async def _slugs(gamma: Any, q: Any, what: str) -> tuple[bool, str, str]:
    return _missing_slugs(q.slugs, await gamma.markets(q), what)


def _missing_slugs(slugs: Any, markets: Any, what: str) -> tuple[bool, str, str]:
    known = {m.slug for m in markets}
    missing = [s for s in slugs if s not in known]
    if missing:
        return (
            False,
            f"{what} {', '.join(repr(s) for s in missing)} match no open market on Gamma",
            "copy the slug from the market's URL (polymarket.com/event/…/<slug>); a closed "
            "market's slug matches nothing",
        )
    return True, f"{len(known)} markets found by slug", ""


async def _approvals(settings: Settings) -> list[Check]:
    """Each approval redemption needs, read on chain (`redemption.build.approvals_state`)."""
    import aiohttp

    from redemption.build import APPROVE_COMMAND, approvals_state, wallet_of
    from venue.chain.rpc import ChainError, RpcClient

    try:
        wallet = wallet_of(settings)
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient(
                url=settings.rpc_url, session=session, timeout_s=settings.http_timeout_s
            )
            states = await approvals_state(rpc, wallet)
    except (PolydError, ChainError) as e:
        return [
            Check(
                "approvals", False, f"the chain did not answer ({e})", "check RPC_URL, then retry"
            )
        ]
    return [
        Check(
            f"approval {s.approval.name}",
            s.approved,
            f"{'set' if s.approved else 'not set'} for {wallet}",
            f"{APPROVE_COMMAND} (redemption needs it; docs/redemption.md)",
        )
        for s in states
    ]
