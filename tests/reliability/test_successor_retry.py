"""A successor that fails to boot is retried within the slot's budget; the old worker serves on.

The chaos app fails its lifespan startup while a marker file exists. The
scenarios create it once the first workers serve, so every successor (of a
recycle, or of a rolling restart) fails at boot; after a few failures they
remove it, and the next retry succeeds. Throughout, the worker being replaced
keeps serving: no request may fail, and it drains only once a successor is
ready.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CorralProcess
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.load import LoadGenerator, LoadResult, LoadSpec
from tests.reliability.observe import sample, sink_counts, untracked_incarnations
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

FAILURES = 3  # successor failures to wait for before the marker goes
# Room for every failure (and one late one, booted just before the marker went)
# within the budget; a backoff long enough that the test removes the marker between two.
BUDGET = ("--max-restarts", "20", "--backoff-base", "0.6", "--backoff-cap", "1.2")


def _load(server: CorralProcess) -> LoadSpec:
    return LoadSpec(server.base_url + "/slow?seconds=0.02", rate=60, connections=6, duration=None)


def _first_ready_after(server: CorralProcess, slot: int, generation: int) -> dict[str, Any]:
    """The slot's first incarnation after ``generation`` to get ready (the successor that won)."""
    (ready,) = server.wait_for(
        lambda r: r.get("event") == "ready" and r.get("slot") == slot
        and r.get("generation", 0) > generation,
        timeout=60,
    )  # fmt: skip
    return ready


def _served_between(result: LoadResult, start: float, end: float) -> int:
    return sum(1 for a in result.attempts if a.status == 200 and start <= a.ended <= end)


def _check_successor_failures(server: CorralProcess, role: str, slot: int) -> list[dict[str, Any]]:
    """Every successor failure names its role and a boot failure, and scheduled a retry."""
    failed = server.events("successor_failed")
    assert len(failed) >= FAILURES
    for event in failed:
        assert (event["slot"], event["role"], event["reason"]) == (slot, role, "boot"), event
        assert event["budget_remaining"] > 0, event
        assert "the old worker keeps serving" in event["message"]
    # Each failure is one crash of its successor and one respawn charged to the budget.
    crashed = {(e["slot"], e["generation"]) for e in server.events("crash")}
    assert {(e["slot"], e["generation"]) for e in failed} == crashed
    assert len(server.events("respawn")) == len(failed)
    return failed


def _old_drained_after_successor(server: CorralProcess, slot: int, old: int, new: int) -> None:
    timeline = [(e["event"], e["generation"]) for e in server.events() if e.get("slot") == slot]
    assert timeline.index(("ready", new)) < timeline.index(("drain_start", old)), timeline


def test_recycle_successor_fails_then_succeeds(
    start_corral: StartCorral,
    mode: str,
    otlp: OtlpReceiver,
    report: ScenarioReport,
    tmp_path: Path,
) -> None:
    """Recycle whose successor fails at boot: retried within budget, old worker serves on"""
    marker = tmp_path / "fail-startup"
    server = start_corral(
        mode, 1, "--max-requests", "120", "--max-requests-jitter", "0", *BUDGET,
        env={"CHAOS_FAIL_STARTUP_FILE": str(marker)},
    )  # fmt: skip
    old_pid = server.events("spawn", slot=0, generation=1)[0]["pid"]
    before = sample(server.pid)
    marker.touch()  # from now on every successor fails its startup
    with LoadGenerator(_load(server)) as load:
        load.wait_started(20)
        (recycle,) = server.wait_event("recycle", slot=0, generation=1, timeout=30)
        failed = server.wait_event("successor_failed", count=FAILURES, timeout=60)
        marker.unlink()
        ready = _first_ready_after(server, 0, 1)
        server.wait_event("drain_end", slot=0, generation=1, timeout=30)
        time.sleep(1.0)  # load on the successor alone
    result = load.result()
    failed = _check_successor_failures(server, "recycle", 0)
    metrics = server.scrape()
    window = (float(failed[0]["monotonic"]), float(ready["monotonic"]))
    served = [a for a in result.attempts if a.status == 200 and window[0] <= a.ended <= window[1]]
    report.faults = (
        f"--max-requests 120 (one worker); lifespan startup fails while a marker exists: "
        f"removed after {FAILURES} successor failures"
    )
    report.record_load(result, "none expected: the old worker serves until its successor is ready")
    report.events = sink_counts(
        server,
        {
            "recycle": ">= 1",
            "successor_failed": f">= {FAILURES} (role recycle)",
            "crash": "= successor_failed (reason boot)",
            "respawn": "= successor_failed",
        },
        metrics,
        otlp,
    )  # fmt: skip
    report.figures["successor retries"] = len(failed)
    report.figures["requests served by the old worker while its successor failed"] = len(served)
    report.figures["failure to ready s"] = round(window[1] - window[0], 2)
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))

    assert result.failed == 0, result.by_outcome()
    assert int(recycle["generation"]) == 1
    assert served, "nothing was served while the successor failed"
    if mode == "process":
        assert {a.pid for a in served} == {old_pid}, "only the old worker could answer"
    assert int(ready["generation"]) == 2 + len(failed)
    _old_drained_after_successor(server, 0, 1, int(ready["generation"]))
    assert metrics.sum("corral_worker_restarts_total") == len(failed)
    assert metrics.value("corral_lifecycle_events_total", kind="successor_failed") == len(failed)
    assert metrics.value("corral_workers_ready") == 1
    assert all(count.consistent() for count in report.events), report.events
    assert not untracked_incarnations(server)


