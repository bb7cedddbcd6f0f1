"""Load generation: wrk's command line, one run, and the parse of what it printed."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass

from bench.servers import BenchError


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx/3xx answers


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def pinned(cpu: str | None) -> list[str]:
    """The ``taskset`` prefix that runs a command (and its children) on ``cpu`` only."""
    return [] if cpu is None else ["taskset", "-c", cpu]


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


def run_wrk(
    url: str, seconds: float, connections: int, threads: int = 1, cpu: str | None = None
) -> WrkResult:
    """One wrk run with ``--latency`` (pinned to ``cpu`` if given); raises if wrk fails or
    prints nothing to parse."""
    argv = wrk_argv(url, seconds, connections, threads, cpu)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 30)
    result = parse_wrk(done.stdout)
    if done.returncode != 0 or result is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    return result


def parse_wrk(text: str) -> WrkResult | None:
    """The figures of one ``wrk --latency`` report, or ``None`` if it has none."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if rps is None or total is None:
        return None
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    errors += sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    return WrkResult(
        float(rps.group(1)),
        _latency_ms(text, "50"),
        _latency_ms(text, "99"),
        int(total.group(1)),
        errors,
    )


def _latency_ms(text: str, percent: str) -> float:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else math.nan


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not on PATH; run `make bench` (it apt-installs wrk)")


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"
