"""Crash-recovery latency: corral (process and thread mode) next to uvicorn --workers.

Each system serves ``examples.chaos:app`` on two workers, on loopback only.
The bench makes one worker fail, ``--kills`` times per system, taking the
systems in turn (one kill each per round), and measures from the moment of
the failure (``t_kill``):

* **A**, until the replacement worker exists. For corral this is the
  ``monotonic`` stamp of the next generation's ``spawn`` event (the
  supervisor's ``time.monotonic()``; CLOCK_MONOTONIC is system-wide on Linux,
  so it compares with the bench's own clock). For uvicorn and gunicorn, which
  log no such event, the bench polls ``/proc/<main>/task/<main>/children``
  every millisecond for a pid that was not there before the kill.
* **B**, until the replacement serves: the first ``200`` from it, asking on a
  fresh connection each time (1 ms apart).
* For corral also the ``crash`` and ``ready`` events' stamps.

How a worker fails:

* corral process mode and uvicorn/gunicorn: ``SIGKILL`` to a worker process.
* corral thread mode: threads cannot be killed, so ``GET /crash?slot=0``
  stops that worker's event loop. ``t_kill`` is taken just before sending the
  request that reached slot 0 (the others come back ``409`` and are retried).

Every kill waits for full recovery (B) plus 0.2 s before the next system's
turn. corral is started with ``--restart-window 1``; a worker that crashes
before it has been up a full window is a *back-to-back* crash and is
respawned after a backoff, by design. This bench measures the isolated-crash
path, so it never kills a corral worker younger than the window plus 0.25 s.

This is section 2 of ``make bench`` (``bench/run.py`` calls ``measure``, and
``make bench-quick`` runs corral process mode and uvicorn only, 5 kills). Alone:
``.venv/bin/python bench/recovery.py --kills 30 [--output FILE] [--quick]``
(``--output`` replaces the "2. Recovery" section of that file).
Every server runs in its own session and is stopped with SIGTERM to its
process group, then SIGKILL after 10 s, whatever happens.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP = "examples.chaos:app"
WORKERS = 2
RESTART_WINDOW = 1.0
MIN_UPTIME = RESTART_WINDOW + 0.25  # never kill a corral worker younger than this
SETTLE_SECONDS = 0.2  # pause after each full recovery
# Plus a random pause, so kills do not keep the same phase against a server's
# periodic timer (uvicorn checks its workers every 0.5 s).
JITTER_SECONDS = 0.5
READY_LAG_NOTABLE = 0.005  # B later than corral's ready event by more than this is reported
STARTUP_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 15.0  # per wait within one kill
EVENT_GRACE = 2.0  # how long an expected-but-optional log event may lag
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL after this
POLL_PAUSE = 0.001
REQUEST_TIMEOUT = 2.0
CRASH_REQUEST_TIMEOUT = 5.0
MAX_CRASH_ATTEMPTS = 200
DEFAULT_KILLS = 30
QUICK_KILLS = 5
DEFAULT_TIME_LIMIT = 300.0
SECTION_TITLE = "## 2. Recovery"

Record = dict[str, Any]
REQUEST_ERRORS = (OSError, http.client.HTTPException, ValueError)


class BenchError(Exception):
    """A wait timed out or a system misbehaved; the message says which and why."""


# --- Processes, logs and HTTP -------------------------------------------------


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _parse_json_line(line: str) -> Record | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return sorted(members)


def _killpg(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class ServerProcess:
    """One server started in its own session, its merged stdout/stderr read by a thread."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.lines: deque[str] = deque(maxlen=400)
        self.records: list[Record] = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            record = _parse_json_line(line)
            with self._cond:
                self.lines.append(line)
                if record is not None:
                    self.records.append(record)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def tail(self, count: int = 30) -> str:
        with self._cond:
            return "\n".join(list(self.lines)[-count:])

    def find(self, predicate: Callable[[Record], bool]) -> Record | None:
        """The latest record matching ``predicate``, if any."""
        with self._cond:
            return next((r for r in reversed(self.records) if predicate(r)), None)

    def find_all(self, predicate: Callable[[Record], bool]) -> list[Record]:
        with self._cond:
            return [r for r in self.records if predicate(r)]

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when the server logs something."""
        with self._cond:
            self._cond.wait(seconds)

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float, what: str) -> Record:
        """The first record matching ``predicate``; raises with the log tail on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((r for r in self.records if predicate(r)), None)
                if found is not None:
                    return found
                if self._eof:
                    raise BenchError(
                        f"{self.name} exited (code {self.proc.poll()}) while waiting for {what};"
                        f" log tail:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(
                        f"{self.name}: no {what} within {timeout:.0f} s; log tail:\n{self.tail()}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_optional(self, predicate: Callable[[Record], bool], timeout: float) -> Record | None:
        with contextlib.suppress(BenchError):
            return self.wait_for(predicate, timeout, "event")
        return None

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited unexpectedly with code {self.proc.returncode};"
                f" log tail:\n{self.tail()}"
            )

    def stop(self) -> list[str]:
        """SIGTERM to the whole process group, SIGKILL after ``STOP_GRACE``; notes on anything
        unclean (a forced kill, a non-zero exit, processes left behind)."""
        notes: list[str] = []
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        if self.proc.poll() is None:
            _killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                notes.append(f"{self.name}: still running {STOP_GRACE:.0f} s after SIGTERM")
                _killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        else:
            notes.append(f"{self.name}: had exited (code {self.proc.returncode}) before the stop")
        deadline = time.monotonic() + 2.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = group_members(pgid)
        if leftovers:
            notes.append(f"{self.name}: pids {leftovers} outlived the main process; SIGKILLed")
            _killpg(pgid, signal.SIGKILL)
        self._reader.join(5)
        code = self.proc.returncode
        if code not in (0, None) and not notes:
            notes.append(f"{self.name}: exit code {code} after SIGTERM (expected 0)")
        return notes


