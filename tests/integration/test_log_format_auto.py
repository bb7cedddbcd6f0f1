"""``--log-format auto`` (the default): console lines on a terminal, JSON lines elsewhere.

The terminal is a real pseudo-terminal: corral's stdout and stderr are its
slave side, exactly as when a person runs corral in a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, CorralProcess, corral_env

pytestmark = pytest.mark.integration

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TerminalCorral:
    """``corral run`` with a pseudo-terminal as its stdout and stderr."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "run", "examples.hello:app", "--port", "0", *args],
            cwd=ROOT,
            env=corral_env(),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""

    def wait_text(self, text: str, timeout: float = 30.0) -> None:
        """Read the terminal until ``text`` appears (colour codes removed), or fail."""
        deadline = time.monotonic() + timeout
        while text not in self.plain:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {text!r} on the terminal within {timeout}s:\n{self.plain}")
            readable, _, _ = select.select([self.master], [], [], min(remaining, 0.5))
            if readable:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: corral exited and closed the terminal
                    chunk = b""
                if not chunk:
                    pytest.fail(f"terminal closed before {text!r}:\n{self.plain}")
                self.output += chunk.decode("utf-8", "replace")

    @property
    def plain(self) -> str:
        return _ANSI.sub("", self.output).replace("\r\n", "\n")

    def stop(self) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(30)
        os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(5)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Callable[..., TerminalCorral]]:
    started: list[TerminalCorral] = []

    def start(*args: str) -> TerminalCorral:
        started.append(TerminalCorral(*args))
        return started[-1]

    yield start
    for process in started:
        process.close()


def test_a_terminal_gets_coloured_console_lines(
    terminal: Callable[..., TerminalCorral], mode: str
) -> None:
    server = terminal("--mode", mode)
    server.wait_text("corral listening")
    server.wait_text("] ready ")
    assert "\x1b[" in server.output, "colours on a terminal"
    lines = [line for line in server.plain.splitlines() if line.strip()]
    assert lines, server.plain
    for line in lines:
        assert not line.lstrip().startswith("{"), f"a JSON line on a terminal: {line!r}"
    assert any("] ready " in line and "slot=0" in line for line in lines), server.plain
    assert server.stop() == 0


def test_log_format_json_overrides_a_terminal(terminal: Callable[..., TerminalCorral]) -> None:
    server = terminal("--log-format", "json", "--mode", "thread")
    server.wait_text('"event": "ready"')
    records = [json.loads(line) for line in server.plain.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "corral listening" for r in records), server.plain
    assert "\x1b[" not in server.output, "no colour codes in JSON"
    assert server.stop() == 0


def test_a_pipe_gets_json_lines(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--mode", "thread", app="examples.hello:app")
    server.wait_ready(1)
    assert server.lines, "corral wrote nothing"
    for line in server.lines:
        assert isinstance(json.loads(line), dict), f"not a JSON line: {line!r}"
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0
