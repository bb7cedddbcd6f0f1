"""Request metrics counted by uvicorn's own request cycle: no extra ASGI frame.

uvicorn's HTTP protocols (h11 and httptools alike) make one
``RequestResponseCycle`` per request, start it with ``cycle.run_asgi(app)``
and hand the app ``cycle.send``. ``metered_cycle`` subclasses that class so
the cycle counts itself into a worker's block at points it already passes
through, each a plain method call, never another coroutine:

* the start and the end: uvicorn's ``__init__`` assigns ``self.on_response``
  (the request has arrived), and ``run_asgi`` assigns it again in its
  ``finally``, however the app's call ended (returned, raised, cancelled).
  ``on_response`` is a property whose setter counts ``started`` and reads the
  clock the first time, and counts the request the second. Reading it (once,
  when the response completes) goes through ``operator.attrgetter``: no
  Python frame;
* the status: ``send`` is a plain method that notes the status of
  ``http.response.start`` and returns uvicorn's own ``send`` coroutine, so
  the app awaits uvicorn's ``send`` directly.

A request is counted in one status class, exactly once, when it ends; so the
in-flight gauge (``started`` minus the counters, as the block layout has it)
comes back down however it ends. The status class is the client's view:

* a complete response: the status the app sent;
* a response the server cut short or never started (the app raised, returned
  without finishing, or was cancelled at a force-stop; uvicorn then answers
  500 or closes the connection): 5xx;
* the client went away first: the status the app had sent, 5xx if none (a
  client hanging up is not a server error, and counting it as one would page
  someone for an impatient client).

A request's duration runs from its cycle's making (its head has been parsed)
to the end of ``run_asgi``. Two kinds of cycle never reach that ``finally``:
a pipelined request still queued when its connection is lost (httptools
only), which the protocol un-counts (``uncount_unstarted``); and one whose
task is cancelled before its first step (a force-stop in the loop iteration
the request arrived in), which stays in flight while its worker is killed: a
dead incarnation's in-flight is not carried over (``pool.release``).

``bench/request_overhead.py`` measures this against the middleware it replaced.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from operator import attrgetter
from typing import Any, TypeVar

from corral.request_stats.layout import (
    FINITE_BUCKETS,
    FIRST_BOUND,
    REQUEST_CELL,
    STARTED_INDEX,
    SUM_INDEX,
    request_cell,
)

CycleT = TypeVar("CycleT", bound=type)

# A cycle's start once it has been counted (a float is a start still to count).
# False rather than a sentinel object of our own: it is immortal, so thread
# workers on a free-threaded build never contend on its reference count.
_COUNTED = False


def metered_cycle(
    base: CycleT, cells: memoryview[float], *, clock: Callable[[], float] = time.perf_counter
) -> CycleT:
    """A subclass of uvicorn's ``RequestResponseCycle`` ``base`` that counts each request
    into ``cells`` (a worker's block), as the module docstring explains.

    Made once per worker: the cells are bound into the methods, so the hot
    path reads no attribute to find them.
    """
    send_method = getattr(base, "send", None)
    if not callable(send_method) or not callable(getattr(base, "run_asgi", None)):
        raise TypeError(f"{base!r} is not a uvicorn request cycle (no send or run_asgi)")
    base_send: Callable[[Any, Any], Coroutine[Any, Any, None]] = send_method

    def send(self: Any, message: Any) -> Coroutine[Any, Any, None]:
        if message["type"] == "http.response.start" and not self.response_started:
            self._corral_status = message["status"]  # a second start is the app's error
        return base_send(self, message)

    def set_on_response(self: Any, callback: Callable[[], None]) -> None:
        self._corral_on_response = callback
        start = self._corral_start
        if start is None:  # uvicorn's __init__: the request has arrived
            cells[STARTED_INDEX] += 1.0
            self._corral_start = clock()
            return
        if start is _COUNTED:
            return
        self._corral_start = _COUNTED  # once, whatever uvicorn does next
        duration = clock() - start
        status = self._corral_status
        if not self.response_complete and (not self.disconnected or _cancelled()):
            status = 0  # cut short by the server: 5xx
        method = self.scope["method"]
        try:
            cell = REQUEST_CELL[method][status]
        except (KeyError, TypeError):
            cell = request_cell(method, status)
        if duration > FIRST_BOUND:  # layout.bucket_offset, inlined: no call, and no search
            cell += bisect_left(FINITE_BUCKETS, duration)
        try:
            cells[cell] += 1.0
            cells[SUM_INDEX] += duration
        except ValueError:
            # The recorder is closed: this request's worker loop died under it and
            # the garbage collector is closing the orphaned coroutine now. The dead
            # incarnation's lane was folded already; raising would only add noise.
            pass

    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"uvicorn's {base.__qualname__}, counting itself into a worker's block.",
        "_corral_start": None,  # None: not made yet; then the clock; then _COUNTED
        "_corral_status": 0,  # the status the app sent; 0: none (5xx)
        "send": send,
        "on_response": property(attrgetter("_corral_on_response"), set_on_response),
    }
    return type(f"Metered{base.__name__}", (base,), namespace)  # type: ignore[return-value]


def uncount_unstarted(cycle: Any, cells: memoryview[float]) -> None:
    """Take back ``started`` for a cycle whose ``run_asgi`` will never run (a pipelined
    request whose connection was lost while it waited): as if it never arrived."""
    start = cycle._corral_start
    if start is not None and start is not _COUNTED:
        cycle._corral_start = _COUNTED
        cells[STARTED_INDEX] -= 1.0


def _cancelled() -> bool:
    """Whether the running request's task was cancelled (uvicorn swallows the
    ``CancelledError`` but does not uncancel). Only asked when a response did
    not complete, never on the ordinary path."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no loop: the GC is closing an orphaned coroutine
        return True
    return task is not None and task.cancelling() > 0


__all__ = ["metered_cycle", "uncount_unstarted"]
