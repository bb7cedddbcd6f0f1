"""The request-stats block: one worker incarnation's counters, as float64 cells.

Both sides share only this file's facts: the worker writes a block
(``recorder``), the supervisor reads and folds it (``pool``).

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
"""

from __future__ import annotations

import mmap
import os

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
FINITE_BUCKETS: tuple[float, ...] = BUCKETS[:-1]

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

STATUS_5XX = STATUS_CLASSES.index("5xx")
ZERO_BLOCK = bytes(BLOCK_BYTES)

# The hot path's two lookups. A status outside 100..599, or none at all (0: the
# app never started a response, so uvicorn answers 500), counts as 5xx.
METHOD_BASE: dict[str, int] = {
    method: COUNTS_BASE + i * len(STATUS_CLASSES) for i, method in enumerate(METHODS)
}
OTHER_BASE = COUNTS_BASE + len(METHODS) * len(STATUS_CLASSES)
STATUS_OFFSET: dict[int, int] = {status: status // 100 - 1 for status in range(100, 600)}


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
