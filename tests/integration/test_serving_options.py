"""uvicorn's serving options under corral, in both worker modes, seen from a client.

Each test starts a real corral on loopback and looks only at what the app and
its clients see: the ASGI scope, the response headers, the TLS handshake, the
socket it serves on.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.errors import ExitCode
from tests.conftest import CorralProcess, eventually, run_cli

pytestmark = pytest.mark.integration

APP = "tests.integration.scope_app:app"


def scope_of(server: CorralProcess, path: str = "/") -> dict[str, Any]:
    reply = server.get(path)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_root_path_reaches_the_scope(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral("--mode", mode, "--root-path", "/api", app=APP)
    server.wait_ready(1)
    seen = scope_of(server, "/items")
    assert (seen["root_path"], seen["path"]) == ("/api", "/api/items")


def test_factory_is_called_in_each_worker(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral(
        "--mode", mode, "--workers", "2", "--factory", app="tests.integration.scope_app:create_app"
    )
    server.wait_ready(2)
    seen = scope_of(server)
    assert seen["built_by_factory"] is True
    # Process workers import the app and call the factory themselves, once each.
    assert seen["factory_calls_here"] == 1
    if mode == "process":
        assert seen["pid"] in server.live_pids().values()
    else:
        assert seen["pid"] == server.pid


def test_check_calls_the_factory() -> None:
    ok = run_cli("check", "tests.integration.scope_app:create_app", "--factory")
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert "(function)" in ok.stdout
    broken = run_cli("check", "tests.integration.scope_app:broken_factory", "--factory")
    assert broken.returncode == ExitCode.APP_IMPORT
    assert "no database configured" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_limit_concurrency_answers_503(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral("--mode", mode, "--limit-concurrency", "2", app=APP)
    server.wait_ready(1)
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    busy = socket.create_connection((host, int(port)), timeout=10)
    try:
        busy.sendall(b"GET /slow?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses: list[int] = []

        def refused() -> bool:
            statuses.append(server.get("/").status_code)
            return statuses[-1] == 503

        eventually(refused, timeout=10, what="a 503 while the slow request holds a slot")
        first = busy.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first
    finally:
        busy.close()
    eventually(lambda: server.get("/").status_code == 200, what="200 once the slot is free")


def test_custom_headers_and_header_toggles(corral: Callable[..., CorralProcess], mode: str) -> None:
    plain = corral("--mode", mode, app=APP)
    plain.wait_ready(1)
    reply = plain.get("/")
    assert reply.headers["server"] == "uvicorn"
    assert "date" in reply.headers
    server = corral(
        "--mode",
        mode,
        "--header",
        "X-Team: blue",
        "--header",
        "Cache-Control: no-store, private",
        "--no-server-header",
        "--no-date-header",
        app=APP,
    )
    server.wait_ready(1)
    reply = server.get("/")
    assert reply.headers["x-team"] == "blue"
    assert reply.headers["cache-control"] == "no-store, private"
    assert "server" not in reply.headers
    assert "date" not in reply.headers


def _big_header_request(server: CorralProcess, *, finish: bool) -> bytes:
    """A 4 KB header, first without the blank line that ends the head: h11 must refuse
    that incomplete head on its own; httptools waits for the rest and answers."""
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"y" * 4000)
        if finish:
            time.sleep(0.3)  # not a timing assertion: only so the head arrives in two reads
            sock.sendall(b"\r\n\r\n")
        return sock.recv(64)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_http_implementation_is_the_one_asked_for(
    corral: Callable[..., CorralProcess], mode: str, http: str
) -> None:
    """Only h11 honours --h11-max-incomplete-event-size: a 4 KB header over a 1 KB limit
    is refused by h11 and served by httptools, so the answer shows which one ran."""
    server = corral(
        "--mode", mode, "--http", http, "--h11-max-incomplete-event-size", "1024", app=APP
    )
    server.wait_ready(1)
    assert server.get("/").status_code == 200
    if http == "h11":
        assert _big_header_request(server, finish=False).startswith(b"HTTP/1.1 400")
    else:
        assert _big_header_request(server, finish=True).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("loop", "module"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_event_loop_is_the_one_asked_for(
    corral: Callable[..., CorralProcess], mode: str, loop: str, module: str
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed on this interpreter")
    server = corral("--mode", mode, "--loop", loop, app=APP)
    server.wait_ready(1)
    assert scope_of(server)["loop"].split(".")[0] == module


# --- TLS with client certificates ------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server key (encrypted) and certificate, and a client certificate it signed.

    With the extensions Python 3.13's ``VERIFY_X509_STRICT`` (on in
    ``create_default_context``) insists on: ``keyUsage`` on the CA, and an
    authority key identifier on what it issues.
    """
    d = tmp_path_factory.mktemp("pki")
    files = {n: d / f"{n}.pem" for n in ("ca", "ca_key", "server", "server_key", "client")}
    files["client_key"] = d / "client_key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))  # fmt: skip
    leaf = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    for name, subject, extra in (
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "/CN=client", ""),
    ):
        key, csr, ext = files[f"{name}_key"], d / f"{name}.csr", d / f"{name}.ext"
        ext.write_text(leaf + extra)
        secret = ["-passout", "pass:s3cret"] if name == "server" else ["-nodes"]
        _openssl("req", "-new", "-newkey", "rsa:2048", *secret, "-subj", subject,
                 "-keyout", str(key), "-out", str(csr))  # fmt: skip
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey",
                 str(files["ca_key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext),
                 "-out", str(files[name]))  # fmt: skip
    return files


def test_tls_requires_a_client_certificate(
    corral: Callable[..., CorralProcess], mode: str, pki: dict[str, Path]
) -> None:
    server = corral(
        "--mode", mode,
        "--ssl-certfile", str(pki["server"]), "--ssl-keyfile", str(pki["server_key"]),
        "--ssl-ca-certs", str(pki["ca"]), "--ssl-cert-reqs", "required",
        app=APP,
        env={"CORRAL_SSL_KEYFILE_PASSWORD": "s3cret"},
    )  # fmt: skip
    server.wait_ready(1)
    anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.base_url + "/", verify=anonymous, timeout=10).raise_for_status()
    known = ssl.create_default_context(cafile=str(pki["ca"]))
    known.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
    reply = httpx.get(server.base_url + "/", verify=known, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["scheme"] == "https"
    assert not any("s3cret" in line for line in server.lines), "the key password was logged"


def test_wrong_key_password_fails_at_start_up(pki: dict[str, Path]) -> None:
    result = run_cli(
        "run", APP, "--port", "0",
        "--ssl-certfile", str(pki["server"]), "--ssl-keyfile", str(pki["server_key"]),
        env={"CORRAL_SSL_KEYFILE_PASSWORD": "wrong"},
    )  # fmt: skip
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "--ssl-keyfile-password" in result.stderr
    assert "wrong" not in result.stderr


# --- Inherited sockets -----------------------------------------------------------------


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.set_inheritable(True)
    yield sock
    sock.close()


def test_serves_on_an_inherited_fd(
    corral: Callable[..., CorralProcess], mode: str, tcp_listener: socket.socket
) -> None:
    fd = tcp_listener.fileno()
    port = tcp_listener.getsockname()[1]
    server = corral("--mode", mode, "--workers", "2", "--fd", str(fd), port=False, pass_fds=(fd,))
    server.wait_ready(2)
    assert server.base_url == f"http://127.0.0.1:{port}"
    assert server.get("/").status_code == 200
    server.crash_slot(mode, 0)
    server.wait_event("ready", slot=0, generation=2)
    assert server.get("/").status_code == 200, "the inherited socket outlives a worker"
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0


def test_an_inherited_unix_socket_path_is_left_alone(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    path = tmp_path / "given.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # bound, not listening: corral makes it listen
        sock.set_inheritable(True)
        fd = sock.fileno()
        server = corral("--fd", str(fd), app=APP, port=False, pass_fds=(fd,))
        server.wait_event("ready")
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            assert client.get("http://corral/").status_code == 200
        server.send(signal.SIGTERM)
        assert server.wait_exit(30) == 0
    assert path.exists(), "corral unlinked a socket path it did not create"


# Becomes the process systemd would start: descriptors from 3, LISTEN_PID its own pid.
_SOCKET_ACTIVATION = (
    "import os, sys\n"
    "fds = [int(fd) for fd in sys.argv[1].split(',')]\n"
    "for i, fd in enumerate(fds):\n"
    "    os.dup2(fd, 3 + i)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def test_systemd_socket_activation(corral: Callable[..., CorralProcess], mode: str) -> None:
    first = socket.create_server(("127.0.0.1", 0))
    second = socket.create_server(("127.0.0.1", 0))
    fds = (first.fileno(), second.fileno())
    try:
        launcher = [sys.executable, "-c", _SOCKET_ACTIVATION, ",".join(map(str, fds))]
        server = corral(
            "--mode", mode, "--workers", "2", app=APP, port=False, pass_fds=fds, launcher=launcher
        )
        server.wait_ready(2)
        listening = next(r for r in server.records if r.get("event") == "corral listening")
        ports = [sock.getsockname()[1] for sock in (first, second)]
        assert listening["urls"] == [f"http://127.0.0.1:{port}" for port in ports]
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        if mode == "process":
            worker = server.live_pids()[0]
            environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
            assert not any(item.startswith(b"LISTEN_") for item in environ)
    finally:
        first.close()
        second.close()


# --- Variables uvicorn users already set, and env files -------------------------------


def test_web_concurrency_sets_the_worker_count(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--mode", mode, app=APP, env={"WEB_CONCURRENCY": "3"})
    server.wait_ready(3)
    listening = next(r for r in server.records if r.get("event") == "corral listening")
    assert listening["workers"] == 3


def test_env_file_reaches_corral_and_the_app(
    corral: Callable[..., CorralProcess], mode: str, tmp_path: Path
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text('CORRAL_WORKERS=2\nAPP_GREETING="hello from the env file"\n')
    server = corral("--mode", mode, "--env-file", str(env_file), app=APP)
    server.wait_ready(2)
    assert scope_of(server)["greeting"] == "hello from the env file"
    assert os.environ.get("APP_GREETING") is None


def test_run_warns_about_a_misspelt_variable_with_a_suggestion(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral(app=APP, env={"CORRAL_WORKRES": "2", "CORRAL_STATUS_URL": "http://127.0.0.1:1"})
    server.wait_ready(1)
    warnings = [
        r for r in server.records if r.get("event") == "unknown environment variable ignored"
    ]
    assert [(w["variable"], w["hint"]) for w in warnings] == [
        ("CORRAL_WORKRES", "CORRAL_WORKRES (did you mean CORRAL_WORKERS?)")
    ]


def test_sighup_calls_the_factory_again(corral: Callable[..., CorralProcess], mode: str) -> None:
    """A rolling restart rebuilds the app through the factory, in both modes."""
    server = corral("--mode", mode, "--factory", app="tests.integration.scope_app:create_app")
    server.wait_ready(1)
    server.send(signal.SIGHUP)
    server.wait_event("drain_end", slot=0, generation=1)
    assert not [e for e in server.events("reload") if "failed" in e.get("message", "")]
    seen = scope_of(server)
    assert seen["built_by_factory"] is True
    if mode == "process":
        assert seen["pid"] == server.live_pids()[0], "served by the replacement"
