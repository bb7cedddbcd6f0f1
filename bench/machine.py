"""What the machine and the installed packages were, for the head of every report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.load import wrk_version
from bench.servers import ROOT

FT_PYTHON = ROOT / ".venv-ft" / "bin" / "python"
# CPython 3.14t (``make venv-ft314``), when this machine can provide one: the
# bench adds its rows to section 7 only if it exists.
FT314_PYTHON = ROOT / ".venv-ft314" / "bin" / "python"
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


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(packages: Sequence[str]) -> str:
    return ", ".join(f"{p} {version(p)}" for p in packages)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def kernel() -> str:
    return f"{platform.system()} {platform.release()}"


def python() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


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
    return [
        f"- Machine: {os.cpu_count()} CPUs, {cpu_model()}, {kernel()}",
        f"- Python: {python()} ({sys.executable.replace(str(ROOT) + '/', '')}); free-threaded"
        f" lane: {ft_python_version()}",
        f"- Packages: {versions(PACKAGES)}",
        f"- Load generator: {wrk_version()}",
    ]
