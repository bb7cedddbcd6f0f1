"""Per-slot HTTP request metrics through a shared-memory block per worker incarnation.

Why not ``prometheus_client``'s multiprocess mode: it takes a lock and walks a
dict per update, and it leaves one file per dead pid forever. A request costs
60-100 µs in uvicorn+httptools and we may add at most ~3% to it, so the hot
path here takes no lock, makes no system call and calls no library: it reads
the clock twice and does four single-writer float stores into a
``memoryview`` over an ``mmap`` (~1.1 µs in all on CPython 3.11; see
``bench/request_overhead.py``).

How the pieces fit:

* The supervisor owns a ``RequestStatsPool``: a private directory (``0700``,
  in ``/dev/shm`` when usable) of fixed-size block files, one per *lane*.
  ``acquire(slot)`` hands a zeroed lane to a new incarnation of a worker slot.
* The worker maps its lane with ``open_recorder(path)`` and wraps the app in
  ``RequestMetricsMiddleware``. Every store lands in shared memory at once, so
  a worker killed with ``SIGKILL`` loses nothing it had counted.
* The supervisor reads live lanes at scrape time (``snapshot()``) and, when an
  incarnation is gone, ``release(lease)`` folds the lane's final counts into the
  slot's *retired* totals, zeroes it and puts it back on a free list. Counters
  therefore stay monotonic per slot across incarnations, and the directory
  never holds more files than there were ever concurrently live workers.

Block layout (float64 cells, native byte order; counts are exact up to 2**53):

======================  ===================================================
index                   content
======================  ===================================================
``HEADER_INDEX`` 0      ``LAYOUT_MAGIC``: "corr" and the layout version
``STARTED_INDEX`` 1     requests started by this incarnation
``SUM_INDEX`` 2         sum of request durations, seconds
``COUNTS_BASE`` 3..42   finished requests, ``len(METHOD_LABELS) *
                        len(STATUS_CLASSES)`` counters, method-major:
                        ``COUNTS_BASE + m * len(STATUS_CLASSES) + c``
``BUCKETS_BASE`` 43..57 ``len(BUCKETS)`` *non-cumulative* duration bucket
                        counts; the reader makes them cumulative
``WS_OPENED_INDEX`` 58  WebSockets this incarnation accepted
``WS_ENDED_INDEX`` 59   of those, the ones whose app call has returned
``WS_GOING_AWAY`` 60    WebSockets sent close 1001 because the worker drained
======================  ===================================================

Open WebSockets, like in-flight requests, are derived: opened minus ended.

The in-flight gauge is not stored: it is ``started`` minus the sum of the
counters, computed by the reader. Every started request is counted exactly
once when it ends, however it ends, so this is exact, and it costs the hot
path one store instead of an increment and a decrement.

Reading a block a live worker is writing is racy by design, and safe: the
block has one writer (each incarnation has its own lane, and a worker runs
one event loop on one thread, in thread mode as in process mode), its size
never changes while mapped, and every cell is an 8-byte-aligned float64 (an
``mmap`` is page-aligned). ``memoryview`` stores and loads a cell with an
8-byte ``memcpy``, which on the 64-bit platforms corral runs on is a single
machine store or load, so a reader sees each cell either before or after an
update, never torn. Nothing here relies on the GIL: the writer and the
reader never share a Python object, only the pages. Cells are
not updated together, so a scrape may see a request's counter before its
bucket or sum: off by one for an instant, never corrupt, and right on the
next scrape. That is the trade for a hot path without locks.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from corral.owned_dir import OwnedDirectory

# The pool's private directory is named <parent>/corral-stats-XXXXXXXX.
DIRECTORY_PREFIX = "corral-stats-"

# --- The layout -----------------------------------------------------------------

LAYOUT_VERSION = 2
#: ``b"corr"`` then the version in the low 16 bits; below 2**53, so exact as a float64.
LAYOUT_MAGIC = float((0x636F7272 << 16) | LAYOUT_VERSION)

#: Labelled methods; anything else is counted as ``OTHER_METHOD`` to keep the label bounded.
METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OTHER_METHOD = "other"
METHOD_LABELS: tuple[str, ...] = (*METHODS, OTHER_METHOD)
STATUS_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx")

#: Histogram upper bounds in seconds: prometheus_client's defaults, ending in +Inf.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"),
)  # fmt: skip
_FINITE_BUCKETS: tuple[float, ...] = BUCKETS[:-1]

HEADER_INDEX = 0
STARTED_INDEX = 1
SUM_INDEX = 2
COUNTS_BASE = 3
COUNTS_LEN = len(METHOD_LABELS) * len(STATUS_CLASSES)
BUCKETS_BASE = COUNTS_BASE + COUNTS_LEN
WS_OPENED_INDEX = BUCKETS_BASE + len(BUCKETS)
WS_ENDED_INDEX = WS_OPENED_INDEX + 1
WS_GOING_AWAY_INDEX = WS_ENDED_INDEX + 1
BLOCK_CELLS = WS_GOING_AWAY_INDEX + 1
BLOCK_BYTES = BLOCK_CELLS * 8

_5XX = STATUS_CLASSES.index("5xx")
_ZERO_BLOCK = bytes(BLOCK_BYTES)

# The hot path's two lookups. A status outside 100..599, or none at all (0: the
# app never started a response, so uvicorn answers 500), counts as 5xx.
_METHOD_BASE: dict[str, int] = {
    method: COUNTS_BASE + i * len(STATUS_CLASSES) for i, method in enumerate(METHODS)
}
_OTHER_BASE = COUNTS_BASE + len(METHODS) * len(STATUS_CLASSES)
_STATUS_OFFSET: dict[int, int] = {status: status // 100 - 1 for status in range(100, 600)}

# --- ASGI types -------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI3App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- Worker side --------------------------------------------------------------------


class RequestRecorder:
    """One worker's writable mapping of its lane.

    ``cells`` is a float64 ``memoryview`` over the mapping; only the
    middleware of one worker writes it. Close the recorder only once no request
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
    mapping = _map_file(path, create=False)
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
            cells[
                _METHOD_BASE.get(scope["method"], _OTHER_BASE) + _STATUS_OFFSET.get(status, _5XX)
            ] += 1.0
            cells[BUCKETS_BASE + bisect_left(_FINITE_BUCKETS, duration)] += 1.0
            cells[SUM_INDEX] += duration

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
                cells[WS_ENDED_INDEX] += 1.0


