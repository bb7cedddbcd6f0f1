"""The ``corral`` command line: ``corral run``, ``corral check`` and ``corral status``.

Flags are generated from ``ServerConfig``'s fields, so every setting has
exactly one name, one default and one help text. This is the one place where
``CorralError`` becomes an exit code and a single line on stderr.
"""

from __future__ import annotations

import enum
import os
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

import click
import structlog

from corral import __version__
from corral.appload import ASGIApp, load_app
from corral.cli_status import status
from corral.config import (
    CertRequirement,
    ExhaustedAction,
    HttpImpl,
    HungThreadAction,
    Lifespan,
    LogFormat,
    LoopImpl,
    ServerConfig,
    field_default,
    field_flag,
    field_help,
    field_repeats,
    field_type,
)
from corral.config_choices import Interface, WebSocketLibrary
from corral.config_sources import LoadedConfig, describe_unknown_variable, load_config
from corral.errors import AppImportError, CorralError, ExitCode
from corral.interface import InterfaceDecision, decide_interface
from corral.listeners import close_listeners, create_listeners, describe, load_tls
from corral.logs import configure_logging
from corral.observability import Observability
from corral.reloader import Reloader
from corral.runtime import WorkerMode, decide_mode
from corral.sdnotify import SystemdNotifier
from corral.supervisor import Supervisor
from corral.watch import WatchSpec
from corral.websocket import WebSocketSupport, require_support

_CHOICES: dict[str, list[str]] = {
    "WorkerMode | None": ["auto", *(m.value for m in WorkerMode)],
    "ExhaustedAction": [a.value for a in ExhaustedAction],
    "LogFormat": [f.value for f in LogFormat],
    "HungThreadAction": [a.value for a in HungThreadAction],
    "Lifespan": [x.value for x in Lifespan],
    "HttpImpl": [x.value for x in HttpImpl],
    "LoopImpl": [x.value for x in LoopImpl],
    "CertRequirement": [x.value for x in CertRequirement] + ["0", "1", "2"],
    "Interface": [x.value for x in Interface],
    "WebSocketLibrary": [x.value for x in WebSocketLibrary],
}
_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "str | None": str,
    "int | None": int,
    "tuple[str, ...]": str,  # comma-separated, as uvicorn spells --forwarded-allow-ips
}


def _shown_default(name: str) -> str:
    default = field_default(name)
    if isinstance(default, enum.Enum):
        return str(default.value)
    if default is None:
        return "auto" if name == "mode" else "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default) or "none"
    return str(default)


def _config_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option for one ``ServerConfig`` field. Its default stays ``None`` so that
    an unset flag lets the environment and the config file through."""
    flag = field_flag(name)
    help_text = f"{field_help(name)}  [default: {_shown_default(name)}]"
    kind = field_type(name)
    if kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if kind == "tuple[Header, ...]":
        return click.option(flag, name, multiple=True, metavar="'NAME: VALUE'", help=help_text)
    if field_repeats(name):
        return click.option(flag, name, multiple=True, help=help_text)
    click_type = click.Choice(_CHOICES[kind]) if kind in _CHOICES else _TYPES[kind]
    return click.option(flag, name, type=click_type, default=None, help=help_text)


def _with_config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(fields(ServerConfig)):
        command = _config_option(spec.name)(command)
    return command


def _fail(error: CorralError) -> NoReturn:
    if isinstance(error, AppImportError) and error.traceback:
        click.echo(error.traceback, err=True, nl=False)  # the app's own frames, not corral's
    click.echo(f"corral: error: {error}", err=True)
    sys.exit(int(error.exit_code))


def _add_app_dir(app_dir: str) -> None:
    resolved = str(Path(app_dir).resolve())
    if resolved not in sys.path:
        sys.path.insert(0, resolved)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """corral: an observability-first worker supervisor for ASGI apps."""


cli.add_command(status)


_config_file_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with a [tool.corral] table.  [default: ./corral.toml or ./pyproject.toml]",
)


@cli.command()
@click.argument("app_path", metavar="APP")
@_config_file_option
@click.option("--app-dir", default=".", show_default=True, help="Directory to import APP from.")
@_with_config_options
def run(app_path: str, config_file: Path | None, app_dir: str, **values: Any) -> None:
    """Serve APP ('module:attribute') on supervised workers."""
    try:
        loaded = load_config(values, config_path=config_file)
    except CorralError as exc:
        _fail(exc)
    os.environ.update(loaded.env_from_file)  # before the app, OTel and workers see it
    sys.exit(int(_serve(app_path, app_dir, loaded)))


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Everything checked and built before a socket is bound or a worker started."""

    app: ASGIApp
    interface: InterfaceDecision
    websockets: WebSocketSupport
    tls: ssl.SSLContext | None
    watching: WatchSpec | None
    observability: Observability


def _serve(app_path: str, app_dir: str, loaded: LoadedConfig) -> ExitCode:
    config = loaded.config
    configure_logging(config.log_format, config.log_level, access_log=config.access_log)
    log = structlog.get_logger("corral")
    for name in loaded.unknown_env:
        log.warning(
            "unknown environment variable ignored",
            variable=name,
            hint=describe_unknown_variable(name),
        )
    _add_app_dir(app_dir)
    prepared = _prepare(app_path, config)
    sockets, supervisor = _start(app_path, config, prepared)
    _log_listening(log, loaded, prepared, sockets, supervisor)
    prepared.observability.start()
    watching = prepared.watching
    reloader = (
        Reloader(supervisor, watching, app_path, app_dir, factory=loaded.config.factory)
        if watching
        else None
    )
    try:
        if reloader:
            reloader.start()
        return supervisor.run(sockets)
    finally:
        if reloader:
            reloader.stop()
        prepared.observability.close()


