"""Every ``corral_*`` metric, declared in one place.

Each supervisor owns one ``CorralMetrics``, and with it one
``CollectorRegistry`` (normal mode, not prometheus-client's multiprocess
mode; see ``request_stats`` for why). The registry is the only global-ish
mutable state corral has, and it is scoped to the supervisor, not the module,
so tests and embedders can run several side by side.

Two kinds of metric live here:

* **Event counters and histograms**, moved by ``lifecycle.metrics_sink`` as
  each lifecycle event arrives, so they count exactly what happened.
* **State read at scrape time** by small custom collectors (the pattern the
  prometheus-client docs give for proxied data): the worker table from
  ``Supervisor.status()``, per-worker CPU and memory from psutil, request
  counts from the workers' shared-memory blocks, and the collector's sink
  error counts. Reading at scrape time means a gauge can never drift from
  the supervisor's own view.

Labels are bounded: ``slot`` is a worker slot index (never a pid),
``reason``, ``state`` and ``kind`` are enums, ``method`` and
``status_class`` are fixed sets.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from corral import __version__
from corral.lifecycle.events import CrashReason, EventKind
from corral.request_stats.layout import BUCKETS
from corral.request_stats.pool import RequestStatsPool, SlotRequestStats
from corral.runtime import ModeDecision
from corral.states import (
    ALIVE_STATES,
    SLOT_STATES,
    SlotState,
    SparesView,
    WorkerStatus,
    required_ready,
)

READY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DRAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the scrape-time collectors read: the desired count and the supervisor's table."""

    desired: int
    slots: Sequence[WorkerStatus]
    spares: SparesView | None = None  # None: a supervisor that keeps no spares


FleetSource = Callable[[], FleetView]


@dataclass(frozen=True, slots=True)
class SupervisionLimits:
    """The configured limits the alert rules compare against, exported as gauges.

    Without them a rule would need its own copy of ``--max-restarts`` or
    ``--min-ready`` and would be wrong for every deployment that sets them.
    ``min_ready`` is ``None`` for the default rule (every slot not exhausted).
    """

    max_restarts: int
    restart_window: float
    min_ready: int | None


