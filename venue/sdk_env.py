"""The one seam that points Polymarket's official SDK (`polymarket-client`, import `polymarket`)
at another venue than production — the built-in simulator, in practice.

The SDK ships a single public environment, `polymarket.environments.PRODUCTION`; an
`Environment` cannot be constructed (`Environment.__init__` raises), and the only way to build
one is the module's private `_create_environment(name=..., config=...)` with a copy of the
production `_EnvironmentConfig` (a frozen dataclass) whose URLs are replaced. Every contract
address, the chain id and the wallet-derivation constants stay the production ones, so orders
signed for the simulator carry the same EIP-712 domain as real ones.
Source: Polymarket/py-sdk `polymarket/environments.py` (polymarket-client 0.14.0).

Nothing else in polyd may reach into the SDK's private names: an SDK upgrade that renames or
reshapes them fails here, at start-up and in `tests/unit/test_sdk_seam.py`, with an `SdkSeamError`
that says what changed — never as a client quietly talking to production.

The SDK is imported lazily (`importlib`), so this module loads even where the SDK is absent
(then `environment()` raises `SdkSeamError` naming the missing package).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Final

from errors import FatalError

SDK_MODULE: Final = "polymarket.environments"
"""The SDK module that holds the environment table."""

URL_FIELDS: Final = (
    "clob_url",
    "clob_market_ws_url",
    "clob_user_ws_url",
    "gamma_url",
    "data_url",
    "rpc_url",
    "relayer_url",
)
"""The `_EnvironmentConfig` fields this seam replaces; all others keep production values."""

CONTRACT_FIELDS: Final = (
    "chain_id",
    "collateral_token",
    "conditional_tokens",
    "standard_exchange",
    "neg_risk_exchange",
    "exchange_v3",
)
"""Fields polyd reads from the environment and relies on staying production values."""


class SdkSeamError(FatalError):
    """The installed SDK does not offer what the simulator seam relies on."""


@dataclass(frozen=True, slots=True)
class VenueUrls:
    """Where the SDK should talk to. `None` keeps the production URL for that service."""

    clob_url: str
    clob_market_ws_url: str | None = None
    clob_user_ws_url: str | None = None
    gamma_url: str | None = None
    data_url: str | None = None
    rpc_url: str | None = None
    relayer_url: str | None = None

    def replacements(self) -> dict[str, str]:
        return {
            name: getattr(self, name).rstrip("/")
            for name in URL_FIELDS
            if getattr(self, name) is not None
        }


def _sdk_environments() -> Any:
    try:
        return importlib.import_module(SDK_MODULE)
    except ImportError as e:
        raise SdkSeamError(
            f"the official Polymarket SDK is not installed ({SDK_MODULE} does not import: {e}); "
            "install `polymarket-client`"
        ) from None


def _sdk_version() -> str:
    try:
        return str(importlib.import_module("polymarket.version").__version__)
    except (ImportError, AttributeError):
        return "unknown"


def production_config() -> Any:
    """The SDK's production `_EnvironmentConfig`, checked to have every field the seam uses."""
    env_mod = _sdk_environments()
    where = f"polymarket-client {_sdk_version()}: {SDK_MODULE}"
    production = getattr(env_mod, "PRODUCTION", None)
    if production is None:
        raise SdkSeamError(f"{where} has no PRODUCTION environment; the simulator seam needs it")
    config = getattr(production, "_config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise SdkSeamError(
            f"{where}: PRODUCTION._config is not a dataclass any more; "
            "the simulator seam copies it with dataclasses.replace"
        )
    names = {f.name for f in dataclasses.fields(config)}
    missing = [n for n in (*URL_FIELDS, *CONTRACT_FIELDS) if n not in names]
    if missing:
        raise SdkSeamError(
            f"{where}: the environment config lost the field(s) {', '.join(missing)}; "
            "the simulator seam replaces/reads them"
        )
    return config


def environment(urls: VenueUrls, *, name: str = "polyd-simulator") -> Any:
    """An SDK `Environment` with production contracts and `urls` for the services named.

    Raises `SdkSeamError` (with the SDK version and what is missing) if the installed SDK no
    longer offers `PRODUCTION._config` as a dataclass with the URL fields, or the private
    `_create_environment(name=, config=)` builder.
    """
    config = production_config()
    env_mod = _sdk_environments()
    create = getattr(env_mod, "_create_environment", None)
    if not callable(create):
        raise SdkSeamError(
            f"polymarket-client {_sdk_version()}: {SDK_MODULE}._create_environment is gone; "
            "the simulator seam builds its environment with it"
        )
    try:
        env = create(name=name, config=dataclasses.replace(config, **urls.replacements()))
    except TypeError as e:
        raise SdkSeamError(
            f"polymarket-client {_sdk_version()}: {SDK_MODULE}._create_environment"
            f"(name=, config=) changed its signature: {e}"
        ) from None
    built = getattr(env, "_config", None)
    if built is None or any(getattr(built, k) != v for k, v in urls.replacements().items()):
        raise SdkSeamError(
            f"polymarket-client {_sdk_version()}: an environment built by "
            "_create_environment does not carry the URLs it was given"
        )
    return env
