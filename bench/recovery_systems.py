"""Recovery (section 2): the systems under test, and how each one is made to lose a worker.

``System`` is one server: ``start``, then ``kill_once`` repeatedly (each
returns a ``Sample``), then ``stop``. corral's own system is in
``bench/recovery_corral.py``; here are the pre-fork peers (uvicorn,
gunicorn), whose workers are children of one main process, and the polling
that times the replacement's first answer.
"""

from __future__ import annotations

import abc
import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.commands import (
    granian_argv,
    gunicorn_argv,
    importable,
    uvicorn_argv,
    uvicorn_worker_class,
)
from bench.procfs import alive, children_of, cmdline
from bench.servers import (
    REQUEST_ERRORS,
    BenchError,
    Record,
    ServerProcess,
    free_port,
    http_get,
)

APP = "examples.chaos:app"
WORKERS = 2
STARTUP_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 15.0  # per wait within one kill
POLL_PAUSE = 0.001
SETTLE_SECONDS = 0.2  # pause after each full recovery
# Plus a random pause, so kills do not keep the same phase against a server's
# periodic timer (uvicorn checks its workers every 0.5 s).
JITTER_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Poll:
    at: float  # time.monotonic() right after the accepted response was read
    requests: int
    failures: int  # requests that failed outright (refused, reset, timed out)
    payload: Record
    rejected_at: tuple[float, ...]  # when each answer that was not accepted arrived


def poll_http(
    port: int, path: str, accept: Callable[[int, Record], bool], timeout: float, what: str
) -> Poll:
    """GET ``path`` on fresh connections, 1 ms apart, until ``accept`` says yes."""
    deadline = time.monotonic() + timeout
    requests = failures = 0
    rejected: list[float] = []
    last = "no answer"
    while True:
        requests += 1
        try:
            status, payload = http_get(port, path)
        except REQUEST_ERRORS as exc:
            failures += 1
            last = f"{type(exc).__name__}: {exc}"
        else:
            now = time.monotonic()
            if accept(status, payload):
                return Poll(now, requests, failures, payload, tuple(rejected))
            rejected.append(now)
            last = f"{status} {payload}"
        if time.monotonic() >= deadline:
            raise BenchError(
                f"{what}: not seen within {timeout:g} s ({requests} requests, last: {last})"
            )
        time.sleep(POLL_PAUSE)


def lifecycle(kind: str, **fields: Any) -> Callable[[Record], bool]:
    def match(record: Record) -> bool:
        if not record.get("lifecycle") or record.get("event") != kind:
            return False
        return all(record.get(key) == value for key, value in fields.items())

    return match


@dataclass(frozen=True, slots=True)
class Sample:
    """One kill, in seconds after ``t_kill``."""

    spawned: float  # A
    serving: float  # B
    gone: float | None = None  # the kernel reports the killed process gone (a pidfd)
    crash_event: float | None = None  # corral only
    ready_event: float | None = None  # corral only
    requests: int = 0
    failed_requests: int = 0
    other_after_ready: int = 0  # corral: answers from the other slot after the ready stamp


class ExitWatch:
    """When the kernel reports a process gone: its pidfd (Linux 5.3+) turns readable
    once the process has exited and its memory is freed, whoever its parent is. A
    thread waits on it so the kill's other measurements start at once. This is
    the floor under every system's "replacement spawned": nothing can notice the
    death earlier."""

    def __init__(self, pid: int) -> None:
        self._at: float | None = None
        self._thread: threading.Thread | None = None
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux, or already gone
            return
        self._thread = threading.Thread(target=self._wait, args=(fd,), daemon=True)
        self._thread.start()

    def _wait(self, fd: int) -> None:
        try:
            if select.select([fd], [], [], RECOVERY_TIMEOUT)[0]:
                self._at = time.monotonic()
        finally:
            os.close(fd)

    def since(self, t_kill: float) -> float | None:
        """Seconds from ``t_kill`` to the exit, or ``None`` if it was not seen."""
        if self._thread is not None:
            self._thread.join(RECOVERY_TIMEOUT)
        return None if self._at is None else self._at - t_kill


@dataclass(frozen=True, slots=True)
class CrashOutcome:
    """What became of the request that crashed a thread-mode worker."""

    status: int | None
    error: str | None
    elapsed: float