class CorralMetrics:
    """The whole metrics surface of one supervisor."""

    def __init__(self, decision: ModeDecision, registry: CollectorRegistry | None = None) -> None:
        # prometheus-client's ``*_created`` samples would double every counter's
        # series for a timestamp Prometheus ignores. The switch is process-wide
        # (the library offers no other), and corral owns its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.spawns = Counter(
            "corral_worker_spawns_total", "Worker incarnations started.", ["slot"], registry=r
        )
        self.crashes = Counter(
            "corral_worker_crashes_total",
            "Workers that died without being asked to, by cause.",
            ["slot", "reason"],
            registry=r,
        )
        self.restarts = Counter(
            "corral_worker_restarts_total",
            "Restarts scheduled after a worker died (each is charged to the slot's budget).",
            ["slot"],
            registry=r,
        )
        self.force_stops = Counter(
            "corral_worker_force_stops_total",
            "Forcible stop actions (force, SIGKILL, abandon) against overrunning drains.",
            ["slot"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "corral_restart_budget_exhausted_total",
            "Times a slot ran out of restarts within the window and was given up on.",
            ["slot"],
            registry=r,
        )
        self._declare_durations_and_info(decision)
        # The supervisor's own process_* and python_info, as the default registry has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._known_slots: set[int] = set()

    def _declare_durations_and_info(self, decision: ModeDecision) -> None:
        r = self.registry
        self.ready_duration = Histogram(
            "corral_worker_ready_duration_seconds",
            "Time from spawning a worker to it accepting requests.",
            buckets=READY_BUCKETS,
            registry=r,
        )
        self.drain_duration = Histogram(
            "corral_drain_duration_seconds",
            "Time from asking a worker to drain to it exiting.",
            buckets=DRAIN_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "corral_lifecycle_events_total",
            "Lifecycle events emitted, by kind.",
            ["kind"],
            registry=r,
        )
        self.info = Info("corral_supervisor", "The running corral and its interpreter.", registry=r)
        self.info.info(
            {
                "version": __version__,
                "mode": decision.mode.value,
                "python": f"{platform.python_implementation()} {platform.python_version()}",
                "gil": "enabled" if decision.gil_enabled else "disabled",
            }
        )
        for kind in EventKind:
            self.events.labels(kind=kind.value)

    def touch_slot(self, slot: int) -> None:
        """Create every per-slot counter at 0, so ``rate()`` sees the first increment."""
        if slot in self._known_slots:
            return
        self._known_slots.add(slot)
        label = str(slot)
        self.spawns.labels(slot=label)
        self.restarts.labels(slot=label)
        self.force_stops.labels(slot=label)
        self.budget_exhausted.labels(slot=label)
        for reason in CrashReason:
            self.crashes.labels(slot=label, reason=reason.value)

    def add_scrape_collectors(
        self,
        fleet: FleetSource,
        *,
        limits: SupervisionLimits,
        sink_errors: Callable[[], dict[str, int]],
        sink_names: Callable[[], list[str]],
        request_stats: RequestStatsPool | None,
        threads: bool,
    ) -> None:
        """Register the collectors that read state when Prometheus scrapes."""
        self.registry.register(FleetCollector(fleet, limits))
        self.registry.register(SinkErrorCollector(sink_errors, sink_names))
        self.registry.register(ResourceCollector(fleet, threads=threads))
        if request_stats is not None:
            self.registry.register(RequestCollector(request_stats.snapshot))

    def add_span_drops(self, dropped: Callable[[], dict[str, int]]) -> None:
        """Register ``corral_spans_dropped_total``, read from ``span_export.SpanDrops``."""
        self.registry.register(SpanDropCollector(dropped))

    def expose(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: OpenMetrics when asked, else text 0.0.4."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


# --- Scrape-time collectors ----------------------------------------------------


class FleetCollector(Collector):
    """Worker gauges straight from the supervisor's own table."""

    def __init__(self, fleet: FleetSource, limits: SupervisionLimits) -> None:
        self._fleet = fleet
        self._limits = limits

    def collect(self) -> Iterable[Metric]:
        view = self._fleet()
        yield from self._limit_families(view)
        desired = GaugeMetricFamily("corral_workers_desired", "Worker slots configured now.")
        desired.add_metric([], view.desired)
        alive = GaugeMetricFamily(
            "corral_workers_alive", "Slots with a running worker (starting, ready or draining)."
        )
        alive.add_metric([], sum(1 for s in view.slots if s.state in ALIVE_STATES))
        ready = GaugeMetricFamily("corral_workers_ready", "Slots whose worker serves requests.")
        ready.add_metric([], sum(1 for s in view.slots if s.state is SlotState.READY))
        state = GaugeMetricFamily(
            "corral_worker_state",
            "1 for the state each slot is in, 0 for the others.",
            labels=["slot", "state"],
        )
        started = GaugeMetricFamily(
            "corral_worker_start_time_seconds",
            "Unix time the slot's current worker was started.",
            labels=["slot"],
        )
        budget = GaugeMetricFamily(
            "corral_restart_budget_remaining",
            "Restarts the slot may still use within the current window.",
            labels=["slot"],
        )
        exhausted = GaugeMetricFamily(
            "corral_worker_exhausted", "1 while the slot is given up on.", labels=["slot"]
        )
        for row in view.slots:
            label = str(row.slot)
            for each in SLOT_STATES:
                state.add_metric([label, each.value], 1.0 if row.state is each else 0.0)
            if row.started_at is not None:
                started.add_metric([label], row.started_at)
            budget.add_metric([label], row.budget_remaining)
            exhausted.add_metric([label], 1.0 if row.state is SlotState.EXHAUSTED else 0.0)
        yield from (desired, alive, ready, state, started, budget, exhausted)
        yield from _spare_families(view.spares)

    def _limit_families(self, view: FleetView) -> Iterator[Metric]:
        """The configured budget and the readiness bar, beside the state they bound."""
        limit = GaugeMetricFamily(
            "corral_restart_budget_limit",
            "Restarts each slot may use within the window (--max-restarts).",
        )
        limit.add_metric([], self._limits.max_restarts)
        window = GaugeMetricFamily(
            "corral_restart_budget_window_seconds",
            "Seconds over which a slot's restarts are counted (--restart-window).",
        )
        window.add_metric([], self._limits.restart_window)
        min_ready = GaugeMetricFamily(
            "corral_workers_min_ready",
            "Ready workers /readyz requires now (--min-ready, else every slot not exhausted).",
        )
        min_ready.add_metric([], required_ready(self._limits.min_ready, view.slots))
        yield from (limit, window, min_ready)


def _spare_families(spares: SparesView | None) -> Iterator[Metric]:
    """The warm spares (--spares): wanted, warm, and whether they were given up."""
    desired = GaugeMetricFamily(
        "corral_spares_desired", "Warm spare workers configured (--spares)."
    )
    ready = GaugeMetricFamily(
        "corral_spares_ready", "Warm spares booted and waiting to take a slot at once."
    )
    exhausted = GaugeMetricFamily(
        "corral_spares_exhausted",
        "1 while spares are given up (they failed past their own restart budget) until a reload.",
    )
    desired.add_metric([], spares.desired if spares else 0)
    ready.add_metric([], spares.ready if spares else 0)
    exhausted.add_metric([], 1.0 if spares and spares.exhausted else 0.0)
    yield from (desired, ready, exhausted)


class SinkErrorCollector(Collector):
    def __init__(
        self, errors: Callable[[], dict[str, int]], names: Callable[[], list[str]]
    ) -> None:
        self._errors = errors
        self._names = names

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "corral_sink_errors",
            "Lifecycle events a sink failed to handle (the event still reached the others).",
            labels=["sink"],
        )
        errors = self._errors()
        for name in sorted(set(self._names()) | set(errors)):
            family.add_metric([name], errors.get(name, 0))
        yield family


class SpanDropCollector(Collector):
    """Spans recorded but never delivered to an exporter, by reason (every reason, from 0)."""

    def __init__(self, dropped: Callable[[], dict[str, int]]) -> None:
        self._dropped = dropped

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "corral_spans_dropped",
            "Lifecycle spans lost before an exporter accepted them, by reason "
            "(queue_full, export_failed, shutdown). Export is best-effort; this is its loss.",
            labels=["reason"],
        )
        for reason, count in sorted(self._dropped().items()):
            family.add_metric([reason], count)
        yield family


