"""Lifecycle spans reach a real OTLP/HTTP receiver, configured only by ``OTEL_*`` variables.

The receiver (``tests/otlp_receiver.py``) is a plain HTTP server on loopback
that decodes each ``ExportTraceServiceRequest`` the way a collector would.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import CorralProcess
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.close()


def test_spans_are_exported_over_otlp_http(
    corral: Callable[..., CorralProcess], receiver: OtlpReceiver
) -> None:
    host, port = receiver.server_address[:2]
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host!s}:{port}",
        "OTEL_SERVICE_NAME": "corral-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    server = corral("--workers", "1", "--mode", "process", env=env)
    server.wait_ready(1)
    server.crash_generations("process", slot=0, generations=1)
    server.wait_event("ready", slot=0, generation=2)
    server.send(signal.SIGTERM)
    assert server.wait_exit() == 0  # shutdown flushes the batch processor

    with receiver.lock:
        requests = list(receiver.requests)
        assert set(receiver.paths) == {"/v1/traces"}
        assert set(receiver.content_types) == {"application/x-protobuf"}
    spans = []
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "corral-under-test"
            assert resource["service.instance.id"]
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    names = sorted(span.name for span in spans)
    logged = server.events()
    assert len(spans) == len(logged) - len(server.events("drain_start")), "one span per event"
    for name in ("corral.worker.spawn", "corral.worker.crash", "corral.worker.respawn"):
        assert name in names
    by_id = {span.span_id.hex(): span for span in spans}
    crash_event = server.events("crash")[0]
    crash = by_id[crash_event["span_id"]]
    spawn_event = server.events("spawn", generation=1)[0]
    assert [link.span_id.hex() for link in crash.links] == [spawn_event["span_id"]]
    # The rest of the slot's chain: the respawn links to the crash, and the
    # next incarnation's spawn to the respawn, each by trace and span id.
    respawn_event = server.events("respawn", slot=0)[0]
    respawn = by_id[respawn_event["span_id"]]
    assert [link.span_id.hex() for link in respawn.links] == [crash_event["span_id"]]
    assert [link.trace_id.hex() for link in respawn.links] == [crash_event["trace_id"]]
    next_spawn_event = server.events("spawn", slot=0, generation=2)[0]
    next_spawn = by_id[next_spawn_event["span_id"]]
    assert [link.span_id.hex() for link in next_spawn.links] == [respawn_event["span_id"]]
    assert [link.trace_id.hex() for link in next_spawn.links] == [respawn_event["trace_id"]]
    assert next_spawn.name == "corral.worker.spawn"
    attributes = {a.key: a.value for a in crash.attributes}
    assert attributes["process.pid"].int_value == crash_event["pid"]
    assert attributes["corral.worker.slot"].int_value == 0
