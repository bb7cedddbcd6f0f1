"""The embeddable ``Supervisor`` API: run, status, restart_workers and shutdown."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.appload import load_app
from corral.config import ServerConfig
from corral.errors import ConfigError, ExitCode
from corral.lifecycle import CrashReason, EventKind, LifecycleCollector, LifecycleEvent
from corral.listeners import create_listeners, describe
from corral.runtime import WorkerMode
from corral.states import SlotState, WorkerStatus
from corral.supervisor import Supervisor
from corral.thread_worker import ThreadWorker

APP_PATH = "examples.chaos:app"


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.cond = threading.Condition()

    def handle(self, event: LifecycleEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, kind: EventKind, count: int = 1, timeout: float = 20) -> list[LifecycleEvent]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events if e.kind is kind]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {count} {kind}"
                self.cond.wait(remaining)


class Running:
    def __init__(self, mode: WorkerMode) -> None:
        config = ServerConfig(port=0, workers=2, mode=mode)
        self.sockets = create_listeners(config)
        self.url = describe(self.sockets[0])
        self.recorder = Recorder()
        self.supervisor = Supervisor(
            config,
            load_app(APP_PATH),
            lifecycle_collector=LifecycleCollector([self.recorder]),
            app_path=APP_PATH,
        )
        self.code: ExitCode | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.supervisor.run(self.sockets)


@pytest.fixture
def running(mode: str) -> Iterator[Running]:
    harness = Running(WorkerMode(mode))
    harness.thread.start()
    harness.recorder.wait(EventKind.READY, count=2)
    yield harness
    harness.supervisor.shutdown()
    harness.thread.join(30)


def test_properties_and_status_snapshot(running: Running, mode: str) -> None:
    supervisor = running.supervisor
    assert supervisor.mode is WorkerMode(mode)
    assert supervisor.worker_count == 2
    rows = supervisor.status()
    assert [row.slot for row in rows] == [0, 1]
    for row in rows:
        assert isinstance(row, WorkerStatus)
        assert row.mode == mode
        assert row.state is SlotState.READY
        assert row.generation == 1
        assert row.restarts_in_window == 0
        assert row.budget_remaining == 5
        assert row.last_exit is None
        assert row.started_at is not None
        assert row.started_at <= time.time()
        assert row.pid is not None
        assert (row.thread_id is not None) == (mode == "thread")


def test_status_is_safe_to_read_from_many_threads(running: Running) -> None:
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(200):
                assert len(running.supervisor.status()) == 2
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    running.supervisor.restart_workers()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_crash_shows_in_status(running: Running, mode: str) -> None:
    for _ in range(100):
        try:
            reply = httpx.get(running.url + "/crash?slot=0", timeout=3)
        except httpx.HTTPError:
            break
        if reply.status_code != 409:
            break
    running.recorder.wait(EventKind.READY, count=3)
    row = running.supervisor.status()[0]
    assert row.generation == 2
    assert row.restarts_in_window == 1
    assert row.budget_remaining == 4
    assert row.last_exit is not None


def test_restart_workers_rolls_and_keeps_running(running: Running) -> None:
    running.supervisor.restart_workers()
    running.recorder.wait(EventKind.DRAIN_END, count=2)
    assert running.thread.is_alive()
    assert [row.generation for row in running.supervisor.status()] == [2, 2]
    assert httpx.get(running.url + "/", timeout=5).json()["generation"] == 2


def test_shutdown_is_non_blocking_and_run_returns_ok(running: Running) -> None:
    started = time.monotonic()
    running.supervisor.shutdown()
    assert time.monotonic() - started < 0.5
    running.thread.join(30)
    assert running.code is ExitCode.OK
    kinds = [e.kind for e in running.recorder.events]
    assert kinds[0] is EventKind.SUPERVISOR_START
    assert kinds[-1] is EventKind.SUPERVISOR_STOP
    assert kinds.count(EventKind.DRAIN_END) == 2
    assert [e.seq for e in running.recorder.events] == list(range(1, len(kinds) + 1))


def test_a_worker_that_cannot_be_started_is_accounted_as_a_boot_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault injection: the OS refuses the first two thread starts (as with EMFILE)."""
    real_start = ThreadWorker.start
    refusals = [OSError("simulated: too many open files")] * 2

    def flaky_start(self: ThreadWorker) -> None:
        if refusals:
            raise refusals.pop()
        real_start(self)

    monkeypatch.setattr(ThreadWorker, "start", flaky_start)
    config = ServerConfig(port=0, workers=1, mode=WorkerMode.THREAD, backoff_base=0.01)
    recorder = Recorder()
    supervisor = Supervisor(
        config,
        load_app(APP_PATH),
        lifecycle_collector=LifecycleCollector([recorder]),
        app_path=APP_PATH,
    )
    thread = threading.Thread(target=supervisor.run, args=(create_listeners(config),))
    thread.start()
    try:
        ready = recorder.wait(EventKind.READY)[0]
        assert ready.generation == 3
        crashes = recorder.wait(EventKind.CRASH, count=2)
        assert [c.reason for c in crashes] == [CrashReason.BOOT, CrashReason.BOOT]
        assert all("could not start" in (c.message or "") for c in crashes)
        assert supervisor.status()[0].restarts_in_window == 2
    finally:
        supervisor.shutdown()
        thread.join(30)


