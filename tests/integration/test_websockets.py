"""WebSockets with a real client: echo, and the 1001 "going away" close on every drain."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import CorralProcess, eventually, run_cli

APP = "tests.integration.ws_app:app"
GOING_AWAY = 1001


class HeldWebSocket:
    """An open WebSocket, proven to echo, whose close frame a thread waits for."""

    def __init__(self, base_url: str) -> None:
        # Entered as a context manager, as websockets asks, and left in ``close``.
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(base_url.replace("http://", "ws://", 1) + "/ws", open_timeout=10)
        )
        self.ws.send("hello")
        assert self.ws.recv(timeout=10) == "echo: hello"
        self.closed = threading.Event()
        self.code: int | None = None
        self.reason: str | None = None
        threading.Thread(target=self._wait_for_close, daemon=True).start()

    def _wait_for_close(self) -> None:
        try:
            while True:
                self.ws.recv(timeout=60)
        except (ConnectionClosed, TimeoutError):
            frame = self.ws.protocol.close_rcvd
            if frame is not None:
                self.code, self.reason = frame.code, frame.reason
            self.closed.set()

    def wait_closed(self, timeout: float = 30) -> None:
        assert self.closed.wait(timeout), "the server never closed the WebSocket"
        self.close()

    def close(self) -> None:
        self._stack.close()


@pytest.mark.parametrize("library", ["auto", "wsproto"])
def test_websocket_echo(corral: Callable[..., CorralProcess], mode: str, library: str) -> None:
    server = corral("--workers", "2", "--mode", mode, "--ws", library, app=APP)
    server.wait_ready(2)
    with connect(server.base_url.replace("http://", "ws://", 1) + "/ws", open_timeout=10) as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv(timeout=10) == f"echo: {text}"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"\x00\x01"
    assert server.get("/").text == "plain http\n"


@pytest.mark.parametrize("library", ["auto", "wsproto"])
def test_sigterm_sends_going_away_and_the_drain_does_not_wait_for_the_timeout(
    corral: Callable[..., CorralProcess], mode: str, library: str
) -> None:
    # The app's handler loops until the server says the WebSocket is gone, so
    # without a close on drain the worker would be forced at the timeout.
    server = corral(
        "--workers", "1", "--mode", mode, "--ws", library, "--shutdown-timeout", "20", app=APP
    )
    server.wait_ready(1)
    held = [HeldWebSocket(server.base_url) for _ in range(3)]
    server.send(signal.SIGTERM)
    for client in held:
        client.wait_closed()
        assert (client.code, client.reason) == (GOING_AWAY, "going away")
    assert server.wait_exit(30) == 0
    assert not server.events("force_stop")
    assert len([line for line in server.lines if "websocket ended with code 1001" in line]) == 3


def test_rolling_restart_sends_going_away_and_the_new_worker_serves(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, app=APP)
    server.wait_ready(1)
    before = server.scrape()
    assert before.value("corral_websockets_going_away_total", slot="0") == 0
    held = [HeldWebSocket(server.base_url) for _ in range(2)]
    eventually(lambda: server.scrape().value("corral_websockets_open", slot="0") == 2)
    server.send(signal.SIGHUP)
    for client in held:
        client.wait_closed()
        assert client.code == GOING_AWAY
    server.wait_event("drain_end", slot=0, generation=1)
    assert not server.events("force_stop")
    again = HeldWebSocket(server.base_url)  # a reconnecting client lands on generation 2
    metrics = server.scrape()
    # Counters carry over from the drained incarnation; the gauge is live workers only.
    assert metrics.value("corral_websockets_going_away_total", slot="0") == 2
    assert metrics.value("corral_websockets_opened_total", slot="0") == 3
    assert metrics.value("corral_websockets_open", slot="0") == 1
    again.close()
    eventually(lambda: server.scrape().value("corral_websockets_open", slot="0") == 0)
    assert server.scrape().value("corral_websockets_going_away_total", slot="0") == 2


def test_check_names_the_websocket_library() -> None:
    result = run_cli("check", APP)
    assert result.returncode == 0, result.stderr
    assert "interface: asgi3 (detected: a coroutine callable)" in result.stdout
    assert "websockets: websockets " in result.stdout
    off = run_cli("check", APP, "--ws", "none")
    assert "websockets: off (--ws none)" in off.stdout


def test_ws_settings_reach_uvicorn(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral(
        "--mode", mode, "--ws-max-size", "1024", "--no-ws-per-message-deflate", app=APP
    )  # fmt: skip
    server.wait_ready(1)
    url = server.base_url.replace("http://", "ws://", 1) + "/ws"
    with connect(url, open_timeout=10) as ws:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers  # no deflate offered back
        ws.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big


def test_recycle_sends_going_away(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral("--workers", "1", "--mode", mode, "--max-requests", "3", app=APP)
    server.wait_ready(1)
    held = HeldWebSocket(server.base_url)
    for _ in range(3):
        assert server.get("/").status_code == 200
    server.wait_event("recycle", slot=0, generation=1)
    held.wait_closed()
    assert held.code == GOING_AWAY
    server.wait_event("drain_end", slot=0, generation=1)
    assert server.scrape().value("corral_websockets_going_away_total", slot="0") == 1