def stop_all_servers(servers: Sequence[ServerProcess]) -> list[str]:
    """Stop every server, even if one stop fails; SIGINT/SIGTERM wait until all are down."""
    notes: list[str] = []
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        for server in servers:
            try:
                notes.extend(server.stop())
            except Exception as exc:  # keep stopping the others
                notes.append(f"{server.name}: stop failed: {type(exc).__name__}: {exc}")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return notes


def http_get(port: int, path: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, Record]:
    """One GET on a fresh connection; the JSON body as a dict (empty if not an object)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        payload = json.loads(body) if body else {}
    except ValueError:  # e.g. uvicorn's plain-text 500
        payload = {}
    return response.status, payload if isinstance(payload, dict) else {}


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def children_of(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def lifecycle(kind: str, **fields: Any) -> Callable[[Record], bool]:
    def match(record: Record) -> bool:
        if not record.get("lifecycle") or record.get("event") != kind:
            return False
        return all(record.get(key) == value for key, value in fields.items())

    return match


def shown(argv: Sequence[str]) -> str:
    """A command line as a user would type it from the repository root."""
    parts = list(argv)
    with contextlib.suppress(ValueError):
        relative = Path(parts[0]).relative_to(ROOT)
        parts[0] = str(relative)
    return shlex.join(parts)


# --- Systems ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One kill, in seconds after ``t_kill``."""

    spawned: float  # A
    serving: float  # B
    crash_event: float | None = None  # corral only
    ready_event: float | None = None  # corral only
    requests: int = 0
    failed_requests: int = 0
    other_after_ready: int = 0  # corral: answers from the other slot after the ready stamp


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

    def stop(self) -> list[str]:
        if self.server is None:
            return []
        return self.server.stop()

    def running(self) -> ServerProcess:
        assert self.server is not None, "start() first"
        self.server.check_running()
        return self.server