# --- The documented constructor, one argument at a time -----------------------------
#
# Supervisor(config, app, *, mode=None, ssl_context=None, lifecycle_collector=None,
#            app_path=None), with mode, worker_count, run(sockets), shutdown() and
# restart_workers(). The fixtures above cover lifecycle_collector, app_path, run,
# shutdown, restart_workers and worker_count; these cover the rest.


def _serve_briefly(
    supervisor: Supervisor, config: ServerConfig, url_scheme: str = "http"
) -> dict[str, object]:
    """Run ``supervisor`` until one request was answered; return that answer."""
    sockets = create_listeners(config)
    url = describe(sockets[0], tls=url_scheme == "https")
    thread = threading.Thread(target=supervisor.run, args=(sockets,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while [row.state for row in supervisor.status()] != [SlotState.READY]:
            assert time.monotonic() < deadline, supervisor.status()
            time.sleep(0.02)
        body: dict[str, object] = httpx.get(url + "/", timeout=5, verify=False).json()
        return body
    finally:
        supervisor.shutdown()
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize("mode", [WorkerMode.THREAD, WorkerMode.PROCESS])
def test_the_mode_argument_overrides_the_config(mode: WorkerMode) -> None:
    other = WorkerMode.PROCESS if mode is WorkerMode.THREAD else WorkerMode.THREAD
    config = ServerConfig(port=0, workers=1, mode=other)
    supervisor = Supervisor(config, load_app(APP_PATH), mode=mode, app_path=APP_PATH)
    assert supervisor.mode is mode
    assert supervisor.mode_decision.mode is mode
    answer = _serve_briefly(supervisor, config)
    assert (answer["pid"] == os.getpid()) == (mode is WorkerMode.THREAD)
    assert answer["slot"] == 0


def test_an_ssl_context_serves_tls_in_thread_mode(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    config = ServerConfig(port=0, workers=1, mode=WorkerMode.THREAD)
    supervisor = Supervisor(config, load_app(APP_PATH), ssl_context=context)
    answer = _serve_briefly(supervisor, config, url_scheme="https")
    assert answer["pid"] == os.getpid()  # served over TLS by a thread worker


def test_process_mode_refuses_what_cannot_cross_into_a_process() -> None:
    config = ServerConfig(port=0, workers=1, mode=WorkerMode.PROCESS)
    app = load_app(APP_PATH)
    with pytest.raises(ConfigError, match="needs app_path"):
        Supervisor(config, app)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ConfigError, match="SSLContext cannot cross"):
        Supervisor(config, app, app_path=APP_PATH, ssl_context=context)


def test_without_a_collector_the_supervisor_makes_its_own() -> None:
    config = ServerConfig(port=0, workers=1, mode=WorkerMode.THREAD)
    supervisor = Supervisor(config, load_app(APP_PATH))
    assert isinstance(supervisor.collector, LifecycleCollector)
    _serve_briefly(supervisor, config)
    kinds = [event.kind for event in supervisor.collector.recent(0)]
    assert kinds[0] is EventKind.SUPERVISOR_START
    assert kinds[-1] is EventKind.SUPERVISOR_STOP
    assert EventKind.READY in kinds
