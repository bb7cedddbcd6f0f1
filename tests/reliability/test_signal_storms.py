"""Signal storms: bursts and awkwardly timed signals end in a clean, documented state.

"Clean" means: no crash event, exit code as the README documents, and no
process left behind: every descendant the supervisor had (process workers,
the forkserver) is gone once it exits. In thread mode the workers are
threads of the supervisor, so its exit is their end.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import CorralProcess, eventually, pid_alive
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.load import LoadGenerator, LoadSpec
from tests.reliability.observe import descendants, sample, sink_counts
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

WORKERS = 2


def _exit_cleanly(server: CorralProcess, report: ScenarioReport, signum: signal.Signals) -> int:
    """Send ``signum``, wait for the exit, and check nothing it started lives on."""
    left = descendants(server.pid)
    server.send(signum)
    code = server.wait_exit(60)
    eventually(lambda: not any(pid_alive(pid) for pid in left), timeout=15, what=f"{left} all gone")
    report.figures["exit code"] = code
    report.figures["descendants before exit / alive after"] = (
        f"{len(left)} / {sum(pid_alive(p) for p in left)}"
    )
    return code


def test_twenty_sighups_in_two_seconds(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Signal storm: 20 SIGHUPs in 2 s under load, then SIGTERM"""
    server = start_corral(mode, WORKERS)
    before = sample(server.pid)
    spec = LoadSpec(server.base_url + "/slow?seconds=0.05", rate=50, connections=8, duration=None)
    with LoadGenerator(spec) as load:
        load.wait_started(10)
        for _ in range(20):
            server.send(signal.SIGHUP)
            time.sleep(0.1)
        # Calm again: every slot ready, nothing draining, and it stays so.
        eventually(lambda: _settled(server), timeout=60, what="the restarts settle")
        spaced = len(server.events("reload"))
        for _ in range(20):  # and 20 back to back: a burst mid-roll is coalesced
            server.send(signal.SIGHUP)
        time.sleep(0.5)
        eventually(lambda: _settled(server), timeout=60, what="the restarts settle")
        time.sleep(1.0)
    result = load.result()
    after = sample(server.pid)
    metrics = server.scrape()
    reloads = len(server.events("reload"))
    code = _exit_cleanly(server, report, signal.SIGTERM)
    report.faults = "20 x SIGHUP 0.1 s apart, then 20 back to back, then SIGTERM"
    report.figures["rolling restarts from 20 spaced / 20 back-to-back SIGHUPs"] = (
        f"{spaced} / {reloads - spaced}"
    )
    report.record_load(result, "none expected")
    report.events = sink_counts(
        server,
        {
            "reload": "2..40 (a burst mid-roll is coalesced)",
            "spawn": f"{WORKERS} + {WORKERS} per rolling restart run",
            "crash": "0",
            "force_stop": "0",
        },
        metrics,
        otlp,
    )
    report.record_resources("start", before)
    report.record_resources("settled", after)
    assert code == 0
    assert result.failed == 0, result.by_outcome()
    assert 1 <= spaced <= 20
    assert 1 <= reloads - spaced <= 20
    assert not server.events("crash")
    assert not server.events("force_stop")
    assert all(c.consistent() for c in report.events), report.events


def _settled(server: CorralProcess) -> bool:
    rows = server.side("/workers").json()["workers"]
    return len(rows) == WORKERS and all(row["state"] == "ready" for row in rows)


def test_sigterm_during_a_rolling_restart(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Signal storm: SIGTERM in the middle of a rolling restart, 10 slow requests in flight"""
    server = start_corral(mode, WORKERS, "--shutdown-timeout", "30")
    spec = LoadSpec(
        server.base_url + "/slow?seconds=2",
        rate=1000,
        connections=10,
        duration=None,
        max_requests=10,
        timeout=60,
    )
    with LoadGenerator(spec) as load:
        eventually(
            lambda: server.scrape().sum("corral_http_requests_in_flight") == 10,
            timeout=30,
            what="10 requests in flight",
        )
        server.send(signal.SIGHUP)
        server.wait_event("spawn", count=WORKERS + 1)  # the roll has begun
        code = _exit_cleanly(server, report, signal.SIGTERM)
        result = load.result(60)
    eventually(lambda: otlp.count("supervisor_stop") >= 1, timeout=10, what="the stop span")
    report.faults = "SIGHUP, then SIGTERM as soon as the first replacement is spawned"
    report.record_load(result, "none expected")
    report.events = sink_counts(
        server, {"reload": "1", "crash": "0", "supervisor_stop": "1"}, None, otlp
    )
    assert code == 0
    assert (result.sent, result.ok) == (10, 10), result.by_outcome()
    assert not server.events("crash")
    assert all(c.consistent() for c in report.events), report.events


def test_sigint_twice(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Signal storm: SIGINT twice with 4 long requests in flight (graceful, then forced)"""
    server = start_corral(mode, WORKERS, "--shutdown-timeout", "60")
    spec = LoadSpec(
        server.base_url + "/slow?seconds=60",
        rate=1000,
        connections=4,
        duration=None,
        max_requests=4,
        timeout=90,
    )
    with LoadGenerator(spec) as load:
        eventually(
            lambda: server.scrape().sum("corral_http_requests_in_flight") == 4,
            timeout=30,
            what="4 requests in flight",
        )
        server.send(signal.SIGINT)
        server.wait_event("drain_start")
        signalled = time.monotonic()
        code = _exit_cleanly(server, report, signal.SIGINT)
        exited = time.monotonic() - signalled
        result = load.result(60)
    eventually(lambda: otlp.count("supervisor_stop") >= 1, timeout=10, what="the stop span")
    report.faults = "SIGINT (graceful drain), then SIGINT again (force-stop now)"
    report.record_load(result)
    report.failure_reason = (
        f"{result.failed} x 60 s requests cut off by the second SIGINT, as documented"
    )
    report.events = sink_counts(
        server,
        {"drain_start": str(WORKERS), "force_stop": ">= 1", "crash": "0", "supervisor_stop": "1"},
        None,
        otlp,
    )
    report.figures["second SIGINT to exit s"] = round(exited, 2)
    assert code == 0, "README: 0 is 'stopped on request (graceful or forced)'"
    assert result.sent == 4
    assert result.ok == 0
    assert server.events("force_stop")
    assert not server.events("crash")
    assert all(c.consistent() for c in report.events), report.events
    assert exited < 30, "the second SIGINT does not wait for the 60 s drain timeout"
