"""`python -m orchestrator doctor` against the simulator over loopback: every check ✔ on a
funded wallet with working rules, and each ✖ produced the way the real venue would show it.

Sources: the geoblock answer `{blocked, ip, country, region}`
(https://docs.polymarket.com/api-reference/geoblock); `/time` as a bare integer of seconds and
`/balance-allowance` as py-clob-client-v2 `get_balance_allowance` sends it
(py_clob_client_v2/client.py); signature types 0 (EOA: maker is the signer), 1 (proxy), 2 (Safe)
(py_clob_client_v2 order builder, https://docs.polymarket.com/developers/CLOB/authentication).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from demo import funded_key, simulator_overrides
from doctor import Check, diagnose
from simulator import Simulator
from tests.harness import SimProcess
from tests.helpers import clean_env, make_settings, run_cli

SNIPER = """
[[rules]]
name = "by-slug"
min_price = "0.90"
max_price = "0.97"
min_size = "5"
max_notional = "20"
[rules.select]
slugs = [{slugs}]

[[rules]]
name = "by-tag"
min_price = "0.90"
max_price = "0.97"
min_size = "5"
max_notional = "20"
[rules.select]
tags = ["crypto"]
"""

COPY = """
[[wallets]]
address = "0x{whale}"
label = "whale"
ratio = "0.1"
allow_slugs = ["btc-above-100k"]
allow_tags = ["{tag}"]
"""


def rules(tmp_path: Path, slugs: str = '"btc-above-100k", "fed-cut-december"') -> dict[str, Any]:
    sniper = tmp_path / "sniper.toml"
    sniper.write_text(SNIPER.format(slugs=slugs))
    copy = tmp_path / "copy.toml"
    copy.write_text(COPY.format(whale="ab" * 20, tag="crypto"))
    return {"sniper_rules_path": sniper, "copy_rules_path": copy}


def approved(sim: Simulator, s: dict[str, Any]) -> None:
    """Set, on the simulator's chain, every approval redemption needs for the settings' wallet."""
    from venue.chain.contracts import redemption_approvals

    wallet = s.get("funder_address") if s.get("signature_type") else None
    wallet = wallet or Account.from_key(s["private_key"]).address
    for ap in redemption_approvals():
        sim.chain.approve_all(wallet, ap.operator, token=ap.token)


APPROVALS = [
    "approval CTF → CtfCollateralAdapter",
    "approval CTF → NegRiskCtfCollateralAdapter",
    "approval CTF → auto-redeem operator",
    "approval PositionManager → Router",
    "approval PositionManager → auto-redeem operator",
]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_every_check_passes_on_a_funded_wallet(tmp_path: Path) -> None:
    async with Simulator(seed=7, scenario="demo") as sim:
        key = funded_key(sim, Decimal("250"))
        overrides = simulator_overrides(sim, key)
        approved(sim, overrides)
        settings = make_settings(tmp_path, **overrides, **rules(tmp_path))
        checks = await diagnose(settings)
        # The key exists now: a second run derives it, and never asks to create it again.
        again = by_name(await diagnose(settings))
        auth = [r for r in sim.request_log if r.path.startswith("/auth/")]
    names = [c.name for c in checks]
    assert names == [
        "geoblock",
        "clock",
        "wallet",
        "api key",
        "pUSD balance",
        "pUSD allowance",
        *APPROVALS,
        "rule by-slug",
        "rule by-tag",
        "copy whale",
    ]
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    got = by_name(checks)
    assert got["api key"].detail == "created for PRIVATE_KEY (its first use)"
    assert again["api key"].detail == "derived from PRIVATE_KEY (nonce 0)"
    assert got["pUSD balance"].detail.startswith("250.00 pUSD at ")
    assert got["rule by-slug"].detail == "2 open markets match"
    assert [(r.method, r.path, r.status) for r in auth] == [
        ("GET", "/auth/derive-api-key", 400),  # the first run: no key yet
        ("POST", "/auth/api-key", 200),
        ("GET", "/auth/derive-api-key", 200),  # the second: found at once, nothing refused
    ]


def _geoblocked(sim: Simulator, s: dict[str, Any]) -> None:
    sim.geoblock = {"blocked": True, "ip": "203.0.113.42", "country": "US", "region": "NY"}


def _skewed(sim: Simulator, s: dict[str, Any]) -> None:
    sim.clock_offset_s = -90  # the venue's clock is 90 s behind ours: ours is ahead


def _no_allowance(sim: Simulator, s: dict[str, Any]) -> None:
    sim.no_allowance.add(Account.from_key(s["private_key"]).address.lower())


def _no_balance(sim: Simulator, s: dict[str, Any]) -> None:
    s["private_key"] = "0x" + bytes(Account.create().key).hex()  # a key never funded


def _eoa_with_funder(sim: Simulator, s: dict[str, Any]) -> None:
    s["funder_address"] = "0x" + "11" * 20


def _safe_without_a_safe(sim: Simulator, s: dict[str, Any]) -> None:
    s["signature_type"] = 2
    s["funder_address"] = Account.from_key(s["private_key"]).address


def _unknown_slug(sim: Simulator, s: dict[str, Any]) -> None:
    Path(s["sniper_rules_path"]).write_text(SNIPER.format(slugs='"btc-above-100k", "no-such"'))


def _unknown_tag(sim: Simulator, s: dict[str, Any]) -> None:
    Path(s["copy_rules_path"]).write_text(COPY.format(whale="ab" * 20, tag="no-such-tag"))


def _bad_api_key(sim: Simulator, s: dict[str, Any]) -> None:
    s["clob_api_key"] = "00000000-0000-0000-0000-000000000000"
    s["clob_api_secret"] = "c2VjcmV0"
    s["clob_api_passphrase"] = "nope"


FAILURES: dict[str, tuple[Callable[[Simulator, dict[str, Any]], None], str, str, str]] = {
    "geoblocked": (
        _geoblocked,
        "geoblock",
        "Polymarket blocks orders from this machine (203.0.113.42, US-NY)",
        "run polyd from a region Polymarket allows",
    ),
    "skewed clock": (
        _skewed,
        "clock",
        "this machine's clock is 90 s ahead of the venue's",
        "turn on time sync",
    ),
    "no allowance": (
        _no_allowance,
        "pUSD allowance",
        "no allowance to 0xE111180000d2663C0091e4f400237545B87B996B, "
        "0xe2222d279d744050d28e00520010520000310F59 for 0x",
        "approve the exchange contracts",
    ),
    "no balance": (_no_balance, "pUSD balance", "holds no pUSD", "deposit pUSD"),
    "EOA with a funder": (
        _eoa_with_funder,
        "wallet",
        "FUNDER_ADDRESS 0x1111111111111111111111111111111111111111 is not the key's address",
        "set SIGNATURE_TYPE=1 (email) or 2 (browser wallet)",
    ),
    "Safe at the key's address": (
        _safe_without_a_safe,
        "wallet",
        "SIGNATURE_TYPE=2 (Polymarket Safe (browser wallet login)), but FUNDER_ADDRESS is the "
        "key's own address",
        "set FUNDER_ADDRESS to the proxy wallet",
    ),
    "slug matching no market": (
        _unknown_slug,
        "rule by-slug",
        "select.slugs 'no-such' match no open market on Gamma",
        "copy the slug from the market's URL",
    ),
    "tag naming no market": (
        _unknown_tag,
        "copy whale",
        "allow_tags 'no-such-tag' names no market on Gamma",
        "use the tag's slug",
    ),
    "API key the venue refuses": (
        _bad_api_key,
        "api key",
        "the venue refused the credentials",
        "unset CLOB_API_KEY/SECRET/PASSPHRASE to derive them",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_each_failure_is_one_cross_naming_what_to_do(tmp_path: Path, case: str) -> None:
    make, name, detail, fix = FAILURES[case]
    async with Simulator(seed=7, scenario="demo") as sim:
        overrides = {**simulator_overrides(sim, funded_key(sim, Decimal("100"))), **rules(tmp_path)}
        make(sim, overrides)
        approved(sim, overrides)
        checks = await diagnose(make_settings(tmp_path, **overrides))
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == [name], [c.line() for c in checks]
    (bad,) = failed
    assert detail in bad.detail, bad.line()
    assert fix in bad.fix, bad.line()
    assert bad.line().startswith(f"✖ {name}: ")


def test_cli_passes_against_the_simulator_and_fails_when_geoblocked(tmp_path: Path) -> None:
    with SimProcess(workdir=tmp_path, seed=7) as sim:
        key = "0x" + bytes(Account.create().key).hex()
        sim.fund(Account.from_key(key).address, collateral="100")
        sim._admin("POST", "/_sim/fund", {"address": Account.from_key(key).address, "pol": "5"})
        env_file = tmp_path / "live.env"
        env_file.write_text(
            "MODE=live\n"
            f"PRIVATE_KEY={key}\n"
            f"CLOB_HOST={sim.clob_url}\nGAMMA_API_URL={sim.gamma_url}\n"
            f"DATA_API_URL={sim.data_url}\nGEOBLOCK_URL={sim.urls['geoblock_url']}\n"
            f"RPC_URL={sim.urls['rpc_url']}\n"
            f"MARKET_WS_URL={sim.market_ws_url}\nUSER_WS_URL={sim.user_ws_url}\n"
            f"DB_PATH={tmp_path / 'polyd.db'}\n"
            f"SNIPER_RULES_PATH={rules(tmp_path)['sniper_rules_path']}\n"
        )
        env_file.chmod(0o600)
        missing = run_cli("doctor", "--env-file", str(env_file), env=clean_env())
        approve = run_cli("approve", "--env-file", str(env_file), env=clean_env())
        ok = run_cli("doctor", "--env-file", str(env_file), env=clean_env())
        sim._admin("POST", "/_sim/conditions", {"geoblock": {"blocked": True}})
        blocked = run_cli("doctor", "--env-file", str(env_file), "--json", env=clean_env())
    assert missing.returncode == 1 and "→ python -m orchestrator approve" in missing.stdout
    assert approve.returncode == 0, approve.stdout + approve.stderr
    assert approve.stdout.count("approved ") == 5, approve.stdout
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert all(ln.startswith("✔ ") for ln in lines[:-1]), lines
    assert lines[-1] == "all checks passed"
    assert key[2:] not in ok.stdout + ok.stderr
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    report = json.loads(blocked.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["geoblock"]


async def test_an_unreachable_venue_is_a_cross_per_check_not_a_crash(tmp_path: Path) -> None:
    nowhere = "http://127.0.0.1:9"  # discard: nothing listens
    settings = make_settings(
        tmp_path,
        mode="live",
        private_key="0x" + bytes(Account.create().key).hex(),
        clob_host=nowhere,
        gamma_api_url=nowhere,
        geoblock_url=nowhere + "/api/geoblock",
        rpc_url=nowhere,
        http_timeout_s=2,
        **rules(tmp_path),
    )
    got = by_name(await diagnose(settings))
    assert [n for n, c in got.items() if c.ok] == ["wallet"]  # the one check made locally
    assert got["geoblock"].detail.startswith("the venue did not answer (")
    assert got["api key"].detail.startswith("the venue did not answer (")
    assert got["api key"].fix.startswith("check the network and the venue URLs")
    assert got["rule by-slug"].detail.startswith("Gamma did not answer (")


def test_settings_that_do_not_load_are_exit_2_with_a_line_each(tmp_path: Path) -> None:
    env = clean_env(MODE="live", HTTP_PORT="99999", DB_PATH=str(tmp_path / "p.db"))
    res = run_cli("doctor", "--env-file", "none", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.splitlines()[:2] == [
        "✖ settings: HTTP_PORT: Input should be less than or equal to 65535",
        "    → fix it (python -m orchestrator --check-config)",
    ]
