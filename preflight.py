"""`python -m orchestrator --check-config`: load and check everything the daemon will load, with
no network, and report every problem at once.

Checked: the settings (the environment and the settings file, as the daemon reads them), both
strategies' rule files, the notification settings; warned about: keys in the settings file that
are not settings, variables in the environment that look like a misspelled setting
(`RISK_DAILY_LOSS_LIMT` → "did you mean RISK_DAILY_LOSS_LIMIT?"), a settings file others can
read, and a configuration under which no strategy would run. One line per problem, each naming
the file or setting; exit 0 when nothing is wrong (warnings allowed), 2 otherwise.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

from dotenv import dotenv_values
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from config import (
    MAX_PATH_ECHO,
    Settings,
    clip,
    env_file_warnings,
    environment_names,
    load_settings,
)
from errors import ConfigError

EXIT_OK, EXIT_CONFIG = 0, 2
KNOWN_KEYS: Final = frozenset(name.upper() for name in Settings.model_fields)
OUR_PREFIX: Final = "POLYD_"
FOREIGN_PREFIXES: Final = ("OTEL_",)
"""OpenTelemetry's own variables (`OTEL_RESOURCE_ATTRIBUTES`, ...): theirs, not misspellings."""
MAX_SETTINGS_PASSES: Final = 8
RETIRED_KEYS: Final = {
    "SIGNER_THREADS": "no longer used: orders are signed on the event loop; remove it",
}
"""Settings polyd once had: an env file that still sets one is told why it is ignored."""


