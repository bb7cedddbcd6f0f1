"""Auth and TLS on the side port: every path is guarded, failures are clean, errors say nothing.

Certificates come from tests/integration/test_side_port.py's helpers.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ROOT
from tests.integration.test_side_port import _make_cert, _trust
from tests.reliability.conftest import StartCorral
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

TOKEN = "reliability-token-0123456789"
PATHS = ("/metrics", "/healthz", "/readyz", "/workers", "/events", "/debug/traces", "/")
BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "none": {},
    "wrong token": {"authorization": "Bearer not-the-token"},
    "bare scheme": {"authorization": "Bearer"},
    "basic garbage": {"authorization": "Basic !!!not-base64"},
    "unknown scheme": {"authorization": f"Token {TOKEN}"},
    "8 KiB token": {"authorization": "Bearer " + "x" * 8192},
}


def _leaks(body: str) -> list[str]:
    """Internals an error body must never carry."""
    secrets = {
        "traceback": "Traceback",
        "source line": 'File "',
        "repository path": str(ROOT),
        "home directory": os.environ.get("HOME") or "/root",
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "token": TOKEN,
    }
    return [name for name, text in secrets.items() if text and text in body]


def test_wrong_or_absent_token_gets_401_everywhere(
    start_corral: StartCorral, mode: str, report: ScenarioReport
) -> None:
    """Side port auth: wrong or absent token on every path, and error bodies"""
    server = start_corral(mode, 1, env={"CORRAL_METRICS_TOKEN": TOKEN})
    statuses: dict[str, set[int]] = {}
    leaks: list[str] = []
    checked = 0
    for name, headers in BAD_CREDENTIALS.items():
        for path in PATHS:
            reply = server.side(path, headers=headers)
            statuses.setdefault(name, set()).add(reply.status_code)
            leaks += [f"{name} {path}: {leak}" for leak in _leaks(reply.text)]
            checked += 1
    good = {"authorization": f"Bearer {TOKEN}"}
    ok = {path: server.side(path, headers=good).status_code for path in PATHS}
    errors = {
        "404": server.side("/nope", headers=good),
        "405": httpx.post(server.metrics_url + "/metrics", headers=good, timeout=10),
        "400": server.side("/events?since=banana", headers=good),
    }
    for status, reply in errors.items():
        leaks += [f"{status}: {leak}" for leak in _leaks(reply.text)]
    report.faults = f"{len(BAD_CREDENTIALS)} bad credentials x {len(PATHS)} paths, 404/405/400"
    report.figures["requests checked"] = checked + len(PATHS) + len(errors)
    for name, seen in statuses.items():
        report.figures[f"status with {name}"] = ",".join(map(str, sorted(seen)))
    report.figures["internals leaked"] = len(leaks)
    assert all(seen == {401} for seen in statuses.values()), statuses
    assert set(ok.values()) == {200}, ok
    assert [reply.status_code for reply in errors.values()] == [404, 405, 400]
    assert not leaks, leaks
    assert not any("Traceback" in line for line in server.lines)
    assert not any(TOKEN in line for line in server.lines), "the token is never logged"


def test_plain_http_to_a_tls_side_port_fails_cleanly(
    start_corral: StartCorral, mode: str, report: ScenarioReport, tmp_path: Path
) -> None:
    """Side port TLS: plain HTTP to the TLS port, and a token over TLS"""
    cert, key = _make_cert(tmp_path, "server")
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    server = start_corral(
        mode, 1, "--metrics-web-config", str(config), env={"CORRAL_METRICS_TOKEN": TOKEN}
    )
    assert server.metrics_url.startswith("https://")
    trust = _trust(cert)
    good = {"authorization": f"Bearer {TOKEN}"}
    plain = server.metrics_url.replace("https://", "http://")
    failures: list[str] = []
    for _ in range(20):
        try:
            httpx.get(plain + "/metrics", timeout=10)
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)
    raw = _raw_plain_request(server.metrics_url)
    absent = server.side("/metrics", verify=trust)
    present = server.side("/metrics", verify=trust, headers=good)
    report.faults = "20 plain-HTTP requests and one raw plain request to the TLS side port"
    report.figures["plain HTTP outcomes"] = ",".join(sorted(set(failures)))
    report.figures["raw plain request got"] = raw
    report.figures["TLS without / with token"] = f"{absent.status_code} / {present.status_code}"
    assert len(failures) == 20, "plain HTTP never gets an answer from a TLS port"
    assert "Traceback" not in raw
    assert str(ROOT) not in raw
    assert absent.status_code == 401
    assert not _leaks(absent.text)
    assert present.status_code == 200, "the port serves TLS after the plain attempts"
    assert not any("Traceback" in line for line in server.lines)


def _raw_plain_request(url: str) -> str:
    """What a plain-text request to the TLS port reads back (at most the first 200 bytes)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(200)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "nothing within 10 s"
    return "closed" if not data else repr(data[:200])