class System(abc.ABC):
    """One server under test. ``start``, then ``kill_once`` repeatedly, then ``stop``."""

    key: str
    label: str
    available = True
    unavailable_reason = ""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.notes: list[str] = []
        self.argv: list[str] = []
        self.server: ServerProcess | None = None

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def kill_once(self) -> Sample: ...

    @property
    def name(self) -> str:
        return self.label

    def stop(self) -> list[str]:
        if self.server is None:
            return []
        return self.server.stop()

    def running(self) -> ServerProcess:
        assert self.server is not None, "start() first"
        self.server.check_running()
        return self.server


class ChildProcessSystem(System):
    """A pre-fork server whose workers are child processes of one main process."""

    def __init__(self, key: str, label: str) -> None:
        super().__init__()
        self.key = key
        self.label = label
        self.port = free_port()

    def workers(self) -> list[int]:
        """The main process's live worker children (not multiprocessing's resource tracker)."""
        assert self.server is not None
        found = []
        for pid in children_of(self.server.pid):
            if alive(pid) and "resource_tracker" not in cmdline(pid):
                found.append(pid)
        return sorted(found)

    def start(self) -> None:
        self.server = ServerProcess(self.label, self.argv)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        answered: set[int] = set()
        while True:
            self.running()
            with contextlib.suppress(*REQUEST_ERRORS):
                status, body = http_get(self.port, "/")
                if status == 200:
                    answered.add(body["pid"])
            workers = self.workers()
            if len(workers) == WORKERS and answered.issuperset(workers):
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: {WORKERS} workers not all serving within"
                    f" {STARTUP_TIMEOUT:.0f} s (children {workers}, answered {sorted(answered)});"
                    f" log tail:\n{self.server.tail()}"
                )
            time.sleep(0.01)

    def kill_once(self) -> Sample:
        server = self.running()
        before = children_of(server.pid)
        workers = self.workers()
        if len(workers) != WORKERS:
            raise BenchError(f"{self.label}: expected {WORKERS} workers, found {workers}")
        victim = workers[0]
        exited = ExitWatch(victim)
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline = t_kill + RECOVERY_TIMEOUT
        while not children_of(server.pid) - before:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: no new worker process within {RECOVERY_TIMEOUT:.0f} s"
                    f" of killing {victim}; log tail:\n{server.tail()}"
                )
            time.sleep(POLL_PAUSE)
        t_spawned = time.monotonic()
        poll = poll_http(
            self.port,
            "/",
            lambda status, body: status == 200 and body.get("pid") not in before,
            RECOVERY_TIMEOUT,
            f"{self.label}: a 200 from the replacement of pid {victim}",
        )
        return Sample(
            spawned=t_spawned - t_kill,
            serving=poll.at - t_kill,
            gone=exited.since(t_kill),
            requests=poll.requests,
            failed_requests=poll.failures,
        )


class UvicornSystem(ChildProcessSystem):
    def __init__(self) -> None:
        super().__init__("uvicorn", "uvicorn --workers 2")
        self.argv = uvicorn_argv(APP, self.port, WORKERS)


class GunicornSystem(ChildProcessSystem):
    def __init__(self, worker_class: str) -> None:
        super().__init__("gunicorn", "gunicorn + uvicorn workers")
        self.argv = gunicorn_argv(APP, self.port, WORKERS, worker_class)


class GranianSystem(ChildProcessSystem):
    """granian restarts a dead worker only when told to (``--respawn-failed-workers``)."""

    def __init__(self) -> None:
        super().__init__("granian", "granian --respawn-failed-workers")
        self.argv = [*granian_argv(APP, self.port, WORKERS), "--respawn-failed-workers"]


class MissingSystem(System):
    def __init__(self, key: str, label: str, reason: str) -> None:
        super().__init__()
        self.key = key
        self.label = label
        self.available = False
        self.unavailable_reason = reason

    def start(self) -> None:
        raise BenchError(f"{self.label}: {self.unavailable_reason}")

    def kill_once(self) -> Sample:
        raise BenchError(f"{self.label}: {self.unavailable_reason}")


def granian_system() -> System:
    if importable("granian"):
        return GranianSystem()
    return MissingSystem("granian", "granian --respawn-failed-workers", "not installed")


def gunicorn_system() -> System:
    worker_class = uvicorn_worker_class()
    if worker_class is not None:
        return GunicornSystem(worker_class)
    reason = "not installed" if not importable("gunicorn") else "no UvicornWorker class installed"
    return MissingSystem("gunicorn", "gunicorn + uvicorn workers", reason)
