"""Every setting corral has, in one frozen, validated dataclass.

``ServerConfig`` is the single source of truth: each field carries its help
text, and the CLI builds its flags from these fields, so a setting is
documented once and reaches the CLI, the environment (``CORRAL_<NAME>``) and
the config file (``[tool.corral]`` in ``pyproject.toml``, or ``corral.toml``)
alike. Precedence, highest first: CLI flag, environment, file, default.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from corral.errors import ConfigError
from corral.interface import Interface
from corral.runtime import WorkerMode
from corral.websocket import WebSocketLibrary

ENV_PREFIX = "CORRAL_"
CONFIG_FILE_NAMES = ("corral.toml", "pyproject.toml")


class ExhaustedAction(enum.Enum):
    """What happens when a worker slot runs out of restarts."""

    DEGRADE = "degrade"
    EXIT = "exit"


class HungThreadAction(enum.Enum):
    """What happens when a thread worker's event loop is hung: a thread cannot be killed."""

    EXIT = "exit"  # drain the healthy workers and exit, for the orchestrator to restart us
    IGNORE = "ignore"  # keep serving on the others; the slot comes back if the loop recovers


class LogFormat(enum.Enum):
    JSON = "json"
    CONSOLE = "console"


class Lifespan(enum.Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _doc(text: str, *, flag: bool = True) -> dict[str, Any]:
    return {"help": text, "cli": flag}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Validated settings; constructing one with a bad value raises ``ConfigError``."""

    host: str = field(default="127.0.0.1", metadata=_doc("Address to bind the app listener to."))
    port: int = field(default=8000, metadata=_doc("TCP port for the app; 0 picks a free one."))
    uds: str | None = field(default=None, metadata=_doc("Bind a Unix socket at this path instead."))
    workers: int = field(default=1, metadata=_doc("Number of worker slots."))
    mode: WorkerMode | None = field(
        default=None,
        metadata=_doc("Worker kind: thread or process. Default: threads when the GIL is off."),
    )
    max_restarts: int = field(
        default=5, metadata=_doc("Restarts allowed per slot within --restart-window.")
    )
    restart_window: float = field(
        default=60.0, metadata=_doc("Seconds over which a slot's restarts are counted.")
    )
    backoff_base: float = field(
        default=0.1, metadata=_doc("First backoff delay in seconds after back-to-back crashes.")
    )
    backoff_cap: float = field(default=10.0, metadata=_doc("Longest backoff delay in seconds."))
    shutdown_timeout: float = field(
        default=30.0, metadata=_doc("Seconds in-flight requests get to finish on shutdown.")
    )
    force_stop_grace: float = field(
        default=3.0,
        metadata=_doc("Seconds between SIGTERM and SIGKILL when force-stopping a process."),
    )
    on_exhausted: ExhaustedAction = field(
        default=ExhaustedAction.DEGRADE,
        metadata=_doc("When a slot runs out of restarts: degrade (serve on) or exit."),
    )
    worker_timeout: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds a worker may go without a sign of life (boot, or a blocked event loop) "
            "before it is declared hung; 0 disables the check."
        ),
    )
    on_hung_thread: HungThreadAction = field(
        default=HungThreadAction.EXIT,
        metadata=_doc("When a thread worker hangs: exit (drain the rest, exit 9) or ignore."),
    )
    max_requests: int = field(
        default=0,
        metadata=_doc("Replace a worker, rolling, after it served this many requests; 0: never."),
    )
    max_requests_jitter: int = field(
        default=0,
        metadata=_doc("Add a random 0..N to --max-requests per worker, so they recycle apart."),
    )
    log_format: LogFormat = field(default=LogFormat.JSON, metadata=_doc("json or console."))
    log_level: str = field(default="info", metadata=_doc("Log level: " + ", ".join(LOG_LEVELS)))
    access_log: bool = field(default=False, metadata=_doc("Log one structured line per request."))
    lifespan: Lifespan = field(
        default=Lifespan.AUTO, metadata=_doc("ASGI lifespan handling: auto, on or off.")
    )
    backlog: int = field(default=2048, metadata=_doc("Listen backlog of the app socket."))
    timeout_keep_alive: int = field(
        default=5, metadata=_doc("Seconds an idle keep-alive connection stays open.")
    )
    ssl_certfile: str | None = field(default=None, metadata=_doc("TLS certificate (PEM) path."))
    ssl_keyfile: str | None = field(default=None, metadata=_doc("TLS private key (PEM) path."))
    interface: Interface = field(
        default=Interface.AUTO,
        metadata=_doc("App interface: auto (detect), asgi3, asgi2 or wsgi (through a2wsgi)."),
    )
    # --- WebSockets (uvicorn's flags and defaults) ----------------------------
    ws: WebSocketLibrary = field(
        default=WebSocketLibrary.AUTO,
        metadata=_doc("WebSocket library: auto, none, websockets, websockets-sansio or wsproto."),
    )
    ws_max_size: int = field(
        default=16 * 1024 * 1024, metadata=_doc("Largest WebSocket message accepted, bytes.")
    )
    ws_max_queue: int = field(
        default=32, metadata=_doc("Incoming WebSocket messages buffered per connection.")
    )
    ws_ping_interval: float = field(
        default=20.0, metadata=_doc("Seconds between WebSocket pings; 0 sends none.")
    )
    ws_ping_timeout: float = field(
        default=20.0, metadata=_doc("Seconds to wait for a WebSocket pong; 0 waits forever.")
    )
    ws_per_message_deflate: bool = field(
        default=True, metadata=_doc("Offer the WebSocket permessage-deflate extension.")
    )
    # --- The side port: metrics, health, readiness, status -----------------
    metrics: bool = field(
        default=True,
        metadata=_doc("Serve the side port: /metrics, /healthz, /readyz, /workers, /events."),
    )
    metrics_host: str = field(
        default="127.0.0.1",
        metadata=_doc("Address of the side port. Keep it private unless it has auth."),
    )
    metrics_port: int = field(
        default=9180, metadata=_doc("TCP port of the side port; 0 picks a free one.")
    )
    # repr=False: the token must never reach a log line or a traceback.
    metrics_token: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Bearer token the side port requires. Prefer CORRAL_METRICS_TOKEN: flags show up in ps."
        ),
    )
    metrics_web_config: str | None = field(
        default=None,
        metadata=_doc(
            "Web config YAML for the side port (exporter-toolkit style): "
            "tls_server_config and basic_auth_users."
        ),
    )
    min_ready: int | None = field(
        default=None,
        metadata=_doc("Ready workers /readyz needs. Default: every slot that is not exhausted."),
    )
    request_metrics: bool = field(
        default=True,
        metadata=_doc("Count requests per worker slot (corral_http_* metrics)."),
    )

    def __post_init__(self) -> None:
        _validate(self)


def _validate(cfg: ServerConfig) -> None:
    """Reject values that would make supervision meaningless, naming the fix."""
    if cfg.workers <= 0:
        raise ConfigError(
            f"workers must be at least 1 (got {cfg.workers}); set --workers 1 or more"
        )
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port must be 0-65535 (got {cfg.port}); use 0 to pick a free port")
    if cfg.max_restarts < 0:
        raise ConfigError(f"max_restarts must be 0 or more (got {cfg.max_restarts})")
    for name in (
        "restart_window",
        "shutdown_timeout",
        "force_stop_grace",
        "backoff_base",
        "worker_timeout",
        "ws_ping_interval",
        "ws_ping_timeout",
    ):
        value = getattr(cfg, name)
        if value < 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name} must not be negative (got {value}); pass {flag} 0 or more")
    if cfg.restart_window == 0:
        raise ConfigError("restart_window must be positive; pass --restart-window 60, say")
    if cfg.backoff_cap < cfg.backoff_base:
        raise ConfigError("backoff_cap must be at least backoff_base; raise --backoff-cap")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level {cfg.log_level!r} is unknown; use one of {LOG_LEVELS}")
    if cfg.backlog <= 0 or cfg.timeout_keep_alive < 0:
        raise ConfigError("backlog must be positive and timeout_keep_alive not negative")
    if cfg.ws_max_size <= 0 or cfg.ws_max_queue <= 0:
        raise ConfigError("ws_max_size and ws_max_queue must be positive")
    if cfg.max_requests < 0 or cfg.max_requests_jitter < 0:
        raise ConfigError("max_requests and max_requests_jitter must be 0 (off) or more")
    if cfg.max_requests_jitter and not cfg.max_requests:
        raise ConfigError("--max-requests-jitter needs --max-requests; set both or neither")
    if (cfg.ssl_certfile is None) != (cfg.ssl_keyfile is None):
        raise ConfigError("TLS needs both --ssl-certfile and --ssl-keyfile")
    _validate_side_port(cfg)


def _validate_side_port(cfg: ServerConfig) -> None:
    if not 0 <= cfg.metrics_port <= 65535:
        raise ConfigError(
            f"metrics_port must be 0-65535 (got {cfg.metrics_port}); use 0 to pick a free port"
        )
    if cfg.metrics and cfg.port != 0 and cfg.port == cfg.metrics_port and cfg.uds is None:
        raise ConfigError(
            f"the app and the side port both want port {cfg.port}; pass a different --metrics-port"
        )
    if cfg.min_ready is not None and cfg.min_ready < 1:
        raise ConfigError(f"min_ready must be at least 1 (got {cfg.min_ready})")
    if cfg.metrics_token is not None and not cfg.metrics_token.strip():
        raise ConfigError("metrics_token is empty; set a real token or unset it")


# --- Turning raw values from any source into typed field values -----------


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


def _int(raw: object) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"not an integer: {raw!r}")
    return int(str(raw).strip()) if isinstance(raw, str) else int(raw)  # type: ignore[call-overload]


def _float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"not a number: {raw!r}")
    return float(raw)  # type: ignore[arg-type]


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
    "Interface": _enum_parser(Interface),
    "WebSocketLibrary": _enum_parser(WebSocketLibrary),
}

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ServerConfig))


def field_default(name: str) -> Any:
    """The default of a field, for help texts."""
    spec = next(f for f in fields(ServerConfig) if f.name == name)
    return None if spec.default is MISSING else spec.default


def field_type(name: str) -> str:
    spec = next(f for f in fields(ServerConfig) if f.name == name)
    return str(spec.type)


def field_help(name: str) -> str:
    spec = next(f for f in fields(ServerConfig) if f.name == name)
    return str(spec.metadata["help"])


# Fields whose plain ``str`` type needs normalising beyond what the type says.
_FIELD_PARSERS: dict[str, Callable[[object], Any]] = {
    "log_level": lambda raw: str(raw).strip().lower(),
}


def parse_field(name: str, raw: object, source: str) -> Any:
    """Coerce one raw value to the field's type, or raise a ``ConfigError`` naming the source."""
    parser = _FIELD_PARSERS.get(name) or _PARSERS[field_type(name)]
    try:
        return parser(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid value {raw!r} for {name} ({exc})") from None


# --- Sources ----------------------------------------------------------------


def _normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def read_config_file(path: Path) -> dict[str, object]:
    """Read ``[tool.corral]`` (or, in ``corral.toml``, the top level) from a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix the --config path") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("corral")
    if table is None and path.name != "pyproject.toml":
        table = {k: v for k, v in data.items() if k != "tool"}
    if not isinstance(table, dict):
        return {}
    values: dict[str, object] = {}
    for key, raw in table.items():
        name = _normalise_key(key)
        if name not in FIELD_NAMES:
            raise ConfigError(
                f"{path}: unknown config key {key!r}; valid keys are: {', '.join(FIELD_NAMES)}"
            )
        values[name] = parse_field(name, raw, str(path))
    return values


def find_config_file(cwd: Path) -> Path | None:
    """The first of ``corral.toml`` / ``pyproject.toml`` (with a corral table) in ``cwd``."""
    for name in CONFIG_FILE_NAMES:
        candidate = cwd / name
        if not candidate.is_file():
            continue
        if name == "pyproject.toml" and "[tool.corral]" not in candidate.read_text("utf-8"):
            continue
        return candidate
    return None


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """``CORRAL_<FIELD>`` values, plus the ``CORRAL_*`` names that match no field.

    Unknown names are returned rather than rejected: other tools may use the
    prefix, so the caller warns about them instead of refusing to start.
    """
    values: dict[str, object] = {}
    unknown: list[str] = []
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in FIELD_NAMES:
            values[name] = parse_field(name, raw, f"environment variable {key}")
        else:
            unknown.append(key)
    return values, unknown


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config plus where it came from, for the start-up log line."""

    config: ServerConfig
    file: Path | None
    unknown_env: tuple[str, ...]


def load_config(
    cli_values: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedConfig:
    """Merge file, environment and CLI values (later wins) into one ``ServerConfig``."""
    environ = os.environ if environ is None else environ
    path = config_path or find_config_file(cwd or Path.cwd())
    merged: dict[str, object] = read_config_file(path) if path else {}
    env_values, unknown = read_environment(environ)
    merged.update(env_values)
    for name, raw in cli_values.items():
        if raw is not None:
            merged[name] = parse_field(name, raw, f"--{name.replace('_', '-')}")
    return LoadedConfig(ServerConfig(**merged), path, tuple(unknown))  # type: ignore[arg-type]