def _prepare(app_path: str, config: ServerConfig) -> _Prepared:
    """Fail fast, with one line and its exit code, on anything the user can fix."""
    try:
        watching = _watch_spec(config)  # a missing --reload-dir fails before anything starts
        app = load_app(app_path, factory=config.factory)
        interface = decide_interface(app, config.interface)
        websockets = require_support(config.ws)
        tls = load_tls(config)
        observability = Observability(config, os.environ)
    except CorralError as exc:
        _fail(exc)
    return _Prepared(app, interface, websockets, tls, watching, observability)


def _start(
    app_path: str, config: ServerConfig, prepared: _Prepared
) -> tuple[list[socket.socket], Supervisor]:
    """Bind the listeners and build the supervisor; on failure, release both and exit."""
    observability = prepared.observability
    sockets: list[socket.socket] = []
    try:
        sockets = create_listeners(config)
        supervisor = Supervisor(
            config,
            prepared.app,
            lifecycle_collector=observability.collector,
            app_path=app_path,
            request_stats=observability.request_stats,
            notifier=SystemdNotifier.from_environ(os.environ),
        )
        observability.attach(supervisor)
    except CorralError as exc:
        close_listeners(sockets)
        observability.close()
        _fail(exc)
    return sockets, supervisor


def _log_listening(
    log: Any,
    loaded: LoadedConfig,
    prepared: _Prepared,
    sockets: list[socket.socket],
    supervisor: Supervisor,
) -> None:
    config = loaded.config
    side_port = prepared.observability.side_port
    request_stats = prepared.observability.request_stats
    interface = prepared.interface.interface
    log.info(
        "corral listening",
        urls=[describe(sock, tls=prepared.tls is not None) for sock in sockets],
        metrics_url=side_port.url if side_port else None,
        workers=config.workers,
        mode=supervisor.mode.value,
        mode_reason=supervisor.mode_decision.reason,
        interface=interface.value,
        websockets=_websockets_line(interface, prepared.websockets),
        config_file=str(loaded.file) if loaded.file else None,
        env_file=config.env_file,
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=list(config.forwarded_allow_ips) if config.proxy_headers else None,
        request_stats_dir=str(request_stats.directory) if request_stats else None,
        version=__version__,
    )


def _watch_spec(config: ServerConfig) -> WatchSpec | None:
    """What ``--reload`` watches, checked before anything starts; ``None`` without it."""
    if config.reload:
        return WatchSpec.build(
            config.reload_dir, config.reload_include, config.reload_exclude, Path.cwd()
        )
    unused = config.reload_dir != field_default("reload_dir") or bool(
        config.reload_include or config.reload_exclude
    )
    if unused:
        structlog.get_logger("corral").warning(
            "--reload-dir, --reload-include and --reload-exclude do nothing without --reload"
        )
    return None


@cli.command()
@click.argument("app_path", metavar="APP")
@_config_file_option
@click.option("--app-dir", default=".", show_default=True, help="Directory to import APP from.")
@_config_option("mode")
@_config_option("factory")
@_config_option("env_file")
@_config_option("log_level")
@_config_option("interface")
@_config_option("ws")
def check(app_path: str, config_file: Path | None, app_dir: str, **values: Any) -> None:
    """Validate the configuration, import APP, and say which worker mode corral would use."""
    try:
        loaded = load_config(values, config_path=config_file)
    except CorralError as exc:
        _fail(exc)
    # What the app logs while it is imported shows as it would under `corral run`.
    configure_logging(loaded.config.log_format, loaded.config.log_level)
    os.environ.update(loaded.env_from_file)
    for name in loaded.unknown_env:
        click.echo(
            f"corral: warning: unknown environment variable {describe_unknown_variable(name)}"
            " ignored",
            err=True,
        )
    _add_app_dir(app_dir)
    config = loaded.config
    try:
        app = load_app(app_path, factory=loaded.config.factory)
        websockets = require_support(config.ws)
    except CorralError as exc:
        _fail(exc)
    decision = decide_mode(config.mode)
    interface = decide_interface(app, config.interface)
    click.echo(f"app:    {app_path} ({type(app).__name__})")
    click.echo(f"interface: {interface.interface.value} ({interface.reason})")
    click.echo(f"websockets: {_websockets_line(interface.interface, websockets)}")
    click.echo(f"mode:   {decision.mode.value} ({decision.reason})")
    click.echo(
        f"python: {sys.version.split()[0]}"
        f" (free-threaded build: {_yes(decision.free_threaded_build)},"
        f" GIL enabled now: {_yes(decision.gil_enabled)})"
    )
    source = str(loaded.file) if loaded.file else "defaults, flags and CORRAL_* variables"
    click.echo(f"config: {source}; {config.workers} worker(s)")


def _websockets_line(interface: Interface, support: WebSocketSupport) -> str:
    if interface is Interface.WSGI:
        return "off: a WSGI app has no WebSockets"
    if support.library is None:
        return support.note
    return f"{support.library} {support.version} ({support.note})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="corral")
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over signals
        sys.exit(130)
