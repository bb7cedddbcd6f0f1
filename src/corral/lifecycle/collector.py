"""Ordering, thread-safety and fan-out for lifecycle events.

Events come from the supervisor loop, from worker threads and from the
thread that reads process workers' pipes. The collector stamps each with a
sequence number and hands it to every sink *under one lock*, so every sink
sees every event exactly once and in the same order, without relying on the
GIL. A sink that raises is counted and reported once, and never breaks
supervision: the remaining sinks still get the event.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from corral.lifecycle.events import LifecycleEvent

_fallback_log = logging.getLogger("corral.lifecycle")


@runtime_checkable
class LifecycleSink(Protocol):
    """Anything with ``handle(event)``. It is called with the collector's lock held,
    so it must be quick and must not emit events itself."""

    def handle(self, event: LifecycleEvent) -> None: ...


def sink_name(sink: LifecycleSink) -> str:
    """A stable, low-cardinality name for a sink: its ``name`` attribute or class name."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) else type(sink).__name__


class LifecycleCollector:
    """Thread-safe fan-out of ``LifecycleEvent`` to sinks, with a bounded ring of recent events."""

    def __init__(self, sinks: Iterable[LifecycleSink] = (), *, history: int = 1000) -> None:
        self._lock = threading.Lock()
        self._sinks: list[LifecycleSink] = list(sinks)
        self._recent: deque[LifecycleEvent] = deque(maxlen=history)
        self._seq = 0
        self._sink_errors: dict[str, int] = {}

    def add_sink(self, sink: LifecycleSink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def emit(self, event: LifecycleEvent) -> LifecycleEvent:
        """Stamp, record and deliver one event; returns the stamped event."""
        with self._lock:
            self._seq += 1
            stamped = dataclasses.replace(event, seq=self._seq)
            self._recent.append(stamped)
            for sink in self._sinks:
                self._deliver(sink, stamped)
        return stamped

    def _deliver(self, sink: LifecycleSink, event: LifecycleEvent) -> None:
        try:
            sink.handle(event)
        except Exception:
            name = sink_name(sink)
            count = self._sink_errors.get(name, 0) + 1
            self._sink_errors[name] = count
            if count == 1:  # report the first failure with its traceback, then just count
                _fallback_log.exception("lifecycle sink %s failed; counting further errors", name)

    def recent(self, since: int = 0) -> list[LifecycleEvent]:
        """Events with ``seq > since`` still in the ring, oldest first."""
        with self._lock:
            return [event for event in self._recent if event.seq > since]

    def sink_errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._sink_errors)

    @property
    def emitted(self) -> int:
        with self._lock:
            return self._seq