# --- Supervisor side ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatsLease:
    """A lane lent to one incarnation of a worker slot; pass ``path`` to the worker."""

    path: str
    lane: int
    slot: int


@dataclass(frozen=True, slots=True)
class SlotRequestStats:
    """One slot's request metrics: retired incarnations plus the live ones.

    ``requests`` maps ``(method, status_class)`` to a count. It holds every
    status class of every method seen on the slot, and always ``GET``, so
    error-rate series exist (at 0) before the first error. ``bucket_counts`` is
    cumulative and aligned with ``BUCKETS``; its last entry is
    ``duration_count``. ``in_flight`` counts live incarnations only.
    """

    requests: dict[tuple[str, str], float]
    bucket_counts: tuple[float, ...]
    duration_sum: float
    duration_count: float
    in_flight: float
    websockets_opened: float = 0.0
    websockets_open: float = 0.0  # live incarnations only, like in_flight
    websockets_going_away: float = 0.0


class _Lane:
    """One block file, mapped by the supervisor for the pool's whole life."""

    __slots__ = ("cells", "index", "lease", "mapping", "path")

    def __init__(self, index: int, path: str, mapping: mmap.mmap) -> None:
        self.index = index
        self.path = path
        self.mapping = mapping
        self.cells = memoryview(mapping).cast("d")
        self.lease: StatsLease | None = None

    def read(self) -> list[float] | None:
        """A copy of the block, or ``None`` if its header is not ours (never trust garbage)."""
        # typeshed types ``tolist`` as ``list[int]``; a "d" view yields floats.
        values = cast("list[float]", self.cells.tolist())
        if values[HEADER_INDEX] != LAYOUT_MAGIC:
            return None
        return values

    def reset(self, *, header: bool) -> None:
        self.mapping[:] = _ZERO_BLOCK
        if header:
            self.cells[HEADER_INDEX] = LAYOUT_MAGIC

    def close(self) -> None:
        self.cells.release()
        self.mapping.close()


