"""Hung workers and --max-requests recycling, under load.

A hung worker's loop accepts nothing while it is blocked, so the connections
it holds are fixed from the moment its app blocks: read them (process mode)
halfway through the timeout, before the supervisor acts. Those, and only
those, may fail.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import psutil
import pytest

from corral.errors import ExitCode
from tests.conftest import CorralProcess, eventually
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.load import LoadGenerator, LoadResult, LoadSpec, Outcome
from tests.reliability.observe import sample, sink_counts
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

TIMEOUT = 2.0  # --worker-timeout for these scenarios
CUT_OFF = frozenset({Outcome.RESET, Outcome.DISCONNECT})


class HangRequest:
    """``GET /hang?seconds=S`` on a raw socket, so we know our port and who holds it."""

    def __init__(self, server: CorralProcess, seconds: float) -> None:
        url = urlsplit(server.base_url)
        self.app_port = url.port
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        self.port = self.sock.getsockname()[1]
        self.sock.sendall(f"GET /hang?seconds={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def holder(self, server: CorralProcess) -> psutil.Process:
        """The worker process whose connection is ours (process mode)."""
        for child in psutil.Process(server.pid).children(recursive=True):
            try:
                connections = child.net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.raddr and c.raddr.port == self.port for c in connections):
                return child
        raise AssertionError("no worker holds the /hang connection")

    def client_ports_of(self, process: psutil.Process) -> set[int]:
        """Client ports of every app connection ``process`` holds (ours excluded)."""
        return {
            c.raddr.port
            for c in process.net_connections(kind="tcp")
            if c.raddr and c.laddr.port == self.app_port and c.raddr.port != self.port
        }

    def close(self) -> None:
        self.sock.close()


def _detected_after(server: CorralProcess) -> float:
    (hung,) = [r for r in server.records if r.get("event") == "worker hung"]
    return float(hung["silent_seconds"])


def _stacks(server: CorralProcess) -> str:
    (dump,) = [r for r in server.records if r.get("event") == "hung worker stacks"]
    return str(dump["stacks"])


def _load(server: CorralProcess) -> LoadSpec:
    return LoadSpec(server.base_url + "/slow?seconds=0.05", rate=50, connections=8, duration=None)


def _cut_off_failures(result: LoadResult, ports: set[int]) -> tuple[int, list[str]]:
    """(failures explained by the hung worker's connections, the unexplained ones)."""
    explained, unexplained = 0, []
    for attempt in result.failures:
        if attempt.client_port in ports and attempt.outcome in CUT_OFF:
            explained += 1
        else:
            unexplained.append(f"{attempt.outcome.value} {attempt.status or ''} {attempt.error}")
    return explained, unexplained


def test_hung_process_worker_under_load(
    start_corral: StartCorral, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Hung worker (process mode): dumped, SIGKILLed, respawned"""
    report.mode = "process"
    server = start_corral("process", 2, "--worker-timeout", f"{TIMEOUT:g}")
    before = sample(server.pid)
    with LoadGenerator(_load(server)) as load:
        load.wait_started(20)
        hang = HangRequest(server, seconds=60)
        time.sleep(TIMEOUT / 2)  # its app is blocked now: its connections are frozen
        victim = hang.holder(server)
        ports = hang.client_ports_of(victim)
        server.wait_event("crash", reason="hang", timeout=30)
        server.wait_event("ready", count=3, timeout=30)
        time.sleep(1.0)  # load on the healed pair
        hang.close()
    result = load.result()
    explained, unexplained = _cut_off_failures(result, ports)
    metrics = server.scrape()
    report.faults = (
        f"one GET /hang?seconds=60 (blocks a worker's loop), --worker-timeout {TIMEOUT:g}"
    )
    report.record_load(
        result, f"{explained} in flight on the hung worker when it was SIGKILLed; "
        f"{len(unexplained)} unexplained",
    )  # fmt: skip
    report.events = sink_counts(
        server,
        {"crash": "1 (reason hang)", "respawn": "1", "force_stop": "0", "ready": "3"},
        metrics,
        otlp,
    )
    report.figures["detected after s (supervisor's measure)"] = round(_detected_after(server), 3)
    report.figures["stack dump names the blocking frame"] = (
        "yes" if "chaos.py" in _stacks(server) else "no"
    )
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))

    assert unexplained == []
    assert _detected_after(server) < TIMEOUT + 2
    assert "examples/chaos.py" in _stacks(server)
    assert metrics.sum("corral_worker_crashes_total", reason="hang") == 1
    assert metrics.sum("corral_worker_force_stops_total") == 0
    assert all(count.consistent() for count in report.events), report.events


def test_hung_thread_worker_under_load_exits_9(
    start_corral: StartCorral, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Hung worker (thread mode, --on-hung-thread exit): drain the rest, exit 9"""
    report.mode = "thread"
    server = start_corral("thread", 2, "--worker-timeout", f"{TIMEOUT:g}")
    before = sample(server.pid)
    with LoadGenerator(_load(server)) as load:
        load.wait_started(20)
        hang = HangRequest(server, seconds=60)
        (crash,) = server.wait_event("crash", reason="hang", timeout=30)
        (drain,) = server.wait_event("drain_start", slot=1 - int(crash["slot"]), timeout=30)
        code = server.wait_exit(60)
        load.stop()
        hang.close()
    result = load.result()
    drain_began = float(drain["monotonic"])
    # After the drain began, the process is leaving on purpose: refused connects,
    # and whatever the hung thread held when the process exited, are expected.
    late = [a for a in result.failures if a.ended >= drain_began]
    early = [a for a in result.failures if a.ended < drain_began]
    report.faults = (
        f"one GET /hang?seconds=60 (blocks a worker's loop), --worker-timeout {TIMEOUT:g}"
    )
    report.record_load(
        result, f"{len(late)} after the policy's drain began (refused while corral exits 9, "
        f"or held by the hung thread); {len(early)} before it",
    )  # fmt: skip
    report.events = sink_counts(
        server,
        {
            "crash": "1 (reason hang)",
            "respawn": "0",
            "drain_end": "2",
            "force_stop": "1 (abandoned)",
        },
        None,
        otlp,
    )
    report.figures["detected after s (supervisor's measure)"] = round(_detected_after(server), 3)
    report.figures["exit code"] = code
    report.record_resources("start", before)

    assert code == ExitCode.WORKER_HUNG
    assert early == []
    assert _detected_after(server) < TIMEOUT + 2
    assert "examples/chaos.py" in _stacks(server)
    healthy = server.events("drain_end", slot=1 - int(crash["slot"]))
    assert [e["message"] for e in healthy] == ["graceful"]


def test_hung_thread_worker_under_load_ignored(
    start_corral: StartCorral, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Hung worker (thread mode, --on-hung-thread ignore): serve on, recover"""
    report.mode = "thread"
    server = start_corral(
        "thread", 2, "--worker-timeout", f"{TIMEOUT:g}", "--on-hung-thread", "ignore"
    )  # fmt: skip
    before = sample(server.pid)
    with LoadGenerator(_load(server)) as load:
        load.wait_started(20)
        hang = HangRequest(server, seconds=TIMEOUT + 3)
        (crash,) = server.wait_event("crash", reason="hang", timeout=30)
        slot = str(crash["slot"])
        ready_while_hung = server.scrape().value("corral_workers_ready")
        server.wait_for(lambda r: r.get("event") == "hung worker recovered", timeout=30)
        eventually(
            lambda: server.scrape().value("corral_worker_state", slot=slot, state="ready") == 1,
            what="the slot counts as ready again",
        )
        time.sleep(1.0)
        hang.close()
    result = load.result()
    metrics = server.scrape()
    report.faults = (
        f"one GET /hang?seconds={TIMEOUT + 3:g} (blocks a worker's loop), "
        f"--worker-timeout {TIMEOUT:g}"
    )
    report.record_load(result, "none expected: the hung loop's requests finish late, not fail")
    report.events = sink_counts(
        server, {"crash": "1 (reason hang)", "respawn": "0", "force_stop": "0"}, metrics, otlp
    )
    report.figures["ready workers while hung"] = int(ready_while_hung)
    report.figures["detected after s (supervisor's measure)"] = round(_detected_after(server), 3)
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))

    assert result.failed == 0, result.by_outcome()
    assert ready_while_hung == 1
    assert metrics.value("corral_workers_ready") == 2
    assert server.proc.poll() is None


def test_max_requests_recycling_under_load(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Max-requests recycling under continuous load"""
    workers, quota, jitter = 2, 100, 50
    server = start_corral(
        mode, workers, "--max-requests", str(quota), "--max-requests-jitter", str(jitter)
    )  # fmt: skip
    before = sample(server.pid)
    spec = LoadSpec(server.base_url + "/slow?seconds=0.02", rate=100, connections=8, duration=8.0)
    result = LoadGenerator(spec).start().result()  # the whole 8 s
    recycles = server.events("recycle")
    eventually(
        lambda: len(server.events("drain_end")) >= len(recycles) - workers,
        what="recycled workers drained",
    )
    metrics = server.scrape()
    report.faults = f"none: --max-requests {quota} --max-requests-jitter {jitter}"
    report.record_load(result, "none expected")
    report.events = sink_counts(
        server, {"recycle": ">= 3", "crash": "0", "force_stop": "0"}, metrics, otlp
    )
    report.figures["recycles"] = len(recycles)
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))

    assert result.failed == 0, result.by_outcome()
    assert len(recycles) >= 3
    # Capacity never dropped: each recycled worker's successor was ready before it drained.
    for event in recycles:
        slot, generation = event["slot"], event["generation"]
        timeline = [(e["event"], e["generation"]) for e in server.events() if e.get("slot") == slot]
        if ("drain_start", generation) in timeline:
            assert timeline.index(("ready", generation + 1)) < timeline.index(
                ("drain_start", generation)
            )
    assert metrics.sum("corral_worker_restarts_total") == 0
