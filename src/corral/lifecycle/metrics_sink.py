"""The Prometheus sink: each lifecycle event moves exactly the counters it should.

Called by the collector under its lock, in ``seq`` order, so it only does
counter arithmetic (prometheus-client's own locks are uncontended here).
Crash and restart increments carry their span's ids as an OpenMetrics
exemplar, so a spike on a dashboard leads straight to the trace.
"""

from __future__ import annotations

from corral.lifecycle.events import EventKind, LifecycleEvent
from corral.metrics import CorralMetrics


class PrometheusSink:
    name = "prometheus"

    def __init__(self, metrics: CorralMetrics) -> None:
        self._m = metrics

    def handle(self, event: LifecycleEvent) -> None:
        m = self._m
        m.events.labels(kind=event.kind.value).inc()
        if event.slot is None:
            return
        m.touch_slot(event.slot)
        slot = str(event.slot)
        exemplar = _exemplar(event)
        kind = event.kind
        if kind is EventKind.SPAWN:
            m.spawns.labels(slot=slot).inc()
        elif kind is EventKind.READY and event.duration is not None:
            m.ready_duration.observe(event.duration)
        elif kind is EventKind.CRASH and event.reason is not None:
            m.crashes.labels(slot=slot, reason=event.reason.value).inc(exemplar=exemplar)
        elif kind is EventKind.RESPAWN:
            m.restarts.labels(slot=slot).inc(exemplar=exemplar)
        elif kind is EventKind.FORCE_STOP:
            m.force_stops.labels(slot=slot).inc(exemplar=exemplar)
        elif kind is EventKind.BUDGET_EXHAUSTED:
            m.budget_exhausted.labels(slot=slot).inc(exemplar=exemplar)
        elif kind is EventKind.DRAIN_END and event.duration is not None:
            m.drain_duration.observe(event.duration)


def _exemplar(event: LifecycleEvent) -> dict[str, str] | None:
    if event.trace_id is None or event.span_id is None:
        return None
    return {"trace_id": event.trace_id, "span_id": event.span_id}
