"""A process worker imports what serving needs, never what only the supervisor needs.

multiprocessing re-runs the parent's ``__main__`` in each child it starts; for
corral's console script that was ``corral.cli`` and the whole observability
stack, ~150 ms in every respawned worker (``forkserver_context`` explains the
fix). Each launch path a user can take is started for real, a worker is
SIGKILLed, and the *respawned* worker reports its own ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, CorralProcess, corral_env
from tests.integration.modules_app import SUPERVISOR_ONLY

APP = "tests.integration.modules_app:app"
EMBEDDED = "tests.integration.embedded_unguarded"
SCRIPT = str(ROOT / "tests" / "integration" / "embedded_unguarded.py")
# The venv's console script, as the README runs it (unresolved: a venv's python is a
# symlink to the base interpreter, its scripts are not).
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "corral")
CORRAL_RUN = [APP, "--workers", "1", "--mode", "process", "--port", "0"]

LAUNCHES: dict[str, tuple[list[str], list[str]]] = {
    "console-script": ([CONSOLE_SCRIPT, "run"], CORRAL_RUN),
    "python-m-corral": ([sys.executable, "-m", "corral", "run"], CORRAL_RUN),
    "unguarded-script": ([sys.executable, SCRIPT], []),
    "unguarded-module": ([sys.executable, "-m", EMBEDDED], []),
}


def _served(corral: CorralProcess, generation: int) -> dict[str, Any]:
    reply = corral.get("/")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert body["generation"] == generation, body
    return body


@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_a_respawned_process_worker_imports_nothing_supervisor_only(launch: str) -> None:
    program, args = LAUNCHES[launch]
    assert os.access(program[0], os.X_OK), f"{program[0]} missing: run `make venv`"
    corral = CorralProcess(args, corral_env(), ROOT, program=program)
    try:
        corral.wait_ready(1)
        first = _served(corral, 1)
        assert first["present"] == [], f"{launch}: the first worker imported {first['present']}"
        assert first["main"] is None, f"{launch}: the worker re-ran {first['main']} as __main__"
        os.kill(first["pid"], signal.SIGKILL)
        corral.wait_event("ready", slot=0, generation=2, timeout=30)
        second = _served(corral, 2)
    finally:
        corral.kill_hard()
    assert second["pid"] != first["pid"]
    assert second["present"] == [], f"{launch}: the respawned worker imported {second['present']}"
    assert second["main"] is None, f"{launch}: the worker re-ran {second['main']} as __main__"


def test_the_modules_checked_are_real_names() -> None:
    """A typo in ``SUPERVISOR_ONLY`` would make the test above pass for nothing."""
    for name in SUPERVISOR_ONLY:
        assert importlib.util.find_spec(name) is not None, name
