"""``build_uvicorn_config``: corral's settings reach uvicorn, and the drain-aware
protocol subclass wraps whichever HTTP implementation was asked for."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral.config import HttpImpl, ServerConfig
from corral.uvicorn_config import build_uvicorn_config


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """Never called."""


@pytest.mark.parametrize("http", [HttpImpl.H11, HttpImpl.HTTPTOOLS])
def test_drain_subclass_wraps_the_chosen_protocol(http: HttpImpl) -> None:
    if http is HttpImpl.HTTPTOOLS:
        pytest.importorskip("httptools")
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

        base: type = HttpToolsProtocol
    else:
        base = H11Protocol
    uv = build_uvicorn_config(ServerConfig(http=http), _app).config
    assert uv.http_protocol_class.__name__ == f"FreshConnectionGrace{base.__name__}"
    assert issubclass(uv.http_protocol_class, base)


def test_settings_reach_uvicorn() -> None:
    cfg = ServerConfig(
        root_path="/api",
        limit_concurrency=7,
        headers=(("X-A", "1"),),
        server_header=False,
        forwarded_allow_ips=("10.0.0.0/8",),
        h11_max_incomplete_event_size=2048,
    )
    uv = build_uvicorn_config(cfg, _app).config
    assert uv.root_path == "/api"
    assert uv.limit_concurrency == 7
    assert uv.encoded_headers == [(b"x-a", b"1")]
    assert uv.forwarded_allow_ips == ["10.0.0.0/8"]
    assert uv.h11_max_incomplete_event_size == 2048


def test_explicit_allow_ips_ignore_the_workers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    uv = build_uvicorn_config(ServerConfig(), _app).config
    assert uv.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert not isinstance(uv.ssl, ssl.SSLContext)