class CorralSystem(System):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.key = f"corral-{mode}"
        self.label = f"corral, {mode} mode"
        self.port = 0
        self.argv = [
            sys.executable,
            "-m",
            "corral",
            "run",
            APP,
            "--workers",
            str(WORKERS),
            "--mode",
            mode,
            "--port",
            "0",
            "--max-restarts",
            "1000",
            "--restart-window",
            f"{RESTART_WINDOW:g}",
            "--metrics-port",
            "0",
        ]
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"crash-{mode}")
        self._crash_requests: list[Future[CrashOutcome]] = []

    def start(self) -> None:
        self.server = server = ServerProcess(self.label, self.argv)
        listening = server.wait_for(
            lambda r: r.get("event") == "corral listening", STARTUP_TIMEOUT, "'corral listening'"
        )
        port = urlsplit(listening["urls"][0]).port
        if port is None:
            raise BenchError(f"{self.label}: no port in {listening['urls']!r}")
        self.port = port
        for slot in range(WORKERS):
            server.wait_for(lifecycle("ready", slot=slot), STARTUP_TIMEOUT, f"slot {slot} ready")

    def kill_once(self) -> Sample:
        server = self.running()
        spawn = server.find(lifecycle("spawn", slot=0))
        if spawn is None:
            raise BenchError(f"{self.label}: no spawn event for slot 0; log tail:\n{server.tail()}")
        generation: int = spawn["generation"]
        new = generation + 1
        server.wait_for(
            lifecycle("ready", slot=0, generation=generation),
            RECOVERY_TIMEOUT,
            f"ready event for slot 0 generation {generation}",
        )
        # Only isolated crashes: a younger worker's death would be respawned after a backoff.
        time.sleep(max(0.0, spawn["monotonic"] + MIN_UPTIME - time.monotonic()))

        if self.mode == "process":
            t_kill = time.monotonic()
            os.kill(spawn["pid"], signal.SIGKILL)
        else:
            t_kill = self._crash_slot0(server, generation)

        poll = poll_http(
            self.port,
            "/?slot=0",
            lambda status, body: status == 200 and body.get("generation", 0) > generation,
            RECOVERY_TIMEOUT,
            f"{self.label}: a 200 from slot 0 generation {new}",
        )
        if poll.payload.get("generation") != new:
            self.notes.append(
                f"slot 0 answered as generation {poll.payload.get('generation')}, expected {new}"
            )
        spawned = server.wait_for(
            lifecycle("spawn", slot=0, generation=new), RECOVERY_TIMEOUT, f"spawn of gen {new}"
        )
        ready = server.wait_for(
            lifecycle("ready", slot=0, generation=new), RECOVERY_TIMEOUT, f"ready of gen {new}"
        )
        crash = server.wait_optional(lifecycle("crash", slot=0, generation=generation), EVENT_GRACE)
        respawn = server.wait_optional(
            lifecycle("respawn", slot=0, generation=generation), EVENT_GRACE
        )
        if crash is None:
            self.notes.append(f"no crash event for slot 0 generation {generation}")
        if respawn is None:
            self.notes.append(f"no respawn event for slot 0 generation {generation}")
        elif respawn.get("backoff"):
            self.notes.append(
                f"generation {generation} was respawned after a {respawn['backoff']:.3f} s backoff"
            )
        return Sample(
            spawned=spawned["monotonic"] - t_kill,
            serving=poll.at - t_kill,
            crash_event=crash["monotonic"] - t_kill if crash else None,
            ready_event=ready["monotonic"] - t_kill,
            requests=poll.requests,
            failed_requests=poll.failures,
            other_after_ready=sum(1 for t in poll.rejected_at if t > ready["monotonic"]),
        )

    def _crash_slot0(self, server: ServerProcess, generation: int) -> float:
        """Send ``/crash?slot=0`` until one reaches slot 0; the send time of that one."""
        crashed = lifecycle("crash", slot=0, generation=generation)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        for _ in range(MAX_CRASH_ATTEMPTS):
            t_send = time.monotonic()
            future = self._pool.submit(_crash_request, self.port)
            while not future.done():
                # The crashing request may never be answered: the crash event says it landed.
                if server.find(crashed) is not None:
                    self._crash_requests.append(future)
                    return t_send
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{self.label}: /crash?slot=0 neither answered nor crashed slot 0"
                        f" within {RECOVERY_TIMEOUT:.0f} s; log tail:\n{server.tail()}"
                    )
                server.pause(0.002)
            if future.result().status == 409:
                continue
            # Anything else reached slot 0: a failed request, or whatever the dying loop
            # managed to send. kill_once then insists on the crash and a new generation.
            self._crash_requests.append(future)
            return t_send
        raise BenchError(f"{self.label}: /crash never reached slot 0 in {MAX_CRASH_ATTEMPTS} tries")

    def crash_request_outcomes(self) -> list[CrashOutcome]:
        outcomes = []
        for future in self._crash_requests:
            with contextlib.suppress(TimeoutError, CancelledError):
                outcomes.append(future.result(timeout=CRASH_REQUEST_TIMEOUT + 1))
        return outcomes

    def stop(self) -> list[str]:
        notes = super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return notes


