"""The supervisor side: the lanes it lends to worker incarnations, and the slot totals.

The supervisor owns a ``RequestStatsPool``: a private directory (``0700``,
in ``/dev/shm`` when usable) of fixed-size block files, one per *lane*.
``acquire(slot)`` hands a zeroed lane to a new incarnation of a worker slot.
It reads live lanes at scrape time (``snapshot()``) and, when an incarnation
is gone, ``release(lease)`` folds the lane's final counts into the slot's
*retired* totals, zeroes it and puts it back on a free list. Counters
therefore stay monotonic per slot across incarnations, and the directory
never holds more files than there were ever concurrently live workers.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

from corral.owned_dir import OwnedDirectory
from corral.request_stats.layout import (
    BUCKETS,
    COUNTS_LEN,
    HEADER_INDEX,
    LAYOUT_MAGIC,
    METHOD_LABELS,
    STARTED_INDEX,
    STATUS_CLASSES,
    SUM_INDEX,
    WS_ENDED_INDEX,
    WS_GOING_AWAY_INDEX,
    WS_OPENED_INDEX,
    ZERO_BLOCK,
    bucket_counts,
    finished_requests,
    map_block,
    requests_by_class,
)

# The pool's private directory is named <parent>/corral-stats-XXXXXXXX.
DIRECTORY_PREFIX = "corral-stats-"


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
        self.mapping[:] = ZERO_BLOCK
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
        for i, count in enumerate(requests_by_class(values)):
            counts[i] += count
        for i, count in enumerate(bucket_counts(values)):
            buckets[i] += count
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
                lane = _Lane(index, path, map_block(path, create=True))
                self._lanes.append(lane)
            lane.reset(header=True)
            lease = StatsLease(lane.path, lane.index, slot)
            lane.lease = lease
            if slot >= 0:  # a spare's lane (negative slot) counts for no slot until promoted
                self._retired.setdefault(slot, _Totals())
            return lease

    def reassign(self, lease: StatsLease, slot: int) -> StatsLease:
        """The same lane, now counted for ``slot``: a warm spare took that slot.

        The worker keeps writing into the same block; only whose totals it
        joins changes. A spare never served, so nothing counted is moved.
        """
        with self._lock:
            lane = self._live_lane(lease)
            moved = StatsLease(lease.path, lease.lane, slot)
            lane.lease = moved
            self._retired.setdefault(slot, _Totals())
            return moved

    def release(self, lease: StatsLease) -> None:
        """Fold the lane's final counts into the slot's retired totals, zero it and free it.

        In-flight is not carried over: requests a dead worker had started will
        never finish. Raises ``ValueError`` for a lease that is not live (released
        twice, or from another pool); after ``close()`` it does nothing.
        """
        with self._lock:
            if self._closed:
                return
            lane = self._live_lane(lease)
            values = lane.read()
            if values is not None and lease.slot >= 0:
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
                if lane.lease is None or lane.lease.slot < 0:
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

    def _live_lane(self, lease: StatsLease) -> _Lane:
        lane = self._lanes[lease.lane] if 0 <= lease.lane < len(self._lanes) else None
        if lane is None or lane.lease is not lease:
            raise ValueError(f"{lease} is not a live lease of this pool")
        return lane

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
    return max(0.0, values[STARTED_INDEX] - finished_requests(values))


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
