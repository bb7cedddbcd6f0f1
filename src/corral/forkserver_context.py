"""The multiprocessing context process workers start from: the forkserver, minus ``__main__``.

A child started by multiprocessing's ``spawn`` or ``forkserver`` method first
re-creates the parent's ``__main__`` as ``__mp_main__``, so that objects defined
there can be unpickled: ``spawn.get_preparation_data`` names the main module
(``init_main_from_path`` or ``init_main_from_name``) and the child's
``spawn.prepare`` re-runs it. corral's workers unpickle nothing from
``__main__`` (their target is ``corral.worker.process_main``, their arguments
corral's own types), and re-running it is harmful whatever it is:

* the ``corral`` console script imports ``corral.cli`` and with it the whole
  supervisor-side stack (prometheus_client, OpenTelemetry's SDK, yaml,
  psutil): ~150 ms of imports in every respawned worker;
* a user's script that embeds the ``Supervisor`` without an
  ``if __name__ == "__main__":`` guard would start corral again inside the
  worker.

(``python -m corral`` escaped by luck: ``prepare`` skips a module named
``*.__main__``.) So corral's ``Process`` class sends the preparation data
without those two keys. The child keeps everything else (``sys.path``,
``sys.argv``, the working directory, the authkey), and its ``__main__`` stays
the forkserver's own.

multiprocessing has no public hook for this, and this is the private API it
rests on: ``ForkServerContext`` and ``ForkServerProcess`` (subclassed; the
``_Popen`` hook picks the launcher), and ``popen_forkserver.Popen._launch``,
overridden by a copy of CPython's body (the same in 3.11, 3.13 and CPython's
main branch) with its first line changed, and the names of the two keys.
``tests/unit/test_forkserver_context.py`` compares that copy with the running
interpreter's own source and fails, naming this module, if a Python upgrade
changes it; ``tests/integration/test_worker_imports.py`` checks the effect (a
respawned worker's ``sys.modules``) through every launch path.
"""

from __future__ import annotations

import io
import os
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.context import set_spawning_popen
from multiprocessing.process import BaseProcess
from typing import Any

# The keys of ``spawn.get_preparation_data`` that make the child re-run ``__main__``.
MAIN_MODULE_KEYS = ("init_main_from_name", "init_main_from_path")


def preparation_data(name: str) -> dict[str, Any]:
    """What a worker needs to set itself up like the parent, without the parent's ``__main__``."""
    data: dict[str, Any] = spawn.get_preparation_data(name)
    for key in MAIN_MODULE_KEYS:
        data.pop(key, None)
    return data


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: BaseProcess) -> None:
        # CPython's body, but for the first line (see the module docstring).
        prep_data = preparation_data(process_obj._name)  # type: ignore[attr-defined]
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)

        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(
            self,
            util.close_fds,  # type: ignore[attr-defined]
            (_parent_w, self.sentinel),
        )
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class WorkerProcess(context.ForkServerProcess):
    """A forkserver ``Process`` whose child does not re-run the parent's ``__main__``."""

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> _Popen:
        return _Popen(process_obj)


class WorkerContext(context.ForkServerContext):
    """The forkserver context, with ``WorkerProcess`` as its ``Process``.

    Everything else (pipes, shared values, the forkserver and its preload) is
    the stock forkserver context's: there is one forkserver per interpreter.
    """

    Process = WorkerProcess
