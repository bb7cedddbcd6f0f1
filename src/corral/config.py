"""Every setting corral has, in one frozen, validated dataclass.

``ServerConfig`` is the single source of truth: each field carries its help
text, and the CLI builds its flags from these fields, so a setting is
documented once and reaches the CLI, the environment (``CORRAL_<NAME>``) and
the config file (``[tool.corral]`` in ``pyproject.toml``, or ``corral.toml``)
alike. Precedence, highest first: CLI flag, environment, file, the
variables uvicorn and gunicorn users already set (``WEB_CONCURRENCY``,
``FORWARDED_ALLOW_IPS``), default. Reading those sources lives in
``config_sources``; turning raw values into typed ones in ``config_values``.
"""

from __future__ import annotations

import importlib
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

__all__ = [
    "DEFAULT_FORWARDED_ALLOW_IPS",
    "FIELD_NAMES",
    "LOG_LEVELS",
    "CertRequirement",
    "ExhaustedAction",
    "Header",
    "HttpImpl",
    "HungThreadAction",
    "Interface",
    "Lifespan",
    "LogFormat",
    "LoopImpl",
    "ServerConfig",
    "WebSocketLibrary",
    "field_default",
    "field_flag",
    "field_help",
    "field_repeats",
    "field_type",
]

from corral.config_checks import validate_serving, validate_tls
from corral.config_choices import (
    CertRequirement,
    ExhaustedAction,
    HttpImpl,
    HungThreadAction,
    Interface,
    Lifespan,
    LogFormat,
    LoopImpl,
    WebSocketLibrary,
)
from corral.errors import ConfigError
from corral.runtime import WorkerMode

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# uvicorn's default for --forwarded-allow-ips when $FORWARDED_ALLOW_IPS is unset.
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")
Header = tuple[str, str]


def _doc(text: str, *, flag_name: str | None = None, repeat: bool = False) -> dict[str, Any]:
    """Field metadata: help text, the flag's name if it is not the field's (``headers``
    is ``--header``, as in uvicorn), and whether the flag repeats. Every field is a flag."""
    return {"help": text, "flag": flag_name, "repeat": repeat}


