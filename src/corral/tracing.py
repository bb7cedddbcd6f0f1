"""Setting up OpenTelemetry from the standard ``OTEL_*`` variables.

corral owns its ``TracerProvider`` (it never installs a global one, so an
app that configures OTel for its own requests is left alone). Exporting
follows the environment, with one deliberate difference from the SDK
defaults: when *nothing* is configured, nothing leaves the machine. Spans
are still recorded for ``/debug/traces`` and for the ids in log lines.

* ``OTEL_SDK_DISABLED=true``: no spans at all.
* ``OTEL_TRACES_EXPORTER``: a comma list of ``otlp``, ``console``, ``none``.
  Unset, it means ``otlp`` if an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set,
  else ``none``.
* OTLP is http/protobuf (the ``corral[otlp]`` extra) unless
  ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``
  says ``grpc`` (the ``corral[otlp-grpc]`` extra). gRPC is refused on a
  free-threaded build: grpcio has no free-threaded wheel, and an extension
  without free-threading support would turn the GIL back on.
* ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the service
  (default ``corral``); ``service.instance.id`` is unique per supervisor run.
  The exporter and batch processor read their own variables
  (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...).
* Export is best-effort, never silent: a span that does not reach the
  exporter, or whose export fails, is counted (``span_export``,
  ``corral_spans_dropped_total``).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from corral import __version__
from corral.errors import ConfigError
from corral.runtime import is_free_threaded_build
from corral.span_export import CountedBatchProcessor, SpanDrops

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class RecentSpans(SpanProcessor):
    """Keeps the last ``limit`` finished spans, JSON-ready, for ``/debug/traces``."""

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._spans: deque[dict[str, Any]] = deque(maxlen=limit)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        record = span_record(span)
        with self._lock:
            self._spans.append(record)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": trace.format_trace_id(context.trace_id) if context else None,
        "span_id": trace.format_span_id(context.span_id) if context else None,
        "parent_span_id": trace.format_span_id(parent.span_id) if parent else None,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": trace.format_trace_id(link.context.trace_id),
                "span_id": trace.format_span_id(link.context.span_id),
            }
            for link in span.links
        ],
    }


def service_resource(environ: Mapping[str, str]) -> Resource:
    """``service.name`` from the environment (default ``corral``) plus a per-run instance id."""
    attributes: dict[str, str] = {
        "service.instance.id": str(uuid.uuid4()),
        "service.version": __version__,
    }
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "corral"
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself.
    return Resource.create(attributes)


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER")
    if raw is None or not raw.strip():
        return ["otlp"] if any(environ.get(name) for name in _ENDPOINT_VARS) else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [name for name in names if name != "none"]


def make_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported; use otlp, console or none"
        )
    variable, protocol = next(
        ((v, environ[v].strip().lower()) for v in _PROTOCOL_VARS if environ.get(v, "").strip()),
        (_PROTOCOL_VARS[1], "http/protobuf"),
    )
    if protocol == "http/protobuf":
        return _http_exporter()
    if protocol == "grpc":
        return _grpc_exporter(variable)
    raise ConfigError(f"{variable}={protocol!r} is not supported; set it to http/protobuf or grpc")


def _http_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # optional extra: imported only when OTLP is configured
        )
    except ImportError:
        raise ConfigError(
            "OTLP export is configured but its exporter is missing; pip install 'corral[otlp]'"
        ) from None
    return OTLPSpanExporter()


def _grpc_exporter(variable: str) -> SpanExporter:
    if is_free_threaded_build():
        # Refused even if grpcio was built by hand: importing it would
        # re-enable the GIL and take thread workers' parallelism with it.
        raise ConfigError(
            f"{variable}=grpc is not available on a free-threaded Python (grpcio has no "
            "free-threaded wheel); set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
        )
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # optional extra, GIL builds only
        )
    except ImportError:
        raise ConfigError(
            f"{variable}=grpc but the gRPC exporter is missing; pip install "
            "'corral[otlp-grpc]' (or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"
        ) from None
    return OTLPSpanExporter()


def build_tracer_provider(
    environ: Mapping[str, str], recent: RecentSpans, drops: SpanDrops | None = None
) -> TracerProvider | None:
    """The provider corral records lifecycle spans with, or ``None`` if OTel is disabled.

    Each exporter sits behind the SDK's batch processor (``span_export``),
    which counts every span it could not deliver into ``drops``.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = [make_exporter(name, environ) for name in exporter_names(environ)]
    provider = TracerProvider(resource=service_resource(environ))
    provider.add_span_processor(recent)
    drops = drops if drops is not None else SpanDrops()
    for exporter in exporters:
        provider.add_span_processor(CountedBatchProcessor(exporter, drops, environ))
    return provider
