"""systemd's Type=notify and WatchdogSec=, against a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CorralProcess, eventually


class NotifySocket:
    """What systemd listens on: a Unix datagram socket; records every message with its time."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, message in self.messages for line in message.splitlines()]

    def times_of(self, line: str) -> list[float]:
        with self._lock:
            return [t for t, message in self.messages if line in message.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


def test_ready_is_sent_once_every_worker_is_ready_and_stopping_on_sigterm(
    corral: Callable[..., CorralProcess], notify_socket: NotifySocket, mode: str
) -> None:
    address = notify_socket.sock.getsockname()
    server = corral("--workers", "3", "--mode", mode, env={"NOTIFY_SOCKET": address})
    server.wait_ready(3)
    eventually(lambda: "READY=1" in notify_socket.lines(), what="READY=1")
    assert notify_socket.lines().count("READY=1") == 1
    assert "STATUS=3/3 workers ready" in notify_socket.lines()
    # It came after the third ready event, not before.
    assert len(server.events("ready")) == 3
    assert "WATCHDOG=1" not in notify_socket.lines(), "no WatchdogSec, no pings"
    server.send(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "STOPPING=1" in notify_socket.lines()
    assert notify_socket.lines().count("READY=1") == 1


def test_the_watchdog_is_pet_from_the_loop_at_half_its_interval(
    corral: Callable[..., CorralProcess], notify_socket: NotifySocket
) -> None:
    address = notify_socket.sock.getsockname()
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}  # 0.4 s: pet every 0.2 s
    started = time.monotonic()
    server = corral("--workers", "1", env=env)
    server.wait_ready(1)
    eventually(lambda: len(notify_socket.times_of("WATCHDOG=1")) >= 6, what="6 watchdog pings")
    # Paced by the loop's deadline, never faster: at most one ping per 0.2 s.
    elapsed = time.monotonic() - started
    assert len(notify_socket.times_of("WATCHDOG=1")) <= elapsed / 0.2 + 1
    server.send(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_a_watchdog_meant_for_another_pid_is_left_alone(
    corral: Callable[..., CorralProcess], notify_socket: NotifySocket
) -> None:
    address = notify_socket.sock.getsockname()
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    server = corral("--workers", "1", env=env)
    server.wait_ready(1)
    eventually(lambda: "READY=1" in notify_socket.lines(), what="READY=1")
    time.sleep(0.5)
    assert "WATCHDOG=1" not in notify_socket.lines()


def test_an_abstract_notify_socket_works(corral: Callable[..., CorralProcess]) -> None:
    name = f"corral-test-{time.monotonic_ns()}"
    listener = NotifySocket("\0" + name)
    try:
        server = corral("--workers", "1", env={"NOTIFY_SOCKET": "@" + name})
        server.wait_ready(1)
        eventually(lambda: "READY=1" in listener.lines(), what="READY=1 on an abstract socket")
    finally:
        listener.close()


def test_an_unreachable_notify_socket_costs_one_warning_and_nothing_else(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens"), "WATCHDOG_USEC": "200000"}
    server = corral("--workers", "1", env=env)
    server.wait_ready(1)
    time.sleep(0.6)
    warnings = [r for r in server.records if r.get("event") == "systemd notification failed"]
    assert len(warnings) == 1
    assert server.get("/").status_code == 200
