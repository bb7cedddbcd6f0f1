"""The side port over real sockets on 127.0.0.1: endpoints, auth, TLS, limits, SSE.

Every test starts a real ``SidePort`` on port 0 with ``FakeSources`` and talks
to it the way a scraper, a browser or an attacker would: httpx for ordinary
requests, raw sockets (parsed with h11's client side) for everything a
well-behaved client would never send.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import random
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import h11
import httpx
import pytest
import structlog
from structlog.typing import EventDict

from corral.errors import BindError, ConfigError, ExitCode
from corral.metrics import FleetView
from corral.request_stats.layout import BUCKETS
from corral.request_stats.pool import SlotRequestStats
from corral.service import ClientAuth, ServiceSettings, SidePort, WebConfig, load_web_config
from corral.service.auth import Authenticator
from corral.service.figures import BudgetLimit, SlotFigures
from corral.service.http import looks_like_http
from corral.service.routes import accepts_gzip, parse_seq
from corral.service.sse import format_event
from corral.states import SlotState, WorkerStatus
from tests.browser import Browser
from tests.unit.service_fakes import OPENMETRICS, PROMETHEUS, FakeSources

Start = Callable[..., SidePort]


@pytest.fixture
def fake() -> FakeSources:
    return FakeSources()


@pytest.fixture
def service_logs() -> Iterator[list[EventDict]]:
    """Every structlog entry from every thread, the side port's included.

    Request it *before* ``serve``, so the capture is in place before a port's
    thread starts and is removed only after the port has stopped.
    ``structlog.testing.capture_logs`` is not thread-safe: it empties and
    refills the configured processor list in place, and a side-port thread
    logging meanwhile runs a half-emptied chain. Without the GIL that happens:
    the log call raises and the port's loop dies. Here ``configure`` swaps in
    a whole new list instead, and back.
    """
    capture = structlog.testing.LogCapture()
    saved = structlog.get_config()
    structlog.configure(processors=[capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)


@pytest.fixture
def serve(fake: FakeSources) -> Iterator[Start]:
    """Start a port on 127.0.0.1:0 with ``fake`` (or given sources); stopped at teardown."""
    ports: list[SidePort] = []

    def start(sources: Any = None, **overrides: Any) -> SidePort:
        settings = ServiceSettings(host="127.0.0.1", port=0, **overrides)
        port = SidePort(settings, fake if sources is None else sources)
        port.start()
        ports.append(port)
        return port

    yield start
    for port in ports:
        port.stop()


# --- Raw-socket helpers -------------------------------------------------------------------


class RawClient:
    """One TCP connection driven by h11's client state machine."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None
    ) -> tuple[h11.Response, bytes]:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", "127.0.0.1"), *(headers or [])]
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        data += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(data)
        response: h11.Response | None = None
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, body
            else:
                raise AssertionError(f"unexpected {event!r}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(address: tuple[str, int], payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` and read until the server closes; fails if it never does."""
    with socket.create_connection(address, timeout=timeout) as sock:
        if payload:
            sock.sendall(payload)
        return read_to_eof(sock, timeout)


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def header(response: h11.Response, name: str) -> str | None:
    for key, value in response.headers:
        if key.decode() == name:
            return bytes(value).decode()
    return None


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class SSEClient:
    """A follower of ``/events?follow=1``, parsing chunked SSE with h11."""

    def __init__(
        self, address: tuple[str, int], target: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.raw = RawClient(address)
        self.buffer = b""
        conn = self.raw.conn
        data = conn.send(
            h11.Request(
                method="GET", target=target, headers=[("host", "127.0.0.1"), *(headers or [])]
            )
        )
        self.raw.sock.sendall(data + conn.send(h11.EndOfMessage()))
        event = self._next_h11_event()
        assert isinstance(event, h11.Response), event
        self.response = event

    def _next_h11_event(self) -> h11.Event:
        while True:
            event = self.raw.conn.next_event()
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)
                return event
            self.raw.conn.receive_data(self.raw.sock.recv(65536))

    def next_message(self, *, skip_comments: bool = True) -> dict[str, str]:
        """The next SSE message as a field dict (comments as ``{"comment": ...}``)."""
        while True:
            if b"\n\n" in self.buffer:
                block, self.buffer = self.buffer.split(b"\n\n", 1)
                message: dict[str, str] = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        message["comment"] = line[1:].strip()
                    else:
                        name, _, value = line.partition(": ")
                        message[name] = value
                if skip_comments and set(message) == {"comment"}:
                    continue
                return message
            event = self._next_h11_event()
            if isinstance(event, h11.Data):
                self.buffer += event.data
            else:
                raise EOFError(repr(event))

    def close(self) -> None:
        self.raw.close()


# --- Endpoints ----------------------------------------------------------------------------


def _assert_common(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == len(response.content)


def test_every_endpoint_answers_with_its_content_type_and_shape(
    serve: Start, fake: FakeSources
) -> None:
    fake.emit("spawn", slot=0, pid=101)
    fake.emit("ready", slot=0, pid=101)
    port = serve()
    with httpx.Client(base_url=port.url) as client:
        metrics = client.get("/metrics", headers={"accept-encoding": "identity"})
        assert metrics.status_code == 200
        assert metrics.headers["content-type"] == PROMETHEUS
        assert metrics.content == fake.metrics_body
        assert "content-encoding" not in metrics.headers
        assert "Accept-Encoding" in metrics.headers["vary"]

        health = client.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok")

        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.headers["content-type"] == "application/json"
        assert ready.json() == {
            "ready": True,
            "reason": "2 workers ready",
            "ready_workers": 2,
            "required_workers": 2,
        }

        workers = client.get("/workers")
        assert workers.headers["content-type"] == "application/json"
        assert workers.json() == fake.workers_value

        events = client.get("/events")
        assert [(e["seq"], e["kind"]) for e in events.json()] == [(1, "spawn"), (2, "ready")]
        assert client.get("/events?since=1").json() == [
            {"seq": 2, "kind": "ready", "slot": 0, "pid": 101}
        ]

        traces = client.get("/debug/traces")
        assert traces.json() == fake.traces_value

        home = client.get("/")
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        assert '<table id="workers">' in home.text
        assert "EventSource" in home.text
        assert "default-src 'none'" in home.headers["content-security-policy"]

        for response in (metrics, health, ready, workers, events, traces, home):
            _assert_common(response)
    assert port.url == f"http://127.0.0.1:{port.address[1]}"
    assert port.address[1] > 0


def test_unhealthy_and_unready_are_503(serve: Start, fake: FakeSources) -> None:
    fake.healthy_value = False
    fake.readiness_value = fake.readiness_value.__class__(False, "0 of 2 workers ready", 0, 2)
    port = serve()
    health = httpx.get(port.url + "/healthz")
    assert (health.status_code, health.text) == (503, "unhealthy")
    ready = httpx.get(port.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "reason": "0 of 2 workers ready",
        "ready_workers": 0,
        "required_workers": 2,
    }


def test_slow_healthy_runs_off_the_loop_and_concurrent_probes_share_one_call(
    serve: Start, fake: FakeSources
) -> None:
    fake.healthy_gate = threading.Event()
    port = serve()
    results: list[int] = []

    def probe() -> None:
        results.append(httpx.get(port.url + "/healthz", timeout=10).status_code)

    probes = [threading.Thread(target=probe) for _ in range(6)]
    for thread in probes:
        thread.start()
    try:
        assert wait_for(lambda: fake.healthy_calls >= 1)
        # healthy() is blocked until the gate opens: the loop must still answer.
        assert httpx.get(port.url + "/metrics", timeout=5).status_code == 200
        time.sleep(0.2)  # let the other probes arrive while the call is in flight
    finally:
        fake.healthy_gate.set()
    for thread in probes:
        thread.join(10)
    assert results == [200] * 6
    assert fake.healthy_calls <= 2


def test_metrics_gzip_when_asked(serve: Start, fake: FakeSources) -> None:
    fake.metrics_body = b"corral_up 1\n" * 500
    port = serve()
    with RawClient(port.address) as raw:
        response, body = raw.request("GET", "/metrics", [("accept-encoding", "br, gzip;q=0.8")])
    assert header(response, "content-encoding") == "gzip"
    assert header(response, "vary") == "Accept, Accept-Encoding"
    assert int(header(response, "content-length") or 0) == len(body) < len(fake.metrics_body)
    assert gzip.decompress(body) == fake.metrics_body
    # httpx decodes it transparently, too.
    assert httpx.get(port.url + "/metrics").content == fake.metrics_body


def test_accepts_gzip_parsing() -> None:
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip(None)
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=0, *")


def test_openmetrics_accept_is_passed_through(serve: Start, fake: FakeSources) -> None:
    port = serve()
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = httpx.get(port.url + "/metrics", headers={"accept": accept})
    assert response.headers["content-type"] == OPENMETRICS
    assert response.content.endswith(b"# EOF\n")
    assert fake.metrics_accepts[-1] == accept


def test_head_is_get_without_a_body_and_keep_alive_works(serve: Start, fake: FakeSources) -> None:
    port = serve()
    with RawClient(port.address) as raw:
        head, head_body = raw.request("HEAD", "/metrics", [("accept-encoding", "identity")])
        # The next response parses only if HEAD really sent no body bytes.
        get, get_body = raw.request("GET", "/metrics", [("accept-encoding", "identity")])
        again, _ = raw.request("GET", "/healthz")
    assert (head.status_code, head_body) == (200, b"")
    assert header(head, "content-length") == str(len(fake.metrics_body))
    assert (get.status_code, get_body) == (200, fake.metrics_body)
    assert again.status_code == 200


def test_head_of_the_event_stream_sends_headers_only(serve: Start, fake: FakeSources) -> None:
    port = serve()
    reply = exchange(port.address, b"HEAD /events?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-type: text/event-stream; charset=utf-8" in head
    assert body == b""
    assert fake.subscribe_calls == 0


def test_unknown_path_404_and_other_methods_405_with_allow(serve: Start) -> None:
    port = serve()
    with httpx.Client(base_url=port.url) as client:
        missing = client.get("/nope")
        assert (missing.status_code, missing.text) == (404, "not found")
        assert client.get("/metrics/").status_code == 404
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            response = client.request(method, "/metrics")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET, HEAD"
            _assert_common(response)


def test_request_body_gets_413_and_close(serve: Start) -> None:
    port = serve()
    payload = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    started = time.monotonic()
    reply = exchange(port.address, payload)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in reply.lower()
    assert time.monotonic() - started < 2
    # A POST with a body still learns the method is wrong.
    assert httpx.post(port.url + "/metrics", content=b"x" * 100).status_code == 405


def test_bad_since_is_400(serve: Start) -> None:
    port = serve()
    for since in ("x", "-1", "", "1.5", "9" * 30):
        response = httpx.get(port.url + "/events", params={"since": since})
        assert response.status_code == 400, since
        assert response.text == "since must be a non-negative integer"
    assert parse_seq("42") == 42
    assert parse_seq(" 42") is None


def test_endpoint_exception_is_500_without_details(
    service_logs: list[EventDict], serve: Start, fake: FakeSources
) -> None:
    fake.fail = {"workers", "metrics", "traces"}
    port = serve()
    for path in ("/workers", "/metrics", "/debug/traces", "/"):
        response = httpx.get(port.url + path)
        assert (response.status_code, response.text) == (500, "internal error"), path
        _assert_common(response)
    logs = list(service_logs)
    failures = [entry for entry in logs if entry["event"] == "service endpoint failed"]
    assert [entry["route"] for entry in failures] == ["/workers", "/metrics", "/debug/traces", "/"]
    assert {entry["error"] for entry in failures} == {"RuntimeError"}
    assert "secret" not in repr(logs)
    assert "exc_info" not in repr(logs)
    assert httpx.get(port.url + "/healthz").status_code == 200


def test_page_embeds_data_safely(serve: Start, fake: FakeSources) -> None:
    hostile = "</script><script>alert(1)</script>"
    fake.workers_value = {"mode": "thread", "gil_enabled": False, "desired": 1, "workers": [
        {"slot": 0, "state": hostile}
    ]}  # fmt: skip
    port = serve()
    page = httpx.get(port.url + "/").text
    assert hostile not in page
    assert page.count("</script>") == 3  # the two data blocks and the script
    assert "\\u003c/script\\u003e" in page


def test_page_streams_events_live_in_headless_chromium(
    serve: Start, fake: FakeSources, tmp_path: Path
) -> None:
    """Under its CSP, with no script error, the page draws the table and the
    timeline from the stream's replay, and then from live events, which
    headless Chromium receives over SSE like any browser."""
    t = time.time()
    fake.workers_value = {**fake.workers_value, "time": t}
    fake.emit("spawn", slot=0, generation=1, pid=101, wall_time=t - 30, mode="process")
    fake.emit("ready", slot=0, generation=1, pid=101, wall_time=t - 29, mode="process")
    fake.emit("crash", slot=0, generation=1, pid=101, wall_time=t - 20, mode="process",
              reason="signal", signal="SIGKILL")  # fmt: skip
    port = serve()
    with Browser(tmp_path / "profile") as browser:
        browser.open(port.url + "/")
        browser.wait_for("document.getElementById('feed-status').textContent === 'live'")
        assert browser.evaluate("document.querySelector('#summary').textContent").startswith(
            "1 of 2ready"
        )
        rows = "[...document.querySelectorAll('#workers tbody tr')].map(r => r.dataset.state)"
        assert browser.evaluate(rows) == ["ready", "starting"]
        browser.wait_for("document.querySelector('g.mark[data-kind=\"crash\"]') !== null")
        ended = "[...document.querySelectorAll('g.inc')].map(g => g.dataset.slot + g.dataset.end)"
        assert "0crash" in browser.evaluate(ended)
        fake.emit("reload", wall_time=time.time(), mode="process", message="rolling restart")
        browser.wait_for("document.querySelector('g.mark[data-kind=\"reload\"]') !== null",
                         what="a live event to reach the timeline")  # fmt: skip
        assert browser.evaluate("document.getElementById('events').children.length") == 4
        assert browser.errors == []


# --- Server-Sent Events -------------------------------------------------------------------


def test_sse_backlog_then_live_then_unsubscribe(serve: Start, fake: FakeSources) -> None:
    for kind in ("spawn", "ready", "crash"):
        fake.emit(kind, slot=1)
    port = serve()
    client = SSEClient(port.address, "/events?follow=1&since=1")
    assert client.response.status_code == 200
    assert header(client.response, "content-type") == "text/event-stream; charset=utf-8"
    assert header(client.response, "content-length") is None
    first, second = client.next_message(), client.next_message()
    assert (first["id"], first["event"]) == ("2", "ready")
    assert json.loads(first["data"]) == {"seq": 2, "kind": "ready", "slot": 1}
    assert (second["id"], second["event"]) == ("3", "crash")
    assert wait_for(lambda: fake.subscriber_count == 1)
    fake.emit("respawn", slot=1, message="line\nbreak")
    live = client.next_message()
    assert (live["id"], live["event"]) == ("4", "respawn")
    assert json.loads(live["data"])["message"] == "line\nbreak"
    client.close()
    assert wait_for(lambda: fake.subscriber_count == 0, timeout=3)


def test_sse_resumes_from_last_event_id(serve: Start, fake: FakeSources) -> None:
    for kind in ("spawn", "ready", "exit", "respawn"):
        fake.emit(kind)
    port = serve()
    client = SSEClient(port.address, "/events?follow=1&since=0", [("last-event-id", "3")])
    assert client.next_message()["id"] == "4"
    fake.emit("ready")
    assert client.next_message()["id"] == "5"
    client.close()
    bad = httpx.get(port.url + "/events?follow=1", headers={"last-event-id": "abc"})
    assert bad.status_code == 400


def test_sse_event_racing_the_backlog_is_sent_once(serve: Start) -> None:
    class RacingSources(FakeSources):
        """Emits while the backlog is read, after the stream has subscribed."""

        def events(self, since: int) -> list[dict[str, Any]]:
            if self.subscriber_count and not getattr(self, "raced", False):
                self.raced = True
                self.emit("crash", slot=0)
            return super().events(since)

    sources = RacingSources()
    sources.emit("spawn")
    port = serve(sources)
    client = SSEClient(port.address, "/events?follow=1")
    sources.emit("respawn")
    ids = [client.next_message()["id"] for _ in range(3)]
    assert ids == ["1", "2", "3"]
    client.close()


def test_sse_heartbeat_comments(serve: Start) -> None:
    port = serve(sse_heartbeat=0.2)
    client = SSEClient(port.address, "/events?follow=1")
    started = time.monotonic()
    assert client.next_message(skip_comments=False) == {"comment": "corral lifecycle events"}
    assert client.next_message(skip_comments=False) == {"comment": "ping"}
    assert 0.1 < time.monotonic() - started < 2
    client.close()


def test_sse_follower_that_falls_behind_is_disconnected(serve: Start) -> None:
    class StallingSources(FakeSources):
        """``workers()`` blocks the port's loop so events pile up undelivered."""

        gate = threading.Event()
        entered = threading.Event()

        def workers(self) -> dict[str, Any]:
            self.entered.set()
            self.gate.wait(5)
            return super().workers()

    sources = StallingSources()
    port = serve(sources, sse_queue_size=5)
    client = SSEClient(port.address, "/events?follow=1")
    stall = threading.Thread(target=httpx.get, args=(port.url + "/workers",))
    stall.start()
    assert sources.entered.wait(5)
    for _ in range(20):
        sources.emit("spawn")
    sources.gate.set()
    stall.join(5)
    with pytest.raises(EOFError):
        client.next_message()
    client.close()
    assert wait_for(lambda: sources.subscriber_count == 0)
    resumed = SSEClient(port.address, "/events?follow=1", [("last-event-id", "0")])
    assert [resumed.next_message()["id"] for _ in range(20)] == [str(n) for n in range(1, 21)]
    resumed.close()


def test_format_event_is_one_message() -> None:
    message = format_event({"seq": 7, "kind": "crash\nevent: forged", "message": "a\nb"})
    lines = message.decode().split("\n")
    assert lines[:2] == ["id: 7", "event: crash event: forged"]
    assert lines[2].startswith("data: {")
    assert lines[3:] == ["", ""]


# --- Authentication -----------------------------------------------------------------------


def test_bearer_token(serve: Start) -> None:
    token = "s3cret-token-value"
    port = serve(token=token)
    url = port.url + "/metrics"
    absent = httpx.get(url)
    assert (absent.status_code, absent.text) == (401, "unauthorized")
    assert absent.headers["www-authenticate"] == 'Bearer realm="corral"'
    assert token not in absent.text
    assert token not in str(absent.headers)
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {token}x"}).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Basic {token}"}).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(url, headers={"authorization": f"bearer {token}"}).status_code == 200
    # Anonymous clients learn nothing, not even which paths exist.
    assert httpx.get(port.url + "/nope").status_code == 401
    assert token not in repr(ServiceSettings(token=token))


def _write_users(tmp_path: Path, users: dict[str, bytes]) -> Path:
    lines = ["basic_auth_users:"]
    lines += [
        f"  {user}: {bcrypt.hashpw(pw, bcrypt.gensalt(4)).decode()}" for user, pw in users.items()
    ]
    path = tmp_path / "web.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_basic_auth_with_bcrypt_and_token_together(serve: Start, tmp_path: Path) -> None:
    config = load_web_config(_write_users(tmp_path, {"alice": b"wonder land", "bob": b"b"}))
    assert "$2b$" not in repr(config)
    port = serve(web_config=config, token="tok")
    url = port.url + "/workers"
    absent = httpx.get(url)
    assert absent.status_code == 401
    assert absent.headers.get_list("www-authenticate") == [
        'Bearer realm="corral"',
        'Basic realm="corral", charset="UTF-8"',
    ]
    assert httpx.get(url, auth=("alice", "wonder land")).status_code == 200
    assert httpx.get(url, auth=("alice", "wonder land")).status_code == 200  # cached
    assert httpx.get(url, auth=("bob", "b")).status_code == 200
    assert httpx.get(url, auth=("alice", "wrong")).status_code == 401
    assert httpx.get(url, auth=("mallory", "wonder land")).status_code == 401
    assert httpx.get(url, headers={"authorization": "Basic !!!notbase64"}).status_code == 401
    assert httpx.get(url, auth=("alice", "x" * 200)).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer tok"}).status_code == 200


def test_basic_auth_success_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = Authenticator(None, {"alice": hashed})
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(password)
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    good = "Basic " + base64.b64encode(b"alice:pw").decode()
    bad = "Basic " + base64.b64encode(b"alice:nope").decode()

    async def run() -> list[bool]:
        return [await auth.authorized(value, None) for value in (good, good, good, bad, bad)]

    assert asyncio.run(run()) == [True, True, True, False, False]
    assert calls == [b"pw", b"nope", b"nope"]  # failures are never cached


# --- TLS ----------------------------------------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("certs")
    server_cert, server_key = _self_signed(directory, "server")
    client_cert, client_key = _self_signed(directory, "client")
    return {
        "dir": directory,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


def _tls_config(certs: dict[str, Path], extra: str = "") -> WebConfig:
    path = certs["dir"] / "web-tls.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs['server_cert'].name}\n"  # relative to the file
        f"  key_file: {certs['server_key']}\n" + extra
    )
    return load_web_config(path)


def _client_context(certs: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["server_cert"]))
    if with_cert:
        context.load_cert_chain(certs["client_cert"], certs["client_key"])
    return context


