"""Shared fixtures: real ``corral`` processes on loopback, and a reader of their JSON logs.

``CorralProcess`` starts ``python -m corral run ...`` in its own session (so a
signal reaches only the supervisor unless a test sends it further), parses
every JSON log line it writes, and lets tests wait for lifecycle events.
Nothing here mocks the supervisor: tests observe it from the outside, the way
an operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.owned_dir import sweep_abandoned
from corral.request_stats.pool import DIRECTORY_PREFIX, default_parent

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


class CorralProcess:
    """One running ``corral run`` and everything it has logged so far."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        pass_fds: tuple[int, ...] = (),
        launcher: list[str] | None = None,
        *,
        program: list[str] | None = None,
    ) -> None:
        """``pass_fds`` stay open in corral; ``launcher`` is argv that ends by exec'ing
        the rest (the same process: what systemd socket activation needs); ``program``
        replaces ``python -m corral run`` (the console script, a user's own script)."""
        self.args = args
        program = program or [sys.executable, "-m", "corral", "run"]
        self.proc = subprocess.Popen(
            [*(launcher or []), *program, *args],
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self.lines: list[str] = []
        self.records: list[Event] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base_url = ""
        self.metrics_url = ""
        self.stats_dir = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        self.records.append(record)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # --- Waiting on what it logs ---------------------------------------------

    def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float = 15.0, count: int = 1
    ) -> list[Event]:
        """Block until ``count`` log records match, or fail with the log tail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.records if predicate(r)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(
                        f"waited for {count} matching record(s); log tail:\n{tail}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        """Block until a raw output line contains ``text`` (for non-JSON output)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line containing {text!r}; got:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_event(
        self, kind: str, timeout: float = 15.0, count: int = 1, **fields: Any
    ) -> list[Event]:
        return self.wait_for(lambda r: _is_event(r, kind, fields), timeout, count)

    def events(self, kind: str | None = None, **fields: Any) -> list[Event]:
        with self._cond:
            return [
                r
                for r in self.records
                if r.get("lifecycle") and (kind is None or _is_event(r, kind, fields))
            ]

    def wait_ready(self, workers: int, timeout: float = 30.0) -> None:
        """Wait for the listening line and ``workers`` ready events."""
        listening = self.wait_for(lambda r: r.get("event") == "corral listening", timeout)[0]
        self.base_url = listening["urls"][0]
        self.metrics_url = listening.get("metrics_url") or ""
        self.stats_dir = listening.get("request_stats_dir") or ""
        self.wait_event("ready", timeout=timeout, count=workers)

    # --- Acting on it -----------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.proc.pid, signum)

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        """One request on a fresh connection."""
        return httpx.get(self.base_url + path, timeout=timeout, headers={"connection": "close"})

    def side(self, path: str, timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
        """A request to the side port (metrics, health, workers, events)."""
        assert self.metrics_url, "call wait_ready first; is the side port on?"
        return httpx.get(self.metrics_url + path, timeout=timeout, **kwargs)

    def scrape(self) -> Metrics:
        reply = self.side("/metrics")
        assert reply.status_code == 200, reply.text
        return Metrics(reply.text)

    def crash_slot(self, mode: str, slot: int) -> None:
        """Kill ``slot``'s current worker the way a real failure would.

        Process mode: SIGKILL its pid. Thread mode: make that worker's event
        loop fail through the chaos app, retrying on fresh connections until
        the request lands on the wanted slot (others answer 409).
        """
        if mode == "process":
            os.kill(self.live_pids()[slot], signal.SIGKILL)
            return
        crashed_before = len(self.events("crash", slot=slot))
        # Generous: one shared listener spreads connections very unevenly.
        for _ in range(2000):
            try:
                reply = httpx.get(f"{self.base_url}/crash?slot={slot}", timeout=3)
            except httpx.HTTPError:
                pass  # the loop died under the request: but whose loop?
            else:
                if reply.status_code == 409:
                    continue
            # A connection can be accepted by *another* worker that is dying
            # at the same moment, so only the slot's own crash event counts.
            with contextlib.suppress(AssertionError):
                self.wait_event("crash", slot=slot, count=crashed_before + 1, timeout=3)
                return
        raise AssertionError(f"never crashed slot {slot}")

    def crash_generations(self, mode: str, slot: int, generations: int) -> None:
        """Crash ``slot`` once it is ready, ``generations`` times in a row, from generation 1."""
        for generation in range(1, generations + 1):
            self.wait_event("ready", slot=slot, generation=generation)
            self.crash_slot(mode, slot)

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def live_pids(self) -> dict[int, int]:
        """slot -> pid of the latest incarnation, from spawn and promote events
        (a spare's own spawn names no slot)."""
        pids: dict[int, int] = {}
        for event in self.events():
            if event.get("event") in ("spawn", "promote") and "slot" in event:
                pids[event["slot"]] = event["pid"]
        return pids

    def kill_hard(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class Metrics:
    """One scrape, parsed with prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; fails the test if no sample matches exactly one series."""
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} matching samples"
        return found[0][2]

    def sum(self, name: str, **labels: str) -> float:
        return sum(value for _, _, value in self.find(name, **labels))

    def find(self, name: str, **labels: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            sample
            for sample in self.samples
            if sample[0] == name and all(sample[1].get(k) == v for k, v in labels.items())
        ]

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def _is_event(record: Event, kind: str, fields: dict[str, Any]) -> bool:
    if not record.get("lifecycle") or record.get("event") != kind:
        return False
    return all(record.get(key) == value for key, value in fields.items())


def eventually(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``condition`` (cheaply, every 20 ms) until it holds, or fail after ``timeout``.

    For state only visible by asking (a scrape, a JSON endpoint); lifecycle
    events should be awaited with ``wait_event`` instead.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {what or condition}")
        time.sleep(0.02)


def corral_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    # Tests run side by side and never on the default side port (9180).
    env["CORRAL_METRICS_PORT"] = "0"
    env.update(extra)
    return env


# A hang guard for commands that should exit at once: generous, because this
# may be a loaded two-core machine, but finite so a regression cannot block CI.
CLI_TIMEOUT = 60.0


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m corral ARGS`` to completion in its own session.

    If it does not exit within ``timeout`` (say, a bad input was accepted and
    corral started serving), the whole process group, workers included, is
    killed and the test fails with what it printed.
    """
    command = [sys.executable, "-m", "corral", *args]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=corral_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"corral {' '.join(args)} did not exit within {timeout}s\n"
            f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
        )
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.fixture
def corral() -> Iterator[Callable[..., CorralProcess]]:
    """Factory: ``corral("--workers", "2", env={...})`` starts a supervisor on a free port."""
    started: list[CorralProcess] = []

    def start(
        *args: str,
        app: str = "examples.chaos:app",
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        port: bool = True,
        pass_fds: tuple[int, ...] = (),
        launcher: list[str] | None = None,
    ) -> CorralProcess:
        argv = [app, *args]
        if port:
            argv += ["--port", "0"]
        process = CorralProcess(argv, corral_env(**(env or {})), cwd, pass_fds, launcher)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill_hard()


@pytest.fixture(scope="session", autouse=True)
def sweep_request_stats_directories() -> Iterator[None]:
    """Teardown SIGKILLs corral, which cannot remove its /dev/shm directory; each new
    corral sweeps its dead predecessors', and this sweeps the last ones."""
    yield
    sweep_abandoned(DIRECTORY_PREFIX, default_parent())


@pytest.fixture(params=["process", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run a test once per worker mode: both must pass the same integration tests."""
    value: str = request.param
    return value


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return status != "Z"
    return True
