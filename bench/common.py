"""What every bench section shares: statistics, wrk, /proc readings, servers, the machine.

Servers are ``recovery.ServerProcess``: each in its own session, output read by
a thread, stopped with SIGTERM to the group and SIGKILL after a grace.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.recovery import (
    HOST,
    REQUEST_ERRORS,
    ROOT,
    BenchError,
    ServerProcess,
    free_port,
    group_members,
    http_get,
    shown,
)

__all__ = [
    "HOST",
    "ROOT",
    "BenchError",
    "ServerProcess",
    "free_port",
    "group_members",
    "shown",
]

FT_PYTHON = ROOT / ".venv-ft" / "bin" / "python"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PACKAGES = (
    "corral",
    "uvicorn",
    "uvloop",
    "httptools",
    "gunicorn",
    "uvicorn-worker",
    "hypercorn",
    "granian",
    "prometheus-client",
    "opentelemetry-sdk",
    "structlog",
    "matplotlib",
)


# --- Statistics -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of several runs with the lowest and highest, as the issue asks."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 0) -> str:
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; with 30 samples p99 is the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- The machine --------------------------------------------------------------------


def loadavg() -> float:
    """The 1-minute load average: how busy the machine was around a measurement."""
    return os.getloadavg()[0]


@dataclass(slots=True)
class LoadWindow:
    """The 1-minute load average at the start and the end of one bench section."""

    start: float = field(default_factory=loadavg)
    end: float = math.nan
    began: float = field(default_factory=time.monotonic)
    seconds: float = math.nan

    def close(self) -> None:
        self.end = loadavg()
        self.seconds = time.monotonic() - self.began

    def line(self) -> str:
        return (
            f"Load (1-minute average) {self.start:.2f} at the start, {self.end:.2f} at the end;"
            f" {self.seconds:.0f} s."
        )


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def ft_python_version() -> str:
    if not FT_PYTHON.exists():
        return "no .venv-ft"
    done = subprocess.run(
        [str(FT_PYTHON), "-c", "import sys; print(sys.version.split()[0], sys._is_gil_enabled())"],
        capture_output=True,
        text=True,
        check=False,
    )
    parts = done.stdout.split()
    if len(parts) != 2:
        return "unusable .venv-ft"
    return f"CPython {parts[0]} free-threaded (GIL enabled: {parts[1]})"


def machine_lines() -> list[str]:
    packages = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    return [
        f"- Machine: {os.cpu_count()} CPUs, {cpu_model()}, {platform.system()}"
        f" {platform.release()}",
        f"- Python: {platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable.replace(str(ROOT) + '/', '')}); free-threaded lane:"
        f" {ft_python_version()}",
        f"- Packages: {packages}",
        f"- Load generator: {wrk_version()}",
    ]


# --- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (all its threads), or ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds so far of every live process in a process group."""
    out = {}
    for pid in group_members(pgid):
        seconds = cpu_seconds(pid)
        if seconds is not None:
            out[pid] = seconds
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# --- HTTP and wrk -----------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx/3xx answers


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency_ms(text: str, percent: str) -> float:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else math.nan


def run_wrk(
    url: str, seconds: float, connections: int, threads: int = 1, cpu: str | None = None
) -> WrkResult:
    """One wrk run with ``--latency`` (pinned to ``cpu`` if given); raises if wrk fails or
    prints nothing to parse."""
    argv = wrk_argv(url, seconds, connections, threads, cpu)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 30)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    if done.returncode != 0 or rps is None or total is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    errors = sum(
        int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", done.stdout)
    ) + sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", done.stdout))
    return WrkResult(
        float(rps.group(1)),
        _latency_ms(done.stdout, "50"),
        _latency_ms(done.stdout, "99"),
        int(total.group(1)),
        errors,
    )


def wrk_argv(
    url: str, seconds: float, connections: int, threads: int = 1, cpu: str | None = None
) -> list[str]:
    return [
        *pinned(cpu),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--latency",
        url,
    ]


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not on PATH; run `make bench` (it apt-installs wrk)")


def pinned(cpu: str | None) -> list[str]:
    """The ``taskset`` prefix that runs a command (and its children) on ``cpu`` only."""
    return [] if cpu is None else ["taskset", "-c", cpu]