def test_rolling_restart_successor_fails_then_succeeds(
    start_corral: StartCorral,
    mode: str,
    otlp: OtlpReceiver,
    report: ScenarioReport,
    tmp_path: Path,
) -> None:
    """Rolling restart whose replacement fails at boot: retried, the roll completes"""
    marker = tmp_path / "fail-startup"
    workers = 2
    server = start_corral(
        mode, workers, *BUDGET, env={"CHAOS_FAIL_STARTUP_FILE": str(marker)}
    )  # fmt: skip
    before = sample(server.pid)
    marker.touch()
    with LoadGenerator(_load(server)) as load:
        load.wait_started(20)
        server.send(signal.SIGHUP)
        failed = server.wait_event("successor_failed", count=FAILURES, timeout=60)
        ready_during = server.scrape().value("corral_workers_ready")
        marker.unlink()
        ready = _first_ready_after(server, 0, 1)
        server.wait_event("drain_end", slot=1, generation=1, timeout=60)  # the roll went on
        time.sleep(1.0)
    result = load.result()
    failed = _check_successor_failures(server, "reload", 0)
    metrics = server.scrape()
    window = (float(failed[0]["monotonic"]), float(ready["monotonic"]))
    report.faults = (
        f"SIGHUP ({workers} workers); lifespan startup fails while a marker exists: "
        f"removed after {FAILURES} failures of slot 0's replacement"
    )
    report.record_load(result, "none expected: old workers serve until their replacement is ready")
    report.events = sink_counts(
        server,
        {
            "reload": "1",
            "successor_failed": f">= {FAILURES} (role reload, slot 0)",
            "crash": "= successor_failed (reason boot)",
            "respawn": "= successor_failed",
            "drain_end": f"{workers}",
        },
        metrics,
        otlp,
    )  # fmt: skip
    report.figures["replacement retries"] = len(failed)
    report.figures["ready workers while the replacement failed"] = int(ready_during)
    report.figures["requests served while it failed"] = _served_between(result, *window)
    report.figures["failure to ready s"] = round(window[1] - window[0], 2)
    report.record_resources("start", before)
    report.record_resources("end", sample(server.pid))

    assert result.failed == 0, result.by_outcome()
    assert ready_during == workers
    assert len(server.events("reload")) == 1
    assert int(ready["generation"]) == 2 + len(failed)
    _old_drained_after_successor(server, 0, 1, int(ready["generation"]))
    _old_drained_after_successor(server, 1, 1, 2)
    assert metrics.sum("corral_worker_restarts_total") == len(failed)
    assert metrics.value("corral_workers_ready") == workers
    assert all(count.consistent() for count in report.events), report.events
    assert not untracked_incarnations(server)