def _crash_request(port: int) -> CrashOutcome:
    start = time.monotonic()
    try:
        status, _ = http_get(port, "/crash?slot=0", timeout=CRASH_REQUEST_TIMEOUT)
    except REQUEST_ERRORS as exc:
        return CrashOutcome(None, type(exc).__name__, time.monotonic() - start)
    return CrashOutcome(status, None, time.monotonic() - start)


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
            stat = _proc_stat(pid)
            if stat is not None and stat[0] != "Z" and "resource_tracker" not in _cmdline(pid):
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
            requests=poll.requests,
            failed_requests=poll.failures,
        )


class UvicornSystem(ChildProcessSystem):
    def __init__(self) -> None:
        super().__init__("uvicorn", "uvicorn --workers 2")
        self.argv = [
            sys.executable,
            "-m",
            "uvicorn",
            APP,
            "--workers",
            str(WORKERS),
            "--port",
            str(self.port),
            "--host",
            HOST,
        ]


class GunicornSystem(ChildProcessSystem):
    def __init__(self, worker_class: str) -> None:
        super().__init__("gunicorn", "gunicorn + uvicorn workers")
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            APP,
            "--workers",
            str(WORKERS),
            "--worker-class",
            worker_class,
            "--bind",
            f"{HOST}:{self.port}",
        ]


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


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gunicorn_system() -> System:
    if not _importable("gunicorn"):
        return MissingSystem("gunicorn", "gunicorn + uvicorn workers", "not installed")
    if _importable("uvicorn_worker"):
        return GunicornSystem("uvicorn_worker.UvicornWorker")
    if _importable("uvicorn.workers"):
        return GunicornSystem("uvicorn.workers.UvicornWorker")
    return MissingSystem(
        "gunicorn", "gunicorn + uvicorn workers", "no UvicornWorker class installed"
    )


# --- Statistics and the report ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    median: float
    p99: float
    low: float
    high: float


def summarize(values: Sequence[float]) -> Stats | None:
    """Milliseconds; p99 by nearest rank (with 30 samples it is the maximum)."""
    if not values:
        return None
    ordered = sorted(v * 1000.0 for v in values)
    rank = math.ceil(0.99 * len(ordered))
    return Stats(
        len(ordered), statistics.median(ordered), ordered[rank - 1], ordered[0], ordered[-1]
    )


@dataclass(frozen=True, slots=True)
class Interval:
    name: str
    value: Callable[[Sample], float | None]


INTERVALS = (
    Interval("kill → `crash` event", lambda s: s.crash_event),
    Interval("**A** kill → replacement spawned", lambda s: s.spawned),
    Interval("kill → `ready` event", lambda s: s.ready_event),
    Interval("**B** kill → replacement serving", lambda s: s.serving),
)


def interval_stats(system: System, interval: Interval) -> Stats | None:
    values = [v for v in map(interval.value, system.samples) if v is not None]
    return summarize(values)