@dataclass
class Preflight:
    """What `--check-config` found: `settings` (None if any problem), problems and warnings."""

    settings: Settings | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    """The strategies that would run (`sniper`, `copy`)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_config(env_file: str | None) -> int:
    """Print what `preflight` found; return the exit code (0 ok, 2 a problem)."""
    found = preflight(env_file)
    if found.settings is not None:
        for key, value in found.settings.redacted().items():
            print(f"{key}={value}")
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if found.problems:
        print("polyd: configuration error:", file=sys.stderr)
        for line in found.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    on = ", ".join(found.strategies) or "none"
    print(f"configuration ok (strategies: {on})", file=sys.stderr)
    return EXIT_OK


def preflight(
    env_file: str | Path | None, *, environment: Iterable[str] | None = None
) -> Preflight:
    """Check the settings, the rule files and the notification settings; see the module doc."""
    out = Preflight()
    path = Path(env_file) if env_file is not None else None
    env_names = list(environment_names() if environment is None else environment)
    settings, problems = settings_and_problems(env_file)
    file_keys = _file_keys(path) if path is not None else {}
    out.problems += [_source(line, file_keys, env_names, path) for line in problems]
    out.warnings += unknown_key_warnings(file_keys, env_names, path=path)
    if path is not None:
        out.warnings += env_file_warnings(path)
    if settings is None:  # the settings file itself could not be read
        return out
    out.strategies = _strategies(settings, out.problems)
    if not out.strategies and not any(_names_rules(p) for p in out.problems):
        out.warnings.append(no_strategy_warning(settings))
    if not out.problems:
        out.settings = settings
    return out


def settings_and_problems(env_file: str | Path | None) -> tuple[Settings | None, list[str]]:
    """The settings, and every problem in them.

    Pydantic stops short of the cross-field checks while a field is invalid, and a value that
    must be JSON and is not stops everything; so each pass reads the settings again without the
    keys found bad (their defaults apply), until no new problem shows: a bad value then hides no
    other. With a problem, the settings returned lack those keys and skipped the cross-field
    checks: they are for finding the rule files, never for running. None when the settings file
    cannot be read.
    """
    problems: list[str] = []
    skip: set[str] = set()
    for _ in range(MAX_SETTINGS_PASSES):
        try:
            settings = load_settings(env_file=env_file, kind=_without(skip))
        except ConfigError as e:
            new = [p for p in e.problems if p not in problems]
            problems += new
            if any(p.startswith("settings file ") for p in new):
                return None, problems
            bad = {_field_of(p) for p in new} - {None} - skip
            if not bad:
                break
            skip |= {name for name in bad if name is not None}
        else:
            return settings, problems
    try:
        return load_settings(env_file=env_file, kind=_without(skip, cross_checks=False)), problems
    except ConfigError:
        return None, problems


class _Skipping(Settings):
    """Settings read without the keys in `skip` (from the environment and the settings file)."""

    skip: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        for source in (env_settings, dotenv_settings):
            if isinstance(source, EnvSettingsSource):  # the settings file's source is one too
                source.env_vars = {
                    k: v for k, v in source.env_vars.items() if k.lower() not in cls.skip
                }
        return init_settings, env_settings, dotenv_settings, file_secret_settings


class _FieldsOnly(_Skipping):
    """Fields checked, but not how they go together."""

    def _cross_checks(self) -> Settings:  # type: ignore[override]  # drops the validator
        return self


def _without(skip: set[str], *, cross_checks: bool = True) -> type[Settings]:
    base = _Skipping if cross_checks else _FieldsOnly
    return type("PreflightSettings", (base,), {"skip": frozenset(skip)})


def _field_of(problem: str) -> str | None:
    key = problem.partition(":")[0].strip().lower()
    return key if key in Settings.model_fields else None


def _file_keys(path: Path) -> dict[str, str | None]:
    try:
        return {k.upper(): v for k, v in dotenv_values(path).items()}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}  # load_settings has already said what is wrong with the file


def _source(line: str, file_keys: dict[str, str | None], env: list[str], path: Path | None) -> str:
    """`line`, with where its setting came from when it names one."""
    key = line.partition(":")[0].strip().upper()
    if key not in KNOWN_KEYS:
        return line
    if key in {n.upper() for n in env}:
        return f"{line} (from the environment)"
    if path is not None and key in file_keys:
        return f"{line} (in {clip(str(path), MAX_PATH_ECHO)})"
    return line


def unknown_key_warnings(
    file_keys: dict[str, str | None], environment: Iterable[str], *, path: Path | None
) -> list[str]:
    """One warning per key in the settings file that is no setting (every one: the file is
    ours), and per environment variable that looks like one of ours but is not (a close
    misspelling of a setting, or the `POLYD_` prefix)."""
    out: list[str] = []
    for key in file_keys:
        if key not in KNOWN_KEYS:
            where = clip(str(path), MAX_PATH_ECHO)
            out.append(f"settings file {where}: unknown key {clip(key)}{_hint(key)}")
    for name in sorted({n.upper() for n in environment} - KNOWN_KEYS - set(file_keys)):
        if name.startswith(FOREIGN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, KNOWN_KEYS, n=1, cutoff=0.85)
        if close or name.startswith(OUR_PREFIX):
            out.append(f"environment: unknown key {clip(name)}{_hint(name)}")
    return out


def start_warnings(env_file: str | Path | None) -> list[str]:
    """The unknown-key warnings the daemon logs as it starts (see `unknown_key_warnings`)."""
    path = Path(env_file) if env_file is not None else None
    file_keys = _file_keys(path) if path is not None and path.is_file() else {}
    return unknown_key_warnings(file_keys, environment_names(), path=path)


def _hint(key: str) -> str:
    bare = key.removeprefix(OUR_PREFIX)  # settings have no prefix: POLYD_MODE is MODE
    if bare in RETIRED_KEYS:
        return f" ({RETIRED_KEYS[bare]})"
    close = [bare] if bare in KNOWN_KEYS else difflib.get_close_matches(bare, KNOWN_KEYS, 1, 0.6)
    return f" (did you mean {close[0]}?)" if close else " (ignored: not a setting)"


def _strategies(settings: Settings, problems: list[str]) -> list[str]:
    """The strategies that would run; each rule file's problems go to `problems`."""
    from strategies.copy_trader import load_rules as load_copy_rules
    from strategies.sniper import load_rules as load_sniper_rules

    on: list[str] = []
    if settings.sniper_enabled and settings.sniper_rules_path is not None:
        try:
            if load_sniper_rules(settings.sniper_rules_path):
                on.append(settings.sniper_name)
        except ConfigError as e:
            problems += e.problems
    if settings.copy_enabled and settings.copy_rules_path is not None:
        try:
            if load_copy_rules(settings.copy_rules_path).active:
                on.append(settings.copy_name)
        except ConfigError as e:
            problems += e.problems
    return on


def _names_rules(problem: str) -> bool:
    return problem.startswith(("SNIPER_RULES_PATH", "COPY_RULES_PATH"))


def no_strategy_warning(settings: Settings) -> str:
    """Why no strategy would run under `settings`, and what to set."""
    why = []
    for name, enabled, path in (
        ("SNIPER", settings.sniper_enabled, settings.sniper_rules_path),
        ("COPY", settings.copy_enabled, settings.copy_rules_path),
    ):
        if not enabled:
            why.append(f"{name}_ENABLED=false")
        elif path is None:
            why.append(f"{name}_RULES_PATH unset")
        else:
            why.append(f"no enabled rule in {name}_RULES_PATH")
    return (
        f"no strategy is enabled ({', '.join(why)}): the daemon trades nothing; "
        "set SNIPER_RULES_PATH or COPY_RULES_PATH to a rules file"
    )
