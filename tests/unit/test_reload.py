"""Settings reload: what may change is applied in place, anything else refuses the whole reload;
every reload is audited (keys, never values), counted and announced. And the env-file writer
`rotate-api-key` uses; and the rotation undone when the daemon refuses the reload."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from credentials import RotationError, rotate_api_key, set_env_values
from demo import funded_key, simulator_overrides
from errors import ConfigError, PolydError
from observability.logging import REDACTED, Redactor
from observability.metrics import Metrics
from observability.notify import Notifier
from observability.sidecar import Health, Sidecar
from simulator import Simulator
from storage import Database, Repositories
from tests.helpers import TEST_PRIVATE_KEY, make_settings
from venue.clob.keys import ApiKeys
from wiring.reload import Reloader

KEY, SECRET, PASS = "key-0000-aaaa", "c2VjcmV0LXZhbHVlLW9uZQ==", "pass-phrase-value-1"


@dataclass
class Sink:
    """Records the credentials it is given (the broker's and user feed's seam)."""

    got: list[tuple[str, str, str]] = field(default_factory=list)

    def set_creds(self, *, api_key: str, api_secret: str, api_passphrase: str) -> None:
        self.got.append((api_key, api_secret, api_passphrase))


@dataclass
class Rig:
    reloader: Reloader
    sidecar: Sidecar
    notifier: Notifier
    sink: Sink
    repos: Repositories
    metrics: Metrics
    redactor: Redactor
    next: list[Settings | ConfigError]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    start = make_settings(
        tmp_path, control_token="first-token-abcdef", private_key=TEST_PRIVATE_KEY
    )
    async with Database(tmp_path / "polyd.db") as db:
        repos = Repositories.over(db)
        metrics = Metrics()
        redactor = Redactor(start.secret_values())
        sidecar = Sidecar(
            host="127.0.0.1",
            port=0,
            health=Health(mode="paper", version="t"),
            metrics=metrics,
            control_token="first-token-abcdef",
        )
        notifier = Notifier.from_settings(start, metrics=metrics, redactor=redactor)
        sink = Sink()
        queue: list[Settings | ConfigError] = []

        def load() -> Settings:
            nxt = queue.pop(0)
            if isinstance(nxt, ConfigError):
                raise nxt
            return nxt

        reloader = Reloader(
            start,
            load=load,
            metrics=metrics,
            redactor=redactor,
            audit=repos.audit,
            notify=notifier.notify,
            set_control_token=sidecar.set_control_token,
            reconfigure_notifier=notifier.reconfigure,
            credential_sinks=[sink],
        )
        yield Rig(reloader, sidecar, notifier, sink, repos, metrics, redactor, queue)


def count(m: Metrics, outcome: str) -> float:
    v = m.registry.get_sample_value("polyd_settings_reloads_total", {"outcome": outcome})
    return v or 0.0


async def test_new_credentials_token_and_webhook_are_applied_audited_never_shown(
    rig: Rig, tmp_path: Path
) -> None:
    new = make_settings(
        tmp_path,
        private_key=TEST_PRIVATE_KEY,
        control_token="second-token-abcdef",
        clob_api_key=KEY,
        clob_api_secret=SECRET,
        clob_api_passphrase=PASS,
        notify_webhook_url="https://hooks.example.com/services/T000/B000/XXXXXXXXXXXXXXXX",
        log_level="DEBUG",
    )
    rig.next.append(new)
    try:
        result = await rig.reloader.reload(source="test")
    finally:
        logging.getLogger().setLevel("INFO")
    assert result.outcome == "applied"
    assert set(result.changed) == {
        "clob_api_key",
        "clob_api_secret",
        "clob_api_passphrase",
        "control_token",
        "notify_webhook_url",
        "log_level",
    }
    assert rig.sink.got == [(KEY, SECRET, PASS)]
    assert rig.sidecar._token == b"second-token-abcdef"
    assert rig.notifier.enabled
    assert rig.redactor.scrub(f"x {SECRET} y") == f"x {REDACTED} y"
    (entry,) = await rig.repos.audit.tail(event="settings_reload_applied")
    assert "CONTROL_TOKEN" in entry.detail["keys"]
    assert SECRET not in str(entry.detail) and "second-token" not in str(entry.detail)
    assert count(rig.metrics, "applied") == 1
    assert rig.notifier.pending == 1  # announced


async def test_a_new_private_key_refuses_the_whole_reload_one_line_per_key(
    rig: Rig, tmp_path: Path
) -> None:
    rig.next.append(
        make_settings(
            tmp_path,
            private_key="0x" + "22" * 32,
            control_token="second-token-abcdef",
            risk_max_order_notional="75",
        )
    )
    result = await rig.reloader.reload(source="test")
    assert result.outcome == "refused"
    assert sorted(p.split(":")[0] for p in result.problems) == [
        "PRIVATE_KEY",
        "RISK_MAX_ORDER_NOTIONAL",
    ]
    assert all("cannot change while running" in p for p in result.problems)
    assert "22" * 32 not in " ".join(result.problems)
    assert rig.sidecar._token == b"first-token-abcdef"  # nothing else changed
    assert rig.reloader.settings.control_token is not None
    assert rig.reloader.settings.control_token.get_secret_value() == "first-token-abcdef"
    assert count(rig.metrics, "refused") == 1
    (entry,) = await rig.repos.audit.tail(event="settings_reload_refused")
    assert entry.detail["problems"] == result.problems


async def test_a_bad_file_changes_nothing_and_an_unchanged_one_says_so(rig: Rig) -> None:
    rig.next.append(ConfigError(["HTTP_PORT: Input should be a valid integer"]))
    bad = await rig.reloader.reload(source="test")
    assert (bad.outcome, bad.problems) == (
        "invalid",
        ["HTTP_PORT: Input should be a valid integer"],
    )
    rig.next.append(rig.reloader.settings)
    same = await rig.reloader.reload(source="test")
    assert same.outcome == "unchanged" and same.changed == []
    assert rig.sink.got == [] and rig.sidecar._token == b"first-token-abcdef"
    assert (count(rig.metrics, "invalid"), count(rig.metrics, "unchanged")) == (1, 1)


async def test_removing_configured_credentials_is_refused(rig: Rig, tmp_path: Path) -> None:
    with_creds = make_settings(
        tmp_path,
        private_key=TEST_PRIVATE_KEY,
        control_token="first-token-abcdef",
        clob_api_key=KEY,
        clob_api_secret=SECRET,
        clob_api_passphrase=PASS,
    )
    rig.next.append(with_creds)
    assert (await rig.reloader.reload(source="test")).outcome == "applied"
    rig.next.append(
        make_settings(tmp_path, private_key=TEST_PRIVATE_KEY, control_token="first-token-abcdef")
    )
    result = await rig.reloader.reload(source="test")
    assert result.outcome == "refused"
    assert result.problems[0].startswith("CLOB_API_KEY, CLOB_API_SECRET, CLOB_API_PASSPHRASE")


async def test_request_from_a_signal_runs_one_reload_in_the_service(rig: Rig) -> None:
    rig.next.append(rig.reloader.settings)
    task = asyncio.create_task(rig.reloader.run())
    rig.reloader.request()
    rig.reloader.request()  # two signals before it runs: one reload
    for _ in range(100):
        if count(rig.metrics, "unchanged"):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert count(rig.metrics, "unchanged") == 1


def test_env_file_values_are_replaced_in_place_others_kept_mode_0600(tmp_path: Path) -> None:
    env = tmp_path / "polyd.env"
    env.write_text("# comment\nMODE=live\nCLOB_API_KEY=old\nexport CONTROL_TOKEN=t\n")
    env.chmod(0o644)
    previous = set_env_values(env, {"CLOB_API_KEY": "new", "CLOB_API_SECRET": "s=="})
    assert previous.startswith("# comment")
    assert env.read_text() == (
        "# comment\nMODE=live\nCLOB_API_KEY=new\nexport CONTROL_TOKEN=t\nCLOB_API_SECRET=s==\n"
    )
    assert env.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["polyd.env"]  # no temp file left


async def test_rotation_refused_by_the_daemon_restores_the_file_and_deletes_the_new_key(
    tmp_path: Path,
) -> None:
    async with Simulator(seed=5) as sim:
        key = funded_key(sim, Decimal("10"))
        settings = make_settings(tmp_path, **simulator_overrides(sim, key))
        env = tmp_path / "polyd.env"
        env.write_text("MODE=live\n")
        keys = ApiKeys(host=sim.clob_url, chain_id=137, private_key=key, timeout_s=5)
        old = await asyncio.to_thread(keys.create, 0)
        before = set(sim.keys)

        def refuse() -> dict[str, Any]:
            return {"reload": "refused", "problems": ["PRIVATE_KEY: cannot change"]}

        with pytest.raises(RotationError, match="nothing changed"):
            await asyncio.to_thread(
                rotate_api_key, settings, env_file=env, reload=refuse, keys=keys, nonce=7
            )
        assert env.read_text() == "MODE=live\n"
        assert set(sim.keys) == before  # the new key was deleted, the old one kept
        assert old.api_key in sim.keys
        with pytest.raises(PolydError, match="Could not create api key"):
            await asyncio.to_thread(keys.create, 0)  # nonce 0 is taken: the venue says so
        keys.close()