def test_tls_serves_https_and_plain_http_fails_cleanly(
    serve: Start, certs: dict[str, Path]
) -> None:
    port = serve(web_config=_tls_config(certs), header_timeout=1.0)
    assert port.url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=_client_context(certs, with_cert=False)) as client:
        assert client.get(port.url + "/healthz").text == "ok"
        started = time.monotonic()
        reply = exchange(port.address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not reply.startswith(b"HTTP/")
        assert time.monotonic() - started < 3
        # A client that connects and never handshakes is dropped after header_timeout.
        assert exchange(port.address, b"") == b""
        assert client.get(port.url + "/metrics").status_code == 200


def test_mtls_requires_a_verified_client_certificate(serve: Start, certs: dict[str, Path]) -> None:
    config = _tls_config(
        certs,
        f"  client_ca_file: {certs['client_cert']}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
    )
    port = serve(web_config=config)
    with (
        httpx.Client(verify=_client_context(certs, with_cert=False)) as anonymous,
        pytest.raises(httpx.HTTPError),
    ):
        anonymous.get(port.url + "/metrics")
    with httpx.Client(verify=_client_context(certs, with_cert=True)) as client:
        assert client.get(port.url + "/metrics").status_code == 200


def test_mtls_verify_if_given_lets_anonymous_in(serve: Start, certs: dict[str, Path]) -> None:
    config = _tls_config(
        certs,
        f"  client_ca_file: {certs['client_cert']}\n  client_auth_type: VerifyClientCertIfGiven\n",
    )
    port = serve(web_config=config)
    for with_cert in (False, True):
        with httpx.Client(verify=_client_context(certs, with_cert=with_cert)) as client:
            assert client.get(port.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist; check the path"),
        ("tls_server_config: a\n  b: c\n", "is not valid YAML at line 2"),
        ("- a list\n", "must be a mapping"),
        ("http_server_config: {}\n", "unknown key http_server_config"),
        ("tls_server_config:\n  cert_file: a\n  cipher_suites: []\n", "unknown key tls_server"),
        ("tls_server_config:\n  key_file: k\n", "tls_server_config.cert_file is required"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "does not exist"),
        ("basic_auth_users:\n  alice: plaintext-password\n", "basic_auth_users.alice is not a"),
        ("basic_auth_users: [alice]\n", "basic_auth_users must be a mapping"),
        ("basic_auth_users:\n  'a:b': x\n", "contains ':'"),
    ],
)
def test_web_config_errors_are_one_line_config_errors(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "web.yml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message
    assert "plaintext-password" not in message
    assert info.value.exit_code is ExitCode.CONFIG


@pytest.mark.parametrize(
    ("tls_extra", "expected"),
    [
        ("  client_auth_type: Sometimes\n", "client_auth_type 'Sometimes' is not one of"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
        ("  client_ca_file: {ca}\n", "client_ca_file is set but client_auth_type is NoClientCert"),
        ("  min_version: TLS10\n", "min_version must be TLS12 or TLS13"),
        ("  client_ca_file: {bad}\n  client_auth_type: VerifyClientCertIfGiven\n",
         "cannot load client_ca_file"),
    ],
)  # fmt: skip
def test_tls_config_errors(
    certs: dict[str, Path], tmp_path: Path, tls_extra: str, expected: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=expected):
        _tls_config(certs, tls_extra.format(ca=certs["client_cert"], bad=garbage))


def test_client_auth_types_map_to_verify_modes(certs: dict[str, Path]) -> None:
    assert ClientAuth.NO_CLIENT_CERT.verify_mode is ssl.CERT_NONE
    assert ClientAuth.REQUEST_CLIENT_CERT.verify_mode is ssl.CERT_OPTIONAL
    assert ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN.verify_mode is ssl.CERT_OPTIONAL
    assert ClientAuth.REQUIRE_ANY_CLIENT_CERT.verify_mode is ssl.CERT_REQUIRED
    assert ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT.verify_mode is ssl.CERT_REQUIRED
    config = _tls_config(certs, "  min_version: TLS13\n")
    assert config.tls is not None
    assert config.tls.min_version is ssl.TLSVersion.TLSv1_3
    assert config.tls.cert_file == certs["server_cert"]  # resolved against the file's folder
    context = config.ssl_context()
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3


def test_mismatched_key_is_a_config_error(certs: dict[str, Path]) -> None:
    path = certs["dir"] / "web-mismatch.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {certs['server_cert']}\n"
        f"  key_file: {certs['client_key']}\n"
    )
    with pytest.raises(ConfigError, match=r"cannot load cert_file .* the key must be"):
        load_web_config(path)


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="printable ASCII") as info:
        ServiceSettings(token="has space secret")
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="out of range"):
        ServiceSettings(port=70000)
    with pytest.raises(ConfigError, match="header_timeout must be a positive number"):
        ServiceSettings(header_timeout=0)


