"""The embeddable ``Supervisor`` API: run, status, restart_workers and shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from corral.appload import load_app
from corral.config import ServerConfig
from corral.errors import ExitCode
from corral.handles import ThreadWorker
from corral.lifecycle import CrashReason, EventKind, LifecycleCollector, LifecycleEvent
from corral.listeners import create_listeners, describe
from corral.runtime import WorkerMode
from corral.supervisor import Supervisor, WorkerStatus

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
        assert row.state == "ready"
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
