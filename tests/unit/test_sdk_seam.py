"""The one seam that points the official SDK at the simulator (`venue.sdk_env`).

If an SDK upgrade renames `_create_environment`, stops making `PRODUCTION._config` a dataclass
or drops a URL/contract field, these tests fail with the seam's own message naming the change.
Source of what the seam relies on: Polymarket/py-sdk `polymarket/environments.py` (0.14.0).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import require_sdk
from venue.sdk_env import URL_FIELDS, SdkSeamError, VenueUrls, environment

SIM = VenueUrls(
    clob_url="http://127.0.0.1:9/",
    clob_market_ws_url="ws://127.0.0.1:9/ws/market",
    clob_user_ws_url="ws://127.0.0.1:9/ws/user",
    gamma_url="http://127.0.0.1:9/gamma",
    data_url="http://127.0.0.1:9/data",
    rpc_url="http://127.0.0.1:9/rpc",
    relayer_url="http://127.0.0.1:9/relayer",
)


@pytest.fixture
def sdk_envs() -> Any:
    require_sdk()
    return importlib.import_module("polymarket.environments")


def test_without_the_sdk_the_seam_says_which_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def no_sdk(name: str, package: str | None = None) -> Any:
        if name.startswith("polymarket"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_sdk)
    with pytest.raises(SdkSeamError, match="polymarket-client"):
        environment(SIM)


def test_the_environment_points_every_service_at_the_given_urls(sdk_envs: Any) -> None:
    env = environment(SIM)
    prod = sdk_envs.PRODUCTION._config
    for name in URL_FIELDS:
        assert getattr(env._config, name) == getattr(SIM, name).rstrip("/"), name
        assert getattr(env._config, name) != getattr(prod, name), name
    # Contracts, chain id and everything else stay production: same EIP-712 domain as live.
    for f in dataclasses.fields(prod):
        if f.name not in URL_FIELDS:
            assert getattr(env._config, f.name) == getattr(prod, f.name), f.name
    assert env.name == "polyd-simulator"


def test_services_not_named_keep_their_production_url(sdk_envs: Any) -> None:
    env = environment(VenueUrls(clob_url="http://127.0.0.1:9"))
    assert env._config.clob_url == "http://127.0.0.1:9"
    assert env._config.gamma_url == sdk_envs.PRODUCTION._config.gamma_url


def test_a_renamed_private_builder_fails_loudly(
    sdk_envs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(sdk_envs, "_create_environment")
    with pytest.raises(SdkSeamError, match=r"_create_environment is gone"):
        environment(SIM)


def test_a_config_that_is_no_dataclass_fails_loudly(
    sdk_envs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_envs, "PRODUCTION", SimpleNamespace(_config={"clob_url": "x"}))
    with pytest.raises(SdkSeamError, match=r"not a dataclass"):
        environment(SIM)


def test_a_dropped_field_is_named(sdk_envs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Shrunk:
        clob_url: str = "https://clob.polymarket.com"

    monkeypatch.setattr(sdk_envs, "PRODUCTION", SimpleNamespace(_config=Shrunk()))
    with pytest.raises(SdkSeamError, match=r"lost the field\(s\) clob_market_ws_url"):
        environment(SIM)


def test_a_builder_with_a_new_signature_fails_loudly(
    sdk_envs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def changed(*, label: str, config: Any) -> Any:
        return None

    monkeypatch.setattr(sdk_envs, "_create_environment", changed)
    with pytest.raises(SdkSeamError, match=r"changed its signature"):
        environment(SIM)
