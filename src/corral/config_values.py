"""Raw setting values, from any source, turned into ``ServerConfig`` field values.

Flags and environment variables are text, so text is parsed: ``"3"`` is a
fine worker count there. A TOML file has types of its own, and there a string
where a number belongs is a mistake worth naming (``workers = "3"``), so file
values are type-checked before they are parsed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from corral.config import (
    CertRequirement,
    ExhaustedAction,
    Header,
    HttpImpl,
    HungThreadAction,
    Lifespan,
    LogFormat,
    LoopImpl,
    field_flag,
    field_type,
)
from corral.config_choices import Interface, WebSocketLibrary
from corral.errors import ConfigError
from corral.runtime import WorkerMode


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _parse_optional_str(raw: object) -> str | None:
    return None if raw is None or raw == "" else str(raw)


def _parse_optional_int(raw: object) -> int | None:
    return None if raw is None or raw == "" else _int(raw)


def _parse_mode(raw: object) -> WorkerMode | None:
    if raw is None or isinstance(raw, WorkerMode):
        return raw
    text = str(raw).strip().lower()
    return None if text == "auto" else WorkerMode(text)


def _enum_parser(kind: type[enum.Enum]) -> Callable[[object], Any]:
    def parse(raw: object) -> Any:
        return raw if isinstance(raw, kind) else kind(str(raw).strip().lower())

    return parse


# uvicorn spells --ssl-cert-reqs as ssl.VerifyMode's numbers.
_CERT_REQS_NUMBERS = {"0": "none", "1": "optional", "2": "required"}


def _parse_cert_reqs(raw: object) -> CertRequirement:
    if isinstance(raw, CertRequirement):
        return raw
    text = str(raw).strip().lower()
    return CertRequirement(_CERT_REQS_NUMBERS.get(text, text))


def _int(raw: object) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"not an integer: {raw!r}")
    return int(str(raw).strip()) if isinstance(raw, str) else int(raw)  # type: ignore[call-overload]


def _float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"not a number: {raw!r}")
    return float(raw)  # type: ignore[arg-type]


def _parse_str_tuple(raw: object) -> tuple[str, ...]:
    """``"a, b"`` (uvicorn's comma-separated spelling) or a list of strings."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)  # type: ignore[call-overload]
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_headers(raw: object) -> tuple[Header, ...]:
    """``Name: value`` strings (a list, or one per line in an environment variable), or
    a TOML table of name -> value."""
    if isinstance(raw, dict):
        return tuple((str(name).strip(), str(value).strip()) for name, value in raw.items())
    lines = raw.splitlines() if isinstance(raw, str) else list(raw)  # type: ignore[call-overload]
    headers: list[Header] = []
    for line in lines:
        if isinstance(line, tuple):
            name, value = line
        else:
            name, sep, value = str(line).partition(":")
            if not sep or not name.strip():
                raise ValueError(f"{line!r} is not 'Name: value'")
        headers.append((str(name).strip(), str(value).strip()))
    return tuple(headers)


_PARSERS: dict[str, Callable[[object], Any]] = {
    "int": _int,
    "float": _float,
    "str": str,
    "bool": _parse_bool,
    "str | None": _parse_optional_str,
    "int | None": _parse_optional_int,
    "WorkerMode | None": _parse_mode,
    "ExhaustedAction": _enum_parser(ExhaustedAction),
    "LogFormat": _enum_parser(LogFormat),
    "HungThreadAction": _enum_parser(HungThreadAction),
    "Lifespan": _enum_parser(Lifespan),
    "HttpImpl": _enum_parser(HttpImpl),
    "LoopImpl": _enum_parser(LoopImpl),
    "CertRequirement": _parse_cert_reqs,
    "Interface": _enum_parser(Interface),
    "WebSocketLibrary": _enum_parser(WebSocketLibrary),
    "tuple[str, ...]": _parse_str_tuple,
    "tuple[Header, ...]": _parse_headers,
}

# Fields whose plain ``str`` type needs normalising beyond what the type says.
_FIELD_PARSERS: dict[str, Callable[[object], Any]] = {
    "log_level": lambda raw: str(raw).strip().lower(),
}

# What a TOML value of each field type may be, and how to say so.
_TOML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "int | None": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "tuple[str, ...]": ((str, list), "a string or a list of strings"),
    "tuple[Header, ...]": ((list, dict), "a list of 'Name: value' strings or a table"),
}
_TOML_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a table",
}


def check_toml_type(name: str, raw: object, source: str) -> None:
    """Reject a file value whose TOML type is wrong for the field, naming the fix."""
    kind = field_type(name)
    allowed, wanted = _TOML_TYPES.get(kind, ((str,), "a string"))
    ok = isinstance(raw, allowed) and not (isinstance(raw, bool) and bool not in allowed)
    if ok and isinstance(raw, list):
        ok = all(isinstance(item, str) for item in raw)
    if ok and isinstance(raw, dict):
        ok = all(isinstance(value, str) for value in raw.values())
    if not ok:
        got = _TOML_NAMES.get(type(raw), type(raw).__name__)
        raise ConfigError(
            f"{source}: {name} must be {wanted}, not {got} ({raw!r}){_hint(name, raw)}"
        )


def _hint(name: str, raw: object) -> str:
    """``; write workers = 3`` when a quoted value would be right without the quotes."""
    if not isinstance(raw, str):
        return ""
    try:
        parse_field(name, raw, "")
    except ConfigError:
        return ""
    text = raw.strip()
    shown = text.lower() if text.lower() in {"true", "false"} else text
    return f"; write {name} = {shown}"


def parse_field(name: str, raw: object, source: str) -> Any:
    """Coerce one raw value to the field's type, or raise a ``ConfigError`` naming the source."""
    parser = _FIELD_PARSERS.get(name) or _PARSERS[field_type(name)]
    try:
        return parser(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid value {raw!r} for {name} ({exc})") from None


def flag_source(name: str) -> str:
    """How an error names a value that came from the command line."""
    return field_flag(name)
