"""Settings reload (SIGHUP) and API-key rotation on a running daemon, against the simulator.

The daemon is a real process reading its settings file (`--env-file`, as under systemd); the
simulator is a real process whose API-key routes are those py-clob-client-v2 calls.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from errors import FatalError
from tests.harness import DaemonProcess, SimProcess, _http, wait_until
from tests.helpers import clean_env, run_cli
from venue.clob.keys import ApiKeys, Credentials

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with SimProcess(workdir=tmp_path / "sim", seed=31, scenario=None) as s:
        yield s


def post(d: DaemonProcess, action: str, token: str) -> tuple[int, dict[str, Any]]:
    status, raw = _http(
        "POST", f"{d.base_url}/{action}", {}, headers={"Authorization": f"Bearer {token}"}
    )
    return status, json.loads(raw) if raw else {}


def events(d: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in d.log_events() if e.get("event") == name]


def user_feed_connects(d: DaemonProcess) -> int:
    _, body = d.health()
    return int(body["checks"]["venue:user_feed"]["detail"]["connects"])


def keys_for(d: DaemonProcess, sim: SimProcess) -> ApiKeys:
    return ApiKeys(host=sim.clob_url, chain_id=137, private_key=d.private_key, timeout_s=5)


def test_sighup_rotates_the_control_token_and_refuses_a_new_private_key(
    sim: SimProcess, tmp_path: Path
) -> None:
    env_file = tmp_path / "polyd.env"
    with DaemonProcess(sim, tmp_path, env_file=env_file) as d:
        d.wait_ready()
        assert d.proc is not None
        pid = d.proc.pid
        wait_until(lambda: events(d, "reconciled"), 10, what="first reconcile")
        connects = user_feed_connects(d)
        old = d.token

        # A new control token: the old one gets 401, the new one works, same process.
        d.write_env_file({**d.file_settings, "CONTROL_TOKEN": "new-token-" + "x" * 20})
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: post(d, "reload", old)[0] == 401, 10, what="old token refused")
        status, answer = post(d, "reload", "new-token-" + "x" * 20)
        assert (status, answer["reload"]) == (200, "unchanged")
        assert d.alive() and d.proc.pid == pid
        (applied,) = events(d, "settings_reloaded")
        assert applied["keys"] == ["CONTROL_TOKEN"]
        assert user_feed_connects(d) == connects  # the feed was not dropped
        assert d.health()[0] == 200
        assert d.metric("polyd_settings_reloads_total", outcome="applied") == 1
        cli = run_cli("--env-file", str(env_file), "reload", env=clean_env())
        assert (cli.returncode, cli.stdout.strip()) == (0, "reload: unchanged"), cli.stderr
        # No reconnect, so no reconcile of a reconnect (the periodic one goes on).
        assert len(events(d, "user_feed_connected")) == 1

        # A new PRIVATE_KEY (and another token) in the file: refused whole, nothing changes.
        other_key = "0x" + "11" * 32
        d.write_env_file(
            {
                **d.file_settings,
                "CONTROL_TOKEN": "third-token-" + "y" * 20,
                "PRIVATE_KEY": other_key,
            }
        )
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events(d, "settings_reload_refused"), 10, what="refusal logged")
        refused = [e["problem"] for e in events(d, "settings_reload_refused")]
        assert len(refused) == 1 and refused[0].startswith("PRIVATE_KEY: cannot change")
        assert post(d, "reload", "third-token-" + "y" * 20)[0] == 401
        assert post(d, "halt", "new-token-" + "x" * 20)[0] == 200  # the token still in force
        assert d.metric("polyd_settings_reloads_total", outcome="refused") == 1
        assert other_key[2:] not in d.stderr()  # the refusal names the key, never the value

        # A file that does not validate changes nothing and the daemon keeps running.
        d.write_env_file({**d.file_settings, "HTTP_PORT": "not-a-port"})
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: d.metric("polyd_settings_reloads_total", outcome="invalid") == 1, 10)
        assert d.alive() and d.proc.pid == pid
        assert post(d, "resume", "new-token-" + "x" * 20)[0] == 200
        assert d.sigterm() == 0
    audits = [
        json.loads(r["detail"])
        for r in d.rows("SELECT detail FROM audit_log WHERE event LIKE 'settings_reload%'")
    ]
    assert [a["keys"] for a in audits][:1] == [["CONTROL_TOKEN"]]
    assert all("new-token" not in json.dumps(a) for a in audits)


def test_rotate_api_key_end_to_end_new_key_in_use_old_key_refused(
    sim: SimProcess, tmp_path: Path
) -> None:
    env_file = tmp_path / "polyd.env"
    with DaemonProcess(sim, tmp_path, env_file=env_file) as d:
        d.wait_ready()
        assert d.proc is not None
        pid = d.proc.pid
        wait_until(lambda: user_feed_connects(d) >= 1, 10, what="user feed")
        connects = user_feed_connects(d)
        api = keys_for(d, sim)
        old: Credentials = api.derive(0)  # what the daemon derived at start-up

        res = run_cli("--env-file", str(env_file), "rotate-api-key", env=clean_env())
        assert res.returncode == 0, res.stderr + res.stdout
        assert "deleted the old API key" in res.stdout
        for secret in (old.api_key, old.api_secret, old.api_passphrase):
            assert secret not in res.stdout + res.stderr

        # The file holds the new credentials, readable by its owner only.
        assert env_file.stat().st_mode & 0o777 == 0o600
        text = env_file.read_text()
        new_key = next(
            line.split("=", 1)[1] for line in text.splitlines() if line.startswith("CLOB_API_KEY=")
        )
        assert new_key != old.api_key
        assert "PRIVATE_KEY=" in text and "CONTROL_TOKEN=" in text  # the rest is kept

        # The venue refuses the old key; the daemon trades with the new one (same process).
        with pytest.raises(FatalError, match="Unauthorized/Invalid api key"):  # the venue's 401
            api.delete(old)
        assert d.alive() and d.proc.pid == pid
        status, answer = d.control("cancel-all")  # an L2 request, signed with the new key
        assert (status, answer.get("canceled")) == (200, 0), answer
        wait_until(lambda: user_feed_connects(d) == connects + 1, 10, what="re-subscribed")
        time.sleep(2.5)  # a heartbeat interval: heartbeats keep passing with the new key
        status, body = d.health()
        assert status == 200, body
        api.close()
        assert d.sigterm() == 0
