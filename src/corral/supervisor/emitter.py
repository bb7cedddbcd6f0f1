"""Turning a transition into a ``LifecycleEvent`` for the collector.

Every lifecycle event the supervisor sends goes through ``Emitter.emit``, so
each one carries the same identity fields (mode, times, slot, generation, pid,
thread) however it was caused.

An event's times are those of what it reports, which may precede its
emission: a respawn starts the replacement first and reports the crash after
(``Restarts.on_failed``), so those events pass ``at``, the monotonic time it
happened.
"""

from __future__ import annotations

import os
import time
from typing import Any

from corral.handles import WorkerHandle
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.events import EventKind, LifecycleEvent
from corral.runtime import WorkerMode


class Emitter:
    def __init__(self, collector: LifecycleCollector, mode: WorkerMode) -> None:
        self.collector = collector
        self._mode = mode

    def emit(
        self,
        kind: EventKind,
        handle: WorkerHandle | None = None,
        *,
        slot: int | None = None,
        at: float | None = None,
        **details: Any,
    ) -> LifecycleEvent:
        """Send one event; ``at`` (``time.monotonic()``) if it happened before now."""
        wall, monotonic = time.time(), time.monotonic()
        if at is not None:
            wall, monotonic = wall - (monotonic - at), at
        event = LifecycleEvent(
            kind=kind,
            mode=self._mode,
            wall_time=wall,
            monotonic=monotonic,
            slot=handle.slot if handle else slot,
            generation=handle.generation if handle else 0,
            pid=handle.pid if handle else os.getpid(),
            thread_id=handle.thread_id if handle else None,
            **details,
        )
        return self.collector.emit(event)
