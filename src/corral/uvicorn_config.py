"""The ``uvicorn.Config`` a worker serves with, built from corral's ``ServerConfig``.

One place maps corral's settings to uvicorn's, so both worker modes get the
same ones. corral passes every value explicitly, ``forwarded_allow_ips``
included: left unset, uvicorn would read ``$FORWARDED_ALLOW_IPS`` inside each
worker, and which addresses are trusted would depend on the worker's
environment rather than on the configuration corral logged at start-up.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import uvicorn

from corral.appload import ASGIApp
from corral.config import ServerConfig
from corral.config_choices import Interface
from corral.http_protocol import with_fresh_connection_grace, with_request_metrics
from corral.interface import adapt, decide_interface
from corral.request_stats.recorder import RequestRecorder
from corral.websocket import with_going_away, with_websocket_metrics


class CorralUvicornConfig(uvicorn.Config):
    """uvicorn's config, carrying the hook corral's WebSocket protocol calls on drain."""

    on_websocket_going_away: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Serving:
    """What a worker serves with: the loaded config, and a WSGI adapter's thread pool."""

    config: CorralUvicornConfig
    wsgi_pool: Executor | None


def build_uvicorn_config(
    cfg: ServerConfig,
    app: ASGIApp,
    ssl_context: ssl.SSLContext | None = None,
    recorder: RequestRecorder | None = None,
) -> Serving:
    """A loaded uvicorn config for ``app`` (adapted to its interface: a WSGI app runs
    through a2wsgi). Its HTTP protocol keeps fresh connections through a drain
    (``http_protocol``), whichever of h11 and httptools it is, and its WebSocket
    protocol closes with 1001 on a drain (``websocket``). With a ``recorder``,
    both protocols count requests and WebSockets into its block, inside uvicorn's
    request handling: the app is served unwrapped."""
    decision = decide_interface(app, cfg.interface)
    served, uv_interface = adapt(app, decision.interface)
    uv_config = CorralUvicornConfig(
        served,
        interface=uv_interface,  # type: ignore[arg-type]
        ws=cfg.ws.value,
        ws_max_size=cfg.ws_max_size,
        ws_max_queue=cfg.ws_max_queue,
        ws_ping_interval=cfg.ws_ping_interval or None,
        ws_ping_timeout=cfg.ws_ping_timeout or None,
        ws_per_message_deflate=cfg.ws_per_message_deflate,
        lifespan=cfg.lifespan.value,
        log_config=None,
        access_log=cfg.access_log,
        backlog=cfg.backlog,
        timeout_keep_alive=cfg.timeout_keep_alive,
        timeout_graceful_shutdown=None,  # the supervisor owns the drain deadline
        http=cfg.http.value,
        loop=cfg.loop.value,
        proxy_headers=cfg.proxy_headers,
        forwarded_allow_ips=list(cfg.forwarded_allow_ips),
        root_path=cfg.root_path,
        limit_concurrency=cfg.limit_concurrency,
        h11_max_incomplete_event_size=cfg.h11_max_incomplete_event_size,
        headers=[(name, value) for name, value in cfg.headers],
        server_header=cfg.server_header,
        date_header=cfg.date_header,
        # corral has called a --factory already (appload), in this process.
        factory=False,
        ssl_certfile=cfg.ssl_certfile,
        ssl_keyfile=cfg.ssl_keyfile,
        ssl_keyfile_password=cfg.ssl_keyfile_password,
        ssl_ca_certs=cfg.ssl_ca_certs,
        ssl_cert_reqs=int(cfg.ssl_cert_reqs.verify_mode),
        ssl_ciphers=cfg.ssl_ciphers,
    )
    uv_config.load()
    _drain_aware_protocols(uv_config, decision.interface)
    if recorder is not None:
        _counting_protocols(uv_config, recorder)
    if ssl_context is not None:
        uv_config.ssl = ssl_context
    pool = getattr(served, "executor", None) if served is not app else None
    return Serving(uv_config, pool)


def _drain_aware_protocols(uv_config: uvicorn.Config, interface: Interface) -> None:
    """Swap in corral's subclasses of the protocol classes uvicorn chose."""
    uv_config.http_protocol_class = with_fresh_connection_grace(uv_config.http_protocol_class)
    if interface is Interface.WSGI:  # WSGI has no WebSockets: upgrades are HTTP
        uv_config.ws_protocol_class = None
    elif uv_config.ws_protocol_class is not None:
        uv_config.ws_protocol_class = with_going_away(uv_config.ws_protocol_class)


def _counting_protocols(uv_config: CorralUvicornConfig, recorder: RequestRecorder) -> None:
    """One more subclass of each, made for this worker: they write its block."""
    cells = recorder.cells
    uv_config.http_protocol_class = with_request_metrics(uv_config.http_protocol_class, cells)
    if uv_config.ws_protocol_class is not None:
        uv_config.ws_protocol_class = with_websocket_metrics(uv_config.ws_protocol_class, cells)
    uv_config.on_websocket_going_away = recorder.count_going_away
