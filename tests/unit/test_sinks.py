"""The Prometheus and OpenTelemetry sinks, driven through a real collector.

Spans go to the SDK's in-memory exporter; metrics are read back from the
registry's own exposition, so these tests see what a scrape would.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from corral.errors import ConfigError
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.events import CrashReason, EventKind, LifecycleEvent, SuccessorRole
from corral.lifecycle.feed import EventFeed
from corral.lifecycle.log_sink import StructlogSink
from corral.lifecycle.metrics_sink import PrometheusSink
from corral.lifecycle.trace_sink import TraceSink
from corral.metrics import CorralMetrics, FleetView, SupervisionLimits
from corral.runtime import ModeDecision, WorkerMode
from corral.states import SlotState, SpareStatus, SparesView, WorkerStatus
from corral.tracing import RecentSpans, build_tracer_provider, exporter_names, service_resource

DECISION = ModeDecision(WorkerMode.PROCESS, "test", free_threaded_build=False, gil_enabled=True)
_clock = itertools.count(1)


def event(
    kind: EventKind, slot: int | None = 0, generation: int = 1, **fields: Any
) -> LifecycleEvent:
    tick = float(next(_clock))
    return LifecycleEvent(
        kind=kind,
        mode=WorkerMode.PROCESS,
        wall_time=1_700_000_000.0 + tick,
        monotonic=tick,
        slot=slot,
        generation=generation,
        pid=4242 if slot is not None else 1,
        **fields,
    )


def crash(slot: int = 0, generation: int = 1) -> LifecycleEvent:
    return event(
        EventKind.CRASH, slot, generation, exit_code=None, signal="SIGKILL",
        reason=CrashReason.SIGNAL, uptime=1.0,
    )  # fmt: skip


def life_of_a_slot() -> list[LifecycleEvent]:
    """Start, spawn, ready, crash, respawn, spawn again, ready, drain, stop."""
    return [
        event(EventKind.SUPERVISOR_START, slot=None, generation=0, workers=1),
        event(EventKind.SPAWN),
        event(EventKind.READY, duration=0.02),
        crash(),
        event(EventKind.RESPAWN, restart_number=1, backoff=0.0, budget_remaining=4),
        event(EventKind.SPAWN, generation=2),
        event(EventKind.READY, generation=2, duration=0.03),
        event(EventKind.DRAIN_START, generation=2),
        event(EventKind.FORCE_STOP, generation=2, message="drain timeout exceeded"),
        event(EventKind.DRAIN_END, generation=2, duration=0.5, exit_code=0, message="forced"),
        event(EventKind.SUPERVISOR_STOP, slot=None, generation=0, message="exit code 0"),
    ]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def scrape(metrics: CorralMetrics, openmetrics: bool = False) -> str:
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else None
    body, _ = metrics.expose(accept)
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


# --- Tracing ---------------------------------------------------------------------


def test_one_span_per_transition_with_the_history_linked(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    collector = LifecycleCollector(tracer=TraceSink(provider))
    stamped = [collector.emit(e) for e in life_of_a_slot()]
    finished = {
        (s.name, (s.attributes or {}).get("corral.worker.generation")): s
        for s in exporter.get_finished_spans()
    }
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == sorted(
        [
            "corral.supervisor.start", "corral.worker.spawn", "corral.worker.ready",
            "corral.worker.crash", "corral.worker.respawn", "corral.worker.spawn",
            "corral.worker.ready", "corral.worker.force_stop", "corral.worker.drain",
            "corral.supervisor.stop",
        ]
    )  # fmt: skip
    spawn1 = finished[("corral.worker.spawn", 1)].get_span_context()
    crash1 = finished[("corral.worker.crash", 1)]
    respawn = finished[("corral.worker.respawn", 1)]
    spawn2 = finished[("corral.worker.spawn", 2)]
    assert spawn1 is not None
    # A crash links to the spawn of its incarnation, and lives in its trace.
    assert [link.context.span_id for link in crash1.links] == [spawn1.span_id]
    assert crash1.context is not None
    assert crash1.context.trace_id == spawn1.trace_id
    assert crash1.status.status_code is StatusCode.ERROR
    # The respawn links to the crash; the next spawn links to the respawn.
    assert crash1.context is not None
    assert [link.context.span_id for link in respawn.links] == [crash1.context.span_id]
    assert respawn.context is not None
    assert [link.context.span_id for link in spawn2.links] == [respawn.context.span_id]
    assert spawn2.context is not None
    assert spawn2.context.trace_id != spawn1.trace_id
    # Attributes follow the semantic conventions.
    assert crash1.attributes is not None
    assert crash1.attributes["process.pid"] == 4242
    assert crash1.attributes["corral.worker.slot"] == 0
    assert crash1.attributes["corral.crash.reason"] == "signal"
    # The drain span covers the drain: both its events carry its ids.
    drain_events = [e for e in stamped if e.kind in (EventKind.DRAIN_START, EventKind.DRAIN_END)]
    assert drain_events[0].span_id == drain_events[1].span_id is not None
    drain = finished[("corral.worker.drain", 2)]
    assert drain.start_time is not None
    assert drain.end_time is not None
    assert drain.end_time - drain.start_time == pytest.approx(2e9, rel=0.01)  # two ticks
    # The ready span reaches back to the spawn it reports on.
    ready = finished[("corral.worker.ready", 1)]
    assert ready.start_time is not None
    assert ready.end_time is not None
    assert ready.end_time - ready.start_time == pytest.approx(0.02e9, rel=0.01)


def test_a_failed_successor_is_an_error_span_between_its_crash_and_the_retry(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """crash (gen 2) -> successor_failed and respawn, both off the crash -> spawn (gen 3)."""
    provider, exporter = spans
    collector = LifecycleCollector(tracer=TraceSink(provider))
    for each in [
        event(EventKind.SPAWN),
        event(EventKind.READY, duration=0.02),
        event(EventKind.RECYCLE, message="served 100 requests; its max_requests is 100"),
        event(EventKind.SPAWN, generation=2),
        event(
            EventKind.CRASH, generation=2, exit_code=3, reason=CrashReason.BOOT, uptime=0.1
        ),
        event(
            EventKind.SUCCESSOR_FAILED, generation=2, role=SuccessorRole.RECYCLE,
            reason=CrashReason.BOOT, restart_number=1, backoff=0.0, budget_remaining=4,
        ),
        event(EventKind.RESPAWN, generation=2, restart_number=1, backoff=0.0, budget_remaining=4),
        event(EventKind.SPAWN, generation=3),
    ]:  # fmt: skip
        collector.emit(each)
    found = {
        (s.name, (s.attributes or {}).get("corral.worker.generation")): s
        for s in exporter.get_finished_spans()
    }
    crash2 = found[("corral.worker.crash", 2)].get_span_context()
    failed = found[("corral.worker.successor_failed", 2)]
    respawn = found[("corral.worker.respawn", 2)].get_span_context()
    spawn3 = found[("corral.worker.spawn", 3)]
    assert crash2 is not None
    assert respawn is not None
    assert failed.parent is not None
    assert failed.parent.span_id == crash2.span_id
    assert [link.context.span_id for link in failed.links] == [crash2.span_id]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["corral.successor.role"] == "recycle"
    assert failed.attributes["corral.crash.reason"] == "boot"
    assert [link.context.span_id for link in spawn3.links] == [respawn.span_id]


def test_every_event_is_stamped_with_the_ids_of_its_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    collector = LifecycleCollector(tracer=TraceSink(provider))
    stamped = [collector.emit(e) for e in life_of_a_slot()]
    span_ids = {f"{s.context.span_id:016x}" for s in exporter.get_finished_spans() if s.context}
    assert all(e.trace_id and e.span_id for e in stamped)
    assert {e.span_id for e in stamped} == span_ids
    assert [e.seq for e in collector.recent()] == list(range(1, len(stamped) + 1))
    assert all(e.span_id for e in collector.recent())


def test_log_lines_carry_the_trace_and_span_ids(
    spans: tuple[TracerProvider, InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> None:
    provider, _ = spans
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        collector = LifecycleCollector([StructlogSink()], tracer=TraceSink(provider))
        stamped = collector.emit(crash())
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
    assert lines[-1]["trace_id"] == stamped.trace_id
    assert lines[-1]["span_id"] == stamped.span_id


def test_a_failing_tracer_is_counted_and_the_event_still_delivered() -> None:
    class Broken:
        name = "trace"

        def trace(self, event: LifecycleEvent) -> tuple[str, str] | None:
            raise RuntimeError("exporter exploded")

    feed = EventFeed()
    seen: list[dict[str, Any]] = []
    feed.subscribe(seen.append)
    collector = LifecycleCollector([feed], tracer=Broken())
    logging.getLogger("corral.lifecycle").disabled = True
    try:
        collector.emit(crash())
        collector.emit(crash())
    finally:
        logging.getLogger("corral.lifecycle").disabled = False
    assert collector.sink_errors() == {"trace": 2}
    assert [e["kind"] for e in seen] == ["crash", "crash"]
    assert collector.sink_names() == ["trace", "feed"]


def test_recent_spans_are_bounded_and_json_ready() -> None:
    recent = RecentSpans(limit=5)
    provider = TracerProvider()
    provider.add_span_processor(recent)
    collector = LifecycleCollector(tracer=TraceSink(provider))
    for generation in range(1, 11):
        collector.emit(event(EventKind.SPAWN, generation=generation))
    records = recent.snapshot()
    assert len(records) == 5
    assert [r["attributes"]["corral.worker.generation"] for r in records] == [6, 7, 8, 9, 10]
    json.dumps(records)  # the side port serves these as they are
    assert all(len(r["trace_id"]) == 32 and len(r["span_id"]) == 16 for r in records)


def test_nothing_is_exported_unless_the_environment_asks() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
    assert build_tracer_provider({"OTEL_SDK_DISABLED": "true"}, RecentSpans()) is None


def test_unknown_protocols_and_exporters_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*or grpc"):
        build_tracer_provider(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            RecentSpans(),
        )
    with pytest.raises(ConfigError, match="otlp, console or none"):
        build_tracer_provider({"OTEL_TRACES_EXPORTER": "zipkin"}, RecentSpans())


def test_service_name_defaults_to_corral_and_honours_the_environment() -> None:
    default = service_resource({}).attributes
    assert default["service.name"] == "corral"
    assert default["service.instance.id"] != service_resource({}).attributes["service.instance.id"]


def test_service_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Resource.create reads the real environment for OTEL_SERVICE_NAME.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-frontend")
    named = service_resource(dict(os.environ)).attributes
    assert named["service.name"] == "shop-frontend"


# --- Prometheus ------------------------------------------------------------------------


def test_counters_move_exactly_with_the_events(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    metrics = CorralMetrics(DECISION)
    collector = LifecycleCollector([PrometheusSink(metrics)], tracer=TraceSink(provider))
    for e in life_of_a_slot():
        collector.emit(e)
    text = scrape(metrics)
    assert sample(text, "corral_worker_spawns_total", slot="0") == 2
    assert sample(text, "corral_worker_crashes_total", slot="0", reason="signal") == 1
    assert sample(text, "corral_worker_crashes_total", slot="0", reason="boot") == 0
    assert sample(text, "corral_worker_restarts_total", slot="0") == 1
    assert sample(text, "corral_worker_force_stops_total", slot="0") == 1
    assert sample(text, "corral_restart_budget_exhausted_total", slot="0") == 0
    assert sample(text, "corral_worker_ready_duration_seconds_count") == 2
    assert sample(text, "corral_worker_ready_duration_seconds_sum") == pytest.approx(0.05)
    assert sample(text, "corral_drain_duration_seconds_count") == 1
    assert sample(text, "corral_lifecycle_events_total", kind="crash") == 1
    assert sample(text, "corral_lifecycle_events_total", kind="scale_up") == 0
    assert sample(text, "corral_supervisor_info", mode="process", gil="enabled") == 1


def test_crash_and_restart_counters_carry_their_span_as_an_exemplar(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    metrics = CorralMetrics(DECISION)
    collector = LifecycleCollector([PrometheusSink(metrics)], tracer=TraceSink(provider))
    stamped = [collector.emit(e) for e in life_of_a_slot()]
    crash_event = next(e for e in stamped if e.kind is EventKind.CRASH)
    text = scrape(metrics, openmetrics=True)
    exemplars = [
        s.exemplar
        for family in openmetrics_families(text)  # type: ignore[no-untyped-call]
        for s in family.samples
        if s.name == "corral_worker_crashes_total" and s.exemplar
    ]
    assert exemplars, text
    assert exemplars[0].labels["trace_id"] == crash_event.trace_id
    assert exemplars[0].labels["span_id"] == crash_event.span_id


def row(
    slot: int, state: str, *, pid: int | None = None, started_at: float | None = None, budget: int
) -> WorkerStatus:
    return WorkerStatus(
        slot=slot,
        mode="process",
        pid=pid,
        thread_id=None,
        generation=1,
        state=SlotState(state),
        started_at=started_at,
        restarts_in_window=5 - budget,
        budget_remaining=budget,
        last_exit=None,
    )


def test_scrape_time_collectors_read_the_fleet_and_the_sink_errors() -> None:
    metrics = CorralMetrics(DECISION)
    fleet = FleetView(
        desired=3,
        slots=[
            row(0, "ready", pid=10, started_at=time.time() - 5, budget=5),
            row(1, "backoff", budget=2),
            row(2, "exhausted", budget=0),
        ],
    )
    metrics.add_scrape_collectors(
        fleet=lambda: fleet,
        limits=SupervisionLimits(max_restarts=5, restart_window=60.0, min_ready=None),
        sink_errors=lambda: {"prometheus": 3},
        sink_names=lambda: ["log", "prometheus"],
        request_stats=None,
        threads=False,
    )
    text = scrape(metrics)
    assert sample(text, "corral_workers_desired") == 3
    assert sample(text, "corral_workers_alive") == 1
    assert sample(text, "corral_workers_ready") == 1
    assert sample(text, "corral_worker_state", slot="1", state="backoff") == 1
    assert sample(text, "corral_worker_state", slot="1", state="ready") == 0
    assert sample(text, "corral_worker_exhausted", slot="2") == 1
    assert sample(text, "corral_restart_budget_remaining", slot="1") == 2
    assert sample(text, "corral_restart_budget_limit") == 5
    assert sample(text, "corral_restart_budget_window_seconds") == 60
    # The default readiness rule: every slot that is not exhausted.
    assert sample(text, "corral_workers_min_ready") == 2
    assert sample(text, "corral_sink_errors_total", sink="log") == 0
    assert sample(text, "corral_sink_errors_total", sink="prometheus") == 3
    one_hot = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "corral_worker_state" and s.labels["slot"] == "0"
    ]
    assert sorted(one_hot) == [0, 0, 0, 0, 0, 0, 1]


def test_the_limit_gauges_export_the_configured_flags() -> None:
    """--max-restarts, --restart-window and an explicit --min-ready reach /metrics as set."""
    metrics = CorralMetrics(DECISION)
    fleet = FleetView(desired=4, slots=[row(0, "ready", budget=3), row(1, "exhausted", budget=0)])
    metrics.add_scrape_collectors(
        fleet=lambda: fleet,
        limits=SupervisionLimits(max_restarts=3, restart_window=600.0, min_ready=3),
        sink_errors=dict,
        sink_names=list,
        request_stats=None,
        threads=False,
    )
    text = scrape(metrics, openmetrics=True)
    assert sample(text, "corral_restart_budget_limit") == 3
    assert sample(text, "corral_restart_budget_window_seconds") == 600
    assert sample(text, "corral_workers_min_ready") == 3


def test_a_promotion_links_to_the_respawn_and_to_the_spares_own_spawn(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A spare's spans chain apart from any slot's; its promotion joins a slot's history."""
    provider, exporter = spans
    collector = LifecycleCollector(tracer=TraceSink(provider))
    metrics = CorralMetrics(DECISION)
    collector.add_sink(PrometheusSink(metrics))
    for each in [
        event(EventKind.SPAWN),
        event(EventKind.SPAWN, slot=None, generation=0, spare=1),
        event(EventKind.READY, slot=None, generation=0, spare=1, duration=0.01),
        crash(),
        event(EventKind.RESPAWN, restart_number=1, backoff=0.0, budget_remaining=4),
        event(EventKind.PROMOTE, generation=2, spare=1, message="spare 1 took slot 0"),
        crash(generation=2),
    ]:
        collector.emit(each)
    found = {}
    for span in exporter.get_finished_spans():
        attributes = span.attributes or {}
        key = (span.name, attributes.get("corral.worker.slot"), attributes.get("corral.spare"))
        found[key] = span
    spare_spawn = found[("corral.worker.spawn", None, 1)].get_span_context()
    respawn = found[("corral.worker.respawn", 0, None)].get_span_context()
    promote = found[("corral.worker.promote", 0, 1)]
    assert spare_spawn is not None
    assert respawn is not None
    assert [link.context.span_id for link in promote.links] == [
        respawn.span_id,
        spare_spawn.span_id,
    ]
    assert promote.parent is not None
    assert promote.parent.span_id == respawn.span_id
    # The promoted incarnation's later events hang off its promotion.
    assert promote.context is not None
    later = [s for s in exporter.get_finished_spans() if s.name == "corral.worker.crash"][-1]
    assert later.parent is not None
    assert later.parent.span_id == promote.context.span_id
    # A spare's events count by kind only: no slot series appears for it.
    text = scrape(metrics)
    assert sample(text, "corral_lifecycle_events_total", kind="promote") == 1
    assert sample(text, "corral_worker_spawns_total", slot="0") == 1
    assert 'slot="None"' not in text
    assert 'slot="-1"' not in text


def test_the_spare_gauges_read_the_supervisors_spares() -> None:
    metrics = CorralMetrics(DECISION)
    limits = SupervisionLimits(max_restarts=5, restart_window=60.0, min_ready=None)
    rows = (
        SpareStatus(3, 11, None, SlotState.SPARE, 1.0),
        SpareStatus(4, 12, None, SlotState.STARTING, 2.0),
    )
    view = SparesView(desired=2, budget_remaining=5, exhausted=False, rows=rows)
    metrics.add_scrape_collectors(
        fleet=lambda: FleetView(desired=1, slots=[], spares=view),
        limits=limits,
        sink_errors=dict,
        sink_names=list,
        request_stats=None,
        threads=False,
    )
    text = scrape(metrics)
    assert sample(text, "corral_spares_desired") == 2
    assert sample(text, "corral_spares_ready") == 1
    assert sample(text, "corral_spares_exhausted") == 0
