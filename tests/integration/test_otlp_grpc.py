"""OTLP over gRPC: spans reach a real gRPC collector service on a GIL build, and a
free-threaded build refuses the protocol in one line that names http/protobuf.

The receiver is the OTLP ``TraceService`` served by grpcio's own server, the
service a collector's gRPC receiver implements. grpcio has no free-threaded
wheel, so each test runs on the lane where its side of the behaviour exists:
the export where grpcio installs (``make venv`` installs ``corral[otlp-grpc]``),
the refusal on the free-threaded lane.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from corral.errors import ExitCode
from corral.runtime import is_free_threaded_build
from tests.conftest import CorralProcess
from tests.integration.test_bad_input import assert_one_line_error, run_app

pytestmark = pytest.mark.integration

FREE_THREADED = is_free_threaded_build()


class GrpcReceiver:
    """Every ``ExportTraceServiceRequest`` corral sends, and the metadata it came with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Any] = []
        self.user_agents: list[str] = []
        self.port = 0

    def export(self, request: Any, context: Any) -> None:
        agent = dict(context.invocation_metadata()).get("user-agent", "")
        with self.lock:
            self.requests.append(request)
            self.user_agents.append(str(agent))

    def spans(self) -> list[tuple[dict[str, str], Any]]:
        """(resource attributes, span) for every span received."""
        with self.lock:
            requests = list(self.requests)
        found: list[tuple[dict[str, str], Any]] = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope.spans)
        return found


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    if FREE_THREADED:
        pytest.skip("grpcio has no free-threaded wheel; this lane tests the refusal instead")
    # Imported here: on the free-threaded lane grpcio is not installed.
    import grpc  # noqa: PLC0415
    from opentelemetry.proto.collector.trace.v1 import (  # noqa: PLC0415
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    receiver = GrpcReceiver()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            receiver.export(request, context)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Service(), server
    )
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver
    server.stop(grace=None)


def test_spans_are_exported_over_otlp_grpc(
    corral: Callable[..., CorralProcess], grpc_receiver: GrpcReceiver
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_receiver.port}",
        # The signal's own variable wins over the general one, as the specification says.
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "corral-over-grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    server = corral("--workers", "1", "--mode", "process", env=env)
    server.wait_ready(1)
    server.crash_generations("process", slot=0, generations=1)
    server.wait_event("ready", slot=0, generation=2)
    server.send(signal.SIGTERM)
    assert server.wait_exit() == 0  # shutdown flushes the batch processor

    received = grpc_receiver.spans()
    assert received, "no span reached the gRPC receiver"
    # The gRPC exporter, not the http/protobuf one the general variable names.
    assert all("grpc-python/" in agent for agent in grpc_receiver.user_agents)
    assert {resource["service.name"] for resource, _ in received} == {"corral-over-grpc"}
    spans = [span for _, span in received]
    logged = server.events()
    assert len(spans) == len(logged) - len(server.events("drain_start")), "one span per event"
    names = {span.name for span in spans}
    for name in ("corral.worker.spawn", "corral.worker.crash", "corral.worker.respawn"):
        assert name in names
    crash_event = server.events("crash")[0]
    crash = next(span for span in spans if span.span_id.hex() == crash_event["span_id"])
    attributes = {a.key: a.value for a in crash.attributes}
    assert attributes["process.pid"].int_value == crash_event["pid"]


def test_grpc_is_refused_on_a_free_threaded_build_with_the_alternative() -> None:
    if not FREE_THREADED:
        pytest.skip("a GIL build exports over gRPC; the refusal is the free-threaded lane's")
    result = run_app(
        "examples.hello:app",
        env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    )
    assert_one_line_error(
        result,
        ExitCode.CONFIG,
        "free-threaded",
        "grpcio has no free-threaded wheel",
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
    )
