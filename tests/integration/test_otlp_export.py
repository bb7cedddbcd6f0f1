"""Lifecycle spans reach a real OTLP/HTTP receiver, configured only by ``OTEL_*`` variables.

The receiver (``tests/otlp_receiver.py``) is a plain HTTP server on loopback
that decodes each ``ExportTraceServiceRequest`` the way a collector would.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import CorralProcess, eventually
from tests.otlp_receiver import GATE_LIMIT, OtlpReceiver

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


# --- A collector that cannot keep up, or is not there: best-effort, never silent ---------

# A tiny queue, so a handful of lifecycle events overflows it while the held
# collector keeps the export thread waiting. The export's own timeout is
# longer than the receiver ever holds a request, so a held export is late,
# never failed (a timed-out export the receiver still recorded would be
# counted both ways).
SMALL_QUEUE = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "4",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
    "OTEL_BSP_SCHEDULE_DELAY": "50",
    "OTEL_EXPORTER_OTLP_TIMEOUT": str(int(GATE_LIMIT) + 60),
    "OTEL_SERVICE_NAME": "corral-under-test",
}


def _dropped(server: CorralProcess) -> dict[str, float]:
    metrics = server.scrape()
    return {
        labels["reason"]: value for _, labels, value in metrics.find("corral_spans_dropped_total")
    }


def _expected_spans(server: CorralProcess) -> int:
    """One span per event; a drain's start and end are one span."""
    return len(server.events()) - len(server.events("drain_start"))


def _exit_report(server: CorralProcess) -> dict[str, int]:
    """The counts on the ``spans dropped`` line corral logs at exit, when /metrics is gone."""
    lines = [r for r in server.records if r.get("event") == "spans dropped"]
    assert len(lines) == 1, server.lines[-20:]
    return {key: value for key, value in lines[0].items() if isinstance(value, int)}


def test_a_stalled_collector_overflows_the_queue_and_every_lost_span_is_counted(
    corral: Callable[..., CorralProcess],
) -> None:
    gate = threading.Event()
    receiver = OtlpReceiver(gate).start()
    try:
        server = corral(
            "--workers", "2", "--mode", "process", env={**receiver.env(), **SMALL_QUEUE}
        )
        server.wait_ready(2)
        server.crash_generations("process", slot=0, generations=3)
        server.wait_event("ready", slot=0, generation=4)
        # Room for at most one batch (2) in the held export and 4 in the queue:
        # every span past those 6 was refused, whatever the timing.
        recorded = _expected_spans(server)
        live = _dropped(server)
        assert live["queue_full"] >= recorded - 6 > 0, (live, recorded)
        assert live["export_failed"] == 0  # the collector is stalled, not failing
        gate.set()
        server.send(signal.SIGTERM)
        assert server.wait_exit(60) == 0
        report = _exit_report(server)
        expected = _expected_spans(server)
        received = receiver.total()
    finally:
        receiver.close()
    # Every span is either in the collector or in the count: nothing is silent.
    assert report["exported"] == received
    assert received + report["dropped"] == expected, (received, report, expected)
    assert report["dropped_queue_full"] >= live["queue_full"] > 0
    assert report["dropped_export_failed"] == 0


def test_an_unreachable_collector_loses_every_span_and_counts_them_all(
    corral: Callable[..., CorralProcess],
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}:{port}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    server = corral("--workers", "1", "--mode", "process", env=env)
    server.wait_ready(1)
    eventually(lambda: _dropped(server)["export_failed"] > 0, timeout=20, what="a failed export")
    began = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait_exit(60) == 0
    stopped_in = time.monotonic() - began
    report = _exit_report(server)
    assert report["exported"] == 0
    assert report["dropped"] == _expected_spans(server), (report, server.events())
    assert report["dropped_export_failed"] > 0
    # The export's own timeout bounds exit: an absent collector cannot hold corral up.
    assert stopped_in < 20, stopped_in
