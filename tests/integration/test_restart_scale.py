"""Rolling restarts (SIGHUP / restart_workers), code reload, scaling, and orphan safety."""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import CorralProcess, eventually, pid_alive


class Load(threading.Thread):
    """Light, steady load: one request at a time, each on a new connection."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                reply = httpx.get(self.url, timeout=10, headers={"connection": "close"})
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            if reply.status_code == 200:
                self.ok += 1
            else:
                self.failures.append(f"status {reply.status_code}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def test_sighup_rolling_restart_under_load_drops_nothing(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "3", "--mode", mode)
    server.wait_ready(3)
    load = Load(server.base_url + "/")
    load.start()
    # Served before the roll, and again after it: counted, not timed, so a
    # slow machine sends fewer requests but the test means the same.
    eventually(lambda: load.ok >= 5, what="requests served before the SIGHUP")
    server.send(signal.SIGHUP)
    for slot in range(3):
        server.wait_event("drain_end", slot=slot, generation=1)
    after_roll = load.ok
    eventually(lambda: load.ok >= after_roll + 5, what="requests served after the roll")
    load.stop()
    assert load.failures == []
    assert server.proc.poll() is None
    # One slot at a time, and each replacement was ready before its predecessor drained.
    ordered = [
        (e["event"], e["slot"], e["generation"])
        for e in server.events()
        if e["event"] in {"ready", "drain_start"} and e["generation"] > 0
    ]
    for slot in range(3):
        assert ordered.index(("ready", slot, 2)) < ordered.index(("drain_start", slot, 1))
    assert len(server.events("reload")) == 1
    assert not server.events("crash")
    generations = {server.get("/").json()["generation"] for _ in range(20)}
    assert generations == {2}


def test_restart_never_stops_the_supervisor_even_with_one_worker(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode)
    server.wait_ready(1)
    for generation in (2, 3, 4):
        server.send(signal.SIGHUP)
        server.wait_event("ready", slot=0, generation=generation)
        server.wait_event("drain_end", slot=0, generation=generation - 1)
        assert server.get("/").status_code == 200
    assert server.proc.poll() is None
    assert not server.events("supervisor_stop")


def test_sighup_storm_is_coalesced_and_survived(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    for _ in range(10):
        server.send(signal.SIGHUP)
        time.sleep(0.02)
    server.wait_for(lambda r: r.get("event") == "reload", count=1)
    time.sleep(2)
    server.wait_for(lambda _: not _rolling(server), timeout=30)
    assert server.get("/").status_code == 200
    assert server.proc.poll() is None
    assert 1 <= len(server.events("reload")) <= 10
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0


def _rolling(server: CorralProcess) -> bool:
    spawns = len(server.events("spawn"))
    readies = len(server.events("ready"))
    return spawns != readies


def test_reload_picks_up_changed_code(
    corral: Callable[..., CorralProcess], mode: str, tmp_path: Path
) -> None:
    package = tmp_path / "reloadme"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(Path(__file__).parent / "version_app.py", package / "app.py")
    (package / "version.py").write_text("VERSION = 'one'\n")
    server = corral(
        "--workers", "2", "--mode", mode, "--app-dir", str(tmp_path), app="reloadme.app:app"
    )
    server.wait_ready(2)
    assert server.get("/").text == "one"
    (package / "version.py").write_text("VERSION = 'two'\n")
    server.send(signal.SIGHUP)
    for slot in (0, 1):
        server.wait_event("drain_end", slot=slot, generation=1)
    assert {server.get("/").text for _ in range(10)} == {"two"}


def test_ttin_adds_and_ttou_removes_a_worker(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    server.send(signal.SIGTTIN)
    server.wait_event("ready", slot=2)
    assert server.events("scale_up")[0]["workers"] == 3
    server.send(signal.SIGTTOU)
    server.wait_event("drain_end", slot=2)
    assert server.events("scale_down")[0]["workers"] == 2
    replies = {server.get("/").json()["slot"] for _ in range(60)}
    assert replies <= {0, 1}
    assert server.proc.poll() is None


def test_orphaned_process_workers_exit_when_supervisor_is_killed(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "3", "--mode", "process")
    server.wait_ready(3)
    pids = list(server.live_pids().values())
    url = server.base_url
    server.send(signal.SIGKILL)
    server.wait_exit(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in pids), "no orphan keeps running"
    try:
        httpx.get(url + "/", timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("an orphan is still serving on the port")


def test_reload_revives_exhausted_slots_with_a_fresh_budget(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode, "--max-restarts", "1")
    server.wait_ready(2)
    server.crash_generations(mode, 0, 2)
    server.wait_event("budget_exhausted", slot=0)
    server.send(signal.SIGHUP)
    server.wait_event("ready", slot=0, generation=3)
    server.wait_event("drain_end", slot=1, generation=1)
    assert server.proc.poll() is None
    server.crash_slot(mode, 0)
    respawn = server.wait_event("respawn", slot=0, count=2)[1]
    assert respawn["budget_remaining"] == 0, "a fresh budget of one restart, now used"


def test_scale_down_gives_up_an_exhausted_slot_first(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode, "--max-restarts", "0")
    server.wait_ready(2)
    server.crash_slot(mode, 0)
    server.wait_event("budget_exhausted", slot=0)
    server.send(signal.SIGTTOU)
    scaled = server.wait_event("scale_down")[0]
    assert scaled["slot"] == 0
    assert scaled["workers"] == 1
    assert [server.get("/").json()["slot"] for _ in range(5)] == [1] * 5


def _open_connection(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_connection_accepted_before_a_drain_still_gets_its_answer(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    """A client that connected, and was accepted, but had not sent its request yet
    when the drain began is a request in flight, not an idle keep-alive connection."""
    server = corral("--workers", "1", "--mode", mode)
    server.wait_ready(1)
    sock = _open_connection(server.base_url)
    # Make sure generation 1 has accepted it: a reply on a second connection
    # proves the loop has run past its accept callbacks.
    assert server.get("/").json()["generation"] == 1
    server.send(signal.SIGHUP)
    server.wait_event("drain_start", slot=0, generation=1)
    time.sleep(0.5)  # well past uvicorn's 0.1 s shutdown tick
    sock.sendall(b"GET / HTTP/1.1\r\nHost: corral\r\n\r\n")
    reply = _read_response(sock)
    sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply  # and _read_response saw the close
    assert b'"generation":1' in body.replace(b" ", b"")
    server.wait_event("drain_end", slot=0, generation=1)
    assert not server.events("force_stop")


def test_a_fresh_connection_that_never_speaks_holds_a_drain_only_for_the_keep_alive_timeout(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, "--timeout-keep-alive", "1")
    server.wait_ready(1)
    sock = _open_connection(server.base_url)
    assert server.get("/").json()["generation"] == 1
    server.send(signal.SIGHUP)
    server.wait_event("drain_start", slot=0, generation=1)
    (end,) = server.wait_event("drain_end", slot=0, generation=1)
    assert _read_response(sock) == b""  # closed without a word: it never asked anything
    sock.close()
    assert 0.9 <= end["duration"] < 5, end
    assert not server.events("force_stop")
