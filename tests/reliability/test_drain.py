"""Rolling restarts and shutdown under load: what finishes, what is cut off, and when."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import CorralProcess, eventually
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.load import LoadGenerator, LoadSpec, Outcome
from tests.reliability.observe import sample, sink_counts
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

WORKERS = 2


def _in_flight(server: CorralProcess, count: int) -> None:
    eventually(
        lambda: server.scrape().sum("corral_http_requests_in_flight") == count,
        timeout=30,
        what=f"{count} requests in flight",
    )


def _burst(server: CorralProcess, path: str, count: int, timeout: float) -> LoadSpec:
    """``count`` requests sent at once, each on its own connection."""
    return LoadSpec(
        server.base_url + path,
        rate=1000,
        connections=count,
        duration=None,
        max_requests=count,
        timeout=timeout,
    )


def test_sighup_rolling_restart_under_continuous_load(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """SIGHUP rolling restart under continuous load"""
    workers, reloads = 3, 3
    server = start_corral(mode, workers)
    before = sample(server.pid)
    spec = LoadSpec(server.base_url + "/slow?seconds=0.05", rate=100, connections=16, duration=None)
    with LoadGenerator(spec) as load:
        load.wait_started(50)
        for reload in range(1, reloads + 1):
            time.sleep(1.0)  # steady load between restarts
            server.send(signal.SIGHUP)
            # Done when every slot's new generation is ready and the old ones drained.
            server.wait_event("ready", count=workers * (reload + 1), timeout=60)
            server.wait_event("drain_end", count=workers * reload, timeout=60)
        time.sleep(1.0)
    result = load.result()
    metrics = server.scrape()
    total = workers * (reloads + 1)
    eventually(lambda: otlp.count("drain_end") >= workers * reloads, timeout=30, what="spans")
    report.faults = (
        f"{reloads} SIGHUPs 1 s apart, each waited out (rolling restart of {workers} workers)"
    )
    report.record_load(result, "none expected")
    report.events = sink_counts(
        server,
        {
            "reload": str(reloads),
            "spawn": str(total),
            "ready": str(total),
            "drain_end": str(workers * reloads),
            "crash": "0",
            "force_stop": "0",
        },
        metrics,
        otlp,
    )
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))
    assert result.sent > 0
    assert result.failed == 0, result.by_outcome()
    assert [c.log for c in report.events] == [reloads, total, total, workers * reloads, 0, 0]
    assert all(c.consistent() for c in report.events), report.events


def test_sigterm_with_50_slow_requests_in_flight(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """SIGTERM with 50 slow requests in flight, each shorter than the drain timeout"""
    server = start_corral(mode, WORKERS, "--shutdown-timeout", "30")
    before = sample(server.pid)
    with LoadGenerator(_burst(server, "/slow?seconds=3", 50, timeout=60)) as load:
        _in_flight(server, 50)
        metrics = server.scrape()
        signalled = time.monotonic()
        server.send(signal.SIGTERM)
        code = server.wait_exit(60)
        exited = time.monotonic() - signalled
    result = load.result()
    eventually(lambda: otlp.count("supervisor_stop") >= 1, timeout=10, what="the stop span")
    report.faults = (
        "SIGTERM to the supervisor with 50 x 3 s requests in flight (--shutdown-timeout 30)"
    )
    report.record_load(result, "none expected")
    report.events = sink_counts(
        server,
        {
            "drain_start": str(WORKERS),
            "drain_end": str(WORKERS),
            "force_stop": "0",
            "supervisor_stop": "1",
        },
        None,  # the side port closes with the process
        otlp,
    )
    report.record_resources("before SIGTERM", before)
    report.figures["exit code"] = code
    report.figures["SIGTERM to exit s"] = round(exited, 2)
    report.figures["in flight at SIGTERM (/metrics)"] = int(
        metrics.sum("corral_http_requests_in_flight")
    )
    assert code == 0
    assert (result.sent, result.ok) == (50, 50), result.by_outcome()
    assert [c.log for c in report.events] == [WORKERS, WORKERS, 0, 1]
    assert all(c.consistent() for c in report.events), report.events


def _overrun_report(report: ScenarioReport, failures: int, requests: int) -> None:
    report.failure_reason = (
        f"{failures} of {requests} requests ran longer than --shutdown-timeout 1 s and were "
        "force-stopped, as configured"
    )


def test_requests_longer_than_the_drain_timeout_in_a_rolling_restart(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Requests longer than the drain timeout: rolling restart (SIGHUP) force-stops them"""
    server = start_corral(mode, WORKERS, "--shutdown-timeout", "1", "--force-stop-grace", "2")
    requests = 4
    with LoadGenerator(_burst(server, "/slow?seconds=60", requests, timeout=90)) as load:
        _in_flight(server, requests)
        server.send(signal.SIGHUP)
        server.wait_event("drain_end", count=WORKERS, timeout=60)
        server.wait_event("ready", count=2 * WORKERS, timeout=60)
        result = load.result(60)
    forced = len(server.events("force_stop"))
    metrics = server.scrape()  # the supervisor lives on: the counter is readable
    eventually(lambda: otlp.count("force_stop") >= forced, timeout=10, what="force_stop spans")
    report.faults = f"SIGHUP with {requests} x 60 s requests in flight, --shutdown-timeout 1"
    report.record_load(result)
    _overrun_report(report, result.failed, requests)
    report.events = sink_counts(
        server,
        {"force_stop": ">= 1 (one per overrunning worker)", "drain_end": str(WORKERS)},
        metrics,
        otlp,
    )
    report.figures["corral_worker_force_stops_total"] = int(
        metrics.sum("corral_worker_force_stops_total")
    )
    assert server.proc.poll() is None
    assert result.sent == requests
    assert result.ok == 0, "a 60 s request cannot finish within a 1 s drain"
    assert forced >= 1
    assert metrics.sum("corral_worker_force_stops_total") == forced
    assert all(c.consistent() for c in report.events), report.events
    assert server.get("/").status_code == 200, "the new workers serve"


def test_requests_longer_than_the_drain_timeout_at_shutdown(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Requests longer than the drain timeout: SIGTERM force-stops them and the process exits"""
    server = start_corral(mode, WORKERS, "--shutdown-timeout", "1", "--force-stop-grace", "2")
    requests = 4
    with LoadGenerator(_burst(server, "/slow?seconds=60", requests, timeout=90)) as load:
        _in_flight(server, requests)
        signalled = time.monotonic()
        server.send(signal.SIGTERM)
        code = server.wait_exit(60)
        exited = time.monotonic() - signalled
        result = load.result(60)
    eventually(lambda: otlp.count("supervisor_stop") >= 1, timeout=10, what="the stop span")
    report.faults = f"SIGTERM with {requests} x 60 s requests in flight, --shutdown-timeout 1"
    report.record_load(result)
    _overrun_report(report, result.failed, requests)
    report.events = sink_counts(
        server,
        {"force_stop": ">= 1 (one per overrunning worker)", "supervisor_stop": "1"},
        None,  # the side port closes with the process; the SIGHUP case scrapes the counter
        otlp,
    )
    report.figures["exit code"] = code
    report.figures["SIGTERM to exit s"] = round(exited, 2)
    assert code == 0, "README: 0 is 'stopped on request (graceful or forced)'"
    assert result.sent == requests
    assert result.ok == 0
    assert all(a.outcome is not Outcome.TIMEOUT for a in result.attempts), "cut off, not left"
    assert len(server.events("force_stop")) >= 1
    assert all(c.consistent() for c in report.events), report.events
    # Generous: 1 s drain + 2 s grace, on a loaded machine.
    assert exited < 30
