"""The ``uvicorn.Config`` a worker serves with, built from corral's ``ServerConfig``.

One place maps corral's settings to uvicorn's, so both worker modes get the
same ones. corral passes every value explicitly, ``forwarded_allow_ips``
included: left unset, uvicorn would read ``$FORWARDED_ALLOW_IPS`` inside each
worker, and which addresses are trusted would depend on the worker's
environment rather than on the configuration corral logged at start-up.
"""

from __future__ import annotations

import ssl

import uvicorn

from corral.appload import ASGIApp
from corral.config import ServerConfig
from corral.http_protocol import with_fresh_connection_grace


def build_uvicorn_config(
    cfg: ServerConfig, app: ASGIApp, ssl_context: ssl.SSLContext | None = None
) -> uvicorn.Config:
    """A loaded ``uvicorn.Config`` for ``app``; its HTTP protocol keeps fresh connections
    through a drain (``http_protocol``), whichever of h11 and httptools it is."""
    uv_config = uvicorn.Config(
        app,
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
    uv_config.http_protocol_class = with_fresh_connection_grace(uv_config.http_protocol_class)
    if ssl_context is not None:
        uv_config.ssl = ssl_context
    return uv_config
