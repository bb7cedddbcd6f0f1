"""Signal fidelity: every lifecycle event is counted once, the same, in all four places.

One run drives 50 crashes and respawns (some of them as a storm, several
workers dying at once), then a rolling restart in which one old worker
overruns its drain and is force-stopped. Afterwards ``/events``, the metric
counters, the spans from ``/debug/traces`` and the JSON log lines must agree
event for event: same counts per kind, same span ids.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import CorralProcess, eventually

pytestmark = pytest.mark.integration

SEQUENTIAL_CRASHES = 40
STORM_ROUNDS = 5  # two workers at once each round: 10 more crashes
WORKERS = 2

# Metric that counts each event kind (beyond corral_lifecycle_events_total).
COUNTERS = {
    "spawn": "corral_worker_spawns_total",
    "crash": "corral_worker_crashes_total",
    "respawn": "corral_worker_restarts_total",
    "force_stop": "corral_worker_force_stops_total",
    "ready": "corral_worker_ready_duration_seconds_count",
    "drain_end": "corral_drain_duration_seconds_count",
}
SPANS = {
    "spawn": "corral.worker.spawn",
    "ready": "corral.worker.ready",
    "crash": "corral.worker.crash",
    "respawn": "corral.worker.respawn",
    "drain_end": "corral.worker.drain",
    "force_stop": "corral.worker.force_stop",
    "reload": "corral.supervisor.reload",
    "supervisor_start": "corral.supervisor.start",
}


def _storm(server: CorralProcess, mode: str) -> None:
    """Kill every worker at once, then wait for all of them to come back."""
    ready_before = len(server.events("ready"))
    if mode == "process":
        for pid in server.live_pids().values():
            os.kill(pid, signal.SIGKILL)
    else:
        threads = [
            threading.Thread(target=server.crash_slot, args=(mode, slot)) for slot in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    server.wait_event("ready", count=ready_before + WORKERS)


def _slow_request(server: CorralProcess) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):  # force-stopped under us: the point
            httpx.get(server.base_url + "/slow?seconds=60", timeout=30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_events_metrics_spans_and_logs_agree(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral(
        "--workers", str(WORKERS), "--mode", mode, "--max-restarts", "500",
        "--backoff-base", "0", "--backoff-cap", "0",
        "--shutdown-timeout", "1", "--force-stop-grace", "2",
    )  # fmt: skip
    server.wait_ready(WORKERS)
    for index in range(SEQUENTIAL_CRASHES):
        slot = index % WORKERS
        ready = len(server.events("ready", slot=slot))
        server.crash_slot(mode, slot)
        server.wait_event("ready", slot=slot, count=ready + 1)
    for _ in range(STORM_ROUNDS):
        _storm(server, mode)
    crashes = SEQUENTIAL_CRASHES + STORM_ROUNDS * WORKERS
    # A drain that overruns: a 60 s request on a worker while a SIGHUP rolls them.
    slow = _slow_request(server)
    eventually(lambda: _in_flight(server) == 1, what="the slow request is in flight")
    server.send(signal.SIGHUP)
    server.wait_event("drain_end", count=WORKERS, timeout=60)
    slow.join(30)

    events = server.side("/events").json()
    kinds = Counter(event["kind"] for event in events)
    assert kinds["crash"] == crashes
    assert kinds["respawn"] == crashes
    assert kinds["spawn"] == WORKERS + crashes + WORKERS
    assert kinds["force_stop"] >= 1
    assert kinds["drain_start"] == kinds["drain_end"] == WORKERS
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "none lost"

    _metrics_agree(server, kinds)
    _spans_agree(server, events, kinds)
    _logs_agree(server, events)


def _in_flight(server: CorralProcess) -> float:
    return server.scrape().sum("corral_http_requests_in_flight")


def _metrics_agree(server: CorralProcess, kinds: Counter[str]) -> None:
    metrics = server.scrape()
    for kind, count in kinds.items():
        assert metrics.value("corral_lifecycle_events_total", kind=kind) == count, kind
    for kind, name in COUNTERS.items():
        assert metrics.sum(name) == kinds[kind], name
    assert metrics.sum("corral_sink_errors_total") == 0


def _spans_agree(server: CorralProcess, events: list[dict[str, Any]], kinds: Counter[str]) -> None:
    spans = server.side("/debug/traces").json()
    names = Counter(span["name"] for span in spans)
    for kind, name in SPANS.items():
        assert names[name] == kinds[kind], f"{name}: {names[name]} spans, {kinds[kind]} events"
    span_ids = {span["span_id"] for span in spans}
    assert all(event["span_id"] in span_ids for event in events), "each event names its span"
    by_id = {span["span_id"]: span for span in spans}
    respawns = [by_id[e["span_id"]] for e in events if e["kind"] == "respawn"]
    assert all(len(span["links"]) == 1 for span in respawns), "a respawn links to its crash"
    crash_ids = {e["span_id"] for e in events if e["kind"] == "crash"}
    assert {span["links"][0]["span_id"] for span in respawns} == crash_ids


def _logs_agree(server: CorralProcess, events: list[dict[str, Any]]) -> None:
    logged = [record for record in server.records if record.get("lifecycle")]
    by_seq = {record["seq"]: record for record in logged}
    assert len(by_seq) == len(logged), "no event logged twice"
    for event in events:
        line = by_seq.get(event["seq"])
        assert line is not None, f"event {event['seq']} ({event['kind']}) was not logged"
        assert line["event"] == event["kind"]
        assert line["span_id"] == event["span_id"]
        assert line["trace_id"] == event["trace_id"]
    assert len(logged) == len(events)