class ResourceCollector(Collector):
    """CPU and memory per worker slot.

    Process mode reads each worker process. Thread mode reads each worker's
    event-loop thread for CPU; memory is shared by all threads, so it is only
    reported for the whole process (``process_resident_memory_bytes``).
    """

    def __init__(self, fleet: FleetSource, *, threads: bool) -> None:
        self._fleet = fleet
        self._threads = threads
        self._processes: dict[int, psutil.Process] = {}

    def collect(self) -> Iterable[Metric]:
        cpu = CounterMetricFamily(
            "corral_worker_cpu_seconds",
            "CPU time (user + system) of the slot's current worker; resets when it is replaced.",
            labels=["slot"],
        )
        rss = GaugeMetricFamily(
            "corral_worker_resident_memory_bytes",
            "Resident memory of the slot's current worker process (process mode only).",
            labels=["slot"],
        )
        view = self._fleet()
        if self._threads:
            self._collect_threads(view, cpu)
        else:
            self._collect_processes(view, cpu, rss)
        yield cpu
        if not self._threads:
            yield rss

    def _collect_threads(self, view: FleetView, cpu: CounterMetricFamily) -> None:
        times = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
        for row in view.slots:
            if row.thread_id is not None and row.thread_id in times:
                cpu.add_metric([str(row.slot)], times[row.thread_id])

    def _collect_processes(
        self, view: FleetView, cpu: CounterMetricFamily, rss: GaugeMetricFamily
    ) -> None:
        live: dict[int, psutil.Process] = {}
        for row in view.slots:
            if row.pid is None or row.state not in ALIVE_STATES:
                continue
            process = self._processes.get(row.pid) or _process(row.pid)
            if process is None:
                continue
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info()
            except psutil.Error:
                continue  # it died between the table and the read; the next scrape is right
            live[row.pid] = process
            cpu.add_metric([str(row.slot)], times.user + times.system)
            rss.add_metric([str(row.slot)], memory.rss)
        self._processes = live  # only scrape-thread state; forget the dead


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


class RequestCollector(Collector):
    """HTTP request metrics per slot, read from the workers' shared-memory blocks."""

    def __init__(self, snapshot: Callable[[], dict[int, SlotRequestStats]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        requests = CounterMetricFamily(
            "corral_http_requests",
            "HTTP requests finished by the slot's workers, by method and status class.",
            labels=["slot", "method", "status_class"],
        )
        duration = HistogramMetricFamily(
            "corral_http_request_duration_seconds",
            "Time from receiving a request to the app returning, per slot.",
            labels=["slot"],
        )
        in_flight = GaugeMetricFamily(
            "corral_http_requests_in_flight",
            "Requests the slot's live workers are handling now.",
            labels=["slot"],
        )
        for slot, stats in sorted(snapshot.items()):
            label = str(slot)
            for (method, status_class), count in sorted(stats.requests.items()):
                requests.add_metric([label, method, status_class], count)
            duration.add_metric(
                [label],
                buckets=[(_bound(b), c) for b, c in zip(BUCKETS, stats.bucket_counts, strict=True)],
                sum_value=stats.duration_sum,
            )
            in_flight.add_metric([label], stats.in_flight)
        yield from (requests, duration, in_flight)
        yield from _websocket_families(snapshot)


def _websocket_families(stats: dict[int, SlotRequestStats]) -> Iterator[Metric]:
    """Per-slot WebSocket counts, from the same shared-memory blocks as the requests."""
    opened = CounterMetricFamily(
        "corral_websockets_opened",
        "WebSockets the slot's workers accepted.",
        labels=["slot"],
    )
    going_away = CounterMetricFamily(
        "corral_websockets_going_away",
        "WebSockets closed with 1001 (going away) because their worker drained.",
        labels=["slot"],
    )
    open_now = GaugeMetricFamily(
        "corral_websockets_open", "WebSockets open on the slot's live workers.", labels=["slot"]
    )
    for slot, slot_stats in sorted(stats.items()):
        opened.add_metric([str(slot)], slot_stats.websockets_opened)
        going_away.add_metric([str(slot)], slot_stats.websockets_going_away)
        open_now.add_metric([str(slot)], slot_stats.websockets_open)
    yield from (opened, going_away, open_now)


def _bound(upper: float) -> str:
    return "+Inf" if upper == float("inf") else repr(upper)
