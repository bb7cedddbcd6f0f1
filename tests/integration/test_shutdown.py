"""Graceful drain, refusal of new connections, and force-stop past the drain timeout."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import CorralProcess, pid_alive


class SlowRequest(threading.Thread):
    """A request that runs in the background, recording how it ended."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.timeout = timeout
        self.status: int | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.status = httpx.get(self.url, timeout=self.timeout).status_code
        except httpx.HTTPError as exc:
            self.error = exc


def _start_slow(server: CorralProcess, seconds: float, count: int = 1) -> list[SlowRequest]:
    requests = [SlowRequest(f"{server.base_url}/slow?seconds={seconds}") for _ in range(count)]
    for request in requests:
        request.start()
    _wait_until_in_flight(server, count)
    return requests


def _wait_until_in_flight(server: CorralProcess, count: int) -> None:
    """Wait until the kernel shows ``count`` established client connections to the app."""
    port = int(server.base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _established_to(port) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("slow requests never connected")


def _established_to(port: int) -> int:
    hex_port = f":{port:04X}"
    total = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[2].endswith(hex_port) and fields[3] == "01":  # remote is the app, ESTABLISHED
                total += 1
    return total


def _refused(url: str) -> bool:
    """Whether connecting is refused, allowing the few milliseconds it takes every
    worker to receive its drain command and close its copy of the listener."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                pass
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            pass  # caught in a backlog as its listener closed: try again for a clean refusal
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_in_flight_and_refuses_new(
    corral: Callable[..., CorralProcess], mode: str, signum: signal.Signals
) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    slow = _start_slow(server, 1.5, count=3)
    server.send(signum)
    server.wait_event("drain_start", count=2)
    assert _refused(server.base_url), "new connections are refused once the drain starts"
    for request in slow:
        request.join(30)
        assert request.status == 200, request.error
    assert server.wait_exit(30) == 0
    ends = server.events("drain_end")
    assert len(ends) == 2
    assert all(e["message"] == "graceful" for e in ends)
    assert not server.events("force_stop")
    assert not server.events("crash")


def test_process_workers_stop_accepting_and_run_lifespan_shutdown(
    corral: Callable[..., CorralProcess],
) -> None:
    """pounce's process workers kept answering 200 after SIGTERM until SIGKILLed."""
    server = corral("--workers", "2", "--mode", "process", "--log-level", "debug")
    server.wait_ready(2)
    pids = list(server.live_pids().values())
    slow = _start_slow(server, 1.0)
    server.send(signal.SIGTERM)
    server.wait_event("drain_start", count=2)
    assert _refused(server.base_url)
    slow[0].join(30)
    assert slow[0].status == 200
    assert server.wait_exit(30) == 0
    assert all(e.get("exit_code") == 0 for e in server.events("drain_end")), "clean exits"
    assert not any(pid_alive(pid) for pid in pids)
    lifespan_done = [
        r for r in server.records if r.get("event") == "Application shutdown complete."
    ]
    assert {r["worker_slot"] for r in lifespan_done} == {0, 1}, "lifespan shutdown ran in each"


def test_request_longer_than_drain_timeout_is_force_stopped(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, "--shutdown-timeout", "1")
    server.wait_ready(1)
    slow = _start_slow(server, 60)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    elapsed = time.monotonic() - started
    force = server.events("force_stop")
    assert len(force) >= 1
    assert force[0]["slot"] == 0
    assert server.events("drain_end")[0]["message"] == "forced"
    slow[0].join(10)
    assert slow[0].status is None, "the overrunning request was cut off"
    assert elapsed < 25, "hang guard: the stop is bounded by timeout plus grace"


def test_second_sigint_forces_the_stop_at_once(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, "--shutdown-timeout", "60")
    server.wait_ready(1)
    _start_slow(server, 60)
    server.send(signal.SIGINT)
    server.wait_event("drain_start")
    server.send(signal.SIGINT)
    assert server.wait_exit(30) == 0
    assert server.events("force_stop")
    drain = server.events("drain_end")[0]
    assert drain["duration"] < 30, "did not wait for the 60 s drain timeout"


def test_blocked_process_worker_is_sigkilled_after_the_grace(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--mode", "process", "--shutdown-timeout", "0.5", "--force-stop-grace", "0.5")
    server.wait_ready(1)
    pid = server.live_pids()[0]
    blocked = _start_slow_path(server, "/hang?seconds=60")
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    messages = [e["message"] for e in server.events("force_stop")]
    assert messages == ["drain timeout exceeded", "still running; SIGKILL"]
    assert server.events("drain_end")[0]["signal"] == "SIGKILL"
    assert not pid_alive(pid)
    blocked.join(10)
    assert blocked.status is None


def test_thread_that_never_exits_is_reported_and_the_process_still_exits(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--mode", "thread", "--shutdown-timeout", "0.5", "--force-stop-grace", "0.5")
    server.wait_ready(1)
    _start_slow_path(server, "/hang?seconds=60")
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0, "nothing hangs: the stuck thread is abandoned"
    messages = [e["message"] for e in server.events("force_stop")]
    assert messages == ["drain timeout exceeded", "thread did not exit; abandoned"]
    assert any(r.get("event") == "worker could not be stopped" for r in server.records)


def _start_slow_path(server: CorralProcess, path: str) -> SlowRequest:
    request = SlowRequest(server.base_url + path)
    request.start()
    _wait_until_in_flight(server, 1)
    time.sleep(0.2)  # let the worker pick it up and block in it
    return request


# --- Group-wide signals --------------------------------------------------------------


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_the_forkserver_outlives_a_sigterm_meant_for_the_group(
    corral: Callable[..., CorralProcess],
) -> None:
    """Killing the workers' parent (the forkserver) must not look like every worker dying."""
    server = corral("--workers", "2", "--mode", "process")
    server.wait_ready(2)
    forkserver = _parent_pid(server.live_pids()[0])
    assert forkserver != server.pid
    os.kill(forkserver, signal.SIGTERM)
    # A dead forkserver shows up at once, as a crash with exit code 255 for
    # every worker. Give it a generous moment to show, then check it did not.
    time.sleep(1.0)
    assert pid_alive(forkserver)
    assert server.events("crash") == []
    assert server.get("/").status_code == 200
    server.send(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_sigterm_to_the_whole_process_group_is_a_clean_drain(
    corral: Callable[..., CorralProcess],
) -> None:
    """systemd's default KillMode and timeout(1) signal the group, workers and forkserver too."""
    server = corral("--workers", "3", "--mode", "process")
    server.wait_ready(3)
    os.killpg(server.pid, signal.SIGTERM)
    assert server.wait_exit() == 0
    assert server.events("crash") == []
    assert server.events("respawn") == []
    assert [event["exit_code"] for event in server.events("drain_end")] == [0, 0, 0]
