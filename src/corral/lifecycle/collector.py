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


@runtime_checkable
class TracingSink(Protocol):
    """A sink that also names the span it records for an event.

    The collector calls ``trace`` first, under its lock, and stamps the ids
    it returns onto the event; only then do the ring and the other sinks see
    it. That is what lets a log line or an exemplar carry the span's ids.
    """

    name: str

    def trace(self, event: LifecycleEvent) -> tuple[str, str] | None:
        """Record the event's span; return ``(trace_id, span_id)`` in hex, or ``None``."""
        ...


def sink_name(sink: LifecycleSink | TracingSink) -> str:
    """A stable, low-cardinality name for a sink: its ``name`` attribute or class name."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) else type(sink).__name__


class LifecycleCollector:
    """Thread-safe fan-out of ``LifecycleEvent`` to sinks, with a bounded ring of recent events."""

    def __init__(
        self,
        sinks: Iterable[LifecycleSink] = (),
        *,
        tracer: TracingSink | None = None,
        history: int = 1000,
    ) -> None:
        self._lock = threading.Lock()
        self._sinks: list[LifecycleSink] = list(sinks)
        self._tracer = tracer
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
            stamped = self._traced(dataclasses.replace(event, seq=self._seq))
            self._recent.append(stamped)
            for sink in self._sinks:
                self._deliver(sink, stamped)
        return stamped

    def _traced(self, event: LifecycleEvent) -> LifecycleEvent:
        if self._tracer is None:
            return event
        try:
            ids = self._tracer.trace(event)
        except Exception:
            self._count_error(sink_name(self._tracer))
            return event
        if ids is None:
            return event
        return dataclasses.replace(event, trace_id=ids[0], span_id=ids[1])

    def _deliver(self, sink: LifecycleSink, event: LifecycleEvent) -> None:
        try:
            sink.handle(event)
        except Exception:
            self._count_error(sink_name(sink))

    def _count_error(self, name: str) -> None:
        count = self._sink_errors.get(name, 0) + 1
        self._sink_errors[name] = count
        if count == 1:  # report the first failure with its traceback, then just count
            _fallback_log.exception("lifecycle sink %s failed; counting further errors", name)

    def sink_names(self) -> list[str]:
        """Every sink's name, the tracer's included: the label values of the error counter."""
        with self._lock:
            sinks: list[LifecycleSink | TracingSink] = list(self._sinks)
            if self._tracer is not None:
                sinks.insert(0, self._tracer)
            return [sink_name(sink) for sink in sinks]

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
