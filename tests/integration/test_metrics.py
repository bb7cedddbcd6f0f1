"""The real ``/metrics`` of a real corral: names, exact counts, promtool, aggregation.

Faults are injected with real signals and the chaos app; counters are read
from a real scrape and must move by exactly what was injected.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import CorralProcess, eventually

pytestmark = pytest.mark.integration

# The whole metrics surface the issue promises; dashboards and alerts use these names.
EXPECTED_NAMES = {
    "corral_workers_desired",
    "corral_workers_alive",
    "corral_workers_ready",
    "corral_worker_state",
    "corral_worker_start_time_seconds",
    "corral_worker_spawns_total",
    "corral_worker_crashes_total",
    "corral_worker_restarts_total",
    "corral_worker_force_stops_total",
    "corral_restart_budget_remaining",
    "corral_worker_exhausted",
    "corral_restart_budget_exhausted_total",
    "corral_worker_ready_duration_seconds_bucket",
    "corral_drain_duration_seconds_bucket",
    "corral_lifecycle_events_total",
    "corral_sink_errors_total",
    "corral_supervisor_info",
    "corral_worker_cpu_seconds_total",
    "corral_http_requests_total",
    "corral_http_request_duration_seconds_bucket",
    "corral_http_requests_in_flight",
}
PROCESS_ONLY = {"corral_worker_resident_memory_bytes"}


def _hit(server: CorralProcess, count: int, path: str = "/") -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(count):
            assert client.get(path).status_code == 200


def test_every_metric_is_present_after_a_scripted_run(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode, "--shutdown-timeout", "5")
    server.wait_ready(2)
    _hit(server, 20)
    server.crash_slot(mode, 1)
    server.wait_event("ready", count=3)
    # A rolling restart drains the old workers: the drain histogram gets samples.
    server.send(signal.SIGHUP)
    server.wait_event("drain_end", count=2)
    metrics = server.scrape()
    expected = EXPECTED_NAMES | (PROCESS_ONLY if mode == "process" else set())
    missing = expected - metrics.names()
    assert not missing, f"missing from /metrics: {sorted(missing)}"
    assert metrics.value("corral_workers_desired") == 2
    assert metrics.value("corral_supervisor_info", mode=mode) == 1
    assert metrics.value("corral_drain_duration_seconds_count") == 2
    if mode == "process":
        assert metrics.value("corral_worker_resident_memory_bytes", slot="0") > 1_000_000


def test_counters_move_by_exactly_the_injected_faults(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "3", "--mode", mode, "--max-restarts", "50")
    server.wait_ready(3)
    before = server.scrape()
    assert before.value("corral_worker_spawns_total", slot="1") == 1
    assert before.sum("corral_worker_crashes_total") == 0, "every series starts at 0"
    assert before.value("corral_worker_crashes_total", slot="1", reason="signal") == 0
    server.crash_generations(mode, slot=1, generations=4)
    server.wait_event("ready", slot=1, generation=5)
    after = server.scrape()
    reason = "signal" if mode == "process" else "exception"
    assert after.value("corral_worker_crashes_total", slot="1", reason=reason) == 4
    assert after.sum("corral_worker_crashes_total") == 4
    assert after.value("corral_worker_restarts_total", slot="1") == 4
    assert after.sum("corral_worker_restarts_total") == 4
    assert after.value("corral_worker_spawns_total", slot="1") == 5
    assert after.value("corral_worker_spawns_total", slot="0") == 1
    assert after.value("corral_lifecycle_events_total", kind="crash") == 4
    assert after.value("corral_lifecycle_events_total", kind="respawn") == 4
    assert after.value("corral_lifecycle_events_total", kind="ready") == 7
    assert after.value("corral_worker_ready_duration_seconds_count") == 7
    assert after.value("corral_restart_budget_remaining", slot="1") == 50 - 4
    assert after.value("corral_restart_budget_remaining", slot="0") == 50
    assert after.value("corral_workers_ready") == 3
    assert after.value("corral_worker_state", slot="1", state="ready") == 1
    assert after.sum("corral_sink_errors_total") == 0


def test_budget_exhaustion_shows_in_the_gauges_and_counters(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode, "--max-restarts", "1")
    server.wait_ready(2)
    server.crash_generations(mode, slot=0, generations=2)
    server.wait_event("budget_exhausted")
    metrics = server.scrape()
    assert metrics.value("corral_worker_exhausted", slot="0") == 1
    assert metrics.value("corral_worker_exhausted", slot="1") == 0
    assert metrics.value("corral_restart_budget_exhausted_total", slot="0") == 1
    assert metrics.value("corral_restart_budget_remaining", slot="0") == 0
    assert metrics.value("corral_worker_state", slot="0", state="exhausted") == 1
    assert metrics.value("corral_workers_ready") == 1
    assert metrics.value("corral_workers_alive") == 1


def test_promtool_finds_nothing_wrong_with_the_real_exposition(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing; make test installs the Debian prometheus package")
        pytest.skip("promtool not installed (make test installs the Debian prometheus package)")
    server = corral("--workers", "2", "--mode", "process")
    server.wait_ready(2)
    _hit(server, 5)
    server.crash_slot("process", 0)
    server.wait_event("ready", count=3)
    text = server.scrape().text
    result = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def test_request_metrics_survive_a_killed_worker_in_process_mode(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "3", "--mode", "process")
    server.wait_ready(3)
    _hit(server, 60)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/missing").status_code == 404
    before = server.scrape()
    assert before.sum("corral_http_requests_total") == 61
    assert before.sum("corral_http_requests_total", method="GET", status_class="4xx") == 1
    # Kill the busiest worker: its counts must stay in its slot's totals.
    per_slot = {slot: before.sum("corral_http_requests_total", slot=str(slot)) for slot in range(3)}
    busiest = max(per_slot, key=lambda slot: per_slot[slot])
    server.crash_slot("process", busiest)
    server.wait_event("ready", count=4)
    _hit(server, 30)
    after = server.scrape()
    assert after.sum("corral_http_requests_total") == 91
    assert after.sum("corral_http_requests_total", slot=str(busiest)) >= per_slot[busiest]
    assert after.sum("corral_http_request_duration_seconds_count") == 91
    assert after.sum("corral_http_requests_in_flight") == 0
    assert (
        after.value("corral_http_requests_total", slot="0", method="GET", status_class="5xx") == 0
    )


def test_in_flight_requests_are_counted_while_they_run(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode)
    server.wait_ready(1)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        slow = threading.Thread(target=lambda: client.get("/slow?seconds=2"))
        slow.start()
        eventually(lambda: server.scrape().sum("corral_http_requests_in_flight") == 1)
        slow.join()
    done = server.scrape()
    assert done.value("corral_http_requests_in_flight", slot="0") == 0
    assert done.value("corral_http_requests_total", slot="0", method="GET", status_class="2xx") == 1


def test_the_stats_directory_stays_bounded_across_500_respawns(
    corral: Callable[..., CorralProcess],
) -> None:
    """The request-metrics blocks are reused by lane: 500 deaths leave no trail."""
    server = corral(
        "--workers", "2", "--mode", "process",
        "--max-restarts", "100000", "--restart-window", "1", "--backoff-base", "0",
        "--backoff-cap", "0",
    )  # fmt: skip
    server.wait_ready(2)
    stats_dir = Path(server.stats_dir)
    assert stats_dir.is_dir()
    size_at_start = len(server.scrape().text)
    deaths = 0
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        while deaths < 500:
            try:
                client.get("/exit?code=3", headers={"connection": "close"})
            except httpx.HTTPError:
                deaths += 1
            lanes = list(Path(stats_dir).glob("lane-*.stats"))
            assert len(lanes) <= 3, "at most one block per live worker"
    server.wait_event("crash", count=500)
    server.wait_event("ready", count=502)
    metrics = server.scrape()
    assert metrics.sum("corral_worker_spawns_total") == 502
    assert metrics.sum("corral_worker_crashes_total", reason="exit_code") == 500
    assert len(list(Path(stats_dir).glob("lane-*.stats"))) <= 3
    # The exposition did not grow with the deaths: same series, bigger numbers.
    assert len(metrics.text) < size_at_start * 1.2
