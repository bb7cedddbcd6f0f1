"""The worker mode this very interpreter gets, unfaked: threads with the GIL off, else processes.

The other runtime tests fake the build to cover every branch. These ask the
real interpreter (``test_check_command`` asks ``corral check``), so they mean
something different in each CI lane. On a GIL build they prove auto mode is
``process``. In the free-threaded lane (``make test-ft`` sets
``EXPECT_FREE_THREADED=1``) they prove the lane really is free-threaded, that
the GIL is still off after importing corral and the example apps, and that
auto mode is ``thread``.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig

from corral import runtime
from corral.runtime import WorkerMode, decide_mode, detect_worker_mode

FREE_THREADED_BUILD = sysconfig.get_config_var("Py_GIL_DISABLED") == 1
EXPECT_FREE_THREADED = os.environ.get("EXPECT_FREE_THREADED") == "1"


def _gil_is_off() -> bool:
    return FREE_THREADED_BUILD and not runtime.gil_enabled()


def test_the_free_threaded_lane_runs_free_threaded() -> None:
    if not EXPECT_FREE_THREADED:
        assert runtime.is_free_threaded_build() is FREE_THREADED_BUILD
        return
    assert FREE_THREADED_BUILD, f"{sys.executable} is not a free-threaded build"
    for name in ("examples.hello", "examples.chaos", "corral.cli"):
        importlib.import_module(name)
    assert not runtime.gil_enabled(), "something this suite imported re-enabled the GIL"


def test_auto_mode_matches_this_interpreter() -> None:
    decision = decide_mode(None)
    assert decision.free_threaded_build is FREE_THREADED_BUILD
    if _gil_is_off():
        assert decision.mode is WorkerMode.THREAD
        assert decision.reason == "free-threaded build, GIL disabled"
        assert decision.gil_enabled is False
        assert detect_worker_mode() is WorkerMode.THREAD
    else:
        assert decision.mode is WorkerMode.PROCESS
        assert decision.gil_enabled is True
        assert runtime.gil_enabled() is True
        assert detect_worker_mode() is WorkerMode.PROCESS
    if not FREE_THREADED_BUILD:
        assert decision.reason == "this interpreter has a GIL, so workers are processes"