# --- Robustness ---------------------------------------------------------------------------


def test_port_in_use_is_a_bind_error(fake: FakeSources) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        with pytest.raises(BindError) as info:
            SidePort(ServiceSettings(port=busy), fake)
    assert str(info.value) == (
        f"metrics port 127.0.0.1:{busy} is already in use; pass --metrics-port or --no-metrics"
    )
    assert info.value.exit_code is ExitCode.BIND


def test_header_timeout_closes_slow_and_silent_clients(serve: Start) -> None:
    port = serve(header_timeout=0.5)
    started = time.monotonic()
    reply = exchange(port.address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < elapsed < 3
    started = time.monotonic()
    assert exchange(port.address, b"") == b""
    assert 0.4 < time.monotonic() - started < 3
    # Dribbling bytes does not extend the deadline.
    with socket.create_connection(port.address, timeout=5) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" * 10:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.01)
            if time.monotonic() - started > 1.5:
                break
        assert closed or read_to_eof(sock, 3).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 3


def test_idle_keep_alive_connection_is_closed(serve: Start) -> None:
    port = serve(idle_timeout=0.5)
    raw = RawClient(port.address)
    response, _ = raw.request("GET", "/healthz")
    assert response.status_code == 200
    started = time.monotonic()
    assert read_to_eof(raw.sock, 3) == b""
    assert 0.4 < time.monotonic() - started < 3
    raw.close()


@pytest.mark.parametrize("size", [64 * 1024, 17 * 1024])
def test_oversized_head_is_431(serve: Start, size: int) -> None:
    port = serve()
    payload = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    reply = exchange(port.address, payload)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert reply.endswith(b"request header too large")
    # Just under the limit is fine.
    assert httpx.get(port.url + "/healthz", headers={"x-big": "a" * 15000}).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("16030100a5010000a10303") + bytes(range(64)),  # a TLS ClientHello
        random.Random(7).randbytes(2048),
        b"\x00" * 64,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n",
        b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
    ids=["tls-hello", "random", "nul", "bad-header", "high-byte", "ssh-banner"],
)
def test_garbage_gets_400_at_once_and_the_port_stays_up(
    service_logs: list[EventDict], serve: Start, payload: bytes
) -> None:
    port = serve()  # default 5 s header timeout: the 400 must not wait for it
    started = time.monotonic()
    reply = exchange(port.address, payload)
    assert time.monotonic() - started < 2
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.endswith(b"bad request")
    errors = [entry for entry in service_logs if entry.get("log_level") in ("error", "critical")]
    assert errors == []
    assert httpx.get(port.url + "/healthz").status_code == 200


