"""Span export that is best-effort but never silent: every span lost on the way is counted.

corral exports through the SDK's own ``BatchSpanProcessor`` (so the
``OTEL_BSP_*`` variables behave as documented), but that processor drops
spans in three places without a figure anyone can alert on: its queue
(a ``deque`` with a ``maxlen``: the oldest span falls out when full), a
failed export (the whole batch is logged and discarded), and shutdown (what
is still queued when its timeout runs out, and anything ended afterwards).

Two thin wrappers close those gaps without reaching into the SDK:

* ``CountedBatchProcessor`` admits a span to the batch processor only while
  fewer than ``max_queue_size`` spans are pending (admitted, not yet handed
  to the exporter). The SDK pops a batch *before* it calls the exporter, so
  "pending" is never below the SDK's real queue length, and its queue can
  therefore never overflow: a span that does not fit is refused here and
  counted as ``queue_full``.
* ``_CountingExporter`` marks spans as handed over when ``export`` is called
  and counts a failed or raising export as ``export_failed``.

What was pending or in flight when shutdown ended is counted as
``shutdown``, and so is a span ended after it. ``corral_spans_dropped_total``
(``metrics.py``) reads ``SpanDrops`` at scrape time; at exit, when nothing
can scrape any more, ``Observability.close`` logs the totals instead.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from corral.errors import ConfigError


class DropReason(enum.Enum):
    """Where a span was lost: a bounded label set."""

    QUEUE_FULL = "queue_full"
    EXPORT_FAILED = "export_failed"
    SHUTDOWN = "shutdown"


class SpanDrops:
    """Thread-safe tally of spans recorded but never delivered, by reason, plus those exported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped = dict.fromkeys(DropReason, 0)
        self._exported = 0

    def add(self, reason: DropReason, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    def add_exported(self, count: int) -> None:
        with self._lock:
            self._exported += count

    def snapshot(self) -> dict[str, int]:
        """Dropped spans by reason value, every reason present (0 if none)."""
        with self._lock:
            return {reason.value: count for reason, count in self._dropped.items()}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._dropped.values())

    @property
    def exported(self) -> int:
        """Spans an exporter accepted (all exporters together)."""
        with self._lock:
            return self._exported


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The ``OTEL_BSP_*`` settings, read from corral's environment and passed to the SDK.

    They are read here (not left to the SDK, which reads ``os.environ``) so the
    admission limit is exactly the SDK's queue size, and a bad value is a
    one-line ``ConfigError`` rather than a warning and a silent default.
    """

    max_queue_size: int = 2048  # the SDK's defaults (OpenTelemetry specification)
    schedule_delay_millis: int = 5000
    max_export_batch_size: int = 512

    @staticmethod
    def from_environ(environ: Mapping[str, str]) -> BatchSettings:
        default = BatchSettings()
        settings = BatchSettings(
            max_queue_size=_positive(environ, "OTEL_BSP_MAX_QUEUE_SIZE", default.max_queue_size),
            schedule_delay_millis=_positive(
                environ, "OTEL_BSP_SCHEDULE_DELAY", default.schedule_delay_millis
            ),
            max_export_batch_size=_positive(
                environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default.max_export_batch_size
            ),
        )
        if settings.max_export_batch_size > settings.max_queue_size:
            raise ConfigError(
                f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({settings.max_export_batch_size}) is larger "
                f"than OTEL_BSP_MAX_QUEUE_SIZE ({settings.max_queue_size}); lower the batch size"
            )
        return settings


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive integer; unset it for {default}")
    return value


class CountedBatchProcessor(SpanProcessor):
    """The SDK's ``BatchSpanProcessor`` behind an admission count, so no drop goes uncounted."""

    def __init__(
        self, exporter: SpanExporter, drops: SpanDrops, environ: Mapping[str, str]
    ) -> None:
        settings = BatchSettings.from_environ(environ)
        self._drops = drops
        self._limit = settings.max_queue_size
        self._lock = threading.Lock()
        self._pending = 0  # admitted, not yet handed to the exporter
        self._in_flight = 0  # handed to the exporter, export not returned yet
        self._closed = False
        self._abandoned = False  # shutdown counted what was left; late results are not
        counting = _CountingExporter(exporter, self)
        self._inner = BatchSpanProcessor(
            counting,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_millis,
            max_export_batch_size=settings.max_export_batch_size,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return  # the batch processor ignores these too: not a drop
        with self._lock:
            if self._closed:
                self._drops.add(DropReason.SHUTDOWN)
                return
            if self._pending >= self._limit:
                self._drops.add(DropReason.QUEUE_FULL)
                return
            self._pending += 1
        self._inner.on_end(span)

    def shutdown(self) -> None:
        """Flush what the SDK can within its timeout; count whatever did not make it."""
        with self._lock:
            self._closed = True
        try:
            self._inner.shutdown()  # type: ignore[no-untyped-call]
        finally:
            with self._lock:
                lost = self._pending + self._in_flight
                self._pending = self._in_flight = 0
                self._abandoned = True
            if lost:
                self._drops.add(DropReason.SHUTDOWN, lost)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    # --- Called by the exporter wrapper ------------------------------------------

    def _handed_over(self, count: int) -> None:
        with self._lock:
            self._pending -= count
            self._in_flight += count

    def _returned(self, count: int, delivered: bool) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._in_flight -= count
        if delivered:
            self._drops.add_exported(count)
        else:
            self._drops.add(DropReason.EXPORT_FAILED, count)


class _CountingExporter(SpanExporter):
    """Delegates to the real exporter and reports every batch's fate to its processor."""

    def __init__(self, inner: SpanExporter, processor: CountedBatchProcessor) -> None:
        self._inner = inner
        self._processor = processor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        self._processor._handed_over(count)
        delivered = False
        try:
            result = self._inner.export(spans)
            delivered = result is SpanExportResult.SUCCESS
            return result
        finally:  # an exporter that raises loses its batch too (the SDK logs the exception)
            self._processor._returned(count, delivered)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
