"""Proxy headers behind a real reverse proxy: Debian's nginx on loopback.

nginx runs in the foreground with its own config in a temporary directory.
The client connects to nginx from 127.0.0.2 (all of 127/8 is local on
Linux), so the address nginx forwards in X-Forwarded-For differs from the
address nginx itself connects to corral from (127.0.0.1). nginx also sends
``X-Forwarded-Proto: https``, as a TLS-terminating load balancer would.
Whether the app believes those headers depends on --forwarded-allow-ips.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.assets.tools import require
from tests.conftest import CorralProcess, eventually

pytestmark = pytest.mark.integration

APP = "tests.integration.scope_app:app"
CLIENT_ADDRESS = "127.0.0.2"

NGINX_CONF = """
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[Callable[[CorralProcess], str]]:
    """Starts nginx proxying to a ready corral; returns nginx's base URL."""
    binary = require("nginx", "nginx", "/usr/sbin/nginx")
    started: list[subprocess.Popen[bytes]] = []

    def start(server: CorralProcess) -> str:
        upstream = server.base_url.rsplit(":", 1)[1]
        port = _free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port, upstream=upstream))
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            try:
                return _via(url).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answers, what="nginx to answer")
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def _via(url: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(url + "/")


@pytest.mark.parametrize(
    "case",
    [
        ("127.0.0.1", CLIENT_ADDRESS, "https"),  # nginx is trusted: its headers count
        ("192.0.2.1", "127.0.0.1", "http"),  # someone else is: nginx's headers are ignored
    ],
)
def test_forwarded_headers_are_trusted_only_from_allowed_addresses(
    corral: Callable[..., CorralProcess],
    nginx_in_front: Callable[[CorralProcess], str],
    mode: str,
    case: tuple[str, str, str],
) -> None:
    allowed, client, scheme = case
    server = corral("--mode", mode, "--forwarded-allow-ips", allowed, app=APP)
    server.wait_ready(1)
    listening = next(r for r in server.records if r.get("event") == "corral listening")
    assert listening["forwarded_allow_ips"] == [allowed]
    seen = _via(nginx_in_front(server)).json()
    assert (seen["client"][0], seen["scheme"]) == (client, scheme)


def test_no_proxy_headers_ignores_even_a_trusted_proxy(
    corral: Callable[..., CorralProcess], nginx_in_front: Callable[[CorralProcess], str]
) -> None:
    server = corral("--no-proxy-headers", "--forwarded-allow-ips", "*", app=APP)
    server.wait_ready(1)
    seen = _via(nginx_in_front(server)).json()
    assert (seen["client"][0], seen["scheme"]) == ("127.0.0.1", "http")


def test_forwarded_allow_ips_comes_from_the_uvicorn_variable(
    corral: Callable[..., CorralProcess], nginx_in_front: Callable[[CorralProcess], str]
) -> None:
    server = corral(app=APP, env={"FORWARDED_ALLOW_IPS": "10.9.9.9"})
    server.wait_ready(1)
    seen = _via(nginx_in_front(server)).json()
    assert seen["client"][0] == "127.0.0.1", "only 10.9.9.9 is trusted"