def render_table(systems: Sequence[System]) -> str:
    baseline = next((s for s in systems if s.key == "corral-process"), None)
    rows = [
        "| system | interval | n | median ms | p99 ms | min ms | max ms"
        " | median vs corral process |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for system in systems:
        if not system.available:
            rows.append(f"| {system.label} | {system.unavailable_reason} | 0 | | | | | |")
            continue
        for interval in INTERVALS:
            stats = interval_stats(system, interval)
            if stats is None:
                continue
            base = interval_stats(baseline, interval) if baseline else None
            ratio = f"{stats.median / base.median:.2f}x" if base and base.median > 0 else "n/a"
            rows.append(
                f"| {system.label} | {interval.name} | {stats.n} | {stats.median:.1f}"
                f" | {stats.p99:.1f} | {stats.low:.1f} | {stats.high:.1f} | {ratio} |"
            )
    return "\n".join(rows)


def _median(stats: Stats) -> float:
    return stats.median


def _p99(stats: Stats) -> float:
    return stats.p99


def target_lines(systems: Sequence[System]) -> list[str]:
    """Whether corral (either mode) is the lowest at median and p99, for A and for B."""
    pickers: tuple[tuple[str, Callable[[Stats], float]], ...] = (
        ("median", _median),
        ("p99", _p99),
    )
    lines = []
    for interval in (INTERVALS[1], INTERVALS[3]):
        stats = [(s, st) for s in systems if s.available if (st := interval_stats(s, interval))]
        if not stats:
            continue
        parts = []
        for name, pick in pickers:
            best, best_stats = min(stats, key=lambda item: pick(item[1]))
            verdict = "corral" if isinstance(best, CorralSystem) else "**not corral**"
            parts.append(f"lowest {name}: {best.label} ({pick(best_stats):.1f} ms, {verdict})")
        lines.append(f"- {interval.name}: " + "; ".join(parts) + ".")
        peers = [(s, st) for s, st in stats if not isinstance(s, CorralSystem)]
        for system, own in stats:
            if isinstance(system, CorralSystem) and peers:
                lines.append(f"  - {system.label}: " + _against_peers(own, peers))
    return lines


def _against_peers(own: Stats, peers: Sequence[tuple[System, Stats]]) -> str:
    """How one corral mode compares with the best peer at median and at p99."""
    parts = []
    for name, value in (("median", _median), ("p99", _p99)):
        peer, peer_stats = min(peers, key=lambda item: value(item[1]))
        mine, theirs = value(own), value(peer_stats)
        word = "lower" if mine < theirs else "**not lower**"
        parts.append(f"{name} {mine:.1f} ms vs {theirs:.1f} ms ({peer.label}): {word}")
    return "; ".join(parts) + "."


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        nproc = str(len(os.sched_getaffinity(0)))
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ("corral", "uvicorn", "uvloop", "httptools", "gunicorn", "uvicorn-worker")
    return {
        "nproc": nproc.strip(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(f"{p} {_version(p)}" for p in packages),
    }


def _crash_request_note(system: CorralSystem) -> str | None:
    outcomes = system.crash_request_outcomes()
    if not outcomes:
        return None
    errors: dict[str, list[float]] = {}
    for outcome in outcomes:
        kind = outcome.error or f"HTTP {outcome.status}"
        errors.setdefault(kind, []).append(outcome.elapsed * 1000)
    parts = [
        f"{len(times)} x {kind} after a median {statistics.median(times):.0f} ms"
        for kind, times in sorted(errors.items())
    ]
    return "the request that crashed the worker ended: " + "; ".join(parts)


def render_section(
    systems: Sequence[System],
    kills: int,
    started_utc: datetime.datetime,
    runtime: float,
    notes: Sequence[str],
    *,
    invocation: str | None = None,
) -> str:
    info = machine_info()
    invocation = invocation or shown([sys.executable, *sys.argv])
    lines = [
        SECTION_TITLE,
        "",
        "How long a 2-worker server takes to replace a worker that died, measured"
        " side by side on loopback. These numbers come from the last `make bench` run"
        " (the exact invocation is under *Run* below); reproduce them with `make bench` (or"
        " `.venv/bin/python bench/recovery.py --kills 30 --output BENCHMARKS.md`;"
        " `--quick` does 5 kills). They depend on the machine: compare the ratios,"
        " not the absolute numbers, across machines.",
        "",
        render_table(systems),
        "",
        "Target: corral is the lowest at median and at p99.",
        "",
        *target_lines(systems),
        "",
        "- **A**: from the kill until the replacement worker exists: corral's `spawn`"
        " event (its `monotonic` stamp); for uvicorn and gunicorn, a new child pid in"
        " `/proc/<main>/task/<main>/children`, polled every 1 ms.",
        "- **B**: from the kill until the replacement answers `200` to a request on a"
        " fresh connection (`GET /?slot=0` for corral, which the other slot answers"
        " with `409`; `GET /` for uvicorn and gunicorn, until a pid not alive before the kill"
        " answers). Requests are 1 ms apart, so B has about 1-2 ms of polling error.",
        "- `crash` / `ready` events: their `monotonic` stamps. `ready` is logged when the"
        " supervisor has processed the worker's report, so it may trail B slightly.",
        "- The kill: `SIGKILL` to slot 0's process (corral process mode) or to a worker"
        " (uvicorn, gunicorn). corral thread mode cannot kill a thread: `GET /crash?slot=0` stops"
        " the worker's event loop, and `t_kill` is taken just before the request that"
        " reached slot 0 (it includes that request's trip).",
        f"- {kills} kills per system, systems taken in turn (one kill each per round),"
        f" waiting for B plus {SETTLE_SECONDS:g} s and a random 0-{JITTER_SECONDS:g} s"
        " (so kills take every phase of uvicorn's 0.5 s worker check) after each."
        " corral runs with"
        f" `--restart-window {RESTART_WINDOW:g}` and no corral worker is killed before it"
        f" has been up {MIN_UPTIME:g} s, so every kill is an isolated crash (immediate"
        " respawn), not a crash loop (which backs off by design).",
        "",
        f"Run: {started_utc:%Y-%m-%d %H:%M} UTC, {runtime:.0f} s in total; `{invocation}`.",
        "",
        f"- Machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, {info['kernel']}",
        f"- Python: {info['python']}; {info['packages']}",
        "- Commands (cwd = repository root, `PYTHONPATH` = repository root;"
        " uvicorn's and gunicorn's ports are free ones picked at run time):",
    ]
    for system in systems:
        if system.available:
            lines.append(f"  - {system.label}: `{shown(system.argv)}`")
        else:
            lines.append(f"  - {system.label}: {system.unavailable_reason}, not measured")
    totals = [
        f"{s.label} {sum(x.failed_requests for x in s.samples)} of"
        f" {sum(x.requests for x in s.samples)}"
        for s in systems
        if s.available
    ]
    lines.append(f"- Polling requests that failed outright during recovery: {'; '.join(totals)}.")
    if notes:
        lines.append("- Observed during this run:")
        lines.extend(f"  - {note}" for note in notes)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section titled ``SECTION_TITLE`` in ``path``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION_TITLE), None)
    if start is None:
        updated = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        updated = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    path.write_text(updated)


