"""The request-stats block: one worker incarnation's counters, as float64 cells.

Both sides share only this file's facts: the worker writes a block
(``recorder``, ``cycle``), the supervisor reads and folds it (``pool``).

Block layout (float64 cells, native byte order; counts are exact up to 2**53):

=========================  ================================================
index                      content
=========================  ================================================
``HEADER_INDEX`` 0         ``LAYOUT_MAGIC``: "corr" and the layout version
``STARTED_INDEX`` 1        requests started by this incarnation
``SUM_INDEX`` 2            sum of request durations, seconds
``WS_OPENED_INDEX`` 3      WebSockets this incarnation accepted
``WS_ENDED_INDEX`` 4       of those, the ones whose app call has returned
``WS_GOING_AWAY_INDEX`` 5  WebSockets sent close 1001 because the worker drained
``REQUESTS_BASE`` 6..605   finished requests by method, status class and
                           duration bucket (*non-cumulative*), one cell each:
                           ``REQUESTS_BASE + (m * len(STATUS_CLASSES) + c)
                           * len(BUCKETS) + b``
=========================  ================================================

A finished request is one increment of one cell: the reader sums the cells
into the per-method-and-class counters and into the histogram's buckets
(``requests_by_class``, ``bucket_counts``). Counting the two apart would cost
the hot path a second read-modify-write of shared memory per request; here it
costs the reader 600 additions per block per scrape instead.

Open WebSockets, like in-flight requests, are derived: opened minus ended.

The in-flight gauge is not stored: it is ``started`` minus the finished
requests, computed by the reader. Every started request is counted exactly
once when it ends, however it ends, so this is exact, and it costs the hot
path one store instead of an increment and a decrement.
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_left
from collections.abc import Sequence

LAYOUT_VERSION = 3
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
FINITE_BUCKETS: tuple[float, ...] = BUCKETS[:-1]
#: A duration up to this is in the first bucket: the hot path's one comparison
#: for a fast request, before any search.
FIRST_BOUND = BUCKETS[0]

HEADER_INDEX = 0
STARTED_INDEX = 1
SUM_INDEX = 2
WS_OPENED_INDEX = 3
WS_ENDED_INDEX = 4
WS_GOING_AWAY_INDEX = 5
REQUESTS_BASE = 6
#: Counters by method and status class, method-major, as the reader reports them.
COUNTS_LEN = len(METHOD_LABELS) * len(STATUS_CLASSES)
REQUESTS_END = REQUESTS_BASE + COUNTS_LEN * len(BUCKETS)
BLOCK_CELLS = REQUESTS_END
BLOCK_BYTES = BLOCK_CELLS * 8

STATUS_5XX = STATUS_CLASSES.index("5xx")
ZERO_BLOCK = bytes(BLOCK_BYTES)


def _first_bucket_cell(method: int, status_class: int) -> int:
    return REQUESTS_BASE + (method * len(STATUS_CLASSES) + status_class) * len(BUCKETS)


def _class_cells(method: int) -> dict[int, int]:
    """For one method: each status the hot path may see, to its class's bucket-0 cell.
    0 (the app never started a response, so uvicorn answers 500) counts as 5xx."""
    cells = {status: _first_bucket_cell(method, status // 100 - 1) for status in range(100, 600)}
    cells[0] = _first_bucket_cell(method, STATUS_5XX)
    return cells


#: The hot path's lookup: ``REQUEST_CELL[method][status]`` is the bucket-0 cell
#: of that method and status class; add ``bucket_offset(duration)``. A method
#: or status not in it (an unlabelled method, a status outside 100..599) is
#: what ``request_cell`` is for.
REQUEST_CELL: dict[str, dict[int, int]] = {
    method: _class_cells(i) for i, method in enumerate(METHODS)
}
_OTHER_CELLS = _class_cells(len(METHODS))


def request_cell(method: str, status: object) -> int:
    """The bucket-0 cell for any method and any status: the hot path's fallback."""
    cells = REQUEST_CELL.get(method, _OTHER_CELLS)
    try:
        return cells[status]  # type: ignore[index]
    except (KeyError, TypeError):  # outside 100..599, or not even a number: 5xx
        return cells[0]


def bucket_offset(duration: float) -> int:
    """Which bucket ``duration`` falls in (``le``: a bound is in its own bucket)."""
    return 0 if duration <= FIRST_BOUND else bisect_left(FINITE_BUCKETS, duration)


def requests_by_class(values: Sequence[float]) -> list[float]:
    """A block's finished requests per method and status class, method-major."""
    width = len(BUCKETS)
    return [
        sum(values[first : first + width]) for first in range(REQUESTS_BASE, REQUESTS_END, width)
    ]


def bucket_counts(values: Sequence[float]) -> list[float]:
    """A block's finished requests per duration bucket (non-cumulative)."""
    width = len(BUCKETS)
    return [sum(values[REQUESTS_BASE + b : REQUESTS_END : width]) for b in range(width)]


def finished_requests(values: Sequence[float]) -> float:
    return sum(values[REQUESTS_BASE:REQUESTS_END])


def map_block(path: str, *, create: bool) -> mmap.mmap:
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
