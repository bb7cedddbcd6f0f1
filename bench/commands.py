"""The command line of every server the bench runs: corral and its peers.

corral is launched the way the README tells users to: the ``corral`` console
script of the venv (``.venv/bin/corral run ...``), never ``python -m
corral``. The two differ in what a respawned worker imports (the forkserver
re-runs the parent's ``__main__``), so only the script measures what users
get. The peers run as ``python -m <server>`` from the same venv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.servers import HOST, ROOT, BenchError

HTTPTOOLS = ["--loop", "uvloop", "--http", "httptools"]


def corral_script(python: str = sys.executable) -> str:
    """The ``corral`` console script installed next to ``python`` (unresolved: a venv's
    ``python`` is a symlink to the base interpreter, its scripts are not)."""
    script = Path(python).parent / "corral"
    if not script.exists():
        raise BenchError(f"no corral script at {script}; run `make venv` (or `make venv-ft`)")
    return str(script)


def corral_argv(
    app: str,
    port: int,
    metrics_port: int | None,
    *,
    workers: int,
    mode: str,
    python: str = sys.executable,
) -> list[str]:
    """``corral run`` with its defaults but for the workers, the mode and the ports;
    ``metrics_port=None`` turns observability off."""
    argv = [corral_script(python), "run", app, "--workers", str(workers), "--mode", mode]
    argv += ["--host", HOST, "--port", str(port)]
    if metrics_port is None:
        argv += ["--no-metrics", "--no-request-metrics"]
    else:
        argv += ["--metrics-port", str(metrics_port)]
    return argv


def uvicorn_argv(app: str, port: int, workers: int | None, *extra: str) -> list[str]:
    """``uvicorn`` with ``--workers`` unless ``workers`` is ``None`` (one in-process worker)."""
    argv = [sys.executable, "-m", "uvicorn", app]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, "--host", HOST, "--port", str(port), *extra]


def gunicorn_argv(app: str, port: int, workers: int, worker_class: str) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn", app, "--workers", str(workers)]
    return [*argv, "--bind", f"{HOST}:{port}", "--worker-class", worker_class]


def hypercorn_argv(app: str, port: int, workers: int) -> list[str]:
    argv = [sys.executable, "-m", "hypercorn", app, "--workers", str(workers)]
    return [*argv, "--bind", f"{HOST}:{port}", "--worker-class", "uvloop"]


def granian_argv(app: str, port: int, workers: int) -> list[str]:
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", str(workers)]
    return [*argv, "--host", HOST, "--port", str(port), "--no-ws", app]


def uvicorn_worker_class() -> str | None:
    """gunicorn's uvicorn worker class, from ``uvicorn-worker`` or (older) uvicorn itself."""
    if not importable("gunicorn"):
        return None
    for module in ("uvicorn_worker", "uvicorn.workers"):
        if importable(module):
            return f"{module}.UvicornWorker"
    return None


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def shown(argv: Sequence[str]) -> str:
    """A command line as a user would type it from the repository root (paths under the
    root made relative, also behind a ``taskset`` prefix)."""
    return shlex.join(_relative(part) for part in argv)


def _relative(part: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(part).relative_to(ROOT))
    return part
