"""Options that change how corral serves: config sources, Unix sockets, TLS, access logs."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, CorralProcess


def test_config_file_and_environment_reach_the_supervisor(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    (tmp_path / "corral.toml").write_text('workers = 3\nmax-restarts = 7\nmode = "thread"\n')
    server = corral("--app-dir", str(ROOT), cwd=tmp_path, env={"CORRAL_MAX_RESTARTS": "9"})
    server.wait_ready(3)
    listening = next(r for r in server.records if r.get("event") == "corral listening")
    assert listening["config_file"] == str(tmp_path / "corral.toml")
    assert listening["workers"] == 3
    assert server.events("supervisor_start")[0]["mode"] == "thread"
    server.crash_slot("thread", 0)
    respawn = server.wait_event("respawn")[0]
    assert respawn["budget_remaining"] == 8, "CORRAL_MAX_RESTARTS=9 beat the file's 7"


def test_environment_beats_file_and_flags_beat_environment(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    (tmp_path / "corral.toml").write_text("workers = 1\n")
    server = corral(
        "--app-dir", str(ROOT), "--workers", "3", cwd=tmp_path, env={"CORRAL_WORKERS": "2"}
    )
    server.wait_ready(3)
    assert len(server.events("spawn")) == 3


def test_serves_on_a_unix_socket(
    corral: Callable[..., CorralProcess], mode: str, tmp_path: Path
) -> None:
    path = tmp_path / "app.sock"
    server = corral("--workers", "2", "--mode", mode, "--uds", str(path), port=False)
    server.wait_event("ready", count=2)
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://corral") as client:
        assert client.get("/").status_code == 200
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert not path.exists(), "the socket file is removed on shutdown"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_serves_tls(
    corral: Callable[..., CorralProcess], mode: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = corral(
        "--workers", "2", "--mode", mode, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)
    )
    server.wait_ready(2)
    assert server.base_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    reply = httpx.get(server.base_url + "/", verify=context, timeout=10)
    assert reply.status_code == 200


def test_access_log_is_off_by_default_and_structured_when_on(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    quiet = corral("--mode", mode)
    quiet.wait_ready(1)
    quiet.get("/")
    loud = corral("--mode", mode, "--access-log")
    loud.wait_ready(1)
    loud.get("/?x=1")
    line = loud.wait_for(lambda r: r.get("event") == "access")[0]
    assert line["method"] == "GET"
    assert line["path"] == "/?x=1"
    assert line["status"] == 200
    assert line["worker_slot"] == 0
    assert not [r for r in quiet.records if r.get("event") == "access"]


def test_console_log_format_is_for_humans(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--log-format", "console", "--mode", "thread")
    assert "generation=1" in server.wait_line(" ready ", timeout=20)
    assert server.records == [], "console lines are not JSON"
    assert any("supervisor_start" in line for line in server.lines)
    assert not any("monotonic=" in line for line in server.lines), "machine-only fields dropped"
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait_exit(30) == 0