class _Totals:
    """Counts carried over from a slot's finished incarnations (no in-flight: they are gone)."""

    __slots__ = ("buckets", "counts", "duration_sum", "ws_going_away", "ws_opened")

    def __init__(self) -> None:
        self.counts = [0.0] * COUNTS_LEN
        self.buckets = [0.0] * len(BUCKETS)
        self.duration_sum = 0.0
        self.ws_opened = 0.0
        self.ws_going_away = 0.0

    def add_block(self, values: list[float]) -> None:
        """Add a block's counters, buckets and sum; ``started`` is not a total of its own."""
        counts, buckets = self.counts, self.buckets
        for i in range(COUNTS_LEN):
            counts[i] += values[COUNTS_BASE + i]
        for i in range(len(BUCKETS)):
            buckets[i] += values[BUCKETS_BASE + i]
        self.duration_sum += values[SUM_INDEX]
        self.ws_opened += values[WS_OPENED_INDEX]
        self.ws_going_away += values[WS_GOING_AWAY_INDEX]


class RequestStatsPool:
    """The supervisor's lanes, and the per-slot totals they fold into.

    ``directory`` is where the pool's private directory (mode ``0700``, prefix
    ``corral-stats-``) is created: by default ``/dev/shm`` when it exists and
    is writable (so blocks never touch a disk), else the temp dir.

    Every method is safe to call from any thread: the supervisor thread
    acquires and releases while a scrape thread takes snapshots. Pool state is
    guarded by one ``threading.Lock`` (not the GIL, so free-threaded builds are
    covered too); the workers' stores are outside that lock by design (see the
    module docstring).

    Call ``release`` only once the incarnation can no longer write: its
    process reaped or its thread joined. A late store would land in the lane's
    next incarnation.
    """

    def __init__(self, directory: Path | None = None) -> None:
        parent = str(directory) if directory is not None else default_parent()
        # Also sweeps the directories of supervisors that were SIGKILLed.
        self._owned = OwnedDirectory(DIRECTORY_PREFIX, parent)
        self.directory = self._owned.path
        self._lock = threading.Lock()
        self._lanes: list[_Lane] = []
        self._free: list[int] = []
        self._retired: dict[int, _Totals] = {}
        self._closed = False

    def acquire(self, slot: int) -> StatsLease:
        """A zeroed lane for a new incarnation of ``slot``, reusing a free one when there is one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the request-stats pool is closed")
            if self._free:
                lane = self._lanes[self._free.pop()]
            else:
                index = len(self._lanes)
                path = str(self.directory / f"lane-{index}.stats")
                lane = _Lane(index, path, _map_file(path, create=True))
                self._lanes.append(lane)
            lane.reset(header=True)
            lease = StatsLease(lane.path, lane.index, slot)
            lane.lease = lease
            self._retired.setdefault(slot, _Totals())
            return lease

    def release(self, lease: StatsLease) -> None:
        """Fold the lane's final counts into the slot's retired totals, zero it and free it.

        In-flight is not carried over: requests a dead worker had started will
        never finish. Raises ``ValueError`` for a lease that is not live (released
        twice, or from another pool); after ``close()`` it does nothing.
        """
        with self._lock:
            if self._closed:
                return
            lane = self._lanes[lease.lane] if 0 <= lease.lane < len(self._lanes) else None
            if lane is None or lane.lease is not lease:
                raise ValueError(f"{lease} is not a live lease of this pool")
            values = lane.read()
            if values is not None:
                self._retired[lease.slot].add_block(values)
            lane.reset(header=False)
            lane.lease = None
            self._free.append(lane.index)

    def snapshot(self) -> dict[int, SlotRequestStats]:
        """Every slot ever acquired: its retired totals plus its live lanes, read now."""
        with self._lock:
            if self._closed:
                return {}
            totals: dict[int, _Totals] = {}
            in_flight: dict[int, float] = {}
            ws_open: dict[int, float] = {}
            for slot, retired in self._retired.items():
                merged = _Totals()
                merged.counts[:] = retired.counts
                merged.buckets[:] = retired.buckets
                merged.duration_sum = retired.duration_sum
                merged.ws_opened = retired.ws_opened
                merged.ws_going_away = retired.ws_going_away
                totals[slot] = merged
                in_flight[slot] = 0.0
                ws_open[slot] = 0.0
            for lane in self._lanes:
                if lane.lease is None:
                    continue
                values = lane.read()
                if values is None:
                    continue
                totals[lane.lease.slot].add_block(values)
                in_flight[lane.lease.slot] += _in_flight(values)
                ws_open[lane.lease.slot] += _websockets_open(values)
        return {
            slot: _render(t, in_flight[slot], ws_open[slot]) for slot, t in sorted(totals.items())
        }

    def close(self) -> None:
        """Unmap every lane and remove the directory; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for lane in self._lanes:
                lane.close()
            self._lanes.clear()
            self._free.clear()
        self._owned.close()

    def __enter__(self) -> RequestStatsPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _in_flight(values: list[float]) -> float:
    """Started minus finished. A read racing the writer can see a request finish
    that it did not see start (``started`` is copied first), so clamp at 0."""
    finished = sum(values[COUNTS_BASE : COUNTS_BASE + COUNTS_LEN])
    return max(0.0, values[STARTED_INDEX] - finished)