# Spares are whole workers kept warm: more than a handful only costs memory.
MAX_SPARES = 16


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
    spares: int = field(
        default=0,
        metadata=_doc(
            "Warm spare workers: booted through lifespan startup but not accepting, each "
            "taking a slot at once when a worker dies, hangs or is replaced; 0: none."
        ),
    )
    max_requests: int = field(
        default=0,
        metadata=_doc("Replace a worker, rolling, after it served this many requests; 0: never."),
    )
    max_requests_jitter: int = field(
        default=0,
        metadata=_doc("Add a random 0..N to --max-requests per worker, so they recycle apart."),
    )
    log_format: LogFormat = field(
        default=LogFormat.AUTO,
        metadata=_doc("auto (console when stderr is a terminal, else json), json or console."),
    )
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
    # repr=False: like the metrics token, a key password must never reach a log line.
    ssl_keyfile_password: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Password of an encrypted --ssl-keyfile. Prefer CORRAL_SSL_KEYFILE_PASSWORD: "
            "flags show up in ps."
        ),
    )
    ssl_ca_certs: str | None = field(
        default=None, metadata=_doc("CA bundle (PEM) that client certificates are checked against.")
    )
    ssl_cert_reqs: CertRequirement = field(
        default=CertRequirement.NONE,
        metadata=_doc(
            "Client certificates: none, optional or required (uvicorn's 0, 1, 2 also work)."
        ),
    )
    ssl_ciphers: str | None = field(
        default=None, metadata=_doc("OpenSSL cipher list for the app port. Default: OpenSSL's.")
    )
    fd: int | None = field(
        default=None,
        metadata=_doc("Serve on the listening socket inherited as this file descriptor."),
    )
    # --- How requests are served (uvicorn's options, uvicorn's spelling) ----
    proxy_headers: bool = field(
        default=True,
        metadata=_doc(
            "Trust X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips "
            "for the client address and scheme."
        ),
    )
    forwarded_allow_ips: tuple[str, ...] = field(
        default=DEFAULT_FORWARDED_ALLOW_IPS,
        metadata=_doc(
            "Comma-separated addresses or networks (or *) whose proxy headers are trusted. "
            "Default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1."
        ),
    )
    root_path: str = field(
        default="", metadata=_doc("ASGI root_path: the prefix a proxy mounts the app under.")
    )
    factory: bool = field(
        default=False,
        metadata=_doc("APP names a callable with no arguments that returns the ASGI app."),
    )
    limit_concurrency: int | None = field(
        default=None,
        metadata=_doc(
            "Answer 503 once a worker has this many connections or tasks. Default: no limit."
        ),
    )
    h11_max_incomplete_event_size: int | None = field(
        default=None,
        metadata=_doc("Largest request head in bytes under --http h11. Default: h11's 16 KiB."),
    )
    headers: tuple[Header, ...] = field(
        default=(),
        metadata=_doc("Add 'Name: value' to every response; repeat for more.", flag_name="header"),
    )
    server_header: bool = field(default=True, metadata=_doc("Send 'server: uvicorn'."))
    date_header: bool = field(default=True, metadata=_doc("Send a 'date' header."))
    http: HttpImpl = field(
        default=HttpImpl.AUTO, metadata=_doc("HTTP implementation: auto, h11 or httptools.")
    )
    loop: LoopImpl = field(
        default=LoopImpl.AUTO, metadata=_doc("Event loop: auto, asyncio or uvloop.")
    )
    env_file: str | None = field(
        default=None,
        metadata=_doc(
            "Load environment variables from this dotenv file before reading CORRAL_* "
            "variables; variables already set win."
        ),
    )
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

    # --- Development -------------------------------------------------------------
    reload: bool = field(
        default=False,
        metadata=_doc("Development: when source files change, check the app imports, then roll."),
    )
    reload_dir: tuple[str, ...] = field(
        default=(".",),
        metadata=_doc("Directory --reload watches; repeatable.", repeat=True),
    )
    reload_include: tuple[str, ...] = field(
        default=(),
        metadata=_doc("Glob of files --reload watches besides *.py; repeatable.", repeat=True),
    )
    reload_exclude: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Glob or directory --reload ignores besides .*, *.py[cod], *~; repeatable.",
            repeat=True,
        ),
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
    if not 0 <= cfg.spares <= MAX_SPARES:
        raise ConfigError(
            f"spares must be 0-{MAX_SPARES} (got {cfg.spares}); each spare is a whole warm worker"
        )
    if cfg.max_requests < 0 or cfg.max_requests_jitter < 0:
        raise ConfigError("max_requests and max_requests_jitter must be 0 (off) or more")
    if cfg.max_requests_jitter and not cfg.max_requests:
        raise ConfigError("--max-requests-jitter needs --max-requests; set both or neither")
    validate_tls(cfg)
    validate_serving(cfg)
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


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ServerConfig))


def _spec(name: str) -> Any:
    return next(f for f in fields(ServerConfig) if f.name == name)


def field_default(name: str) -> Any:
    """The default of a field, for help texts."""
    spec = _spec(name)
    return None if spec.default is MISSING else spec.default


def field_type(name: str) -> str:
    return str(_spec(name).type)


def field_repeats(name: str) -> bool:
    """Whether the field's flag may be given more than once (a tuple field)."""
    return bool(_spec(name).metadata.get("repeat"))


def field_help(name: str) -> str:
    return str(_spec(name).metadata["help"])


def field_flag(name: str) -> str:
    """The CLI flag of a field: ``--max-restarts``, or ``--header`` for ``headers``."""
    return "--" + (_spec(name).metadata.get("flag") or name).replace("_", "-")


_MOVED = {
    "CONFIG_FILE_NAMES": "corral.config_sources",
    "ENV_PREFIX": "corral.config_sources",
    "LoadedConfig": "corral.config_sources",
    "find_config_file": "corral.config_sources",
    "load_config": "corral.config_sources",
    "read_config_file": "corral.config_sources",
    "read_environment": "corral.config_sources",
    "parse_field": "corral.config_values",
}


def __getattr__(name: str) -> Any:
    """Names that moved to ``config_sources``/``config_values`` still import from here.

    Looked up lazily: those modules import this one, so importing them at the
    top would be a cycle.
    """
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
