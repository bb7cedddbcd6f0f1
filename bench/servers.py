"""Starting and stopping the servers under test, and asking them whether they serve.

Every server runs in its own session, its merged stdout/stderr read by a
thread (JSON lines become records a section can wait for), and is stopped
with SIGTERM to its process group, then SIGKILL after ``STOP_GRACE``,
whatever happens. The command lines come from ``bench/commands.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.procfs import group_members

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STOP_GRACE = 10.0
REQUEST_TIMEOUT = 2.0

Record = dict[str, Any]
REQUEST_ERRORS = (OSError, http.client.HTTPException, ValueError)


class BenchError(Exception):
    """A wait timed out or a system misbehaved; the message says which and why."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the bench: stop the servers and leave."""


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
        """Also the process group's id: the server leads its own session."""
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
        notes = self._terminate()
        pgid = self.proc.pid
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

    def _terminate(self) -> list[str]:
        if self.proc.poll() is not None:
            return [f"{self.name}: had exited (code {self.proc.returncode}) before the stop"]
        _killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            return [f"{self.name}: still running {STOP_GRACE:.0f} s after SIGTERM"]
        return []


class Stoppable(Protocol):
    """A server, or a system around one: stopped whatever happens, with notes."""

    @property
    def name(self) -> str: ...

    def stop(self) -> list[str]: ...


def stop_all_servers(servers: Sequence[Stoppable]) -> list[str]:
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
    status, body = http_get_raw(port, path, timeout, close=True)
    try:
        payload = json.loads(body) if body else {}
    except ValueError:  # e.g. uvicorn's plain-text 500
        payload = {}
    return status, payload if isinstance(payload, dict) else {}


def http_get_raw(port: int, path: str, timeout: float, *, close: bool = False) -> tuple[int, str]:
    """One GET on a fresh connection: the status and the body as text."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, body.decode(errors="replace")


def wait_http(port: int, path: str, timeout: float, server: ServerProcess) -> None:
    """Until ``GET path`` answers 200; raises with the server's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        server.check_running()
        with contextlib.suppress(*REQUEST_ERRORS):
            status, _ = http_get(port, path)
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name}: {path} not answering 200 within {timeout:.0f} s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
