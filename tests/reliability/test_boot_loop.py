"""An app that dies at boot: the restart budget ends the storm, cheaply for the supervisor."""

from __future__ import annotations

import time

import psutil
import pytest

from corral.errors import ExitCode
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.observe import sink_counts
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

WORKERS = 2
BUDGET = 5  # the --max-restarts default, passed explicitly so the bound below is exact


def test_boot_crash_loop_exhausts_the_budget(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Boot crash loop (CHAOS_FAIL_STARTUP=1)"""
    server = start_corral(
        mode, WORKERS, "--max-restarts", str(BUDGET), env={"CHAOS_FAIL_STARTUP": "1"}, wait=False
    )
    supervisor = psutil.Process(server.pid)
    server.wait_event("spawn", timeout=30)
    first = supervisor.cpu_times()
    storm_began = time.monotonic()
    # Sample until it exits: the last sample is the storm's cost (children excluded).
    last = first
    while server.proc.poll() is None:
        try:
            last = supervisor.cpu_times()
        except psutil.Error:
            break
        time.sleep(0.05)
    storm = time.monotonic() - storm_began
    code = server.wait_exit(30)
    cpu = (last.user + last.system) - (first.user + first.system)
    spawns = server.events("spawn")
    per_slot = {slot: sum(1 for e in spawns if e["slot"] == slot) for slot in range(WORKERS)}
    report.faults = f"every worker fails lifespan startup; --max-restarts {BUDGET}, default backoff"
    report.events = sink_counts(
        server,
        {
            "spawn": f"<= {WORKERS * (BUDGET + 1)} (budget + 1 per slot)",
            "crash": f"<= {WORKERS * (BUDGET + 1)}",
            "ready": "0",
            "budget_exhausted": str(WORKERS),
        },
        None,  # the process is gone; spans were flushed at exit
        otlp,
    )
    report.figures["exit code"] = f"{code} ({ExitCode(code).name})"
    report.figures["storm s"] = round(storm, 2)
    report.figures["supervisor CPU s during the storm"] = round(cpu, 3)
    report.figures["supervisor CPU % of the storm"] = round(100 * cpu / storm, 1)
    report.figures["spawns per slot (max)"] = max(per_slot.values())
    assert code == ExitCode.BOOT_LOOP, server.lines[-20:]
    assert all(count <= BUDGET + 1 for count in per_slot.values()), per_slot
    assert len(server.events("budget_exhausted")) == WORKERS
    assert not server.events("ready")
    assert all(c.consistent() for c in report.events), report.events
    # Generous: the storm is mostly backoff sleeps; the supervisor must not spin.
    assert cpu < 0.5 * storm, f"{cpu:.2f} CPU s in a {storm:.2f} s storm"