# --- Main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS, help="kills per system")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_KILLS} kills per system")
    parser.add_argument("--output", type=Path, help="Markdown file to write the section into")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help="give up (and fail) if the kill rounds run past this many seconds",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses")
    args = parser.parse_args(argv)
    if args.quick:
        args.kills = QUICK_KILLS
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    return args


def run_rounds(systems: Sequence[System], kills: int, time_limit: float, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    for round_number in range(1, kills + 1):
        for system in systems:
            if time.monotonic() - started > time_limit:
                raise BenchError(
                    f"time limit of {time_limit:.0f} s reached in round {round_number}"
                )
            sample = system.kill_once()
            system.samples.append(sample)
            time.sleep(SETTLE_SECONDS + rng.uniform(0.0, JITTER_SECONDS))
        summary = ", ".join(f"{s.key} B={s.samples[-1].serving * 1000:.0f}ms" for s in systems)
        print(f"round {round_number}/{kills}: {summary}", file=sys.stderr, flush=True)


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the bench: stop the servers and leave."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def stop_all(systems: Sequence[System]) -> list[str]:
    """Stop every server, even if one stop fails; signals wait until all are down."""
    notes: list[str] = []
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        for system in systems:
            try:
                notes.extend(system.stop())
            except Exception as exc:  # keep stopping the others
                notes.append(f"{system.label}: stop failed: {type(exc).__name__}: {exc}")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return notes


def ready_lag_note(system: CorralSystem) -> str | None:
    """Evidence for kills where the replacement was ready but others kept getting the requests."""
    lagging = [
        s
        for s in system.samples
        if s.other_after_ready > 0
        and s.ready_event is not None
        and s.serving - s.ready_event > READY_LAG_NOTABLE
    ]
    if not lagging:
        return None
    gaps = [(s.serving - s.ready_event) * 1000 for s in system.samples if s.ready_event is not None]
    return (
        f"in {len(lagging)} of {len(system.samples)} kills B trailed the `ready` event by more"
        f" than {READY_LAG_NOTABLE * 1000:g} ms, while"
        f" {sum(s.other_after_ready for s in lagging)} polling requests in all were still"
        " answered by the other slot (409); over all kills B - `ready` was median"
        f" {statistics.median(gaps):.1f} ms, max {max(gaps):.1f} ms. Both workers accept()"
        " from one shared listening socket and the kernel hands a lone connection to"
        " whichever is woken first, so B also measures when the replacement first wins one."
    )


@dataclass(slots=True)
class RecoveryRun:
    """Everything one recovery measurement produced; ``failure`` says why it stopped early."""

    systems: list[System]
    notes: list[str]
    started_utc: datetime.datetime
    runtime: float
    failure: str | None


def measure(
    kills: int, time_limit: float, seed: int, keys: Sequence[str] | None = None
) -> RecoveryRun:
    """Start every system (or those named in ``keys``), run the kill rounds, stop them all
    (whatever happens)."""
    t0 = time.monotonic()
    started_utc = datetime.datetime.now(datetime.UTC)
    systems: list[System] = [
        CorralSystem("process"),
        CorralSystem("thread"),
        UvicornSystem(),
        gunicorn_system(),
    ]
    if keys is not None:
        systems = [s for s in systems if s.key in keys]
    active = [s for s in systems if s.available]
    started: list[System] = []
    notes: list[str] = []
    failure: str | None = None
    try:
        for system in active:
            print(f"starting {system.label}: {shown(system.argv)}", file=sys.stderr, flush=True)
            started.append(system)
            system.start()
        run_rounds(active, kills, time_limit, seed)
    except BenchError as exc:
        failure = str(exc)
    except Interrupted as exc:
        failure = f"interrupted by {exc}"
    finally:
        notes.extend(stop_all(started))
    for system in active:
        notes.extend(f"{system.label}: {note}" for note in dict.fromkeys(system.notes))
        if isinstance(system, CorralSystem):
            for note in (ready_lag_note(system), _crash_request_note(system)):
                if note:
                    notes.append(f"{system.label}: {note}")
    return RecoveryRun(systems, notes, started_utc, time.monotonic() - t0, failure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    run = measure(args.kills, args.time_limit, args.seed)
    if run.failure is not None:
        print(f"bench/recovery.py: FAILED: {run.failure}", file=sys.stderr)
        for note in run.notes:
            print(f"  note: {note}", file=sys.stderr)
        return 1
    section = render_section(run.systems, args.kills, run.started_utc, run.runtime, run.notes)
    print(section)
    if args.output is not None:
        write_section(args.output, section)
        print(f"wrote {args.output} ({run.runtime:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
