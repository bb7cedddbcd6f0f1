"""A worker dying while its rolling-restart replacement boots: every incarnation stays tracked.

Found by the soak: a slot whose worker crashed back to back (so its respawn
waits out a backoff) while a rolling restart's replacement was starting got
both. The replacement took the slot when ready; then the backoff timer
spawned another worker over it, and the replacement ran on untracked:
serving, holding a request-stats lane and fds, never drained.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import eventually, pid_alive
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.observe import descendants, sink_counts, untracked_incarnations
from tests.reliability.report import ScenarioReport

pytestmark = pytest.mark.integration

BACKOFF = 5.0  # longer than the replacement's boot, so the timer fires after it is ready
BOOT = 1.5


def test_worker_dies_while_its_replacement_boots(
    start_corral: StartCorral,
    mode: str,
    otlp: OtlpReceiver,
    report: ScenarioReport,
    tmp_path: Path,
) -> None:
    """Roll race: the worker being replaced dies (in backoff) while its replacement boots"""
    delay = tmp_path / "startup-delay"
    server = start_corral(
        mode, 2, "--backoff-base", str(BACKOFF), "--backoff-cap", str(BACKOFF),
        env={"CHAOS_STARTUP_DELAY_FILE": str(delay)},
    )  # fmt: skip
    # A first crash restarts at once; the next one, back to back, backs off.
    server.crash_generations(mode, slot=0, generations=1)
    server.wait_event("ready", slot=0, generation=2)
    victim = server.events("spawn", slot=0, generation=2)[0]["pid"]
    delay.write_text(str(BOOT))
    server.send(signal.SIGHUP)
    server.wait_event("spawn", slot=0, generation=3)  # the replacement, booting for BOOT s
    if mode == "process":
        os.kill(victim, signal.SIGKILL)
    else:
        server.crash_slot(mode, 0)
    server.wait_event("crash", slot=0, generation=2)
    delay.unlink()
    server.wait_event("ready", slot=0, generation=3, timeout=30)
    time.sleep(BACKOFF + 1.0)  # past the backoff a respawn would have waited for
    server.wait_event("drain_end", count=1, timeout=30)  # slot 1's roll completes
    eventually(lambda: not untracked_incarnations(server), timeout=30, what="no untracked worker")
    metrics = server.scrape()
    report.faults = (
        f"crash slot 0 twice back to back (backoff {BACKOFF:g} s), the second while a SIGHUP's "
        f"replacement for it boots ({BOOT:g} s)"
    )
    report.events = sink_counts(
        server, {"crash": "2", "respawn": "2", "spawn": "5 (2 + 1 respawn + 2 replacements)"},
        metrics, otlp,
    )  # fmt: skip
    report.figures["untracked incarnations"] = len(untracked_incarnations(server))
    left = descendants(server.pid)
    report.figures["live descendants (process: 2 workers + forkserver + tracker)"] = len(left)
    assert not server.events("spawn", slot=0, generation=4), "a respawn over the replacement"
    assert [c.log for c in report.events] == [2, 2, 5]
    assert all(c.consistent() for c in report.events), report.events
    server.send(signal.SIGTERM)
    assert server.wait_exit(60) == 0
    eventually(lambda: not any(pid_alive(pid) for pid in left), timeout=15, what="all gone")
