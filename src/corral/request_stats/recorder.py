"""The worker side: a worker's mapping of its block, and an ASGI middleware that fills it.

corral's workers count in uvicorn's request cycle (``cycle``), not with
``RequestMetricsMiddleware``: the middleware is one more coroutine frame per
request, which cost about as much as the counting itself. It stays as the
reference the cycle is measured and tested against (``bench/``), and for
anyone serving an app on corral's blocks outside a corral worker.

A process worker imports only this module, ``cycle`` and ``layout``: nothing
of the supervisor-side pool. Every store lands in shared memory at once, so a worker
killed with ``SIGKILL`` loses nothing it had counted.

Reading a block a live worker is writing is racy by design, and safe: the
block has one writer (each incarnation has its own lane, and a worker runs
one event loop on one thread, in thread mode as in process mode), its size
never changes while mapped, and every cell is an 8-byte-aligned float64 (an
``mmap`` is page-aligned). ``memoryview`` stores and loads a cell with an
8-byte ``memcpy``, which on the 64-bit platforms corral runs on is a single
machine store or load, so a reader sees each cell either before or after an
update, never torn. Nothing here relies on the GIL: the writer and the
reader never share a Python object, only the pages. Cells are
not updated together, so a scrape may see a request counted before its
duration is in the sum: off by one for an instant, never corrupt, and right
on the next scrape. That is the trade for a hot path without locks.
"""

from __future__ import annotations

import contextlib
import mmap
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from corral.request_stats.layout import (
    HEADER_INDEX,
    LAYOUT_MAGIC,
    LAYOUT_VERSION,
    STARTED_INDEX,
    SUM_INDEX,
    WS_ENDED_INDEX,
    WS_GOING_AWAY_INDEX,
    WS_OPENED_INDEX,
    bucket_offset,
    map_block,
    request_cell,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI3App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestRecorder:
    """One worker's writable mapping of its lane.

    ``cells`` is a float64 ``memoryview`` over the mapping; only one worker
    (its request cycles and WebSocket protocols) writes it. Close the recorder only once no request
    can still finish (after the server has stopped): a store after ``close()``
    raises ``ValueError``.
    """

    __slots__ = ("_mmap", "cells", "path")

    def __init__(self, path: str, mapping: mmap.mmap) -> None:
        self.path = path
        self._mmap = mapping
        self.cells = memoryview(mapping).cast("d")

    def count_going_away(self) -> None:
        """One more WebSocket closed with 1001 at drain; on the worker's loop thread only."""
        self.cells[WS_GOING_AWAY_INDEX] += 1.0

    def close(self) -> None:
        """Unmap the block; idempotent. The memoryview goes first, or ``mmap.close`` raises."""
        self.cells.release()
        self._mmap.close()

    def __enter__(self) -> RequestRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_recorder(path: str) -> RequestRecorder:
    """Map the block the supervisor prepared at ``path`` for writing.

    Raises ``ValueError`` if the file is not a block of this layout version
    (wrong size or header), which means the worker and supervisor disagree on
    the layout: a bug or a mixed installation, not something to guess around.
    """
    mapping = map_block(path, create=False)
    header = memoryview(mapping).cast("d")
    try:
        magic = header[HEADER_INDEX]
    finally:
        header.release()
    if magic != LAYOUT_MAGIC:
        mapping.close()
        raise ValueError(
            f"{path} is not a corral request-stats block of layout version {LAYOUT_VERSION}; "
            "the worker and supervisor must come from the same corral installation"
        )
    return RequestRecorder(path, mapping)


class RequestMetricsMiddleware:
    """An ASGI3 wrapper that records each HTTP request into a ``RequestRecorder``.

    Only ``scope["type"] == "http"`` is measured; websocket and lifespan scopes
    go straight to the app. Per request it reads the clock twice and adds to
    four cells: ``started``, then at the end one request counter, one bucket and
    the duration sum. The status class is the one the app sent in
    ``http.response.start``, except:

    * the app returned without starting a response: 5xx (uvicorn answers 500);
    * the app raised: 5xx, whatever it had sent, and the exception propagates
      unchanged (the client got a 500 or a truncated response);
    * the request was cancelled (``CancelledError``, e.g. uvicorn cancelling
      tasks past the graceful-shutdown timeout): counted as 5xx, with its
      duration so far, and the cancellation propagates. The client did not get
      a complete answer, which is an error from its side, and counting every
      started request keeps ``requests_total`` equal to the histogram's count.

    Every started request is therefore counted exactly once, so the in-flight
    gauge (``started`` minus the counters) always comes back down.

    The ``send`` given to the app is a closure, not an ``async def``: it
    returns the inner ``send``'s awaitable for the app to await, so no extra
    coroutine is made per message. Measured on CPython 3.11 while designing
    this: a closure costs ~0.2-0.3 µs per request less than a ``__slots__``
    class with a ``__call__`` (instance creation, and calls through
    ``tp_call`` are not specialised), an ``async def`` wrapper ~0.3 µs more,
    and deriving in-flight instead of storing ``+1``/``-1`` saves one
    ~70-100 ns store. ``bench/request_overhead.py`` measures the result.
    """

    __slots__ = ("_cells", "_clock", "app", "recorder")

    def __init__(
        self,
        app: ASGI3App,
        recorder: RequestRecorder,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.recorder = recorder
        self._cells = recorder.cells
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        cells = self._cells
        clock = self._clock
        status = 0

        def capture(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        cells[STARTED_INDEX] += 1.0
        start = clock()
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            status = 0  # the request failed, whatever was sent: 5xx
            raise
        finally:
            duration = clock() - start
            try:
                cells[request_cell(scope["method"], status) + bucket_offset(duration)] += 1.0
                cells[SUM_INDEX] += duration
            except ValueError:
                # The recorder is closed: this request's worker loop died under it,
                # and the garbage collector is closing its orphaned coroutine now,
                # on whichever thread. The dead incarnation's lane was folded already;
                # raising here would only replace the GeneratorExit with noise.
                pass

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count a WebSocket as open from its accept until the app's call returns."""
        cells = self._cells
        accepted = False

        def capture(message: Message) -> Awaitable[None]:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                cells[WS_OPENED_INDEX] += 1.0
            return send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if accepted:
                with contextlib.suppress(ValueError):  # the recorder closed under an orphan
                    cells[WS_ENDED_INDEX] += 1.0
