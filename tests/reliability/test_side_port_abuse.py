"""Side-port abuse against a real corral: the port keeps answering and the workers never notice.

The unit tests (tests/unit/test_service.py) cover each limit against a fake
data source; this scenario throws everything at once at a real supervisor
serving real load, and measures it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import CorralProcess, eventually
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.load import LoadGenerator, LoadSpec
from tests.reliability.observe import sample, sink_counts
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

IDLE = 500
SLOWLORIS = 20


def _address(server: CorralProcess) -> tuple[str, int]:
    parts = urlsplit(server.metrics_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def _reply(sock: socket.socket, payload: bytes) -> str:
    """Send ``payload`` and describe what came back: a status line, or how it ended."""
    try:
        sock.sendall(payload)
        data = sock.recv(4096)
    except ConnectionResetError:
        return "reset"
    except BrokenPipeError:
        return "closed while sending"
    except TimeoutError:
        return "no answer within 10 s"
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode("latin-1")


class _Slowloris:
    """Connections that dribble a request head one byte every 0.3 s, forever."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.socks = [_connect(address) for _ in range(count)]
        self.cut_after: list[float] = []
        self._began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = list(self.socks)
        for sock in pending:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        while pending and not self._stop.wait(0.3):
            for sock in list(pending):
                try:
                    sock.sendall(b"X")
                except OSError:
                    pending.remove(sock)
                    self.cut_after.append(time.monotonic() - self._began)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


@contextlib.contextmanager
def _idle(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    socks = [_connect(address) for _ in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _timed_scrape(server: CorralProcess) -> float:
    began = time.monotonic()
    reply = httpx.get(server.metrics_url + "/metrics", timeout=10)
    assert reply.status_code == 200
    return time.monotonic() - began


def test_side_port_abuse(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Side port abuse: 500 idle connections, slowloris, 1 MB headers, random bytes, TLS and SSH"""
    server = start_corral(mode, 2)
    address = _address(server)
    server.scrape()
    time.sleep(0.5)
    baseline = sample(server.pid)
    spec = LoadSpec(server.base_url + "/", rate=50, connections=4, duration=None)
    answers: dict[str, str] = {}
    latencies: list[float] = []
    peak_fds = baseline.fds
    with LoadGenerator(spec) as load:
        load.wait_started(10)
        with _idle(address, IDLE):
            slowloris = _Slowloris(address, SLOWLORIS)
            try:
                eventually(
                    lambda: sample(server.pid).fds >= baseline.fds + IDLE + SLOWLORIS,
                    timeout=30,
                    what="every abusive connection accepted",
                )
                peak_fds = sample(server.pid).fds
                latencies += [_timed_scrape(server) for _ in range(5)]
                with _connect(address) as sock:
                    big = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"
                    answers["1 MB header"] = _reply(sock, big)
                with _connect(address) as sock:
                    answers["64 KiB random bytes"] = _reply(sock, os.urandom(64 * 1024))
                with _connect(address) as sock:
                    answers["SSH banner"] = _reply(sock, b"SSH-2.0-OpenSSH_9.6\r\n")
                answers["TLS ClientHello"] = _tls_hello(address)
                latencies += [_timed_scrape(server) for _ in range(5)]
                # The header timeout (5 s) cuts the slowloris connections off.
                eventually(
                    lambda: len(slowloris.cut_after) == SLOWLORIS, timeout=30, what="slowloris cut"
                )
            finally:
                slowloris.close()
        latencies += [_timed_scrape(server) for _ in range(5)]
    result = load.result()
    eventually(
        lambda: sample(server.pid).fds <= baseline.fds, timeout=30, what="fds back to baseline"
    )
    after = sample(server.pid)
    metrics = server.scrape()
    report.faults = (
        f"{IDLE} idle connections + {SLOWLORIS} slowloris heads (1 byte / 0.3 s), "
        "then one each of: "
        "1 MB header, 64 KiB random bytes, SSH banner, TLS ClientHello to the plain port"
    )
    report.record_load(result, "none expected")
    report.events = sink_counts(server, {"crash": "0", "spawn": "2"}, metrics, otlp)
    report.figures["/metrics latency max s (under abuse)"] = round(max(latencies), 3)
    report.figures["slowloris cut off after s (max)"] = round(max(slowloris.cut_after), 1)
    report.figures["supervisor fds baseline / peak / after"] = (
        f"{baseline.fds} / {peak_fds} / {after.fds}"
    )
    for name, answer in answers.items():
        report.figures[f"answer to {name}"] = answer
    assert max(latencies) < 1.0, latencies
    assert result.failed == 0, result.by_outcome()
    assert not server.events("crash")
    assert answers["1 MB header"].startswith("HTTP/1.1 431") or answers["1 MB header"] in (
        "reset",
        "closed while sending",
    )
    assert answers["SSH banner"].startswith("HTTP/1.1 400")
    assert answers["TLS ClientHello"].startswith("HTTP/1.1 400") or answers["TLS ClientHello"] in (
        "reset",
        "closed",
    )
    assert after.fds <= baseline.fds


def _tls_hello(address: tuple[str, int]) -> str:
    """Send a real TLS ClientHello to the plain-HTTP port and describe the answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _connect(address) as sock:
        return _reply(sock, _client_hello(context, address))


def _client_hello(context: ssl.SSLContext, address: tuple[str, int]) -> bytes:
    """The bytes of a real ClientHello, produced by an in-memory TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=address[0])
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()
