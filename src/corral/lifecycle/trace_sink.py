"""The OpenTelemetry sink: one short span per lifecycle transition, linked into a history.

Each worker incarnation is one trace, rooted at its ``corral.worker.spawn``
span; its ready, crash, drain and force-stop spans are children of that root.
Incarnations are chained by *links*, so a trace UI can walk a slot's whole
life: the spawn of generation N+1 links to the ``respawn`` span that
scheduled it, which links to the ``crash`` of generation N, which links to
that incarnation's spawn. Supervisor-wide events (start, stop, reload,
scaling) hang off the ``corral.supervisor.start`` span.

Spans carry the event's own timestamps, not the time the sink ran. The drain
span is the only long one: it opens at ``drain_start`` and closes at
``drain_end``; both events carry its ids.

The sink is called with the collector's lock held, so the maps below need no
lock of their own. They are pruned as incarnations end, so they stay as small
as the number of live workers.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from corral.lifecycle.events import EventKind, LifecycleEvent

SPAN_NAMES: dict[EventKind, str] = {
    EventKind.SUPERVISOR_START: "corral.supervisor.start",
    EventKind.SUPERVISOR_STOP: "corral.supervisor.stop",
    EventKind.RELOAD: "corral.supervisor.reload",
    EventKind.SCALE_UP: "corral.supervisor.scale",
    EventKind.SCALE_DOWN: "corral.supervisor.scale",
    EventKind.SPAWN: "corral.worker.spawn",
    EventKind.READY: "corral.worker.ready",
    EventKind.CRASH: "corral.worker.crash",
    EventKind.EXIT: "corral.worker.exit",
    EventKind.RESPAWN: "corral.worker.respawn",
    EventKind.BUDGET_EXHAUSTED: "corral.worker.budget_exhausted",
    EventKind.DRAIN_START: "corral.worker.drain",
    EventKind.DRAIN_END: "corral.worker.drain",
    EventKind.FORCE_STOP: "corral.worker.force_stop",
    EventKind.RECYCLE: "corral.worker.recycle",
    EventKind.SUCCESSOR_FAILED: "corral.worker.successor_failed",
    EventKind.PROMOTE: "corral.worker.promote",
}

# Spans whose status is ERROR.
_FAILURES = frozenset({EventKind.CRASH, EventKind.BUDGET_EXHAUSTED, EventKind.SUCCESSOR_FAILED})

_Incarnation = tuple[int, int]  # (slot, generation), or (SPARES, the spare's number)

# The lineage of warm spares: their spans chain like a slot's until one is promoted.
SPARES = -1


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def attributes(event: LifecycleEvent) -> dict[str, AttributeValue]:
    """Semantic-convention names where OTel has one, ``corral.*`` for the rest."""
    found: dict[str, AttributeValue | None] = {
        "corral.event.kind": event.kind.value,
        "corral.event.seq": event.seq,
        "corral.worker.mode": event.mode.value,
        "corral.worker.slot": event.slot,
        "corral.worker.generation": event.generation if event.slot is not None else None,
        "process.pid": event.pid,
        "thread.id": event.thread_id,
        "process.exit.code": event.exit_code,
        "corral.worker.signal": event.signal,
        "corral.crash.reason": event.reason.value if event.reason else None,
        "corral.worker.uptime": event.uptime,
        "corral.successor.role": event.role.value if event.role else None,
        "corral.spare": event.spare,
        "corral.restart.number": event.restart_number,
        "corral.restart.backoff": event.backoff,
        "corral.restart.budget_remaining": event.budget_remaining,
        "corral.duration": event.duration,
        "corral.workers": event.workers,
        "corral.message": event.message,
    }
    return {key: value for key, value in found.items() if value is not None}


class TraceSink:
    """Records each event as a span and returns its ids for the collector to stamp."""

    name = "trace"

    def __init__(self, provider: TracerProvider) -> None:
        self._tracer = provider.get_tracer("corral")
        self._supervisor: SpanContext | None = None
        self._spawns: dict[_Incarnation, SpanContext] = {}
        self._drains: dict[_Incarnation, Span] = {}
        self._last_crash: dict[int, SpanContext] = {}
        self._pending_respawn: dict[int, SpanContext] = {}

    def trace(self, event: LifecycleEvent) -> tuple[str, str] | None:
        context = self._record(event)
        if not context.is_valid:
            return None
        return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)

    def close(self) -> None:
        """End drain spans still open (the supervisor stopped before they finished)."""
        for span in self._drains.values():
            span.end()
        self._drains.clear()

    # --- One method per shape of span -------------------------------------------

    def _record(self, event: LifecycleEvent) -> SpanContext:
        kind = event.kind
        if kind is EventKind.SPAWN:
            return self._spawn(event)
        if kind is EventKind.DRAIN_START:
            return self._drain_start(event)
        if kind is EventKind.DRAIN_END:
            return self._drain_end(event)
        if kind is EventKind.PROMOTE:
            return self._promote(event)
        if event.slot is None and event.spare is None:
            return self._supervisor_span(event)
        return self._worker_span(event)

    def _spawn(self, event: LifecycleEvent) -> SpanContext:
        links = _links(self._pending_respawn.pop(_lineage(event), None))
        context = self._instant(event, parent=None, links=links)
        self._spawns[_incarnation(event)] = context
        return context

    def _promote(self, event: LifecycleEvent) -> SpanContext:
        """A spare takes a slot: linked like a respawn (to the respawn that asked, else the
        slot's last crash) and to the spare's own spawn; the slot's next events hang off it."""
        assert event.slot is not None
        assert event.spare is not None
        spare = self._spawns.pop((SPARES, event.spare), None)
        cause = self._pending_respawn.pop(event.slot, None) or self._last_crash.get(event.slot)
        context = self._instant(
            event, parent=cause or spare, links=[*_links(cause), *_links(spare)]
        )
        self._spawns[(event.slot, event.generation)] = context
        return context

    def _worker_span(self, event: LifecycleEvent) -> SpanContext:
        key = _incarnation(event)
        lineage = _lineage(event)
        spawn = self._spawns.get(key)
        kind = event.kind
        if kind in (EventKind.RESPAWN, EventKind.BUDGET_EXHAUSTED, EventKind.SUCCESSOR_FAILED):
            crash = self._last_crash.get(lineage)
            context = self._instant(event, parent=crash or spawn, links=_links(crash))
            if kind is EventKind.RESPAWN:
                self._pending_respawn[lineage] = context
            return context
        if kind is EventKind.FORCE_STOP:
            drain = self._drains.get(key)
            links = _links(drain.get_span_context() if drain else None)
            return self._instant(event, parent=spawn, links=links)
        # The ready span covers the boot it reports on: spawn to ready.
        start = None
        if kind is EventKind.READY and event.duration is not None:
            start = event.wall_time - event.duration
        context = self._instant(event, parent=spawn, links=_links(spawn), start=start)
        if kind in (EventKind.CRASH, EventKind.EXIT):
            self._last_crash[lineage] = context
            self._spawns.pop(key, None)
        return context

    def _drain_start(self, event: LifecycleEvent) -> SpanContext:
        key = _incarnation(event)
        span = self._start(event, parent=self._spawns.get(key), links=())
        self._drains[key] = span
        return span.get_span_context()

    def _drain_end(self, event: LifecycleEvent) -> SpanContext:
        key = _incarnation(event)
        self._spawns.pop(key, None)
        span = self._drains.pop(key, None)
        if span is None:  # no drain_start on record: record the drain as one instant
            span = self._start(event, parent=None, links=())
        span.set_attributes(attributes(event))
        if event.message == "forced" or event.signal is not None:
            span.set_status(Status(StatusCode.ERROR, "drain was forced"))
        span.end(end_time=_ns(event.wall_time))
        return span.get_span_context()

    def _supervisor_span(self, event: LifecycleEvent) -> SpanContext:
        context = self._instant(event, parent=self._supervisor, links=())
        if event.kind is EventKind.SUPERVISOR_START:
            self._supervisor = context
        return context

    # --- Span plumbing --------------------------------------------------------------

    def _start(
        self,
        event: LifecycleEvent,
        *,
        parent: SpanContext | None,
        links: Sequence[Link],
        start: float | None = None,
    ) -> Span:
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        return self._tracer.start_span(
            SPAN_NAMES[event.kind],
            context=context or trace.set_span_in_context(trace.INVALID_SPAN),
            kind=SpanKind.INTERNAL,
            attributes=attributes(event),
            links=links,
            start_time=_ns(start if start is not None else event.wall_time),
        )

    def _instant(
        self,
        event: LifecycleEvent,
        *,
        parent: SpanContext | None,
        links: Sequence[Link],
        start: float | None = None,
    ) -> SpanContext:
        span = self._start(event, parent=parent, links=links, start=start)
        if event.kind in _FAILURES:
            span.set_status(Status(StatusCode.ERROR, event.message or event.kind.value))
        span.end(end_time=_ns(event.wall_time))
        return span.get_span_context()


def _lineage(event: LifecycleEvent) -> int:
    """The slot whose history an event belongs to; spares share one (``SPARES``)."""
    return event.slot if event.slot is not None else SPARES


def _incarnation(event: LifecycleEvent) -> _Incarnation:
    if event.slot is None and event.spare is not None:
        return (SPARES, event.spare)
    return (_lineage(event), event.generation)


def _links(context: SpanContext | None) -> list[Link]:
    return [Link(context)] if context is not None and context.is_valid else []
