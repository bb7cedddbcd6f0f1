"""A loopback OTLP/HTTP receiver: what a collector would see of corral's spans.

It decodes each ``ExportTraceServiceRequest`` with the OTLP protobuf
definitions, keeps every request (with its path and content type), and
counts spans by lifecycle event kind. The supervisor's ``/debug/traces`` ring
holds only the last 1000 spans and disappears when the process exits; a
receiver keeps every span, including the ones flushed at shutdown, so exit
scenarios can still count them.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Both ends of a drain are one span (opened at drain_start, closed at drain_end).
_DRAIN_SPAN = "corral.worker.drain"
# The longest a gated export is held: a failed test must not hang its threads forever.
GATE_LIMIT = 120.0


class OtlpReceiver(ThreadingHTTPServer):
    """Start with ``start()``; ``env()`` is what to give corral; ``close()`` at the end.

    With a ``gate``, every export is held unanswered (and unrecorded) until
    the test sets it: a collector that has stopped keeping up, which backs
    spans up in corral's batch processor for exactly as long as the test wants.
    """

    daemon_threads = True

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.gate = gate
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.names: Counter[str] = Counter()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def env(self) -> dict[str, str]:
        host, port = self.server_address[:2]
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host!s}:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "corral-reliability",
        }

    def count(self, kind: str) -> int:
        """Spans recorded for lifecycle events of ``kind``."""
        with self.lock:
            if kind in ("drain_start", "drain_end"):
                return self.names[_DRAIN_SPAN]
            return self.kinds[kind]

    def total(self) -> int:
        with self.lock:
            return sum(self.names.values())

    def record(self, request: ExportTraceServiceRequest, path: str, content_type: str) -> None:
        with self.lock:
            self.requests.append(request)
            self.paths.append(path)
            self.content_types.append(content_type)
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.names[span.name] += 1
                        for attribute in span.attributes:
                            if attribute.key == "corral.event.kind":
                                self.kinds[attribute.value.string_value] += 1


class _Handler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        if self.server.gate is not None:
            self.server.gate.wait(GATE_LIMIT)
        self.server.record(request, self.path, self.headers["content-type"])
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass
