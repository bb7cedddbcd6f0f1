"""``bench.apps:app`` behind wrappers, for uvicorn to serve in the pinned decomposition.

Section 1's pinned table runs plain uvicorn with each of these as its app, so
the difference from bare ``bench.apps:app`` is the wrapper alone, with
corral's supervisor and worker out of the picture:

* ``passthrough``: an ``async def`` that awaits the app: the cost of one more
  coroutine frame per request;
* ``metered``: corral's ``RequestMetricsMiddleware`` writing into a real lane
  of a ``RequestStatsPool`` (in ``/dev/shm``), exactly what a corral worker
  runs. The pool's files are made at import and unlinked at once (the
  mapping outlives them), so nothing is left in ``/dev/shm`` however uvicorn
  exits.
"""

from __future__ import annotations

import atexit
import shutil

from bench.apps import Receive, Scope, Send
from bench.apps import app as hello
from corral.request_stats.pool import RequestStatsPool
from corral.request_stats.recorder import RequestMetricsMiddleware, open_recorder

_pool = RequestStatsPool()
atexit.register(_pool.close)
_recorder = open_recorder(_pool.acquire(0).path)
atexit.register(_recorder.close)  # runs first: unmap before the pool removes the files
# uvicorn re-raises SIGTERM after its shutdown, so atexit may never run: remove the
# files now. The mappings stay valid, and the pool's own close tolerates their absence.
shutil.rmtree(_pool.directory, ignore_errors=True)

metered = RequestMetricsMiddleware(hello, _recorder)


async def passthrough(scope: Scope, receive: Receive, send: Send) -> None:
    await hello(scope, receive, send)
