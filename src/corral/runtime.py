"""Which kind of worker this interpreter should run, and why.

A free-threaded CPython build can turn its GIL back on at run time when it
imports an extension module that does not declare free-threading support. So
the decision is only meaningful *after* the app has been imported; callers
import first, then ask.
"""

from __future__ import annotations

import enum
import sys
import sysconfig
from dataclasses import dataclass


class WorkerMode(enum.Enum):
    """How a worker is isolated from its siblings."""

    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """The chosen mode with the human reason, shown by ``corral check`` and at start-up."""

    mode: WorkerMode
    reason: str
    free_threaded_build: bool
    gil_enabled: bool


def is_free_threaded_build() -> bool:
    """True when this interpreter was compiled with ``--disable-gil``."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Whether the GIL is on *now*; always true on a build that has one."""
    probe = getattr(sys, "_is_gil_enabled", None)
    if probe is None:
        return True
    return bool(probe())


def detect_worker_mode() -> WorkerMode:
    """``THREAD`` when the GIL is off at run time, else ``PROCESS``."""
    return decide_mode(None).mode


def decide_mode(override: WorkerMode | None) -> ModeDecision:
    """Pick the worker mode, honouring an explicit ``--mode`` override."""
    free_threaded = is_free_threaded_build()
    enabled = gil_enabled()
    if override is not None:
        reason = f"mode {override.value} set explicitly (--mode, CORRAL_MODE or the config file)"
        return ModeDecision(override, reason, free_threaded, enabled)
    if free_threaded and not enabled:
        reason = "free-threaded build, GIL disabled"
        return ModeDecision(WorkerMode.THREAD, reason, free_threaded, enabled)
    if free_threaded:
        reason = "free-threaded build, but the GIL was re-enabled after importing the app"
        return ModeDecision(WorkerMode.PROCESS, reason, free_threaded, enabled)
    reason = "this interpreter has a GIL, so workers are processes"
    return ModeDecision(WorkerMode.PROCESS, reason, free_threaded, enabled)
