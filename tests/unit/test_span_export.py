"""Span export: the SDK's batch processor behind a count, so no lost span goes uncounted.

These drive ``CountedBatchProcessor`` with a real ``TracerProvider`` and an
exporter the test holds shut, so the queue fills exactly when the test says.
The integration tests (``test_otlp_export.py``) do the same through a real
OTLP/HTTP exporter against a slow and an unreachable collector.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client.parser import text_string_to_metric_families

from corral.errors import ConfigError
from corral.metrics import CorralMetrics
from corral.runtime import ModeDecision, WorkerMode
from corral.span_export import BatchSettings, CountedBatchProcessor, SpanDrops
from corral.tracing import RecentSpans, build_tracer_provider

# A batch of 2 wakes the export thread; the schedule alone never would in a test.
SMALL = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "4",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
    "OTEL_BSP_SCHEDULE_DELAY": "60000",
}


class GatedExporter(SpanExporter):
    """Blocks every export until ``gate`` is set; answers ``result`` (or raises)."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.result = result
        self.raises = False
        self.received: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.gate.wait(10)
        if self.raises:
            raise ConnectionError("collector went away")
        self.received.extend(span.name for span in spans)
        return self.result

    def shutdown(self) -> None:
        self.gate.set()


def _provider(exporter: SpanExporter, drops: SpanDrops) -> tuple[TracerProvider, SpanExporter]:
    provider = TracerProvider()
    provider.add_span_processor(CountedBatchProcessor(exporter, drops, SMALL))
    return provider, exporter


def _spans(provider: TracerProvider, count: int, prefix: str = "s") -> None:
    tracer = provider.get_tracer("test")
    for index in range(count):
        tracer.start_span(f"{prefix}{index}").end()


def test_a_full_queue_refuses_and_counts_instead_of_dropping_silently() -> None:
    drops = SpanDrops()
    exporter = GatedExporter()
    provider, _ = _provider(exporter, drops)
    _spans(provider, 2, "first")  # one batch: the export thread takes it and blocks
    assert exporter.entered.wait(10)
    _spans(provider, 4, "queued")  # fills the queue of 4
    _spans(provider, 3, "over")  # no room: refused, counted
    assert drops.snapshot() == {"queue_full": 3, "export_failed": 0, "shutdown": 0}
    exporter.gate.set()
    provider.shutdown()
    assert sorted(exporter.received) == sorted(
        [f"first{i}" for i in range(2)] + [f"queued{i}" for i in range(4)]
    )
    assert drops.exported == 6
    assert drops.total == 3  # 9 ended = 6 delivered + 3 counted


@pytest.mark.parametrize("raises", [False, True], ids=["failure", "raises"])
def test_a_failed_export_counts_its_whole_batch(raises: bool) -> None:
    drops = SpanDrops()
    exporter = GatedExporter(SpanExportResult.FAILURE)
    exporter.raises = raises
    exporter.gate.set()
    provider, _ = _provider(exporter, drops)
    _spans(provider, 3)
    provider.shutdown()
    assert drops.snapshot() == {"queue_full": 0, "export_failed": 3, "shutdown": 0}
    assert drops.exported == 0


def test_spans_ended_after_shutdown_are_counted() -> None:
    drops = SpanDrops()
    exporter = GatedExporter()
    exporter.gate.set()
    provider, _ = _provider(exporter, drops)
    _spans(provider, 1)
    provider.shutdown()
    _spans(provider, 2, "late")  # a drain span closed after the provider stopped
    assert drops.snapshot()["shutdown"] == 2
    assert drops.exported == 1


def test_unsampled_spans_are_not_drops() -> None:
    drops = SpanDrops()
    exporter = GatedExporter()
    exporter.gate.set()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(CountedBatchProcessor(exporter, drops, SMALL))
    _spans(provider, 5)
    provider.shutdown()
    assert drops.total == 0
    assert exporter.received == []


def test_the_dropped_counter_is_on_metrics_for_every_reason_from_zero() -> None:
    drops = SpanDrops()
    decision = ModeDecision(WorkerMode.PROCESS, "test", free_threaded_build=False, gil_enabled=True)
    metrics = CorralMetrics(decision)
    metrics.add_span_drops(drops.snapshot)
    assert _dropped(metrics) == {"queue_full": 0.0, "export_failed": 0.0, "shutdown": 0.0}
    exporter = GatedExporter(SpanExportResult.FAILURE)
    exporter.gate.set()
    provider, _ = _provider(exporter, drops)
    _spans(provider, 2)
    provider.shutdown()
    assert _dropped(metrics) == {"queue_full": 0.0, "export_failed": 2.0, "shutdown": 0.0}


def test_the_provider_counts_into_the_drops_it_is_given() -> None:
    drops = SpanDrops()
    environ = {**SMALL, "OTEL_TRACES_EXPORTER": "console"}
    provider = build_tracer_provider(environ, RecentSpans(), drops)
    assert provider is not None
    provider.shutdown()
    _spans(provider, 1)
    assert drops.snapshot()["shutdown"] == 1


def _dropped(metrics: CorralMetrics) -> dict[str, float]:
    text, _ = metrics.expose(None)
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "corral_spans_dropped_total"
    }


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "lower the batch size"),
    ],
)
def test_bad_batch_settings_are_a_config_error(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        BatchSettings.from_environ(environ)


def test_batch_settings_default_to_the_sdk_defaults() -> None:
    assert BatchSettings.from_environ({}) == BatchSettings(2048, 5000, 512)