def test_looks_like_http() -> None:
    assert looks_like_http(b"GET / HTTP/1.1\r\nHost")
    assert looks_like_http(b"\r\nGET /")
    assert looks_like_http(b"GE")
    assert not looks_like_http(b"\x16\x03\x01")
    assert not looks_like_http(b"GET /\x00 HTTP/1.1")
    # A complete first line must be a request line: text handshakes fail at once.
    assert not looks_like_http(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert not looks_like_http(b"HELLO there\n")
    assert looks_like_http(b"OPTIONS * HTTP/1.1\r\n")


def test_idle_flood_does_not_block_requests_and_leaks_no_fds(serve: Start) -> None:
    port = serve(header_timeout=30)
    assert httpx.get(port.url + "/metrics").status_code == 200
    baseline = fd_count()
    idle = [socket.create_connection(port.address, timeout=5) for _ in range(200)]
    try:
        # Both ends live in this process: wait until the port holds (nearly) all
        # 200. The warm-up request's server end may still count in the baseline.
        assert wait_for(lambda: fd_count() >= baseline + 200 * 2 - 10)
        started = time.monotonic()
        response = httpx.get(port.url + "/metrics", timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 1
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: fd_count() <= baseline + 5, timeout=10), (fd_count(), baseline)


def test_connections_beyond_the_limit_are_closed_at_once(serve: Start) -> None:
    port = serve(max_connections=5, header_timeout=30)
    idle = [socket.create_connection(port.address, timeout=5) for _ in range(5)]
    try:
        started = time.monotonic()
        assert exchange(port.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        assert time.monotonic() - started < 2
    finally:
        idle.pop().close()
    try:
        assert wait_for(lambda: _healthz_ok(port), timeout=5)
    finally:
        for sock in idle:
            sock.close()


def _healthz_ok(port: SidePort) -> bool:
    try:
        return httpx.get(port.url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_stop_is_prompt_with_streams_and_idle_connections(fake: FakeSources) -> None:
    port = SidePort(ServiceSettings(port=0), fake)
    port.start()
    threads_before = {t.name for t in threading.enumerate()}
    assert "corral-service" in threads_before
    follower = SSEClient(port.address, "/events?follow=1")
    idle = [socket.create_connection(port.address, timeout=5) for _ in range(20)]
    assert wait_for(lambda: fake.subscriber_count == 1)
    started = time.monotonic()
    port.stop()
    assert time.monotonic() - started < 3
    assert "corral-service" not in {t.name for t in threading.enumerate()}
    assert fake.subscriber_count == 0
    with pytest.raises((EOFError, h11.RemoteProtocolError)):  # cut mid-stream
        follower.next_message()
    follower.close()
    for sock in idle:
        assert read_to_eof(sock, 2) == b""
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(port.address, timeout=1).close()
    port.stop()  # idempotent


def test_stop_before_start_releases_the_port(fake: FakeSources) -> None:
    port = SidePort(ServiceSettings(port=0), fake)
    address = port.address
    port.stop()
    with pytest.raises(RuntimeError, match="only once"):
        port.start()
    with socket.create_server(address):  # the port is free again
        pass


# --- The figures /workers adds for the page ------------------------------------------------


def test_slot_figures_read_requests_cpu_and_memory_per_slot() -> None:
    """Process mode reads the worker's own CPU and RSS; a slot with no live worker
    has none, and request counts come from the stats snapshot (5xx as errors)."""
    rows = [
        WorkerStatus(0, "process", os.getpid(), None, 1, SlotState.READY, 1.0, 0, 5, None),
        WorkerStatus(1, "process", None, None, 2, SlotState.BACKOFF, None, 1, 4, "SIGKILL"),
    ]
    stats = SlotRequestStats(
        requests={("GET", "2xx"): 7.0, ("GET", "5xx"): 2.0, ("POST", "4xx"): 1.0},
        bucket_counts=(0.0,) * len(BUCKETS),
        duration_sum=0.0,
        duration_count=10.0,
        in_flight=3.0,
    )
    figures = SlotFigures(
        lambda: FleetView(desired=2, slots=rows), lambda: {0: stats, 1: stats}, threads=False
    ).read()
    assert figures[0]["rss_bytes"] is not None
    assert figures[0]["rss_bytes"] > 1024 * 1024
    assert figures[0]["cpu_seconds"] is not None
    assert figures[0]["cpu_seconds"] > 0
    assert (figures[0]["requests"], figures[0]["errors"], figures[0]["in_flight"]) == (10, 2, 3)
    assert (figures[1]["cpu_seconds"], figures[1]["rss_bytes"]) == (None, None)
    without = SlotFigures(lambda: FleetView(desired=2, slots=rows), None, threads=True).read()
    assert without.get(0, SlotFigures.UNKNOWN)["rss_bytes"] is None, "threads share a process"
    assert without.get(1, SlotFigures.UNKNOWN)["requests"] is None
    assert BudgetLimit(5, 60.0).as_dict() == {"max_restarts": 5, "window_seconds": 60.0}
