"""Where settings come from: the config file, ``CORRAL_*`` variables, a dotenv file,
and the variables uvicorn and gunicorn users already set.

Strict by design: a file key corral does not know is an error with a "did you
mean", never silently ignored, because a misspelt key in a deploy is a setting
that silently does not apply. Unknown ``CORRAL_*`` variables are only warned
about (other tools may share the prefix), with the same suggestion.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.config import FIELD_NAMES, ServerConfig
from corral.config_values import check_toml_type, flag_source, parse_field
from corral.errors import ConfigError

ENV_PREFIX = "CORRAL_"
CONFIG_FILE_NAMES = ("corral.toml", "pyproject.toml")
# corral's own variables that are not settings of ``corral run``: ``corral
# status``'s, which a container sets beside corral's own for its health check.
OTHER_CORRAL_VARIABLES = frozenset(
    {
        "CORRAL_STATUS_URL",
        "CORRAL_STATUS_TOKEN_FILE",
        "CORRAL_STATUS_USER",
        "CORRAL_STATUS_PASSWORD_FILE",
        "CORRAL_STATUS_PASSWORD_ENV",
        "CORRAL_STATUS_CERT",
        "CORRAL_STATUS_KEY",
        "CORRAL_STATUS_CACERT",
    }
)
# Variables uvicorn and gunicorn users already set; they rank below every
# corral source, just above the defaults (as ``WEB_CONCURRENCY`` does in uvicorn).
FOREIGN_VARIABLES = {"WEB_CONCURRENCY": "workers", "FORWARDED_ALLOW_IPS": "forwarded_allow_ips"}


def _normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _suggest(name: str, choices: tuple[str, ...] | list[str]) -> str | None:
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix the --config path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _corral_table(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``[tool.corral]`` (however the TOML spells it), or ``corral.toml``'s top level."""
    tool = data.get("tool", {})
    table = tool.get("corral") if isinstance(tool, dict) else None
    if path.name == "pyproject.toml":
        return table if isinstance(table, dict) else {}
    top = {k: v for k, v in data.items() if k != "tool"}
    others = sorted(k for k in tool if k != "corral") if isinstance(tool, dict) else []
    if others:
        raise ConfigError(
            f"{path}: unknown table [tool.{others[0]}]; corral.toml holds only corral's settings"
        )
    if table is not None and top:
        raise ConfigError(
            f"{path}: has both top-level keys ({', '.join(sorted(top))}) and a [tool.corral] "
            "table; put every setting in one of them"
        )
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.corral must be a table")
    return table if table is not None else top


def read_config_file(path: Path) -> dict[str, object]:
    """Read ``[tool.corral]`` (or, in ``corral.toml``, the top level) from a TOML file.

    Keys may be kebab-case or snake_case; each is a known setting with a value
    of the right TOML type, or the whole file is rejected.
    """
    values: dict[str, object] = {}
    for key, raw in _corral_table(_read_toml(path), path).items():
        name = _normalise_key(key)
        if name not in FIELD_NAMES:
            raise ConfigError(_unknown_key_message(path, key, name))
        if name in values:
            raise ConfigError(f"{path}: {name} is set twice (as {key!r} and another spelling)")
        check_toml_type(name, raw, str(path))
        values[name] = parse_field(name, raw, str(path))
    return values


def _unknown_key_message(path: Path, key: str, name: str) -> str:
    guess = _suggest(name, list(FIELD_NAMES))
    if guess is None:
        return f"{path}: unknown config key {key!r}; valid keys are: {', '.join(FIELD_NAMES)}"
    shown = guess.replace("_", "-") if "-" in key else guess
    return f"{path}: unknown config key {key!r}; did you mean {shown!r}?"


def find_config_file(cwd: Path) -> Path | None:
    """The first of ``corral.toml`` / ``pyproject.toml`` (with a corral table) in ``cwd``."""
    for name in CONFIG_FILE_NAMES:
        candidate = cwd / name
        if not candidate.is_file():
            continue
        if name == "pyproject.toml" and not _has_corral_table(candidate):
            continue
        return candidate
    return None


def _has_corral_table(pyproject: Path) -> bool:
    """Parsed, not searched for ``[tool.corral]``: ``[tool]`` with ``corral = {...}`` counts.

    A pyproject.toml that is not valid TOML is only our problem if it mentions corral.
    """
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        if "corral" in pyproject.read_text("utf-8", errors="replace"):
            _read_toml(pyproject)  # raises the TOML error, naming the file
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and "corral" in tool


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """``CORRAL_<FIELD>`` values, plus the ``CORRAL_*`` names that match no field.

    Unknown names are returned rather than rejected: other tools may use the
    prefix, so the caller warns about them (see ``describe_unknown_variable``).
    """
    values: dict[str, object] = {}
    unknown: list[str] = []
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in OTHER_CORRAL_VARIABLES:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in FIELD_NAMES:
            values[name] = parse_field(name, raw, f"environment variable {key}")
        else:
            unknown.append(key)
    return values, unknown


def describe_unknown_variable(key: str) -> str:
    """``CORRAL_WORKRES (did you mean CORRAL_WORKERS?)``, or just the name."""
    known = [ENV_PREFIX + name.upper() for name in FIELD_NAMES] + sorted(OTHER_CORRAL_VARIABLES)
    guess = _suggest(key, known)
    return f"{key} (did you mean {guess}?)" if guess else key


def read_foreign_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """``WEB_CONCURRENCY`` and ``FORWARDED_ALLOW_IPS``, for users coming from uvicorn."""
    return {
        name: parse_field(name, environ[key], f"environment variable {key}")
        for key, name in FOREIGN_VARIABLES.items()
        if environ.get(key, "").strip()
    }


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a dotenv file sets, parsed by python-dotenv as uvicorn does."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"env file {path} {what}; fix --env-file")
    # Imported only when an env file is used: it costs tens of ms at start-up.
    from dotenv import dotenv_values  # noqa: PLC0415

    try:
        raw = dotenv_values(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file {path} cannot be read ({exc}); fix --env-file") from None
    return {key: value for key, value in raw.items() if value is not None}


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config plus where it came from, for the start-up log line."""

    config: ServerConfig
    file: Path | None
    unknown_env: tuple[str, ...]
    # What --env-file set (variables already in the environment win); the CLI
    # puts these into os.environ before the app is imported.
    env_from_file: Mapping[str, str] = field(default_factory=dict)


def load_config(
    cli_values: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedConfig:
    """Merge defaults, foreign variables, file, ``CORRAL_*`` and CLI values (later wins).

    An env file is read first (its path from the flag, ``CORRAL_ENV_FILE`` or
    the config file), and its variables count as environment variables.
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    path = config_path or find_config_file(cwd)
    from_file: dict[str, object] = read_config_file(path) if path else {}
    cli = {
        name: parse_field(name, raw, flag_source(name))
        for name, raw in cli_values.items()
        if raw is not None and raw != ()
    }
    env_values, _ = read_environment(environ)
    env_file = cli.get("env_file") or env_values.get("env_file") or from_file.get("env_file")
    from_env_file: dict[str, str] = {}
    if env_file:
        loaded = read_env_file(cwd / str(env_file))
        from_env_file = {k: v for k, v in loaded.items() if k not in environ}
        environ = {**from_env_file, **environ}
    env_values, unknown = read_environment(environ)
    merged: dict[str, object] = read_foreign_environment(environ)
    merged.update(from_file)
    merged.update(env_values)
    merged.update(cli)
    config = ServerConfig(**merged)  # type: ignore[arg-type]
    return LoadedConfig(config, path, tuple(unknown), from_env_file)
