"""Section 5, event pipeline: lifecycle events per second through ``LifecycleCollector``.

In-process, no supervisor: the bench builds collectors the way
``corral.observability`` wires them and calls ``emit`` with a realistic
stream (per incarnation: ``spawn``, ``ready``, ``crash`` by SIGKILL,
``respawn``; slots 0-7 in turn, so the trace sink links incarnations and
prunes its maps as it does in production). Configurations:

* ``collector only``: no sinks, no tracer (the lock, the seq stamp, the ring);
* one sink each: ``StructlogSink`` with corral's JSON logging configured
  (``corral.logs.configure_logging``) writing to ``/dev/null``;
  ``PrometheusSink`` on a fresh ``CorralMetrics``; ``TraceSink`` on a real SDK
  ``TracerProvider`` with corral's ``RecentSpans`` ring and a
  ``BatchSpanProcessor`` in front of an exporter that counts and drops spans;
* ``all three``: the three sinks plus the live feed (``EventFeed``, no
  subscriber), exactly corral's wiring.

Each emit is timed alone (``perf_counter_ns``); events/s is events over the
summed emit times. Configurations alternate over rounds; the report takes the
median over rounds of each round's median and p99.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.stats import LoadWindow, Spread, percentile
from corral.config import LogFormat
from corral.lifecycle.collector import LifecycleCollector, LifecycleSink
from corral.lifecycle.events import CrashReason, EventKind, LifecycleEvent
from corral.lifecycle.feed import EventFeed
from corral.lifecycle.log_sink import StructlogSink
from corral.lifecycle.metrics_sink import PrometheusSink
from corral.lifecycle.trace_sink import TraceSink
from corral.logs import configure_logging
from corral.metrics import CorralMetrics
from corral.runtime import ModeDecision, WorkerMode
from corral.tracing import RecentSpans

FULL_EVENTS = 20_000
QUICK_EVENTS = 4_000
FULL_ROUNDS = 3
QUICK_ROUNDS = 1
SLOTS = 8


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them: the export cost without a network."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass(slots=True)
class Pipeline:
    collector: LifecycleCollector
    close: Callable[[], None] = lambda: None
    exporter: CountingExporter | None = None


def _metrics() -> CorralMetrics:
    decision = ModeDecision(WorkerMode.PROCESS, "bench", False, True)
    return CorralMetrics(decision)


def _tracing() -> tuple[TraceSink, TracerProvider, CountingExporter]:
    provider = TracerProvider()
    provider.add_span_processor(RecentSpans())
    exporter = CountingExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return TraceSink(provider), provider, exporter


def _closer(sink: TraceSink, provider: TracerProvider) -> Callable[[], None]:
    def close() -> None:
        sink.close()
        provider.force_flush()
        provider.shutdown()

    return close


def build(name: str) -> Pipeline:
    if name == "collector only":
        return Pipeline(LifecycleCollector())
    if name == "structlog JSON sink":
        return Pipeline(LifecycleCollector([StructlogSink()]))
    if name == "Prometheus sink":
        return Pipeline(LifecycleCollector([PrometheusSink(_metrics())]))
    sink, provider, exporter = _tracing()
    if name == "trace sink":
        return Pipeline(LifecycleCollector(tracer=sink), _closer(sink, provider), exporter)
    sinks: list[LifecycleSink] = [StructlogSink(), EventFeed(), PrometheusSink(_metrics())]
    collector = LifecycleCollector(sinks, tracer=sink)
    return Pipeline(collector, _closer(sink, provider), exporter)


CONFIGS = (
    "collector only",
    "structlog JSON sink",
    "Prometheus sink",
    "trace sink",
    "all three (+ live feed)",
)


def _incarnation(slot: int, generation: int, pid: int) -> list[LifecycleEvent]:
    spawn = LifecycleEvent(
        kind=EventKind.SPAWN,
        mode=WorkerMode.PROCESS,
        wall_time=time.time(),
        monotonic=time.monotonic(),
        slot=slot,
        generation=generation,
        pid=pid,
    )
    return [
        spawn,
        dataclasses.replace(spawn, kind=EventKind.READY, duration=0.02),
        dataclasses.replace(
            spawn, kind=EventKind.CRASH, signal="SIGKILL", reason=CrashReason.SIGNAL, uptime=1.5
        ),
        dataclasses.replace(
            spawn,
            kind=EventKind.RESPAWN,
            restart_number=generation,
            backoff=0.0,
            budget_remaining=5,
        ),
    ]


def stream(count: int) -> list[LifecycleEvent]:
    """``count`` events: spawn, ready, crash, respawn per incarnation, slots in turn."""
    made: list[LifecycleEvent] = []
    generation = 0
    while len(made) < count:
        generation += 1
        for slot in range(SLOTS):
            made += _incarnation(slot, generation, 100_000 + len(made))
    return made[:count]


@dataclass(slots=True)
class ConfigResult:
    name: str
    medians_us: list[float] = field(default_factory=list)
    p99s_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    exported: int = 0
    spans_expected: int = 0


@dataclass(slots=True)
class Result:
    configs: list[ConfigResult]
    events: int
    rounds: int
    window: LoadWindow


def one_round(name: str, count: int, into: ConfigResult) -> None:
    pipeline = build(name)
    events = stream(count)
    timings = []
    clock = time.perf_counter_ns
    emit = pipeline.collector.emit
    for event in events:
        t0 = clock()
        emit(event)
        timings.append(clock() - t0)
    pipeline.close()
    micro = [t / 1000.0 for t in timings]
    into.medians_us.append(statistics.median(micro))
    into.p99s_us.append(percentile(micro, 99))
    into.rates.append(count / (sum(timings) / 1e9))
    if pipeline.exporter is not None:
        into.exported += pipeline.exporter.exported
        into.spans_expected += count


def run(quick: bool) -> Result:
    window = LoadWindow()
    count = QUICK_EVENTS if quick else FULL_EVENTS
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    saved = sys.stderr
    with open(os.devnull, "w") as null:
        sys.stderr = null  # configure_logging binds its handler to sys.stderr now
        try:
            configure_logging(LogFormat.JSON, "info")
        finally:
            sys.stderr = saved
        results = {name: ConfigResult(name) for name in CONFIGS}
        order = list(CONFIGS)
        for number in range(rounds):
            for name in order:
                one_round(name, count, results[name])
            order = order[1:] + order[:1]
            print(f"  events round {number + 1}/{rounds}", file=sys.stderr, flush=True)
    window.close()
    return Result(list(results.values()), count, rounds, window)


def render(result: Result) -> str:
    base = Spread.of(result.configs[0].medians_us).median
    lines = [
        "## 5. Event pipeline",
        "",
        f"{result.events:,} lifecycle events per configuration and round, {result.rounds}"
        " rounds, configurations alternating; in-process, one thread, each"
        " `LifecycleCollector.emit` timed alone.",
        "",
        "| configuration | events/s median (min-max) | µs per event, median | p99 µs"
        " | added µs vs collector only | spans exported / spans |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for config in result.configs:
        median = Spread.of(config.medians_us).median
        p99 = Spread.of(config.p99s_us).median
        spans = f"{config.exported:,} / {config.spans_expected:,}" if config.spans_expected else ""
        lines.append(
            f"| {config.name} | {Spread.of(config.rates).fmt()} | {median:.1f} | {p99:.1f}"
            f" | {median - base:.1f} | {spans} |"
        )
    lines += [
        "",
        "- The log sink renders JSON with corral's own structlog configuration into"
        " `/dev/null` (the write is a real syscall). The trace sink's provider has"
        " corral's `RecentSpans` ring and a `BatchSpanProcessor` (SDK defaults) in front"
        " of an exporter that counts and drops spans; the last column shows whether the"
        " batch processor's queue dropped any (its default queue holds 2,048 spans).",
        "- Run by `python -m bench.run`; the code is `bench/events.py`.",
        "",
        result.window.line(),
        "",
    ]
    return "\n".join(lines)
