"""The compatibility suite: real apps served by corral and by the server users come from.

Each test module serves one app (``tests/compat/apps``) by corral, once per
worker mode, and by its reference server: uvicorn for ASGI apps, gunicorn for
WSGI apps. Both run on loopback in their own sessions and are started once
per module (the exchanges are read-only, or replayed in the same order on
both). The same exchanges go to both and the responses are compared field by
field: status, headers, body. Left out of the comparison: ``date`` and
``server``, which say when and who by design, and the hop-by-hop headers
(RFC 9110 §7.6.1: ``connection``, ``keep-alive``, ``transfer-encoding``),
which describe one connection, not the response: gunicorn's sync worker
closes every connection and says so, uvicorn keeps it alive.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ROOT, CorralProcess, corral_env

IGNORED_HEADERS = frozenset({"date", "server", "connection", "keep-alive", "transfer-encoding"})
START_TIMEOUT = 30.0
# Both servers hash strings alike, so an app that renders a set (Werkzeug's
# ``Allow`` header) renders it in the same order under both.
COMPAT_ENV = {"PYTHONHASHSEED": "0"}

FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def import_or_skip_on_free_threaded(module: str, reason: str) -> ModuleType:
    """Import ``module``; only on a free-threaded build may its absence skip the test."""
    if FREE_THREADED_BUILD:
        skipped: ModuleType = pytest.importorskip(module, reason=reason)
        return skipped
    return importlib.import_module(module)


class ReferenceServer:
    """uvicorn or gunicorn, in its own session, on a port it picked and logged."""

    def __init__(self, argv: list[str], url_pattern: str) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=corral_env(**COMPAT_ENV),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self.lines: list[str] = []
        self._found = threading.Event()
        self._pattern = re.compile(url_pattern)
        self.base_url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._found.wait(START_TIMEOUT):
            self.stop()
            raise AssertionError("reference server did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = self._pattern.search(line)
            if match and not self._found.is_set():
                self.base_url = match.group(1)
                self._found.set()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def uvicorn_server(app: str) -> Iterator[ReferenceServer]:
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0"]
    server = ReferenceServer(argv, r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gunicorn_server(app: str) -> Iterator[ReferenceServer]:
    argv = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1"]
    gunicorn_config = importlib.import_module("gunicorn.config")
    if hasattr(gunicorn_config, "ControlSocketDisable"):  # gunicorn >= 25: one socket per user
        argv.append("--no-control-socket")
    server = ReferenceServer([*argv, app], r"Listening at: (http://127\.0\.0\.1:\d+)")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def corral_server(app: str, mode: str, *args: str) -> Iterator[CorralProcess]:
    # One worker: the apps keep state (the background task's log) per process.
    argv = [app, "--port", "0", "--mode", mode, "--workers", "1", *args]
    server = CorralProcess(argv, corral_env(**COMPAT_ENV), ROOT)
    try:
        server.wait_ready(1, timeout=START_TIMEOUT)
        yield server
    finally:
        server.kill_hard()


@pytest.fixture(scope="module", params=["process", "thread"])
def corral_mode(request: pytest.FixtureRequest) -> str:
    """The worker mode, module-scoped so each mode starts one corral per app."""
    value: str = request.param
    return value


# --- Exchanges and their comparison ----------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request, as the compat tests send it to both servers."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    json: object = None
    data: dict[str, str] | None = None


@dataclass(frozen=True)
class Observed:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def observe(client: httpx.Client, exchange: Exchange) -> Observed:
    response = client.request(
        exchange.method,
        exchange.path,
        headers=exchange.headers,
        content=exchange.body,
        json=exchange.json,
        data=exchange.data,
    )
    headers = tuple(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in IGNORED_HEADERS
    )
    return Observed(response.status_code, headers, response.content)


def compare(reference_url: str, corral_url: str, exchanges: Sequence[Exchange]) -> None:
    """Replay ``exchanges`` in order on both servers; fail listing every difference."""
    differences: list[str] = []
    with (
        httpx.Client(base_url=reference_url, timeout=10) as ref,
        httpx.Client(base_url=corral_url, timeout=10) as ours,
    ):
        for exchange in exchanges:
            want, got = observe(ref, exchange), observe(ours, exchange)
            for name in ("status", "headers", "body"):
                if getattr(want, name) != getattr(got, name):
                    differences.append(
                        f"{exchange.method} {exchange.path} {name}: reference "
                        f"{getattr(want, name)!r}, corral {getattr(got, name)!r}"
                    )
    assert not differences, "\n".join(differences)


@dataclass(frozen=True)
class WebSocketTranscript:
    received: tuple[str | bytes, ...]
    close_code: int | None
    close_reason: str | None


def websocket_transcript(url: str, messages: Sequence[str]) -> WebSocketTranscript:
    """Send ``messages`` (the last should make the app close) and record everything back."""
    received: list[str | bytes] = []
    ws_url = url.replace("http://", "ws://", 1)
    with connect(ws_url, open_timeout=10, close_timeout=5) as ws:
        for message in messages:
            ws.send(message)
        with contextlib.suppress(ConnectionClosed):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                received.append(ws.recv(timeout=10))
        frame = ws.protocol.close_rcvd
    code, reason = (frame.code, frame.reason) if frame is not None else (None, None)
    return WebSocketTranscript(tuple(received), code, reason)