def _websockets_open(values: list[float]) -> float:
    return max(0.0, values[WS_OPENED_INDEX] - values[WS_ENDED_INDEX])


def _render(totals: _Totals, in_flight: float, websockets_open: float) -> SlotRequestStats:
    requests: dict[tuple[str, str], float] = {}
    width = len(STATUS_CLASSES)
    for m, method in enumerate(METHOD_LABELS):
        row = totals.counts[m * width : (m + 1) * width]
        if method == "GET" or any(row):
            for c, status_class in enumerate(STATUS_CLASSES):
                requests[(method, status_class)] = row[c]
    cumulative: list[float] = []
    running = 0.0
    for count in totals.buckets:
        running += count
        cumulative.append(running)
    return SlotRequestStats(
        requests=requests,
        bucket_counts=tuple(cumulative),
        duration_sum=totals.duration_sum,
        duration_count=running,
        in_flight=in_flight,
        websockets_opened=totals.ws_opened,
        websockets_open=websockets_open,
        websockets_going_away=totals.ws_going_away,
    )


def default_parent() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None  # tempfile's default: $TMPDIR, /tmp, ...


def _map_file(path: str, *, create: bool) -> mmap.mmap:
    """Map exactly ``BLOCK_BYTES`` of ``path``; a new file starts as zeros (``ftruncate``)."""
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, BLOCK_BYTES)
        elif os.fstat(fd).st_size != BLOCK_BYTES:
            raise ValueError(
                f"{path} is {os.fstat(fd).st_size} bytes, not the {BLOCK_BYTES} of a corral "
                f"request-stats block (layout version {LAYOUT_VERSION})"
            )
        return mmap.mmap(fd, BLOCK_BYTES)
    finally:
        os.close(fd)  # the mapping keeps the file alive
